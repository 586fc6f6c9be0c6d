"""The spool of remote workers carries data, never code: every message kind survives the trip through
a file as JSON, and a file holding anything else (a pickle, an unknown method, a write to another run)
fails its task with the reason, is never applied, and runs nothing."""

import json
import math
import os
import pickle
import queue
import struct
from pathlib import Path

import pytest

from ablab.executors.base import Result, Task
from ablab.executors.remote import _record_refusal
from ablab.executors.spool import Spool, SpoolWriter, encode, spool_file
from ablab.store import proxy
from ablab.store.ledger import Ledger, Run
from ablab.store.record import now_iso, runs_root
from ablab.train.launch import Request

RUN_ID = "0a1b2c3d"


def new_run(run_id: str = RUN_ID) -> Run:
    return Run(id=run_id, name="study/arm", status="running", created_at=now_iso(), finished_at=None,
               config_hash="0123456789abcdef", seed=3, data_fingerprint="d", code_version="c", content_key="k",
               config={"seed": 3, "optim": {"lr": 0.01}}, provenance={"host": {"name": "n"}}, result={"seed": 3},
               host="worker-host", pid=4242, heartbeat=None)


def every_message(task: Task) -> list[tuple]:
    """One message of every kind and every run write a worker sends, as ablab.executors.pool puts them."""
    row = {"step": 5, "train_loss": 3.5, "lr": 0.01}
    event = {"kind": "resume", "step": 5, "message": "resumed", "time": now_iso()}
    evals = [{"run_id": RUN_ID, "step": 5, "task": "hellaswag", "task_version": 1, "num_fewshot": 0,
              "example_limit": 0, "seed": 1234, "created_at": now_iso(), "data": {"n": 10, "metrics": {"acc": 0.3}}}]
    writes = {"record_run": (new_run(),), "log_metrics": (RUN_ID, [row]), "log_event": (RUN_ID, event),
              "heartbeat": (RUN_ID, "worker-host", 4242), "finish_run": (RUN_ID, "running", {"steps": 5}, None),
              "truncate_metrics": (RUN_ID, 5), "record_evals": (evals,),
              "record_samples": (RUN_ID, [{"step": 5, "prompt": "ROMEO:", "mode": "greedy", "seed": None, "text": " I"}]),
              "truncate_samples": (RUN_ID, 5)}
    assert set(writes) == set(Ledger.RUN_WRITES)
    key = task.key
    return [*[("ledger", key, method, args) for method, args in writes.items()],
            ("progress", key, 5, row), ("progress", key, 6, None),
            ("result", key, Result(task, RUN_ID, "failed", {"status": "failed", "error": "E: x"}, "E: x",
                                   ("E", "Exception", "BaseException"), 4242))]


def make_task(lab: Path, key: int = 0, run_id: str | None = None, attempt: int = 0) -> Task:
    return Task(key, "arm", 3, Request(lab, run_id=run_id), attempt)


def drain(spool: Spool) -> list[tuple]:
    got = []
    while True:
        try:
            got.append(spool.get(timeout=0.2))
        except queue.Empty:
            return got


def write_lines(path: Path, *lines) -> None:
    with path.open("ab") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())


def test_every_message_kind_survives_the_trip_through_the_spool(tmp_path):
    spool, task = Spool(tmp_path / "spool"), make_task(tmp_path, key=2)
    spool.expect(task)
    sent = every_message(task)
    writer = SpoolWriter(spool.folder / spool_file(task))
    for message in sent:
        writer.put(message)
    writer.close()
    got = drain(spool)
    assert [m[:3] for m in got[:-1]] == [m[:3] for m in sent[:-1]]
    assert got[:-3] == sent[:-3]  # every run write, its Run a Run again
    assert isinstance(got[0][3][0], Run) and got[-3:-1] == sent[-3:-1]
    result = got[-1][2]
    assert result == sent[-1][2] and result.task is task  # the driver's own Task, not one the file described
    with Ledger(tmp_path) as ledger:  # what comes back is what the Ledger takes
        for _, _, method, args in got[:-3]:
            proxy.apply(ledger, method, args)
        assert ledger.run(RUN_ID).host == "worker-host" and ledger.metrics(RUN_ID) == [sent[1][3][1][0]]
        assert ledger.evals([RUN_ID])[0]["task"] == "hellaswag"


def test_non_finite_floats_come_back_as_the_same_floats(tmp_path):
    spool, task = Spool(tmp_path / "spool"), make_task(tmp_path, run_id=RUN_ID)
    spool.expect(task)
    writer = SpoolWriter(spool.folder / spool_file(task))
    row = {"step": 7, "train_loss": math.nan, "mfu": math.inf, "grad_norm": -math.inf}
    writer.put(("progress", 0, 7, row))
    writer.put(("ledger", 0, "log_metrics", (RUN_ID, [row])))
    writer.close()
    (_, _, step, back), (_, _, _, (_, [stored])) = drain(spool)
    for got in (back, stored):
        assert math.isnan(got["train_loss"]) and got["mfu"] == math.inf and got["grad_norm"] == -math.inf
    with Ledger(tmp_path) as ledger:  # and the ledger stores them as null, as it does for an inline run
        ledger.record_run(new_run())
        proxy.apply(ledger, "log_metrics", (RUN_ID, [stored]))
        assert ledger.metrics(RUN_ID) == [{"step": 7, "train_loss": None, "mfu": None, "grad_norm": None}]


