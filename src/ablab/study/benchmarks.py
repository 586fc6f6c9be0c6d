"""A study's benchmarks (design.benchmarks): every finished run of every arm scored on the named
tasks. Results live in the ledger with the run (ablab.train.evaluate), so a study run again scores
only the runs that lack a result for a task's current version; ablab.analysis.benchmarks sets each
arm's scores against the baseline arm's.
"""

from __future__ import annotations

from pathlib import Path

from ablab.evals.specfile import resolve_tasks, task_names
from ablab.store.ledger import Ledger
from ablab.train.evaluate import evaluate_specs


def score_run(lab: Path, benchmarks: list[str], limit: int, run_id: str) -> list[str]:
    """Evaluate the run on the tasks it has no stored result for (at these settings); the tasks scored."""
    specs = resolve_tasks(task_names(benchmarks))
    with Ledger(lab) as ledger:
        done = {(e["task"], e["task_version"]) for e in ledger.evals([run_id])
                if e["example_limit"] == limit and e["num_fewshot"] == 0 and e["seed"] == 0}
    missing = [spec for spec in specs if (spec.name, spec.version) not in done]
    if missing:
        evaluate_specs(lab, run_id, missing, limit=limit or None)
    return [spec.name for spec in missing]
