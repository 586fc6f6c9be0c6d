"""The effect of each arm at every size of a family's study, side by side, for its sheets.

A study against a family baseline runs as STUDY.SIZE against NAME@DATE/SIZE (ablab.study.sizes);
each of those sheets shows all of its sizes, so that a change that helps the small model and not
the medium one is seen at once.
"""

from __future__ import annotations

from pathlib import Path

from ablab.analysis.runs import markdown_table
from ablab.analysis.verdicts import BASELINE_ARM, analyze, status
from ablab.store.ledger import Ledger


def family_studies(lab: Path, name: str) -> list[tuple[str, str]]:
    """(size, study name) of every size of the family study that `name` is one size of, in the
    order they were recorded; [] for a study against a single baseline."""
    with Ledger(lab) as ledger:
        studies = ledger.studies()
    record = next((s for s in studies if s["name"] == name), None)
    family, _, size = (record or {}).get("baseline", "").partition("/")
    if not size or not name.endswith(f".{size}"):
        return []
    stem = name[: -len(size) - 1]
    found = []
    for study in studies:
        ref, _, other = study["baseline"].partition("/")
        if ref == family and other and study["name"] == f"{stem}.{other}":
            found.append((other, study["name"]))
    return found


def _params(lab: Path, study: str) -> str:
    """' (N params)' of the study's baseline arm, from its first finished run; '' before one."""
    runs = [run for (arm, _), run in status(lab, study)[1].items() if arm == BASELINE_ARM and run is not None]
    counts = [run.result["params"] for run in runs if run.result.get("params")]
    return f" ({counts[0]:,} params)" if counts else ""


def size_lines(lab: Path, name: str) -> list[str]:
    """The sheet's "Effect at each size" section as markdown lines; [] outside a family."""
    found = family_studies(lab, name)
    if not found:
        return []
    results = {size: {r.arm: r for r in analyze(lab, study)[1]} for size, study in found}
    metric = analyze(lab, name)[0]["spec"].get("metric", "val_loss")
    arms = [arm for arm in results[next(size for size, study in found if study == name)] if arm != BASELINE_ARM]
    named = [f"{size}{_params(lab, study)}" for size, study in found]
    columns = ["arm", *[f"{size}: {metric} change (95% CI)" for size in named], *[f"{size}: verdict" for size, _ in found]]
    rows = []
    for arm in arms:
        effects, verdicts = [], []
        for size, _ in found:
            result = results[size].get(arm)
            c = result.comparison if result is not None else None
            effects.append("—" if c is None else f"{c.mean_diff:+.4f} ({c.ci_low:+.4f}, {c.ci_high:+.4f})")
            verdicts.append("not run" if result is None or result.verdict is None else result.verdict.outcome)
        rows.append([arm, *effects, *verdicts])
    return ["### Effect at each size", "", f"Each size is its own study ({', '.join(s for _, s in found)}) against "
            f"its size of the baseline family, over the same seeds.", "", *markdown_table(columns, rows), ""]
