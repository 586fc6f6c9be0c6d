"""The one door into training: every way of getting a run (`ablab run`, `ablab resume`, baselines,
tiers, studies, ladders, every executor's workers) comes through here.

    decision = decide(lab, cfg, ledger, provenance)   # the content-key reuse check, done once, here
    decision.reused                                   # a finished run with the same key, or None
    outcome = start_run(cfg, lab)                     # decide, then train what is not reused
    record, training = open_training(request, ledger) # a driver's decided request, trained in a worker

A run's content key is (config hash, seed, data fingerprint, code version); a finished run with
the same key is returned instead of training it again, unless the caller forces a new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ablab.config import Config, config_hash
from ablab.data.prepare import prepare_data
from ablab.data.tokens import PreparedData
from ablab.errors import UserError
from ablab.evals.prompts import load_prompts
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect as collect_provenance
from ablab.store.reconcile import settle
from ablab.store.record import RunRecord, content_key, runs_root
from ablab.train import autobatch, distributed
from ablab.train.loop import Outcome, ProgressFn, Training
from ablab.train.mirrors import make_mirrors

__all__ = ["Decision", "Outcome", "Request", "decide", "identify", "open_training", "resume_run", "start_run"]


@dataclass(frozen=True)
class Request:
    """A run to train, decided on the driver: a new run (config, identity, provenance) or the
    resumption of `run_id`. Plain data, so that it can travel to another process."""
    lab: Path
    config: Config | None = None
    identity: dict | None = None  # data and tokenizer fingerprints, as RunRecord.create takes them
    provenance: tuple | None = None  # ablab.store.provenance.collect(lab), gathered once by the driver
    run_id: str | None = None  # resume this run instead of starting one


@dataclass
class Decision:
    request: Request
    key: str  # the content key
    reused: Run | None  # the finished run with that key, when there is one


def identify(data: PreparedData) -> dict:
    """The data half of a run's identity: the token and tokenizer fingerprints."""
    return {"data_fingerprint": data.fingerprint, "tokenizer_fingerprint": data.tokenizer.fingerprint}


def decide(lab: Path, cfg: Config, ledger: Ledger, provenance: tuple, identity: dict | None = None,
           force: bool = False) -> Decision:
    """The content-key reuse check: the finished run `cfg` would repeat, or a Request to train it.
    `identity` saves preparing the data again when the caller already has its fingerprints."""
    load_prompts(lab, cfg.eval.prompts)  # an unknown prompt suite stops here too
    if identity is None:  # a corpus error stops here, before any record exists
        identity = identify(prepare_data(cfg.data))
    key = content_key(config_hash(cfg), cfg.seed, identity["data_fingerprint"], provenance[0]["code_version"])
    reused = None if force else ledger.find_finished(key)
    return Decision(Request(lab, cfg, identity, provenance), key, reused)


def start_run(cfg: Config, lab: Path, progress: ProgressFn | None = None, force: bool = False,
              log_to: Sequence[str] = ()) -> Outcome:
    """Train `cfg` in `lab`, or return the finished run with the same content key (unless `force`).
    `log_to` names mirrors (wandb, mlflow, tensorboard) that get a copy of the metrics.
    Inside torchrun's workers the ranks train it together and rank 0 alone writes the record."""
    world = distributed.join(cfg)
    mirrors = make_mirrors(list(log_to)) if world.is_main else []
    with world.main_first():  # first: a corpus error leaves no record behind; rank 0 fills the token cache
        data = prepare_data(cfg.data)
    decision, ledger = None, None
    if world.is_main:  # the ledger is read and written by rank 0 alone
        ledger = Ledger(lab)
        decision = decide(lab, cfg, ledger, collect_provenance(lab, world_size=world.size), identify(data), force)
    done = world.share(decision.reused if decision else None)
    if done is not None:
        return Outcome(done.id, done.status, done.result, reused=True)
    training = Training(cfg, data, world, lab)
    record = RunRecord.create(lab, cfg, decision.request.identity, ledger, decision.request.provenance) \
        if world.is_main else None
    run_id = world.share(record.run_id if record else None)
    if record is not None:
        record.start_mirrors(mirrors, lab, cfg)
    training.attach(record or distributed.FollowerRecord(run_id, runs_root(lab) / run_id), resume=False)
    return training.run(progress)


def resume_run(lab: Path, run_id: str, progress: ProgressFn | None = None, log_to: Sequence[str] = ()) -> Outcome:
    """Continue a run from its newest intact checkpoint; inside torchrun's workers every rank loads it.
    The run's lock comes first (RunBusyError while another process trains it, before a checkpoint is
    read; rank 0 holds it for all ranks). A run whose result.json says it ended is returned as it is,
    its ledger row set to match when a kill came between the two (ablab.store.reconcile)."""
    record = RunRecord.open(lab, run_id)
    main = not distributed.in_worker() or int(os.environ["RANK"]) == 0
    if main:
        record.hold()
    try:
        result = record.result()
        if result.get("status") in ("finished", "diverged"):
            if main:  # the lock is ours, so no process trains it: the file is the whole truth
                row = record.ledger.run(record.run_id)
                settle(record.ledger, row.id, row.status, row.heartbeat)
            record.release()
            return Outcome(record.run_id, result["status"], result)
        cfg, _ = autobatch.recorded(record.dir, record.config())  # an "auto" batch stays what it became
        world = distributed.join(cfg)
        training = Training(cfg, world=world, lab=lab)
        if world.is_main:
            record.start_mirrors(make_mirrors(list(log_to)), lab, training.cfg)
        training.attach(record if world.is_main else distributed.FollowerRecord(record.run_id, record.dir),
                        resume=True)
    except BaseException:
        record.release()
        raise
    return training.run(progress)


def open_training(request: Request, ledger: Any,
                  on_record: Callable[[RunRecord], None] | None = None) -> tuple[RunRecord, Training]:
    """The record and the Training of a decided request, ready to `run`, writing through `ledger`
    (the Ledger itself, or a worker's proxy of it). Raises whatever set-up raises; `on_record` is
    told the record as soon as it exists, so that the caller can record a later failure on it."""
    on_record = on_record or (lambda record: None)
    if request.run_id is not None:
        record = _reopen(request, ledger)
        training = None
    else:
        training = Training(request.config, prepare_data(request.config.data), lab=request.lab)
        record = RunRecord.create(request.lab, request.config, request.identity, ledger, request.provenance)
    try:  # the record holds the run's lock from here; a failure before training releases it
        on_record(record)
        training = training or Training(autobatch.recorded(record.dir, record.config())[0], lab=request.lab)
        training.attach(record, resume=request.run_id is not None)
    except BaseException:
        record.release()
        raise
    return record, training


def _reopen(request: Request, ledger: Any) -> RunRecord:
    """The record of a run to resume, locked; a retry first moves the failed attempt's error aside."""
    folder = runs_root(request.lab) / request.run_id
    if not folder.is_dir():
        raise UserError(f"Run {request.run_id} is in the ledger but its directory {folder} is gone; "
                        "restore it from an `ablab export` archive with `ablab import`.")
    record = RunRecord(request.run_id, folder, ledger)
    record.hold()
    result = record.result()
    if "error" in result:
        earlier = result.pop("previous_errors", []) + [{"error": result.pop("error"),
                                                         "traceback": result.pop("traceback", None)}]
        record.write_result(result | {"status": "running", "previous_errors": earlier})
    return record
