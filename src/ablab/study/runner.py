"""Plan, run and judge a study: the verification view, every arm over the same seeds, a verdict.

Runs go through ablab.train.launch, so a finished run with the same content key is reused (the baseline's
own runs included) and an interrupted one is resumed; re-running a study trains only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ablab import config as config_mod
from ablab.analysis import stats
from ablab.config import Config
from ablab.data.tokens import prepare_data
from ablab.errors import UserError
from ablab.evals.runner import TrainingBenchmarks
from ablab.executors import base as executors
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect as collect_provenance
from ablab.study import baselines
from ablab.study.benchmarks import score_run
from ablab.study.spec import Arm, StudySpec, arms, check, parse, planned_steps
from ablab.train import launch
from ablab.train.loop import Training


@dataclass
class PlanRow:
    arm: Arm
    diff: list[tuple[str, Any, Any]]  # (key, baseline value, arm value)
    steps: int | None
    tokens: int | None
    runs: int
    seconds_per_step: float | None = None
    peak_memory_mb: float | None = None

    @property
    def est_seconds(self) -> float | None:
        cfg = self.arm.config
        if cfg.train.max_seconds and not self.steps:
            return cfg.train.max_seconds * self.runs
        if self.seconds_per_step is None or self.steps is None:
            return None
        return self.seconds_per_step * self.steps * self.runs


@dataclass
class Plan:
    spec: StudySpec
    baseline: baselines.Baseline
    rows: list[PlanRow]
    frozen: dict[str, Any] = field(default_factory=dict)

    @property
    def total_runs(self) -> int:
        return sum(r.runs for r in self.rows)

    @property
    def est_seconds(self) -> float | None:
        parts = [r.est_seconds for r in self.rows]
        return None if any(p is None for p in parts) else sum(parts)


def make_plan(lab: Path, spec_path: Path, probe: bool = True) -> Plan:
    """Load the study and its baseline, expand and check the arms, and (with `probe`) measure
    each arm's step time and peak memory with a few real training steps."""
    spec = parse(spec_path)
    baseline = baselines.load(lab, spec.baseline)
    study_arms = arms(spec, baseline)
    check(spec, baseline, study_arms)
    if spec.benchmarks:  # an unknown task or missing benchmark data fails before any run trains
        TrainingBenchmarks(",".join(spec.benchmarks), limit=1, num_fewshot=0)
    rows = []
    for arm in study_arms:
        steps = planned_steps(arm.config)
        tokens = steps * arm.config.tokens_per_step if steps is not None else None
        diff = config_mod.diff(study_arms[0].config, arm.config)
        rows.append(PlanRow(arm, diff, steps, tokens, len(spec.seeds)))
        if probe:
            rows[-1].seconds_per_step, rows[-1].peak_memory_mb = Training(arm.config).probe()
    cosmetic = config_mod.cosmetic_keys() | set(spec.variables) | {"seed", "train.max_steps", "train.max_tokens",
                                                                   "train.max_seconds"}
    frozen = {k: v for k, v in config_mod.flatten(study_arms[0].config).items() if k not in cosmetic}
    return Plan(spec, baseline, rows, frozen)


def with_seed(cfg: Config, seed: int, name: str) -> Config:
    return config_mod.replace(cfg, {"seed": seed, "name": name})


def run_study(lab: Path, plan: Plan, progress_for: Callable[[str, int], Any] | None = None,
              say: Callable[[str], None] = print, executor: str | executors.Executor = "inline",
              workers: int | None = None, retries: int = 0) -> str:
    """Train every (seed, arm) that is not finished yet on `executor` (ablab.executors.base), dispatched
    seeds outermost so that an interrupted study already holds complete pairs. Reuse and resume are
    decided here, on the driver, before anything is dispatched. `executor` is a name (with `workers`
    and `retries`) or an Executor already set up (ablab.executors.base.get). Returns 'finished', 'failed' (some
    run raised; the others went on, and running the study again retries it) or 'interrupted'."""
    spec = plan.spec
    runner = executor if isinstance(executor, executors.Executor) else \
        executors.get(executor, workers, executors.Retry(retries), lab)
    with Ledger(lab) as ledger:
        ledger.save_study(spec.name, spec.baseline, _spec_record(plan))
        states = train_cells(lab, ledger, spec.name, spec.seeds, [row.arm for row in plan.rows], runner,
                             progress_for, say)
    if "interrupted" in states:
        return "interrupted"
    if spec.benchmarks:
        for seed in spec.seeds:
            for row in plan.rows:
                _score_benchmarks(lab, spec, row.arm.name, seed, say)
    return "failed" if "failed" in states else "finished"


