"""Benchmarks on runs: evaluate a model on named tasks, store the results with the run, and the
numbers that make scores comparable across tasks and runs.

    report = evaluate_run(lab, "3f2a9c1d", task_names("piqa,arc_easy"), limit=500)
    report.aggregate["centered"], report.per_hour, report.per_million_params

Every result is stored twice, like every metric: in the run directory (`evals.jsonl`, so the run
stays self-describing and travels with `ablab export`) and in the ledger (`eval_results`), keyed by
the step evaluated, the task's version and the settings (few-shot, example limit, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ablab.data import Tokenizer
from ablab.errors import UserError
from ablab.evals.scoring import TaskNotEncodable, TaskResult, encodable, evaluate_task
from ablab.evals.tasks import TaskSpec

# Named groups of tasks, for --tasks and eval.tasks. `plan` is the research plan's suite, with its
# categories mapped to real datasets (docs/benchmarks.md): sentence completion -> hellaswag,
# simple QA -> arc_easy, word association -> lambada, reading comprehension -> squad.
SUITES = {
    "plan": ("hellaswag", "piqa", "siqa", "lambada", "arc_easy", "squad", "arithmetic"),
    "choice": ("hellaswag", "piqa", "siqa", "arc_easy"),  # multiple choice only: fast, log-likelihood
}
PLAN_CATEGORIES = {
    "sentence completion": "hellaswag", "simple QA": "arc_easy", "word association": "lambada",
    "reading comprehension": "squad", "simple arithmetic": "arithmetic",
}

ProgressFn = Callable[[str, TaskResult], None]


def task_names(text: str | list[str]) -> list[str]:
    """Task names from a comma-separated list (or a list), suites expanded, repeats dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in (p.strip() for p in parts):
        for name in SUITES.get(part, (part,)) if part else ():
            if name not in names:
                names.append(name)
    return names


def resolve_tasks(names: list[str]) -> list[TaskSpec]:
    """The task specs, every name checked before any model runs (registered names and .toml spec files)."""
    from ablab.evals import resolve_task

    if not names:
        raise UserError("No benchmark tasks named; give e.g. --tasks piqa,arc_easy, or a suite: "
                        f"{', '.join(SUITES)}.")
    return [resolve_task(name) for name in names]


def evaluate_model(model: torch.nn.Module, tokenizer: Tokenizer, specs: list[TaskSpec], limit: int | None = None,
                   num_fewshot: int = 0, seed: int = 0, batch_size: int = 16,
                   progress: ProgressFn | None = None) -> tuple[list[TaskResult], dict[str, str]]:
    """(results, {task: why it gave no score}): a task the model's tokenizer cannot encode at all
    (a char vocabulary) is reported, not fatal, so the other tasks' scores are kept."""
    results, unmeasured = [], {}
    for spec in specs:
        try:
            result = evaluate_task(model, tokenizer, spec, limit=limit or None, num_fewshot=num_fewshot, seed=seed,
                                   batch_size=batch_size)
        except TaskNotEncodable as err:
            unmeasured[spec.name] = str(err)
            continue
        results.append(result)
        if progress:
            progress(spec.name, result)
    return results, unmeasured


def eval_rows(run_id: str, step: int, results: list[TaskResult], limit: int | None, at: str) -> list[dict]:
    """Ledger rows (and evals.jsonl lines) for results of one evaluation of a run at `step`."""
    return [{"run_id": run_id, "step": step, "task": r.task, "task_version": r.version,
             "num_fewshot": r.num_fewshot, "example_limit": limit or 0, "seed": r.seed, "created_at": at,
             "data": {"n": r.n, "skipped": r.skipped, "metrics": r.metrics}} for r in results]


