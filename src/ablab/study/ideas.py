"""The idea backlog and the links between studies: `ablab idea add/list`, a study's `follows` checked
at plan time, and the ideas a study tests linked when it is made from one or run.

A study names the ideas it tests in `meta.motivated_by` as "idea N" (`ablab study new --idea N`
writes that for you); running the study marks idea N as tested by it. Ideas are rows of the ledger
(ablab.store.notebook): one transaction each, so a kill never leaves half an idea.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ablab import config as config_mod
from ablab.analysis.idea_map import idea_outcome, outcomes_of
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.study.spec import StudySpec

IDEA_REF = re.compile(r"\bidea\s*#?(\d+)\b", re.IGNORECASE)  # "idea 3", "idea #3" in motivated_by


def idea_ids(motivated_by: str) -> list[int]:
    """The backlog ideas a study's motivated_by names, in order, each once."""
    return list(dict.fromkeys(int(n) for n in IDEA_REF.findall(motivated_by or "")))


def known_studies(ledger: Ledger, folder: Path | None) -> list[str]:
    """Studies a follow-up or an idea may name: those the ledger holds (they ran) and those whose
    files sit in `folder` (the follow-up's own folder: planned, maybe not yet run)."""
    names = [s["name"] for s in ledger.studies()]
    for path in sorted(folder.glob("*.toml")) if folder and folder.is_dir() else []:
        try:
            name = tomllib.loads(path.read_text(encoding="utf-8")).get("meta", {}).get("name")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # a broken neighbour is its own plan's problem, not this one's
        if isinstance(name, str) and name:
            names.append(name)
    return list(dict.fromkeys(names))


def check_links(lab: Path, spec: StudySpec) -> None:
    """Refuse, in one sentence, a `follows` that names no known study (or the study itself) and a
    motivated_by naming an idea the backlog does not have. Called when a study is planned."""
    if not spec.follows and not idea_ids(spec.motivated_by):
        return
    with Ledger(lab) as ledger:
        where = spec.path or spec.name
        if spec.follows:
            known = [n for n in known_studies(ledger, spec.path.parent if spec.path else None) if n != spec.name]
            if spec.follows == spec.name:
                raise UserError(f"In {where}, meta.follows names the study itself; name the study it follows up.")
            if spec.follows not in known:
                raise UserError(f"In {where}, meta.follows = {spec.follows!r} names no study of this lab;"
                                f"{config_mod.did_you_mean(spec.follows, known)} Known studies: "
                                f"{', '.join(known) or 'none yet'}.")
        ideas = {idea["id"] for idea in ledger.ideas()}
        for number in idea_ids(spec.motivated_by):
            if number not in ideas:
                raise UserError(f"In {where}, meta.motivated_by names idea {number}, which the backlog does not "
                                "have; `ablab idea list` shows the ideas, `ablab idea add TEXT` adds one.")


def link_tested_ideas(ledger: Ledger, spec: StudySpec) -> None:
    """Mark every idea the study's motivated_by names as tested by it (when the study runs)."""
    for number in idea_ids(spec.motivated_by):
        ledger.link_idea(number, spec.name)


def add_idea(lab: Path, text: str, origin: str | None = None) -> int:
    """Put an untested idea in the lab's backlog, from study `origin` if given; returns its id."""
    if not text.strip():
        raise UserError('The idea is empty; write it in quotes, e.g. `ablab idea add "ProRes instead of LayerNorm"`.')
    with Ledger(lab) as ledger:
        if origin is not None:
            known = known_studies(ledger, lab / "studies")
            if origin not in known:
                raise UserError(f"--from {origin!r} names no study of this lab;{config_mod.did_you_mean(origin, known)}"
                                f" Known studies: {', '.join(known) or 'none yet'}.")
        return ledger.add_idea(" ".join(text.split()), origin)


def start_from_idea(lab: Path, idea_id: int, study: str) -> str:
    """Link idea N to the study `ablab study new --idea N` is writing, and return the motivated_by
    text the study's file gets ("idea N: its text"); refused when the backlog has no idea N."""
    with Ledger(lab) as ledger:
        idea = next((i for i in ledger.ideas() if i["id"] == idea_id), None)
        if idea is None:
            raise UserError(f"The backlog has no idea {idea_id}; `ablab idea list` shows the ideas.")
        ledger.link_idea(idea_id, study)
    return f"idea {idea_id}: {idea['text']}"


def list_ideas(lab: Path) -> list[dict]:
    """Every idea, oldest first, with its status: untested, or the outcome of the study testing it."""
    with Ledger(lab) as ledger:
        ideas = ledger.ideas()
        outcomes = outcomes_of(lab, [i["tested_by"] for i in ideas if i["tested_by"]], ledger)
    return [idea | {"status": idea_outcome(idea, outcomes)} for idea in ideas]
