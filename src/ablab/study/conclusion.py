"""The researcher's conclusion of a study: interpretation, decision and follow-up, stored with the study
(the sheet's sections 9-11 and the log's observations and next steps, kept when they are regenerated).

A decision that adopts an arm the evidence did not support is refused unless the researcher says why
(`override`): the computed verdict is the lab's check on wishful reading, and going past it is allowed
only in writing, recorded beside the decision with the verdicts it went past.

    conclude(lab, "lr-up", {"decision": "adopt optim.lr=0.04"})                  # refused if not supported
    conclude(lab, "lr-up", {"decision": "adopt optim.lr=0.04"}, override="wins at 21M in study lr-21m")
"""

from __future__ import annotations

import re
from pathlib import Path

from ablab.analysis.verdicts import BASELINE_ARM, analyze
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.store.record import now_iso

ADOPTING = re.compile(r"\s*(adopt|adopts|adopted|adopting|promote|promotes|promoted|promoting)\b", re.IGNORECASE)


def _names(text: str, arm: str) -> bool:
    """Whether `text` names `arm` as a whole (optim.lr=0.04 is not named by optim.lr=0.045)."""
    return re.search(rf"(?<![\w.=-]){re.escape(arm)}(?![\w=-])(?!\.\d)", text, re.IGNORECASE) is not None


def adopted_arms(decision: str, arms: list[str]) -> list[str]:
    """The arms (never the baseline) a decision adopts: one that starts with "adopt" or "promote" adopts
    the arms it names; naming none, it adopts the study's only arm when there is one ("adopt it")."""
    if not ADOPTING.match(decision):
        return []
    candidates = [a for a in arms if a != BASELINE_ARM]
    named = [a for a in candidates if _names(decision, a)]
    if named or _names(decision, BASELINE_ARM):
        return named
    return candidates if len(candidates) == 1 else []


def conclude(lab: Path, name: str, notes: dict[str, str], override: str = "") -> dict | None:
    """Store the researcher's notes with the study (empty parts leave what was written before); a
    new decision that adopts an arm whose verdict is not `supported` is refused without `override`,
    and with it the override (reason, the arms and their verdicts, time) is stored with the decision.
    Returns that override record, or None."""
    with Ledger(lab) as ledger:
        study = ledger.study(name)
    if study is None:
        raise UserError(f"No study '{name}' in this lab; run it first with `ablab study run FILE`.")
    decision = notes.get("decision") or ""
    if override and not decision:
        raise UserError("--override gives the reason for a decision; pass the decision with --decision too.")
    changes: dict = {k: v for k, v in notes.items() if v}
    record = None
    if decision:
        unsupported = _unsupported(lab, study, decision)
        if unsupported and not override.strip():
            said = ", ".join(f"{arm} is {verdict}" for arm, verdict in unsupported.items())
            raise UserError(f"The decision adopts an arm the evidence does not support ({said}); run more seeds, "
                            f"or give your reason with --override \"REASON\" (it is recorded with the decision).")
        if override.strip():
            record = {"reason": override.strip(), "arms": unsupported, "time": now_iso()}
        changes["override"] = record  # None removes an older decision's override (a JSON merge patch)
    with Ledger(lab) as ledger:
        ledger.update_study_data(name, {"conclusion": changes})
    return record


def _unsupported(lab: Path, study: dict, decision: str) -> dict[str, str]:
    """{arm: its verdict} of each arm the decision adopts whose verdict is not `supported` (a scaling
    ladder has no verdicts, and nothing of it is checked)."""
    spec = study["spec"]
    if spec.get("kind") == "ladder":
        return {}
    verdicts = {r.arm: r.verdict.outcome for r in analyze(lab, study["name"])[1] if r.verdict is not None}
    return {arm: verdicts.get(arm, "without a verdict yet") for arm in adopted_arms(decision, list(spec["arms"]))
            if verdicts.get(arm) != "supported"}
