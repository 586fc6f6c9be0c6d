"""Executors whose workers may run on other machines: `ray` (Ray tasks) and `slurm` (Slurm jobs
through submitit). Both need the lab on a filesystem every worker sees, as a cluster's home or
project folder is: workers write their run directories there, and their ledger writes, progress and
Result go through a spool of message files in `.ablab/spool/<session>/`, which the driver reads and
applies (it alone writes the ledger). Touching `STOP` in the spool asks every run to checkpoint and
end interrupted, which is what Ctrl-C on the driver does.

A message is one line of JSON, never a pickle (ablab.executors.spool): anyone who can write the lab
folder can write the spool, so the driver reads data only, checks each message against its schema
and fails the task of a file holding anything else.

Settings come from ablab.toml:

    [executor.ray]
    address = "auto"          # an existing cluster (`ray start --head`); --address wins; none: a local instance
    cpus_per_run = 1          # Ray resource requests of each run (torch threads = cpus_per_run)
    gpus_per_run = 0

    [executor.slurm]
    partition = "gpu"
    time_min = 120            # the job's time limit
    cpus_per_run = 4
    gpus_per_run = 1
    mem_gb = 32
    account = "my-project"    # optional
    cluster = "slurm"         # "local": submitit runs the jobs as local processes (to try a set-up)
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import importlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from ablab.errors import UserError
from ablab.executors.base import Executor, OnRun, ProgressFor, Result, Task, error_kinds
from ablab.executors.pool import Driver, become_worker, catch_signals, work
from ablab.executors.spool import STOP_FILE, Spool, SpoolWriter, spool_file
from ablab.lab import section_settings
from ablab.store.provenance import host_info
from ablab.store.record import RunRecord, now_iso, runs_root

STOP_CHECK_SECONDS = 0.5


def run_remote(task: Task, spool: str, send_progress: bool, threads: int) -> None:
    """A Ray task's or Slurm job's body: train `task`, speaking to the driver through `spool`."""
    if not task.lab.is_dir():
        raise UserError(f"The lab {task.lab} is not visible on {socket.gethostname()}; put the lab on a "
                        "filesystem every worker mounts at the same path.")
    become_worker(threads)
    provenance = task.request.provenance
    if provenance is not None:  # the driver gathered git and versions; the host is this one
        request = dataclasses.replace(task.request, provenance=({**provenance[0], "host": host_info()}, provenance[1]))
        task = dataclasses.replace(task, request=request)
    stop_file, checked = Path(spool) / STOP_FILE, [0.0, False]

    def stopped() -> bool:
        if not checked[1] and time.monotonic() - checked[0] > STOP_CHECK_SECONDS:
            checked[:] = [time.monotonic(), stop_file.exists()]
        return checked[1]

    channel = SpoolWriter(Path(spool) / spool_file(task))
    try:
        work(task, channel, stopped, send_progress)
    finally:
        channel.close()


def need(module: str, executor: str) -> Any:
    """Import the optional package an executor runs on, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"The {executor} executor needs the optional extra '{executor}'; "
                        f"install it with pip install 'ablab[{executor}]'.") from None


def failure(err: BaseException) -> tuple[str, tuple[str, ...]]:
    """(message, class names) of a worker's error, unwrapping what the engine wrapped it in."""
    cause = getattr(err, "cause", None)  # Ray wraps a task's exception in a RayTaskError
    if not isinstance(cause, BaseException):
        cause = err
    return f"{type(cause).__name__}: {cause}", error_kinds(cause)


class RemoteExecutor(Executor):
    """Runs tasks on workers started by an engine (the package `module`); subclasses say how (`engine`).
    A missing package or a bad setting is reported here, before the study's plan is probed."""
    module: str
    settings_types: dict[str, Any] = {}

    def __init__(self, workers: int | None = None, retry: Any = None, lab: Path | None = None,
                 address: str | None = None):
        super().__init__(workers, retry, lab, address)
        self.settings = section_settings(lab, f"executor.{self.name}", self.settings_types) if lab else {}
        self.requested = workers
        self.package = need(self.module, self.name)
        self.check()

    def check(self) -> None:
        """Refuse settings the engine cannot work with."""

    @abc.abstractmethod
    def engine(self, spool: Spool, lab: Path) -> contextlib.AbstractContextManager:
        """A context that starts the engine and yields (submit, death, on_stop) for the Driver."""

    def run(self, tasks: list[Task], ledger: Any, progress_for: ProgressFor | None = None,
            on_run: OnRun | None = None) -> Iterator[Result]:
        if not tasks:
            return
        lab = tasks[0].lab
        self.workers = self.requested or len(tasks)  # by default every run is handed to the engine's queue
        spool = Spool(lab / ".ablab" / "spool" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                      lambda task, run_id, error: _record_refusal(ledger, task, run_id, error))
        try:
            with self.engine(spool, lab) as (submit, death, on_stop), catch_signals() as signalled:
                def expect_and_submit(task: Task, send_progress: bool) -> Any:
                    spool.expect(task)
                    return submit(task, send_progress)
                driver = Driver(self, ledger, tasks, progress_for, expect_and_submit, death, on_run=on_run)
                yield from driver.loop(spool, signalled, lambda: on_stop(driver))
        finally:
            spool.remove()


