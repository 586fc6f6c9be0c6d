"""Benchmarks on a model: named tasks and suites, a model evaluated on them, the rows a run stores,
and the numbers that make scores comparable across tasks and runs; evaluation during training.

    results, unmeasured = evaluate_model(model, tokenizer, resolve_tasks(task_names("piqa,arc_easy")))
    aggregate(results)["centered"]

Scoring a stored run (loading its checkpoint, storing the results with it) is ablab.train.evaluate.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ablab.data.tokenizer import Tokenizer
from ablab.evals.scoring import TaskNotEncodable, TaskResult, encodable, evaluate_task
from ablab.evals.specfile import resolve_tasks, task_names
from ablab.evals.tasks import TaskSpec, load_examples

ProgressFn = Callable[[str, TaskResult], None]
ExamplesFn = Callable[[str, int, int], None]  # (task, examples scored, examples in the task)


def evaluate_model(model: torch.nn.Module, tokenizer: Tokenizer, specs: list[TaskSpec], limit: int | None = None,
                   num_fewshot: int = 0, seed: int = 0, batch_size: int = 16,
                   progress: ProgressFn | None = None,
                   examples: ExamplesFn | None = None) -> tuple[list[TaskResult], dict[str, str]]:
    """(results, {task: why it gave no score}): a task the model's tokenizer cannot encode at all
    (a char vocabulary) is reported, not fatal, so the other tasks' scores are kept. `progress` hears
    of each task scored, `examples(task, done, total)` of the examples scored within it."""
    results, unmeasured = [], {}
    for spec in specs:
        told = (lambda done, total, name=spec.name: examples(name, done, total)) if examples else None
        try:
            result = evaluate_task(model, tokenizer, spec, limit=limit or None, num_fewshot=num_fewshot, seed=seed,
                                   batch_size=batch_size, progress=told)
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
             "data": {"n": r.n, "skipped": r.skipped, "metric": r.metric, "metrics": r.metrics}} for r in results]


def aggregate(results: list[TaskResult] | list[dict]) -> dict:
    """The mean of centred scores over tasks, (score - chance) / (1 - chance) of the metric each task's
    report reads, with its standard error
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


class TrainingBenchmarks:
    """The benchmarks a run evaluates while it trains (eval.tasks every eval.tasks_every steps and at
    the end), for training-dynamics curves. Tasks and their data are checked when the run starts."""

    def __init__(self, tasks: str, limit: int, num_fewshot: int, tokenizer: Tokenizer | None = None):
        self.specs = resolve_tasks(task_names(tasks))
        for spec in self.specs:  # missing data or text the model cannot read fails now, not hours later
            examples = load_examples(spec)
            if tokenizer is not None and not any(encodable(tokenizer, ex) for ex in examples):
                raise TaskNotEncodable(f"Task '{spec.name}' has no example this run's {tokenizer.kind} tokenizer can "
                                       "encode; drop it from eval.tasks or train with data.tokenizer = 'byte' or 'bpe'.")
        self.limit, self.num_fewshot = limit or None, num_fewshot

    def evaluate(self, model: torch.nn.Module, tokenizer: Tokenizer, run_id: str, step: int, at: str) -> tuple[list[dict], dict]:
        results, _ = evaluate_model(model, tokenizer, self.specs, self.limit, self.num_fewshot)
        summary = {r.task: r.metrics[r.metric] for r in results} | {"centered_mean": aggregate(results)["centered"]}
        return eval_rows(run_id, step, results, self.limit, at), summary
