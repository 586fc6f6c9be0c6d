"""A study against a two-size (or larger) baseline family runs once per size.

`design.baseline = "NAME@DATE"` naming a family means every one of its sizes (`design.sizes` picks
some); `NAME@DATE/SIZE` means that one. Each size is its own study, named STUDY.SIZE, against
NAME@DATE/SIZE: the same arms, seeds and budget, its own runs, verdicts and sheet, so that nothing
about one study changes for being one of a family's (the sheet puts the sizes side by side:
ablab.report.size_table).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ablab.errors import UserError
from ablab.study import baselines
from ablab.study.runner import Plan, make_plan
from ablab.study.spec import StudySpec, parse


def size_specs(lab: Path, spec: StudySpec) -> list[StudySpec]:
    """The studies `spec` runs as: itself against a single baseline or one size, else one per size."""
    base = baselines.load(lab, spec.baseline)
    if base.size is not None or not base.sizes:
        if spec.sizes:
            raise UserError(f"In {spec.path or spec.name}, design.sizes needs a family baseline, but {spec.baseline} "
                            "is a single one; drop design.sizes or name a family NAME@DATE.")
        return [spec]
    unknown = [size for size in spec.sizes if size not in base.sizes]
    if unknown:
        raise UserError(f"In {spec.path or spec.name}, design.sizes names '{unknown[0]}', which {spec.baseline} does "
                        f"not have; its sizes are {', '.join(base.sizes)}.")
    return [dataclasses.replace(spec, name=f"{spec.name}.{size}", baseline=f"{spec.baseline}/{size}", sizes=[])
            for size in spec.sizes or list(base.sizes)]


def make_plans(lab: Path, spec_path: Path, probe: bool = True) -> list[Plan]:
    """The plan of each study the file runs as (one, or one per size of its family baseline)."""
    return [make_plan(lab, spec_path, probe, spec) for spec in size_specs(lab, parse(spec_path))]