def _record_refusal(ledger: Any, task: Task, run_id: str | None, error: str) -> dict:
    """A run whose worker's messages were refused ends failed, with the reason, like a run that raised."""
    if run_id is None or not (runs_root(task.lab) / run_id).is_dir():
        return {}
    record = RunRecord(run_id, runs_root(task.lab) / run_id, ledger)
    record.log_event("failed", -1, error)
    return record.update_result(status="failed", stop_reason="spool_refused", error=error, finished_at=now_iso())


class RayExecutor(RemoteExecutor):
    """Each run a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` GPUs."""
    name, module = "ray", "ray"
    settings_types = {"address": str, "cpus_per_run": (int, float), "gpus_per_run": (int, float)}

    @contextlib.contextmanager
    def engine(self, spool: Spool, lab: Path):
        ray = self.package
        address = self.address or self.settings.get("address")
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=address, include_dashboard=False)
            except (ConnectionError, RuntimeError) as err:
                raise UserError(f"Could not reach a Ray cluster at {address} ({err}); start one with "
                                "`ray start --head` or give its address with --address.") from None
        cpus, gpus = self.settings.get("cpus_per_run", 1), self.settings.get("gpus_per_run", 0)
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_remote)

        def submit(task: Task, send_progress: bool) -> Any:
            return remote.remote(task, str(spool.folder), send_progress, max(1, int(cpus)))

        def death(ref: Any) -> tuple[str, tuple] | None:
            if not ray.wait([ref], timeout=0)[0]:
                return None
            try:
                ray.get(ref)
            except Exception as err:  # the task raised or its worker died: its run fails, the rest go on
                return failure(err)
            return None

        try:
            yield submit, death, lambda driver: spool.stop()
        finally:
            if started:
                ray.shutdown()


class SlurmExecutor(RemoteExecutor):
    """Each run a Slurm job submitted through submitit, with the partition, time and resources of
    [executor.slurm]; its logs stay in .ablab/slurm/."""
    name, module = "slurm", "submitit"
    settings_types = {"partition": str, "time_min": int, "cpus_per_run": int, "gpus_per_run": int,
                      "mem_gb": (int, float), "account": str, "cluster": str}

    def check(self) -> None:
        cluster = self.settings.get("cluster", "slurm")
        if cluster not in ("slurm", "local"):
            raise UserError(f"[executor.slurm] cluster must be \"slurm\" or \"local\", not {cluster!r}.")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("sbatch is not on this machine, so jobs cannot be submitted; run on a Slurm login "
                            "node, or set cluster = \"local\" under [executor.slurm] in ablab.toml to try locally.")

    @contextlib.contextmanager
    def engine(self, spool: Spool, lab: Path):
        cluster = self.settings.get("cluster", "slurm")
        executor = self.package.AutoExecutor(folder=lab / ".ablab" / "slurm" / spool.folder.name, cluster=cluster)
        cpus = self.settings.get("cpus_per_run", 1)
        executor.update_parameters(**self._parameters(cpus))
        jobs: dict[int, Any] = {}

        def submit(task: Task, send_progress: bool) -> Any:
            executor.update_parameters(name=f"ablab-{task.arm}-{task.seed}")
            job = jobs[task.key] = executor.submit(run_remote, task, str(spool.folder), send_progress, cpus)
            if cluster == "local" and hasattr(job, "_results_timeout_s"):
                job._results_timeout_s = 1  # one disk: a dead job's missing result needs no wait for NFS
            return job

        def on_stop(driver: Driver) -> None:
            spool.stop()
            for key, job in jobs.items():  # still queued: nothing started, cancel rather than wait for a node
                if key in driver.in_flight and key not in driver.run_ids and job.state == "PENDING":
                    job.cancel(check=False)

        yield submit, _job_death, on_stop

    def _parameters(self, cpus: int) -> dict:
        given = {"timeout_min": self.settings.get("time_min"), "cpus_per_task": cpus,
                 "gpus_per_node": self.settings.get("gpus_per_run", 0), "mem_gb": self.settings.get("mem_gb"),
                 "slurm_partition": self.settings.get("partition"), "slurm_account": self.settings.get("account")}
        return {key: value for key, value in given.items() if value is not None}


def _job_death(job: Any) -> tuple[str, tuple] | None:
    if not job.done():
        return None
    err = job.exception()
    return None if err is None else failure(err)