def train_cells(lab: Path, ledger: Ledger, study: str, seeds: list[int], study_arms: list[Arm],
                runner: executors.Executor, progress_for: Callable[[str, int], Any] | None,
                say: Callable[[str], None]) -> set[str]:
    """Train every (seed, arm) cell of `study` that is not finished on `runner`, linking each run to
    its cells as soon as its record exists (so that a study killed mid-run resumes it when run again);
    the statuses the runs ended with (studies and ladders alike)."""
    tasks, keys = _decide_cells(lab, ledger, study, seeds, study_arms, say)

    def link(task: executors.Task, run_id: str) -> None:
        for arm, seed in keys[task.key]:  # cells with the same content key share the run
            ledger.link_study_run(study, arm, seed, run_id)

    states = set()
    for result in runner.run(tasks, ledger, progress_for, on_run=link):
        task = result.task
        failure = f": {result.error}" if result.status == "failed" else ""
        say(f"{task.arm} seed {task.seed}: run {result.run_id or '(none)'} {result.status}{failure}")
        states.add(result.status)
    return states


def _decide_cells(lab: Path, ledger: Ledger, study: str, seeds: list[int], study_arms: list[Arm],
                  say: Callable[[str], None]) -> tuple[list[executors.Task], dict[int, list[tuple[str, int]]]]:
    """(the tasks to dispatch, seeds outermost; {task key: the (arm, seed) cells its run serves}).
    A cell whose linked run has the cell's config is skipped when that run is finished and resumed
    when it is interrupted (a link is written when a run is created, so a killed study's runs are
    linked); a run of the cell that was created but not yet linked when the study was killed is
    resumed too. Otherwise a finished run with the cell's content key anywhere in the lab is linked,
    and cells that share a content key share one task, so that two workers never train the same
    computation. A linked run that is still training elsewhere stops the study here."""
    provenance = collect_provenance(lab)
    identities: dict[str, dict] = {}
    tasks: list[executors.Task] = []
    keys: dict[int, list[tuple[str, int]]] = {}
    by_content: dict[str, int] = {}
    links = ledger.study_runs(study)  # read once: this loop only links cells it has not read yet
    unlinked = _unlinked_runs(ledger, study, links)

    def add(cell: tuple[str, int], request: launch.Request, content: str | None) -> None:
        tasks.append(executors.Task(len(tasks), cell[0], cell[1], request))
        keys[len(tasks) - 1] = [cell]
        if content is not None:
            by_content[content] = len(tasks) - 1

    for seed in seeds:
        for arm in study_arms:
            cell = (arm.name, seed)
            cfg = with_seed(arm.config, seed, f"{study}/{arm.name}")
            run = _linked_run(ledger, links.get(cell), cfg)
            if run is not None and run.status in ("finished", "diverged"):
                continue
            if run is not None and run.status == "running":
                raise UserError(f"Run {run.id} of {arm.name} seed {seed} is still training (pid {run.pid} on "
                                f"{run.host}); wait for it to end or stop it, then run the study again.")
            if run is not None and run.status == "interrupted":
                add(cell, launch.Request(lab, run_id=run.id), run.content_key)
                continue
            data_key = repr(cfg.data)
            if data_key not in identities:  # a corpus error stops the study here, before anything trains
                identities[data_key] = launch.identify(prepare_data(cfg.data))
            decision = launch.decide(lab, cfg, ledger, provenance, identities[data_key])
            orphan = unlinked.pop((cfg.name, decision.key), None)
            if decision.reused is not None:
                ledger.link_study_run(study, arm.name, seed, decision.reused.id)
                say(f"{arm.name} seed {seed}: run {decision.reused.id} reused")
            elif decision.key in by_content:
                shared = by_content[decision.key]
                keys[shared].append(cell)
                if tasks[shared].run_id is not None:  # a resumed run is linked now, as a new one is when created
                    ledger.link_study_run(study, arm.name, seed, tasks[shared].run_id)
            elif orphan is not None:
                ledger.link_study_run(study, arm.name, seed, orphan.id)
                add(cell, launch.Request(lab, run_id=orphan.id), decision.key)
            else:
                add(cell, decision.request, decision.key)
    return tasks, keys


