"""Benchmarks: tasks by name (lm-eval-harness prompts) or from a TOML spec file, scored by
log-likelihood (multiple choice, last word) or by greedy generation (exact match, F1).

    from ablab.evals import evaluate_task, resolve_task
    result = evaluate_task(model, tokenizer, resolve_task("hellaswag"), limit=1000, num_fewshot=0)
    result = evaluate_task(model, tokenizer, resolve_task("tasks/capitals.toml"))
"""

from ablab.evals.generation import bootstrap_stderr, exact_match, generate_until, normalize_answer, token_f1
from ablab.evals.scoring import (TaskResult, encode_pair, evaluate_task, fewshot_contexts, generation_metrics,
                                 loglikelihood)
from ablab.evals.specfile import load_spec_file, resolve_task
from ablab.evals.tasks import TASKS, Example, TaskRegistry, TaskSpec, load_examples

__all__ = [
    "TASKS", "Example", "TaskRegistry", "TaskResult", "TaskSpec",
    "bootstrap_stderr", "encode_pair", "evaluate_task", "exact_match", "fewshot_contexts", "generate_until",
    "generation_metrics", "load_examples", "load_spec_file", "loglikelihood", "normalize_answer",
    "resolve_task", "token_f1",
]
