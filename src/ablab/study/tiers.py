"""Three-tier baselines: what a benchmark score means for a baseline config.

Tier 1 is chance, computed from each task's data. Tier 2 is the baseline trained for a few steps
(the plan's "untrained" 100 steps: the architecture's bias, barely any learning), tier 3 after more
(the plan's 1000 steps). Each trained tier runs at every seed of the baseline. The plan's criteria
are then checked per task:
- consistency: the standard deviation of accuracy over seeds is below 2 points (0.02) in each tier;
- monotonicity: trained > untrained > chance in mean accuracy.
Both hold "for most tasks" when they fail on fewer than half; the report names the tasks that fail.

    report = run_tiers(lab, "cpu@2026-11-21", steps=(20, 100), tasks="choice,lambada", limit=200)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ablab import config as config_mod
from ablab.errors import UserError
from ablab.evals.specfile import resolve_tasks, task_names
from ablab.store.ledger import Ledger
from ablab.study.baselines import load
from ablab.train.evaluate import evaluate_specs
from ablab.train.launch import start_run

PLAN_STEPS = (100, 1000)
CONSISTENCY_STD = 0.02  # the plan's "<2% variance" across runs, read as 2 accuracy points of std


@dataclass
class TaskTiers:
    task: str
    chance: float | None = None
    accs: dict[int, list[float]] = field(default_factory=dict)  # steps -> acc at each seed
    unmeasurable: str = ""  # why the task gives no score for this baseline (e.g. its tokenizer)

    def mean(self, steps: int) -> float:
        return statistics.fmean(self.accs[steps])

    def std(self, steps: int) -> float:
        values = self.accs[steps]
        return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class TierReport:
    baseline: str
    steps: tuple[int, int]
    seeds: list[int]
    tasks: list[TaskTiers]
    inconsistent: list[str] = field(default_factory=list)
    not_monotone: list[str] = field(default_factory=list)

    @property
    def scaled_down(self) -> bool:
        return tuple(self.steps) != PLAN_STEPS

    @property
    def measured(self) -> list[TaskTiers]:
        return [t for t in self.tasks if not t.unmeasurable]

    @property
    def consistent(self) -> bool:
        return len(self.inconsistent) < len(self.measured) / 2

    @property
    def monotone(self) -> bool:
        return len(self.not_monotone) < len(self.measured) / 2

    def to_dict(self) -> dict:
        return {"steps": list(self.steps), "seeds": self.seeds, "scaled_down": self.scaled_down,
                "consistent": self.consistent, "monotone": self.monotone, "inconsistent": self.inconsistent,
                "not_monotone": self.not_monotone,
                "tasks": {t.task: {"chance": t.chance, "unmeasurable": t.unmeasurable,
                                   "acc": {str(s): v for s, v in t.accs.items()}} for t in self.tasks}}


def tier_config(baseline_cfg, ref: str, steps: int, seed: int):
    """The baseline trained for `steps` steps: the step budget replaces every other budget, and the
    warmup is capped at a tenth of the steps so a short tier still reaches its peak learning rate."""
    warmup = min(baseline_cfg.schedule.warmup_steps, max(steps // 10, 1))
    every = baseline_cfg.eval.every if baseline_cfg.eval.every <= steps else 0
    return config_mod.replace(baseline_cfg, {
        "seed": seed, "name": f"{ref}/tier-{steps}/seed{seed}", "train.max_steps": steps, "train.max_tokens": 0,
        "train.max_seconds": 0.0, "schedule.warmup_steps": warmup, "eval.every": every, "eval.tasks": ""})


def run_tiers(lab: Path, ref: str, steps: tuple[int, int] = PLAN_STEPS, tasks: str = "choice,lambada,arithmetic",
              limit: int | None = 200, progress_for: Callable | None = None, say: Callable = print,
              on_cell: Callable | None = None) -> TierReport:
    """Train (or reuse) each tier at each seed, score it on the tasks, check the plan's criteria,
    and store the report with the baseline in the ledger. `progress_for(steps, seed)` gives a run's
    (step, row) callback; `on_cell(steps, seed, status)` hears of each tier run as it is done."""
    if not 0 < steps[0] < steps[1]:
        raise UserError(f"--steps {steps[0]},{steps[1]} must be two increasing positive step counts, e.g. 100,1000.")
    baseline = load(lab, ref)
    specs = resolve_tasks(task_names(tasks))
    by_task = {spec.name: TaskTiers(spec.name) for spec in specs}
    for n_steps in steps:
        for seed in baseline.seeds:
            cfg = tier_config(baseline.config, ref, n_steps, seed)
            outcome = start_run(cfg, lab, progress_for(n_steps, seed) if progress_for else None)
            if outcome.status != "finished":
                raise UserError(f"Tier run {outcome.run_id} ({n_steps} steps, seed {seed}) ended {outcome.status}; "
                                f"run `ablab baseline tiers {ref}` again to finish it.")
            say(f"{n_steps} steps, seed {seed}: run {outcome.run_id} {'reused' if outcome.reused else 'trained'}")
            if on_cell is not None:
                on_cell(n_steps, seed, "reused" if outcome.reused else outcome.status)
            _score(lab, outcome.run_id, specs, by_task, n_steps, limit)
    report = TierReport(ref, tuple(steps), baseline.seeds, list(by_task.values()))
    check(report)
    with Ledger(lab) as ledger:
        ledger.update_baseline_data(baseline.name, baseline.date, {"tiers": report.to_dict()})
    return report


def _score(lab: Path, run_id: str, specs, by_task: dict[str, TaskTiers], n_steps: int, limit: int | None) -> None:
    report = evaluate_specs(lab, run_id, specs, limit)  # stored with the run, like `ablab eval`
    for task, reason in report.unmeasured.items():
        by_task[task].unmeasurable = reason
    for result in report.results:
        by_task[result.task].chance = result.metrics["chance"]
        by_task[result.task].accs.setdefault(n_steps, []).append(result.metrics[result.metric])


def check(report: TierReport) -> None:
    """Fill in which measured tasks break consistency and which break trained > untrained > chance."""
    untrained, trained = report.steps
    for t in report.measured:
        if max(t.std(untrained), t.std(trained)) >= CONSISTENCY_STD:
            report.inconsistent.append(t.task)
        if not t.mean(trained) > t.mean(untrained) > (t.chance or 0.0):
            report.not_monotone.append(t.task)