def _linked_run(ledger: Ledger, run_id: str | None, cfg: Config) -> Run | None:
    """The run linked to a cell, unless it is gone or has another config (the design changed since)."""
    if run_id is None or not ledger.has_run(run_id):
        return None
    run = ledger.runs(ids=[run_id])[0]
    return run if run.config_hash == config_mod.config_hash(cfg) else None


def _unlinked_runs(ledger: Ledger, study: str, links: dict) -> dict[tuple[str, str], Run]:
    """(name, content key) -> an interrupted run of this study that no cell links: one that was
    created, then killed before its link was written (or whose row was rebuilt from its directory)."""
    linked = set(links.values())
    return {(run.name, run.content_key): run for run in ledger.runs(status="interrupted")
            if run.id not in linked and run.name.startswith(f"{study}/")}


def _score_benchmarks(lab: Path, spec: StudySpec, arm: str, seed: int, say: Callable[[str], None]) -> None:
    with Ledger(lab) as ledger:
        run_id = ledger.study_runs(spec.name).get((arm, seed))
        finished = run_id is not None and ledger.runs(ids=[run_id])[0].status == "finished"
    if finished:
        scored = score_run(lab, spec.benchmarks, spec.benchmark_limit, run_id)
        if scored:
            say(f"{arm} seed {seed}: scored {', '.join(scored)}")


def _spec_record(plan: Plan) -> dict:
    spec = plan.spec
    return {"name": spec.name, "category": spec.category, "date": spec.date, "question": spec.question,
            "mechanism": spec.mechanism, "prediction": spec.prediction_text, "falsification": spec.falsification,
            "metric": spec.prediction.metric, "direction": spec.prediction.direction,
            "min_effect": spec.prediction.min_effect, "read_at": spec.prediction.read_at,
            "variables": spec.variables, "axis": spec.axis, "budget": spec.budget, "seeds": spec.seeds,
            "expected": spec.expected, "benchmarks": spec.benchmarks, "benchmark_limit": spec.benchmark_limit,
            "arms": {r.arm.name: r.arm.changes for r in plan.rows},
            "frozen": plan.frozen,
            "path": str(spec.path) if spec.path else None}


def conclude(lab: Path, name: str, notes: dict[str, str]) -> None:
    """Store the researcher's interpretation, decision and follow-up with the study (the sheet's
    sections 9-11, kept when it is regenerated); empty parts leave what was written before."""
    with Ledger(lab) as ledger:
        if ledger.study(name) is None:
            raise UserError(f"No study '{name}' in this lab; run it first with `ablab study run FILE`.")
        ledger.update_study_data(name, {"conclusion": {k: v for k, v in notes.items() if v}})


def run_baseline(lab: Path, ref: str, progress_for=None, say=print) -> dict[str, float]:
    """Train (or reuse) the baseline at each of its seeds, then measure and store its seed-noise
    floor: the standard deviation over seeds of each final metric."""
    baseline = baselines.load(lab, ref)
    finals = []
    for seed in baseline.seeds:
        cfg = config_mod.replace(baseline.config, {"seed": seed, "name": f"{ref}/seed{seed}"})
        outcome = launch.start_run(cfg, lab, progress_for(ref, seed) if progress_for else None)
        say(f"{ref} seed {seed}: run {outcome.run_id} {'reused' if outcome.reused else outcome.status}")
        if outcome.status == "interrupted":
            raise UserError(f"Baseline {ref} was interrupted at seed {seed}; run `ablab baseline run {ref}` again to finish it.")
        if outcome.status == "finished":
            finals.append(outcome.result.get("final", {}))
    floor = {key: stats.noise_floor([f[key] for f in finals if f.get(key) is not None])
             for key in ("val_loss", "val_bpb", "train_loss", "tokens_per_s", "peak_memory_mb")}
    with Ledger(lab) as ledger:
        ledger.update_baseline_data(baseline.name, baseline.date, {"noise_floor": floor, "finished_seeds": len(finals)})
    return floor