def test_a_line_is_read_only_once_it_is_whole(tmp_path):
    spool, task = Spool(tmp_path / "spool"), make_task(tmp_path, run_id=RUN_ID)
    spool.expect(task)
    line = encode(("progress", 0, 1, {"step": 1}))
    path = spool.folder / spool_file(task)
    path.write_bytes(line[:10])
    assert drain(spool) == []
    write_lines(path, line[10:])
    assert drain(spool) == [("progress", 0, 1, {"step": 1})]


class Payload:
    """Unpickling this runs a command that leaves a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious(tmp_path: Path) -> dict[str, list]:
    """Files a writer of the lab folder could leave in the spool, by what makes each one bad."""
    marker = tmp_path / "pwned"
    blob = pickle.dumps(("ledger", 0, "record_run", (Payload(marker),)))
    base = {"kind": "ledger", "key": 0}
    return {
        "an old pickle frame": [struct.pack("<Q", len(blob)) + blob + b"\n"],
        "a bare pickle": [blob + b"\n"],
        "not UTF-8": [b"\xff\xfe\x00garbage\n"],
        "a JSON list": [[1, 2, 3]],
        "an unknown kind": [{"kind": "exec", "key": 0, "code": "import os"}],
        "an unknown method": [base | {"method": "__class__", "args": []}],
        "a ledger method that is not a run write": [base | {"method": "save_study", "args": ["s", "b", {}]}],
        "a private method": [base | {"method": "_write", "args": []}],
        "an extra field": [base | {"method": "heartbeat", "args": [RUN_ID, None, None], "then": "x"}],
        "another task's key": [base | {"key": 1, "method": "heartbeat", "args": [RUN_ID, None, None]}],
        "a run id that escapes runs/": [base | {"method": "record_run",
                                                "args": [{**new_run().__dict__, "id": "../../x"}]}],
        "a run field of the wrong type": [base | {"method": "record_run",
                                                  "args": [{**new_run().__dict__, "seed": "three"}]}],
        "a run with an unknown field": [base | {"method": "record_run",
                                                "args": [{**new_run().__dict__, "__class__": "x"}]}],
        "a write to another run": [base | {"method": "finish_run", "args": [RUN_ID, "running", {}, None]},
                                   base | {"method": "finish_run", "args": ["ffffffff", "finished", {}, None]}],
        "too many arguments": [base | {"method": "truncate_metrics", "args": [RUN_ID, 5, 6]}],
        "a metric row without a step": [base | {"method": "log_metrics", "args": [RUN_ID, [{"loss": 1.0}]]}],
        "a bad status": [base | {"method": "finish_run", "args": [RUN_ID, "pwned", {}, None]}],
        "a result with a bad status": [{"kind": "result", "key": 0, "run_id": RUN_ID, "status": "done",
                                        "result": {}, "error": None, "error_types": [], "worker_pid": 1}],
        "a result for another run": [{"kind": "result", "key": 0, "run_id": "ffffffff", "status": "finished",
                                      "result": {}, "error": None, "error_types": [], "worker_pid": 1}],
    }


CASES = list(malicious(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_a_malicious_spool_file_fails_its_task_and_nothing_in_it_runs(tmp_path, case):
    lines = malicious(tmp_path)[case]
    spool, task = Spool(tmp_path / "spool"), make_task(tmp_path, run_id=RUN_ID)  # a resumed run: the id is known
    spool.expect(task)
    path = spool.folder / spool_file(task)
    after = {"kind": "ledger", "key": 0, "method": "heartbeat", "args": [RUN_ID, "h", 1]}
    write_lines(path, *lines, after)  # a good line after the bad one is not applied either
    got = drain(spool)
    good_before = len(lines) - 1 if case == "a write to another run" else 0
    assert len(got) == good_before + 1, got
    kind, key, result = got[-1]
    assert (kind, key) == ("result", 0) and result.task is task and result.status == "failed"
    assert result.error.startswith(f"SpoolError: the driver refused a message in {path} (")
    assert result.error.endswith("nothing in it was applied, so run the study again to retry this run")
    assert result.error_types == ("SpoolError",)  # which no Retry policy of "Exception" retries
    assert not (tmp_path / "pwned").exists()


def test_files_the_driver_did_not_start_are_never_read(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.expect(make_task(tmp_path, key=0))
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(marker))
    for name in ("evil.msgs", "1-0.msgs", "0-1.msgs"):  # no such task, or not this attempt
        (spool.folder / name).write_bytes(blob + b"\n")
    write_lines(spool.folder / "0-0.msgs", {"kind": "progress", "key": 0, "step": 1, "row": None})
    assert drain(spool) == [("progress", 0, 1, None)] and not marker.exists()


def test_a_refused_run_is_recorded_failed_with_the_reason(tmp_path):
    """The driver's side: the run of the task ends failed in its files and its ledger row, with an event."""
    folder = runs_root(tmp_path) / RUN_ID
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"run_id": RUN_ID, "status": "running", "steps": 5}))
    with Ledger(tmp_path) as ledger:
        ledger.record_run(new_run())
        spool = Spool(tmp_path / "spool", lambda task, run_id, error: _record_refusal(ledger, task, run_id, error))
        task = make_task(tmp_path, run_id=RUN_ID)
        spool.expect(task)
        write_lines(spool.folder / spool_file(task), {"kind": "ledger", "key": 0, "method": "__class__", "args": []})
        [(_, _, result)] = drain(spool)
        run = ledger.run(RUN_ID)
        assert run.status == "failed" and run.result["error"] == result.error and result.result == run.result
        assert run.result["stop_reason"] == "spool_refused" and run.result["steps"] == 5
        assert [e["kind"] for e in ledger.events(RUN_ID)] == ["failed"]
    assert json.loads((folder / "result.json").read_text())["status"] == "failed"
