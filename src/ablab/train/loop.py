"""The training loop: one run from config (or from its last checkpoint) to a finished record.

Stops at max_steps, max_tokens or max_seconds, whichever comes first. A NaN or inf loss ends the
run as `diverged`; SIGINT or SIGTERM writes a checkpoint and ends it as `interrupted`; a resumed run
continues bitwise where the checkpoint left it (batches are keyed by (seed, step), RNG state is
restored).
"""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ablab.config import Config, budget_steps
from ablab.data.prepare import prepare_data
from ablab.data.sampler import BatchSampler, val_batches
from ablab.data.tokens import PreparedData
from ablab.errors import CheckpointError, UserError
from ablab.evals.prompts import continue_prompts, load_prompts
from ablab.evals.runner import TrainingBenchmarks
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer, lr_factor, set_lr
from ablab.store import checkpoint
from ablab.store.record import RunRecord, now_iso
from ablab.train import autobatch, diagnostics, distributed, hardware

SPIKE_WINDOW = 50  # steps in the running median a loss spike is measured against
SPIKE_MIN_HISTORY = 10


HEARTBEAT_SECONDS = 30  # the ledger hears from a live run at least this often


@dataclass
class Outcome:
    run_id: str
    status: str  # finished | diverged | interrupted
    result: dict
    reused: bool = False  # a finished run with the same content key was returned instead of training


ProgressFn = Callable[[int, dict | None], None]  # (step, metrics row or None)


