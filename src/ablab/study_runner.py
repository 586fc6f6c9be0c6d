"""Plan, run and judge a study: the verification view, every arm over the same seeds, a verdict.

Runs go through ablab.train, so a finished run with the same content key is reused (the baseline's
own runs included) and an interrupted one is resumed; re-running a study trains only what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ablab import baselines, config as config_mod, executors, stats
from ablab.config import Config
from ablab.errors import UserError
from ablab.data import prepare_data
from ablab.evals.runner import TrainingBenchmarks
from ablab.ledger import Ledger
from ablab.provenance import collect as collect_provenance
from ablab.record import content_key
from ablab.study import BASELINE_ARM, Arm, StudySpec, arms, check, parse, planned_steps
from ablab.train import Training


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
    """Train every (seed, arm) that is not finished yet on `executor` (ablab.executors), dispatched
    seeds outermost so that an interrupted study already holds complete pairs. Reuse and resume are
    decided here, on the driver, before anything is dispatched. `executor` is a name (with `workers`
    and `retries`) or an Executor already set up (ablab.executors.get). Returns 'finished', 'failed' (some
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
    its cells; the statuses the runs ended with (studies and ladders alike)."""
    tasks, keys = _decide_cells(lab, ledger, study, seeds, study_arms, say)
    states = set()
    for result in runner.run(tasks, ledger, progress_for):
        task = result.task
        if result.run_id is not None:
            for arm, seed in keys[task.key]:  # cells with the same content key share the run
                ledger.link_study_run(study, arm, seed, result.run_id)
        failure = f": {result.error}" if result.status == "failed" else ""
        say(f"{task.arm} seed {task.seed}: run {result.run_id or '(none)'} {result.status}{failure}")
        states.add(result.status)
    return states


def _decide_cells(lab: Path, ledger: Ledger, study: str, seeds: list[int], study_arms: list[Arm],
                  say: Callable[[str], None]) -> tuple[list[executors.Task], dict[int, list[tuple[str, int]]]]:
    """(the tasks to dispatch, seeds outermost; {task key: the (arm, seed) cells its run serves}).
    A cell already finished in the study is skipped, an interrupted one resumed, one whose content
    key has a finished run anywhere in the lab is linked to it, and cells that share a content key
    share one task, so that two workers never train the same computation."""
    provenance = collect_provenance(lab)
    identities: dict[str, dict] = {}
    tasks: list[executors.Task] = []
    keys: dict[int, list[tuple[str, int]]] = {}
    by_content: dict[str, int] = {}
    for seed in seeds:
        for arm in study_arms:
            cell = (arm.name, seed)
            linked = ledger.study_runs(study).get(cell)
            run = ledger.runs(ids=[linked])[0] if linked and ledger.has_run(linked) else None
            if run is not None and run.status in ("finished", "diverged"):
                continue
            common = {"key": len(tasks), "lab": lab, "arm": arm.name, "seed": seed}
            if run is not None and run.status == "interrupted":
                tasks.append(executors.Task(**common, run_id=run.id))
                keys[len(tasks) - 1] = [cell]
                continue
            cfg = with_seed(arm.config, seed, f"{study}/{arm.name}")
            data_key = repr(cfg.data)
            if data_key not in identities:  # a corpus error stops the study here, before anything trains
                data = prepare_data(cfg.data)
                identities[data_key] = {"data_fingerprint": data.fingerprint,
                                        "tokenizer_fingerprint": data.tokenizer.fingerprint}
            identity = identities[data_key]
            key = content_key(config_mod.config_hash(cfg), seed, identity["data_fingerprint"],
                              provenance[0]["code_version"])
            done = ledger.find_finished(key)
            if done is not None:
                ledger.link_study_run(study, arm.name, seed, done.id)
                say(f"{arm.name} seed {seed}: run {done.id} reused")
            elif key in by_content:
                keys[by_content[key]].append(cell)
            else:
                by_content[key] = len(tasks)
                tasks.append(executors.Task(**common, config=cfg, identity=identity, provenance=provenance))
                keys[len(tasks) - 1] = [cell]
    return tasks, keys


def _score_benchmarks(lab: Path, spec: StudySpec, arm: str, seed: int, say: Callable[[str], None]) -> None:
    from ablab.study_benchmarks import score_run

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


def status(lab: Path, name: str) -> tuple[dict, dict[tuple[str, int], Any]]:
    """(the study's record, {(arm, seed): Run or None}) for every arm and seed of the study."""
    with Ledger(lab) as ledger:
        record = ledger.study(name)
        if record is None:
            known = ", ".join(s["name"] for s in ledger.studies()) or "none yet"
            raise UserError(f"No study '{name}' in this lab (known: {known}); start it with `ablab study run FILE`.")
        links = ledger.study_runs(name)
        runs = {r.id: r for r in ledger.runs(ids=list(links.values()))} if links else {}
    spec = record["spec"]
    cells = {(arm, seed): runs.get(links.get((arm, seed))) for arm in spec["arms"] for seed in spec["seeds"]}
    return record, cells


def metric_value(run, metric: str, read_at: str, ledger: Ledger | None = None) -> float:
    """The prediction's metric of one run (final, best, or at the first logged row at or past
    `tokens:N`); NaN when the run has not finished (or diverged) or never logged it."""
    if run is None or run.status != "finished":
        return math.nan
    if read_at.startswith("tokens:"):
        threshold = int(read_at.split(":", 1)[1].replace("_", ""))
        rows = (ledger.metrics(run.id) if ledger else [])
        value = next((r[metric] for r in rows if r.get("tokens", 0) >= threshold and metric in r), None)
    elif read_at == "best" and metric == "val_loss":
        value = run.result.get("best", {}).get("val_loss")
    else:
        value = run.result.get("final", {}).get(metric)
    return math.nan if value is None else float(value)


@dataclass
class ArmResult:
    arm: str
    changes: dict
    values: list[float]  # the metric per seed (NaN where missing)
    summary: stats.Summary
    comparison: stats.Paired | None = None
    verdict: stats.Verdict | None = None


def analyze(lab: Path, name: str) -> tuple[dict, list[ArmResult], float]:
    """(study record, per-arm results with paired comparisons and verdicts, baseline noise floor)."""
    record, cells = status(lab, name)
    spec = record["spec"]
    if spec.get("kind") == "ladder":
        raise UserError(f"{name} is a scaling ladder, which has no hypothesis to judge; "
                        f"`ablab scaling fit --study {name}` analyses it.")
    metric, read_at, seeds = spec["metric"], spec["read_at"], spec["seeds"]
    with Ledger(lab) as ledger:
        values = {arm: [metric_value(cells[(arm, s)], metric, read_at, ledger) for s in seeds] for arm in spec["arms"]}
    base = values[BASELINE_ARM]
    floor = stats.noise_floor([v for v in base if not math.isnan(v)])
    results = []
    for arm, changes in spec["arms"].items():
        present = [v for v in values[arm] if not math.isnan(v)]
        result = ArmResult(arm, changes, values[arm], stats.summarize(present) if present else None)
        pairs = [(a, b) for a, b in zip(values[arm], base) if not (math.isnan(a) or math.isnan(b))]
        if arm != BASELINE_ARM and len(pairs) >= 2:
            result.comparison = stats.paired([a for a, _ in pairs], [b for _, b in pairs])
            result.verdict = stats.verdict(result.comparison, spec["direction"], spec["min_effect"], floor)
        results.append(result)
    return record, results, floor
