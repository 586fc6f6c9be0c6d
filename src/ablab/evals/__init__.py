"""Benchmarks: tasks by name (lm-eval-harness prompts) and log-likelihood scoring of a model on them.

    from ablab.evals import TASKS, evaluate_task
    result = evaluate_task(model, tokenizer, TASKS["hellaswag"], limit=1000, num_fewshot=0)
"""

from ablab.evals.scoring import TaskResult, encode_pair, evaluate_task, fewshot_contexts, loglikelihood
from ablab.evals.tasks import TASKS, Example, TaskRegistry, TaskSpec, load_examples

__all__ = [
    "TASKS", "Example", "TaskRegistry", "TaskResult", "TaskSpec",
    "encode_pair", "evaluate_task", "fewshot_contexts", "load_examples", "loglikelihood",
]
