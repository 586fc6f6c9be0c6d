"""A stored run scored on benchmarks: its newest intact checkpoint evaluated on named tasks, the
results stored with the run, and the numbers that make scores comparable across runs.

    report = evaluate_run(lab, "3f2a9c1d", task_names("piqa,arc_easy"), limit=500)
    report.aggregate["centered"], report.per_hour, report.per_million_params

Every result is stored twice, like every metric: in the run directory (`evals.jsonl`, so the run
stays self-describing and travels with `ablab export`) and in the ledger (`eval_results`), keyed by
the step evaluated, the task's version and the settings (few-shot, example limit, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablab.evals.runner import ExamplesFn, ProgressFn, aggregate, eval_rows, evaluate_model, per_budget
from ablab.evals.scoring import TaskNotEncodable, TaskResult
from ablab.evals.specfile import resolve_tasks
from ablab.evals.tasks import TaskSpec
from ablab.store.record import RunRecord, now_iso
from ablab.train import hardware
from ablab.train.sampling import load_run_model


@dataclass
class EvalReport:
    run_id: str
    step: int
    results: list[TaskResult]
    limit: int | None
    params: int | None = None
    train_seconds: float | None = None
    aggregate: dict = field(default_factory=dict)
    per_hour: float | None = None
    per_million_params: float | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)  # task -> why it gave no score

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "step": self.step, "limit": self.limit, "params": self.params,
                "unmeasured": self.unmeasured,
                "train_seconds": self.train_seconds, "aggregate": self.aggregate, "per_hour": self.per_hour,
                "per_million_params": self.per_million_params, "tasks": [r.to_dict() for r in self.results]}


def evaluate_run(lab: Path, run_id: str, names: list[str], limit: int | None = None, num_fewshot: int = 0,
                 seed: int = 0, batch_size: int = 16, progress: ProgressFn | None = None,
                 metric: str | None = None, examples: ExamplesFn | None = None) -> EvalReport:
    """Evaluate a run's newest intact checkpoint on the named tasks and store the results with the
    run; an error when the model's tokenizer can read none of them. `metric` replaces the metric each
    multiple-choice task's report reads (ablab.evals.tasks.METRICS)."""
    report = evaluate_specs(lab, run_id, resolve_tasks(names, metric), limit, num_fewshot, seed, batch_size,
                            progress, examples)
    if not report.results:
        raise TaskNotEncodable(" ".join(report.unmeasured.values()))
    return report


def evaluate_specs(lab: Path, run_id: str, specs: list[TaskSpec], limit: int | None = None, num_fewshot: int = 0,
                   seed: int = 0, batch_size: int = 16, progress: ProgressFn | None = None,
                   examples: ExamplesFn | None = None) -> EvalReport:
    """evaluate_run for resolved task specs; tasks the tokenizer cannot read are in report.unmeasured.
    `progress` hears of each task scored, `examples(task, done, total)` of its examples as they are."""
    hardware.keep_freed_memory()  # batched scoring reuses large buffers: 1.4x faster on CPU (benchmarks/eval_speed.py)
    record = RunRecord.open(lab, run_id)
    model, tokenizer, step = load_run_model(lab, record.run_id)
    model.to(hardware.pick_device("auto"))  # the GPU when there is one
    results, unmeasured = evaluate_model(model, tokenizer, specs, limit, num_fewshot, seed, batch_size, progress,
                                         examples)
    record.log_evals(eval_rows(record.run_id, step, results, limit, now_iso()))
    run = record.result()
    report = EvalReport(record.run_id, step, results, limit, run.get("params"), run.get("train_seconds"),
                        aggregate(results), unmeasured=unmeasured)
    report.per_hour, report.per_million_params = per_budget(report.aggregate["centered"], report.train_seconds,
                                                            report.params)
    return report
