"""Benchmarks: tasks by name (lm-eval-harness prompts) or from a TOML spec file, scored by
log-likelihood (multiple choice, last word) or by greedy generation (exact match, F1).

    from ablab.evals import evaluate_task, resolve_task
    result = evaluate_task(model, tokenizer, resolve_task("hellaswag"), limit=1000, num_fewshot=0)
    result = evaluate_task(model, tokenizer, resolve_task("tasks/capitals.toml"))

    tasks.py       versioned task registry and the examples of each task
    specfile.py    tasks from a TOML file over a jsonl (literal or template choices, label maps, partial
                   scoring, the metric reports read); a name or a file resolved; suites (no torch)
    loglik.py      the log-likelihood core: tokenized pairs, windows, log P(continuation | context)
    packing.py     an example's choices packed after their shared context, scored in one row
    scoring.py     a task scored on a model: acc, acc_norm, acc_per_byte, acc_per_token, stderr, chance,
                   centred score of the metric the task reads
    generation.py  greedy decoding with stop strings; SQuAD exact match, F1, bootstrap stderr
    runner.py      a model evaluated on named tasks; the rows a run stores; evaluation during training
    harness.py     lm-evaluation-harness bridge (optional extra)
"""

import importlib

# Each name is imported from its module on first use, so that `ablab.evals.specfile` (which the
# analysis layer reads task names with) does not pull in torch through the scoring modules.
_HOME = {"bootstrap_stderr": "generation", "exact_match": "generation", "generate_until": "generation",
         "normalize_answer": "generation", "token_f1": "generation", "encode_pair": "loglik",
         "loglikelihood": "loglik", "TaskResult": "scoring", "evaluate_task": "scoring",
         "fewshot_contexts": "scoring", "generation_metrics": "scoring", "load_spec_file": "specfile",
         "resolve_task": "specfile", "TASKS": "tasks", "Example": "tasks", "TaskRegistry": "tasks",
         "TaskSpec": "tasks", "load_examples": "tasks", "METRICS": "tasks"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ablab.evals' has no attribute '{name}'")
    return getattr(importlib.import_module(f"ablab.evals.{_HOME[name]}"), name)