def aggregate(results: list[TaskResult] | list[dict]) -> dict:
    """The mean of centred scores over tasks, (acc - chance) / (1 - chance), with its standard error
    sqrt(sum of squared per-task errors) / k (tasks scored on independent examples)."""
    metrics = [r.metrics if isinstance(r, TaskResult) else r["metrics"] for r in results]
    if not metrics:
        return {"centered": float("nan"), "centered_stderr": float("nan"), "tasks": 0}
    centered = [m["centered"] for m in metrics]
    errors = [m.get("centered_stderr", m.get("acc_stderr", float("nan"))) for m in metrics]
    stderr = math.sqrt(sum(e * e for e in errors)) / len(errors)
    return {"centered": sum(centered) / len(centered), "centered_stderr": stderr, "tasks": len(metrics)}


def per_budget(score: float, train_seconds: float | None, params: int | None) -> tuple[float | None, float | None]:
    """The score per training hour and per million parameters (None where the run lacks the number)."""
    per_hour = score / (train_seconds / 3600) if train_seconds else None
    per_million = score / (params / 1e6) if params else None
    return per_hour, per_million


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
                 seed: int = 0, batch_size: int = 16, progress: ProgressFn | None = None) -> EvalReport:
    """Evaluate a run's newest intact checkpoint on the named tasks and store the results with the
    run; an error when the model's tokenizer can read none of them."""
    report = evaluate_specs(lab, run_id, resolve_tasks(names), limit, num_fewshot, seed, batch_size, progress)
    if not report.results:
        raise TaskNotEncodable(" ".join(report.unmeasured.values()))
    return report


def evaluate_specs(lab: Path, run_id: str, specs: list[TaskSpec], limit: int | None = None, num_fewshot: int = 0,
                   seed: int = 0, batch_size: int = 16, progress: ProgressFn | None = None) -> EvalReport:
    """evaluate_run for resolved task specs; tasks the tokenizer cannot read are in report.unmeasured."""
    from ablab import hardware
    from ablab.record import RunRecord, now_iso
    from ablab.sampling import load_run_model

    hardware.keep_freed_memory()  # batched scoring reuses large buffers: 1.4x faster on CPU (benchmarks/eval_speed.py)
    record = RunRecord.open(lab, run_id)
    model, tokenizer, step = load_run_model(lab, record.run_id)
    model.to(hardware.pick_device("auto"))  # the GPU when there is one
    results, unmeasured = evaluate_model(model, tokenizer, specs, limit, num_fewshot, seed, batch_size, progress)
    record.log_evals(eval_rows(record.run_id, step, results, limit, now_iso()))
    run = record.result()
    report = EvalReport(record.run_id, step, results, limit, run.get("params"), run.get("train_seconds"),
                        aggregate(results), unmeasured=unmeasured)
    report.per_hour, report.per_million_params = per_budget(report.aggregate["centered"], report.train_seconds,
                                                            report.params)
    return report


class TrainingBenchmarks:
    """The benchmarks a run evaluates while it trains (eval.tasks every eval.tasks_every steps and at
    the end), for training-dynamics curves. Tasks and their data are checked when the run starts."""

    def __init__(self, tasks: str, limit: int, num_fewshot: int, tokenizer: Tokenizer | None = None):
        from ablab.evals.tasks import load_examples

        self.specs = resolve_tasks(task_names(tasks))
        for spec in self.specs:  # missing data or text the model cannot read fails now, not hours later
            examples = load_examples(spec)
            if tokenizer is not None and not any(encodable(tokenizer, ex) for ex in examples):
                raise TaskNotEncodable(f"Task '{spec.name}' has no example this run's {tokenizer.kind} tokenizer can "
                                       "encode; drop it from eval.tasks or train with data.tokenizer = 'byte' or 'bpe'.")
        self.limit, self.num_fewshot = limit or None, num_fewshot

    def evaluate(self, model: torch.nn.Module, tokenizer: Tokenizer, run_id: str, step: int, at: str) -> tuple[list[dict], dict]:
        results, _ = evaluate_model(model, tokenizer, self.specs, self.limit, self.num_fewshot)
        summary = {r.task: r.metrics["acc"] for r in results} | {"centered_mean": aggregate(results)["centered"]}
        return eval_rows(run_id, step, results, self.limit, at), summary