class Training:
    def __init__(self, cfg: Config, data: PreparedData | None = None, world: distributed.World | None = None,
                 lab: Path | None = None):
        """`lab` holds the cache of "auto" batch choices (ablab.train.autobatch); a resumed run's config
        comes with its recorded choice already applied (autobatch.recorded)."""
        self.cfg, self.world = cfg, world or distributed.World()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = self.world.place(hardware.pick_device(cfg.train.device))
        if self.device.type == "cpu":
            hardware.keep_freed_memory()
        self.autocast = hardware.autocast_dtype(self.device, cfg.train.precision)
        self.data = data or prepare_data(cfg.data)
        self.requested, self.auto_choice = cfg, None  # the config as asked for, and what its "auto" became
        if cfg.auto_batch:  # rank 0 probes; every rank trains on its choice
            chosen = autobatch.resolve(cfg, self.data.tokenizer.vocab_size, lab, self.world.size) \
                if self.world.is_main else None
            self.cfg, self.auto_choice = self.world.share(chosen)
            cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg.model, self.data.tokenizer.vocab_size, cfg.data.seq_len).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device.type)
        self.sampler = BatchSampler(self.data.train, cfg.data.seq_len, cfg.data.batch_size, cfg.seed)
        self.val = list(val_batches(self.data.val, cfg.data.seq_len, cfg.eval.tokens, cfg.data.batch_size))
        self.loop = checkpoint.LoopState()
        names = diagnostics.chosen(cfg) if self.world.is_main else ()  # rank 0 alone writes metric rows
        self.diagnostics = diagnostics.Diagnostics(names, self.model, self.optimizer) if names else None
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        self.train_forward = self.forward  # evaluation stays on self.forward: rank 0 runs it alone, without DDP
        if self.world.size > 1:
            ddp = self.world.wrap(self.model)
            self.train_forward = torch.compile(ddp) if cfg.train.compile else ddp
        # A measured peak is one rank's (its device, or its share of the cores); MFU is against all of them.
        self.peak_flops = cfg.train.peak_flops or self.world.size * hardware.measured_peak_flops(
            self.device.type, self.autocast or torch.float32)
        self.peak_raised = False  # whether this run has logged that it computes faster than that peak
        self.benchmarks = (TrainingBenchmarks(cfg.eval.tasks, cfg.eval.tasks_limit, cfg.eval.tasks_fewshot,
                                              self.data.tokenizer) if cfg.eval.tasks else None)
        self.prompts: list[str] = []  # eval.prompts' suite, read in attach (it is the lab's file or a bundled one)
        self.stop_signal: str | None = None
        self.eval_mark = 0  # shares of the budget used at the last evaluation (see eval_due)
        self.last_heartbeat = time.time()
        self.wall_start = time.perf_counter()

    def attach(self, record: RunRecord, resume: bool) -> None:
        """Write into `record`; when resuming, continue from its newest intact checkpoint. The run's
        lock is taken first (RunBusyError while another process trains it, before any checkpoint is
        read) and held until `run` returns."""
        self.record = record
        record.hold()
        try:
            # The lab is the folder above .ablab/runs/<id>; only rank 0 writes samples.
            self.prompts = load_prompts(record.dir.parents[2], self.cfg.eval.prompts) if self.world.is_main else []
            record.heartbeat()  # this process now owns the run: its host and pid go into the ledger
            if self.auto_choice is not None and self.world.is_main:
                autobatch.save_choice(record.dir, self.auto_choice)
                record.log_event("auto_batch", self.loop.step, self.auto_choice.sentence(self.requested),
                                 batch_size=self.auto_choice.batch_size, grad_accum=self.auto_choice.grad_accum)
            if resume:
                self._restore()
        except BaseException:
            record.release()
            raise

    def _restore(self) -> None:
        path, skipped = checkpoint.latest_valid(self.record.checkpoints_dir)
        if path is None and skipped:
            reasons = "; ".join(f"{bad.name}: {reason}" for bad, reason in skipped)
            raise CheckpointError(
                f"Every checkpoint of run {self.record.run_id} is damaged ({reasons}); delete "
                f"{self.record.checkpoints_dir} to restart it from step 0, or start a new run.")
        for bad, reason in skipped:
            self.record.log_event("corrupt_checkpoint", int(bad.name.split("-")[1]),
                                  f"skipped {bad.name}: {reason}")
        if path is None:
            self.record.log_event("resume", 0, "no intact checkpoint; starting from step 0")
            self.record.truncate_metrics(after_step=0)
            self.record.truncate_samples(after_step=0)
            return
        self.loop = checkpoint.load(path, self.model, self.optimizer)
        self.record.truncate_metrics(after_step=self.loop.step)
        self.record.truncate_samples(after_step=self.loop.step)
        self.record.log_event("resume", self.loop.step, f"resumed from {path.name}")

    # -- budget ---------------------------------------------------------------------------------
    def progress_fraction(self) -> float:
        """Fraction of the budget used: steps against the resolved step budget (the same number however
        the budget is spelled, as the config hash assumes) or seconds against max_seconds, the larger."""
        steps, seconds = budget_steps(self.cfg), self.cfg.train.max_seconds
        return max(self.loop.step / steps if steps else 0.0, self.loop.train_seconds / seconds if seconds else 0.0)

    def stop_reason(self) -> str | None:
        t, loop = self.cfg.train, self.loop
        if t.max_steps and loop.step >= t.max_steps:
            return "max_steps"
        if t.max_tokens and loop.tokens_seen + self.cfg.tokens_per_step > t.max_tokens:
            return "max_tokens"
        if t.max_seconds and loop.train_seconds >= t.max_seconds:
            return "max_seconds"
        return None

    # -- one step ---------------------------------------------------------------------------------
    def _out_of_memory(self) -> UserError:
        """The sentence for a step that ran out of memory (logged as an event too)."""
        d, chosen = self.cfg.data, self.auto_choice is not None and self.requested.data.batch_size == "auto"
        fix = ("lower train.memory_budget_mb, which data.batch_size = \"auto\" filled" if chosen else
               'lower data.batch_size, or set data.batch_size = "auto" to take the largest that fits')
        message = (f"Out of memory at step {self.loop.step} training micro-batches of {d.batch_size} x {d.seq_len} "
                   f"tokens on {self.device.type}; start a new run that does: {fix} (train.grad_accum = \"auto\" "
                   "with train.global_batch_tokens keeps the global batch).")
        self.record.log_event("out_of_memory", self.loop.step, message)
        return UserError(message)

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over grad_accum micro-batches; returns (loss, grad norm before clipping)."""
        step, accum = self.loop.step, self.cfg.train.grad_accum
        set_lr(self.optimizer, lr_factor(self.cfg.schedule, step, self.progress_fraction()))
        total = 0.0
        try:
            for micro in range(accum):
                x, y = self.world.shard(*self.sampler.batch(step, micro))
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                with self._autocast():
                    loss = self.train_forward(x, y, step) / accum
                loss.backward()
                total += loss.item()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                raise
            raise self._out_of_memory() from None
        total = self.world.mean(total)  # the whole batch's loss, the same on every rank
        diagnosed = self.diagnostics is not None and diagnostics.diagnosed_next(self)
        if diagnosed:
            self.diagnostics.read_gradients(step + 1)
        clip = self.cfg.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
        if math.isfinite(total) and math.isfinite(grad_norm):
            self.optimizer.step()
            if diagnosed:
                self.diagnostics.read_update(step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation metrics on rank 0; {} on other ranks, which write nothing."""
        if not self.world.is_main:
            return {}
        self.model.eval()
        losses = []
        for x, y in self.val:
            with self._autocast():
                losses.append(self.forward(x.to(self.device), y.to(self.device)).item())
        self.model.train()
        val_loss = sum(losses) / len(losses)
        meta = self.data.meta
        bits_per_byte = val_loss / math.log(2) * meta["n_val_tokens"] / meta["val_bytes"]
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)), "val_bpb": bits_per_byte}

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None) -> Outcome:
        """Train to the end of the budget (or a stop) and write the final record; releases the run's lock."""
        try:
            return self._run(progress or (lambda step, row: None))
        finally:
            self.record.release()

    def _run(self, progress: ProgressFn) -> Outcome:
        self.record.update_result(status="running", started_at=self.record.result().get("started_at", now_iso()),
                                  **self.static_facts())
        hardware.reset_peak_memory(self.device)
        self.model.train()
        if self.loop.step == 0 and (self.cfg.eval.every or self.cfg.eval.points > 1):
            self._log_row({}, self.evaluate(), progress)
        self.eval_mark = self._eval_mark()
        if self.loop.step == 0 and self.cfg.eval.tasks_every:
            self.run_benchmarks()
        with _stop_signals(self):
            reason = self.stop_reason()
            while reason is None:
                reason = self._one_step(progress)
        return self.finish(reason, progress)

    def _one_step(self, progress: ProgressFn) -> str | None:
        """Train one step and do what falls due after it; returns a stop reason or None."""
        started = time.perf_counter()
        loss, grad_norm = self.train_step()
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        # Every rank acts on rank 0's clock, signals and divergence check: budgets, schedule and stop stay in step.
        seconds, stopped_by, finite = self.world.share((time.perf_counter() - started, self.stop_signal, finite))
        if not finite:
            self.record.log_event("diverged", self.loop.step, f"non-finite loss {loss} or grad norm {grad_norm}",
                                  loss=repr(loss), grad_norm=repr(grad_norm))
            return "diverged"
        loop, window = self.loop, self.loop.window
        self._check_spike(loss)
        loop.step += 1
        loop.tokens_seen += self.cfg.tokens_per_step
        loop.train_seconds += seconds
        window["loss"] += loss
        window["steps"] += 1
        window["tokens"] += self.cfg.tokens_per_step
        window["seconds"] += seconds
        reason = self.stop_reason() or ("interrupted" if stopped_by else None)
        eval_due = self.eval_due() and reason is None  # the end's evaluation is finish's
        if loop.step % self.cfg.train.log_every == 0 or eval_due:
            train_row = self._train_row(window, grad_norm)
            self._log_row(train_row, self.evaluate() if eval_due else {}, progress)
            loop.window = checkpoint.new_window()
        else:
            progress(loop.step, None)
            if time.time() - self.last_heartbeat > HEARTBEAT_SECONDS:
                self.record.heartbeat()
                self.last_heartbeat = time.time()
        if self.cfg.eval.tasks_every and loop.step % self.cfg.eval.tasks_every == 0 and reason is None:
            self.run_benchmarks()
        if loop.step % self.cfg.train.checkpoint_every == 0 and reason is None:
            self.save_checkpoint()
        return reason

    def _eval_mark(self) -> int:
        """How many of the eval.points - 1 equal shares of the budget are used up: an evaluation falls
        due each time this grows, so steps, tokens and seconds budgets all get eval.points of them."""
        return math.floor(self.progress_fraction() * (self.cfg.eval.points - 1) + 1e-9)

    def eval_due(self) -> bool:
        """Whether validation falls due after the step just taken (call it once per step)."""
        if self.cfg.eval.every:
            return self.loop.step % self.cfg.eval.every == 0
        mark = self._eval_mark()
        due, self.eval_mark = mark > self.eval_mark, mark
        return due

    def run_benchmarks(self) -> dict:
        """Score the model on eval.tasks now; the results go to evals.jsonl and the ledger."""
        if self.benchmarks is None or not self.world.is_main:
            return {}
        rows, summary = self.benchmarks.evaluate(self.model, self.data.tokenizer, self.record.run_id,
                                                 self.loop.step, now_iso())
        self.record.log_evals(rows)
        self.record.log_line("benchmarks " + " ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
        return summary

    def _train_row(self, window: dict, grad_norm: float) -> dict:
        tokens_per_s = window["tokens"] / window["seconds"] if window["seconds"] else 0.0
        lrs = {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizer.optimizers.items()}
        achieved = self.model.flops_per_token() * tokens_per_s
        if achieved > self.peak_flops:
            self._raise_peak(achieved)
        return {"train_loss": window["loss"] / window["steps"], "grad_norm": grad_norm, **lrs,
                "tokens_per_s": tokens_per_s, "mfu": achieved / self.peak_flops,
                "peak_memory_mb": hardware.peak_memory_mb(self.device)}

    def _raise_peak(self, achieved: float) -> None:
        """The run computes faster than the peak MFU is measured against, so that peak is wrong (measured
        while the machine was busy, or set too low): an MFU over 100% is never recorded; the peak becomes
        what the run achieved, for this run and, when measured, for later runs on this machine."""
        given = bool(self.cfg.train.peak_flops)
        fix = ("raise train.peak_flops to this device's peak" if given
               else "earlier MFU values of this run read high; later runs on this machine start from the new peak")
        if not self.peak_raised:  # one event per run; a run still speeding up raises the peak again, quietly
            self.record.log_event("peak_flops_raised", self.loop.step,
                                  f"the run reached {achieved / 1e9:,.1f} GFLOP/s, above the "
                                  f"{'given' if given else 'measured'} peak of {self.peak_flops / 1e9:,.1f} GFLOP/s; "
                                  f"from here MFU is against the fastest rate the run reaches; {fix}",
                                  achieved=achieved, peak_flops=self.peak_flops)
            self.peak_raised = True
        self.peak_flops = achieved
        self.record.update_result(peak_flops=achieved)
        if not given and self.world.is_main:
            hardware.remember_peak_flops(self.device, self.autocast or torch.float32, achieved / self.world.size)

    def _log_row(self, train_row: dict, val_row: dict, progress: ProgressFn) -> None:
        loop = self.loop
        row = {"step": loop.step, "tokens": loop.tokens_seen, "elapsed": round(loop.train_seconds, 4),
               **train_row, **val_row}
        if "val_loss" in val_row and self.diagnostics is not None:
            row |= self.diagnostics.row(loop.step, self.val[0][0], self._autocast)
        if "val_loss" in val_row and val_row["val_loss"] < loop.best_val_loss:
            loop.best_val_loss, loop.best_val_step = val_row["val_loss"], loop.step
        self.record.log_metrics(row)
        self.record.log_line(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        if "val_loss" in val_row and self.prompts:  # each evaluation, the end's included, continues the suite
            self.record.log_samples(continue_prompts(self.model, self.data.tokenizer, self.prompts,
                                                     self.cfg.eval.prompt_tokens, self.cfg.seed, loop.step))
        progress(loop.step, row)

    def _check_spike(self, loss: float) -> None:
        recent = self.loop.recent_losses
        if len(recent) >= SPIKE_MIN_HISTORY:
            median = statistics.median(recent)
            if loss > self.cfg.train.spike_factor * median:
                self.record.log_event("loss_spike", self.loop.step,
                                      f"loss {loss:.4f} is above {self.cfg.train.spike_factor} x median {median:.4f}",
                                      loss=loss, median=median)
        recent.append(loss)
        del recent[:-SPIKE_WINDOW]

    def save_checkpoint(self) -> Path | None:
        if not self.world.is_main:  # every rank holds the same weights; one copy on disk is enough
            return None
        return checkpoint.save(self.record.checkpoints_dir, self.model, self.optimizer, self.loop,
                               self.cfg.train.keep_checkpoints)

    def finish(self, reason: str, progress: ProgressFn) -> Outcome:
        status = {"diverged": "diverged", "interrupted": "interrupted"}.get(reason, "finished")
        final = self.evaluate() if status == "finished" else {}
        if final:
            self._log_row({}, final, progress)
            if self.benchmarks is not None:
                final["benchmarks"] = self.run_benchmarks()
        if status != "diverged":
            self.save_checkpoint()
        if status == "interrupted":
            self.record.log_event("interrupted", self.loop.step, f"stopped by {self.stop_signal}; resumable")
        result = self.record.update_result(
            status=status, stop_reason=reason, finished_at=now_iso(), **self.summary(final))
        self.record.log_line(f"run {self.record.run_id} {status} ({reason}) at step {self.loop.step}")
        return Outcome(self.record.run_id, status, result)

    def static_facts(self) -> dict:
        return {"params": self.model.n_params(), "non_embedding_params": self.model.n_params(non_embedding=True),
                "flops_per_token": self.model.flops_per_token(), "vocab_size": self.data.tokenizer.vocab_size,
                "data": self.data.meta, "data_fingerprint": self.data.fingerprint,
                "tokenizer_fingerprint": self.data.tokenizer.fingerprint, "hardware": hardware.describe(self.device),
                "peak_flops": self.peak_flops, "tokens_per_step": self.cfg.tokens_per_step,
                "batch_size": self.cfg.data.batch_size, "grad_accum": self.cfg.train.grad_accum,
                **({"auto_batch": self.auto_choice.__dict__} if self.auto_choice else {})}

    def summary(self, final_eval: dict) -> dict:
        loop, rows = self.loop, self.record.metrics()
        last_train = next((r for r in reversed(rows) if "train_loss" in r), {})
        final = {k: last_train.get(k) for k in ("train_loss", "tokens_per_s", "mfu", "grad_norm")}
        final |= final_eval | {"peak_memory_mb": hardware.peak_memory_mb(self.device)}
        return {"steps": loop.step, "tokens_seen": loop.tokens_seen, "train_seconds": round(loop.train_seconds, 3),
                "wall_seconds": round(time.perf_counter() - self.wall_start, 3), "final": final,
                "best": {"val_loss": loop.best_val_loss if loop.best_val_step >= 0 else None,
                         "step": loop.best_val_step if loop.best_val_step >= 0 else None},
                "events": len(self.record.events())}


def _out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _stop_signals(training: Training):
    """SIGINT/SIGTERM ask the loop to checkpoint and stop after the current step."""
    def handler(signum, frame):
        training.stop_signal = signal.Signals(signum).name
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
