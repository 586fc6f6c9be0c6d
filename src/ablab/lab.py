"""A lab: a directory with ablab.toml that holds baselines, studies, the ledger and run outputs."""

from __future__ import annotations

from pathlib import Path

LAB_FILE = "ablab.toml"

LAB_TEMPLATE = """\
# ablab lab settings. Runs, checkpoints and the ledger live in .ablab/ beside this file.
[lab]
name = "{name}"
"""


def find_lab(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding ablab.toml, else `start` itself."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / LAB_FILE).is_file():
            return folder
    return here


def init_lab(folder: Path) -> list[Path]:
    """Create ablab.toml and the standard folders; never overwrites. Returns what was created."""
    created = []
    folder.mkdir(parents=True, exist_ok=True)
    lab_file = folder / LAB_FILE
    if not lab_file.exists():
        lab_file.write_text(LAB_TEMPLATE.format(name=folder.resolve().name), encoding="utf-8")
        created.append(lab_file)
    for sub in ("baselines", "studies", "reports", ".ablab/runs"):
        path = folder / sub
        if not path.exists():
            path.mkdir(parents=True)
            created.append(path)
    return created
