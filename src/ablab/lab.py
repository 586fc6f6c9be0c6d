"""A lab: a directory with ablab.toml that holds baselines, studies, the ledger and run outputs."""

from __future__ import annotations

import os
import re
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


# Names that become file names (studies/NAME.toml, reports/NAME.md, baselines/NAME@DATE.toml):
# a letter or digit first (no hidden files, no "..", no options), then letters, digits and . _ - @,
# never a slash, so a name can never reach outside its folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def check_name(name: Any, what: str, example: str) -> str:
    """`name` if it is a safe file name (SAFE_NAME), else a UserError naming `what` and an example."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise UserError(f"{what} {name!r} is not a usable name; use letters, digits and . _ - @ (starting with a "
                        f"letter or digit, at most 128 characters), e.g. {example}.")
    return name


def read_user_text(path: Path, what: str = "file") -> str:
    """A file the user named, as UTF-8 text; a folder, an unreadable or a binary file is a UserError
    naming the file (an OSError here is the user's path, not a bug)."""
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a {what}; give the path of the file itself.") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; give a {what} saved as UTF-8 text.") from None
    except OSError as err:
        raise UserError(f"Cannot read {path} ({err.strerror or err}); check the path and its permissions.") from None


def check_output_path(path: Path, option: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work, an output path whose folder does not exist or cannot be written, or
    (for a file) that is a folder: a typo must not create a folder tree or fail after the work."""
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder to write into.")
    if not folder and path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file path inside it, e.g. {path / 'out.png'}.")
    parent = path if folder and path.is_dir() else path.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: the folder {parent} does not exist; create it first or give a path "
                        "in an existing folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder {parent} is not writable; give a path in a folder you can write.")
    return path


def is_lab(folder: Path) -> bool:
    """A lab has ablab.toml (from `ablab init`) or the .ablab/ folder its ledger and runs live in."""
    return (folder / LAB_FILE).is_file() or (folder / ".ablab").is_dir()


def require_lab(folder: Path) -> Path:
    """`folder` if it is a lab, else a UserError: reading a folder that is not a lab (a --lab typo)
    must not create a ledger there."""
    if not is_lab(folder):
        what = "does not exist" if not folder.exists() else "is not a lab (no ablab.toml or .ablab/ there)"
        raise UserError(f"--lab {folder} {what}; give a lab's folder, or create one with `ablab init {folder}`.")
    return folder


def lab_settings(lab: Path) -> dict:
    """The lab's ablab.toml as a dict ({} when there is none)."""
    lab_file = lab / LAB_FILE
    if not lab_file.is_file():
        return {}
    try:
        return tomllib.loads(read_user_text(lab_file, "TOML file"))
    except tomllib.TOMLDecodeError as err:
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
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; give `ablab init` a new or existing folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the lab folder {folder} ({err.strerror or err}); give a folder you can "
                        "write, e.g. `ablab init my-lab`.") from None
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
