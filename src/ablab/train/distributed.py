"""Data-parallel training of one run over N processes (`ablab run --nproc N`).

`launch` relaunches the command line as N workers through torch's elastic launcher (torchrun). In
each worker `join` opens the process group (gloo on CPU, nccl on CUDA). Every rank builds the same
model, takes its slice of rows of the same (seed, step) batch and trains a DistributedDataParallel
copy; DDP averages the gradients, so the update equals the single-process update on the whole
batch up to the order of float additions. Rank 0 alone writes the record, evaluates and saves
checkpoints, and its clock, stop signals and divergence check are what every rank acts on, so ranks
never disagree about when to stop or what learning rate a step uses.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ablab.config import Config
from ablab.data.prepare import prepare_data
from ablab.errors import ConfigError
from ablab.train import hardware

WORKER_ENV = ("RANK", "WORLD_SIZE")  # set by torchrun in every worker it starts


def in_worker() -> bool:
    """True inside a process that torchrun (or another torch launcher) started."""
    return all(name in os.environ for name in WORKER_ENV)


def machine_threads() -> int:
    with contextlib.suppress(AttributeError):  # sched_getaffinity is Linux-only
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def launch(cfg: Config, args: Sequence[str], nproc: int | None = None, override: bool = True) -> int:
    """Run `ablab <args>` as `nproc` (default cfg.train.nproc) workers on this machine, with the
    override train.nproc=N appended when `override` (a new run); returns the launcher's exit code."""
    nproc = nproc or cfg.train.nproc
    if cfg.data.batch_size != "auto" and cfg.data.batch_size % nproc:
        raise ConfigError(f"data.batch_size ({cfg.data.batch_size}) does not divide by the {nproc} "
                          f"training processes; pick a batch size that is a multiple of {nproc}.")
    # Tokenised once here: a corpus error is one line before any worker starts, and workers find the cache warm.
    prepare_data(cfg.data)
    # torchrun would otherwise set 1 thread per worker and print a banner saying so.
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, machine_threads() // nproc)))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               # Ranks print the same lines; rank 0 speaks for all (a failing rank is still named by torchrun).
               "--local-ranks-filter=0", "-m", "ablab", *_worker_args(args, nproc, override)]
    # Its own session: a Ctrl-C reaches torchrun once, through us, not twice (a second one aborts its shutdown).
    launcher = subprocess.Popen(command, env=env, start_new_session=True)
    forwarded = []

    def forward(signum, frame):
        # torchrun passes the signal on to the workers, whose rank 0 checkpoints and marks the run
        # interrupted; this process waits for that rather than dying first and orphaning them.
        forwarded.append(signum)
        launcher.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = launcher.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # torchrun exits 1 after passing a signal on; 130 is what an interrupted single-process run exits with.
    return 130 if forwarded and code != 0 else code


def _worker_args(args: Sequence[str], nproc: int, override: bool = True) -> list[str]:
    """`args` without `--nproc N` (torchrun's parser reads every argument and rejects --nproc as an
    ambiguous abbreviation of its own --nproc-per-node), spelled instead as the override
    train.nproc=N when `override`."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg == "--nproc":
            skip_value = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return [*kept, f"train.nproc={nproc}"] if override else kept


@dataclass(frozen=True)
class World:
    """This process's place among the ranks training one run; a world of one trains alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU when there are several."""
        if self.size > 1 and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of a global batch; together the ranks cover it exactly once."""
        if self.size == 1:
            return x, y
        rows = x.shape[0] // self.size
        part = slice(self.rank * rows, (self.rank + 1) * rows)
        return x[part], y[part]

    def mean(self, value: float) -> float:
        """The mean of `value` over ranks, the same float on every rank: the whole batch's loss."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.item() / self.size

    def share(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` wrapped so that backward averages gradients over ranks."""
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        # Buffers are built identically from the config on every rank; syncing them before every
        # forward would add a collective per step that changes nothing.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others: it fills caches they then only read."""
        if self.size > 1 and not self.is_main:
            dist.barrier()
        yield
        if self.size > 1 and self.is_main:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def join(cfg: Config) -> World:
    """This worker's World, opening the process group on first use; a world of one outside torchrun."""
    if not in_worker() or int(os.environ["WORLD_SIZE"]) == 1:
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.data.batch_size != "auto" and cfg.data.batch_size % world.size:
        raise ConfigError(f"data.batch_size ({cfg.data.batch_size}) does not divide by the {world.size} "
                          f"training processes; pick a batch size that is a multiple of {world.size}.")
    if not dist.is_initialized():
        device = hardware.pick_device(cfg.train.device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    if not cfg.train.threads:  # ranks share the machine's cores rather than each taking all of them
        torch.set_num_threads(max(1, machine_threads() // world.size))
    return world


class FollowerRecord:
    """The run record as a rank other than 0 sees it: its id and checkpoints, and no write path, so
    a run's files and ledger rows are written once however many ranks train it."""

    def __init__(self, run_id: str, run_dir: Path):
        self.run_id, self.dir = run_id, run_dir
        self._result: dict = {}

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def update_result(self, **fields) -> dict:
        self._result |= fields
        return dict(self._result)

    def result(self) -> dict:
        return dict(self._result)

    def metrics(self) -> list[dict]:
        return []

    def events(self) -> list[dict]:
        return []

    def heartbeat(self) -> None:
        pass

    def hold(self) -> None:  # rank 0 holds the run's lock for every rank
        pass

    def release(self) -> None:
        pass

    def log_event(self, *args, **fields) -> None:
        pass

    def log_metrics(self, row: dict) -> None:
        pass

    def log_line(self, line: str) -> None:
        pass

    def log_evals(self, rows: list) -> None:
        pass

    def truncate_metrics(self, after_step: int) -> None:
        pass

    def log_samples(self, rows: list) -> None:
        pass

    def truncate_samples(self, after_step: int) -> None:
        pass
