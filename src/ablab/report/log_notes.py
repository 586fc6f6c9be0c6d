"""The researcher's own parts of the lab log: key findings by category and recommendations by kind,
kept in `reports/log-notes.toml` (a file to read, edit by hand and keep in git beside the log).
`reports/LOG.md` is regenerated from the ledger at any time and copies these in; nothing
regenerated ever writes this file, so no hand-written word is lost.

    add_note(lab, "findings", "learning rate", "0.04 beats 0.02 at 0.1M params; not yet tested above")
    add_note(lab, "recommendations", "procedure", "three seeds before any verdict")
    read_notes(lab)  # {"findings": [{"category", "text", "study", "time"}, ...], "recommendations": [...]}

A write takes an OS lock on a side file (two `ablab log` commands at once both land) and replaces the
file atomically (a kill leaves the old file or the new one, never half of one).
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path

from ablab.data.cache import write_atomic
from ablab.errors import UserError
from ablab.store.record import now_iso

try:
    import fcntl
except ImportError:  # not POSIX: writes go unlocked
    fcntl = None

NOTES_FILE = "log-notes.toml"
# The log's themes (the CS336 log's, then the study spec's own categories), in the order LOG.md shows them.
FINDING_CATEGORIES = ("learning rate", "architecture", "dynamics", "efficiency", "data", "memory",
                      "hyperparameter", "optimizer", "training recipe")
RECOMMENDATION_KINDS = {"model": "Model architecture", "hyperparameters": "Hyperparameters",
                        "procedure": "Training procedure", "future work": "Future work"}
HEADER = ("# The hand-written parts of reports/LOG.md: key findings and recommendations.\n"
          "# Written by `ablab log findings` and `ablab log recommend`; edit by hand as you like.\n"
          "# Regenerating the log reads this file and never writes it.\n")


def notes_path(lab: Path) -> Path:
    return lab / "reports" / NOTES_FILE


def read_notes(lab: Path) -> dict[str, list[dict]]:
    """{"findings": [...], "recommendations": [...]}, each a list of tables in the order written."""
    path = notes_path(lab)
    if not path.exists():
        return {"findings": [], "recommendations": []}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid TOML ({err}); fix the line it names.") from None
    return {part: [n for n in raw.get(part, []) if isinstance(n, dict) and n.get("text")]
            for part in ("findings", "recommendations")}


def _string(value: str) -> str:
    """A TOML basic string: JSON's escaping (\\", \\\\, \\n, \\uXXXX) is TOML's too."""
    return json.dumps(value, ensure_ascii=False)


def _toml(notes: dict[str, list[dict]]) -> str:
    blocks = [HEADER]
    for part, items in notes.items():
        for item in items:
            blocks.append(f"[[{part}]]\n" + "".join(f"{key} = {_string(str(value))}\n"
                                                   for key, value in item.items() if value is not None))
    return "\n".join(blocks)


@contextlib.contextmanager
def _locked(lab: Path):
    lock = lab / "reports" / ".log-notes.lock"  # never deleted: deleting it would let a second writer in
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def add_note(lab: Path, part: str, kind: str, text: str, study: str | None = None) -> dict:
    """Append one finding (`part` "findings", `kind` a category) or recommendation (`part`
    "recommendations", `kind` one of RECOMMENDATION_KINDS); the note as stored."""
    finding = part == "findings"
    allowed = FINDING_CATEGORIES if finding else tuple(RECOMMENDATION_KINDS)
    command, option = ("findings", "--category") if finding else ("recommend", "--kind")
    if kind not in allowed:
        raise UserError(f"{option} must be one of {', '.join(repr(k) for k in allowed)}, not {kind!r}.")
    if not text.strip():
        raise UserError(f"Write the text itself, e.g. `ablab log {command} {option} \"{allowed[0]}\" \"TEXT\"`.")
    key = "category" if finding else "kind"
    note = {key: kind, "text": text.strip(), "study": study, "time": now_iso()}
    with _locked(lab):
        notes = read_notes(lab)
        notes[part].append(note)
        write_atomic(notes_path(lab), _toml(notes).encode("utf-8"))
    return note
