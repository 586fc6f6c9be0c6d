"""A lab: a directory with ablab.toml that holds baselines, studies, the ledger and run outputs."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ablab.config import dump_toml
from ablab.errors import UserError

LAB_FILE = "ablab.toml"

# init_lab fills in [lab] name with dump_toml, which keeps these comments and quotes the name.
LAB_TEMPLATE = """\
# ablab lab settings. Runs, checkpoints and the ledger live in .ablab/ beside this file.
[lab]
name = ""

[log]
# Mirrors that get a copy of every run's config and metrics: "wandb", "mlflow", "tensorboard"
# (each an optional extra, e.g. pip install 'ablab[tensorboard]'). The ledger stays the record.
to = []
"""


def lab_settings(lab: Path) -> dict:
    """The lab's ablab.toml as a dict ({} when there is none)."""
    lab_file = lab / LAB_FILE
    if not lab_file.is_file():
        return {}
    try:
        return tomllib.loads(lab_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{lab_file} is not valid TOML ({err}); fix the line it names.") from None


_KINDS = {int: "a whole number", float: "a number", str: "a quoted string"}


def section_settings(lab: Path, section: str, types: dict[str, Any]) -> dict:
    """One dotted [section] of ablab.toml, every key checked against `types` (name -> type or tuple)."""
    settings: Any = lab_settings(lab)
    for part in section.split("."):
        settings = settings.get(part, {}) if isinstance(settings, dict) else None
    if not isinstance(settings, dict):
        raise UserError(f"In {lab / LAB_FILE}, [{section}] must be a table of settings.")
    for key, value in settings.items():
        if key not in types:
            raise UserError(f"In {lab / LAB_FILE}, [{section}] has no setting '{key}'; "
                            f"the settings are: {', '.join(types)}.")
        if not isinstance(value, types[key]) or isinstance(value, bool):  # TOML's true is no count
            raise UserError(f"In {lab / LAB_FILE}, [{section}] {key} = {value!r} has the wrong type; "
                            f"give {_KINDS.get(types[key], 'a number')}.")
    return settings


def mirror_names(lab: Path, extra: str = "") -> list[str]:
    """Mirrors named in the lab's ablab.toml ([log] to) plus a comma-separated `extra` (--log-to)."""
    names = [n for n in extra.split(",") if n.strip()]
    lab_file = lab / LAB_FILE
    if lab_file.is_file():
        configured = lab_settings(lab).get("log", {}).get("to", [])
        if not isinstance(configured, list) or not all(isinstance(n, str) for n in configured):
            raise UserError(f"In {lab_file}, [log] to must be a list of names such as [\"tensorboard\"].")
        names = configured + names
    return names


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
        text = dump_toml({"lab": {"name": folder.resolve().name}}, LAB_TEMPLATE)
        lab_file.write_text(text, encoding="utf-8")
        created.append(lab_file)
    for sub in ("baselines", "studies", "reports", ".ablab/runs"):
        path = folder / sub
        if not path.exists():
            path.mkdir(parents=True)
            created.append(path)
    return created
