"""The three things a study is warned about before it runs, one sentence each.

- Its baseline is not the current one of its name: a newer date exists (promoted or retrained), so
  its verdicts would be against a stale recipe. The sentence names the newer one and its config diff.
- The checkout is dirty: the lab's git checkout has uncommitted changes to tracked files (outside
  the generated reports/ and .ablab/). `study run` refuses unless --allow-dirty, which is recorded
  with the study; the runs' provenance records the dirty state and saves the diff (code.diff). When
  ablab's source is a separate checkout, its uncommitted changes are warned about, not refused: they
  are part of every run's code version (a hash of the diff) and saved beside each run (ablab.diff).
- The code version differs from the one the baseline's finished runs were trained with. The rule:
  a finished run is reused only when its content key matches, and the key holds the code version
  (the commit plus a hash of any uncommitted diff), so runs trained at another commit are retrained;
  a cell this study already finished keeps its run (the sentence says which).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from ablab import config as config_mod
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.store.provenance import ABLAB_SOURCE, code_version, git_state, uncommitted_files
from ablab.study import baselines
from ablab.study.runner import Plan, with_seed

GENERATED = ("reports", ".ablab")  # folders of a lab that ablab itself rewrites


def lab_changes(lab: Path) -> list[str] | None:
    """Tracked files of the lab's git checkout with uncommitted changes, relative to its root, less
    the lab's generated folders; None when the lab is not in a git checkout."""
    found = uncommitted_files(lab)
    if found is None:
        return None
    root, files = found
    lab_part = lab.resolve().relative_to(root.resolve())
    skipped = [(lab_part / folder).as_posix() + "/" for folder in GENERATED]
    return [f for f in files if not any(f.startswith(s.removeprefix("./")) for s in skipped)]


def source_changes(lab: Path) -> list[str]:
    """Uncommitted changes under ablab's own source when it is a git checkout other than the lab's."""
    found = uncommitted_files(ABLAB_SOURCE)
    lab_found = uncommitted_files(lab)
    if found is None or (lab_found is not None and lab_found[0].resolve() == found[0].resolve()):
        return []
    package = ABLAB_SOURCE.relative_to(found[0].resolve()).as_posix() + "/"
    return [f for f in found[1] if f.startswith(package)]


def _listed(files: list[str]) -> str:
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


def dirty_warning(lab: Path) -> str | None:
    changed = lab_changes(lab)
    if changed:
        return (f"The lab's checkout has uncommitted changes ({_listed(changed)}): commit them so that its runs "
                "can be reproduced from a commit, or `study run` refuses without --allow-dirty.")
    return None


def source_warning(lab: Path) -> str | None:
    changed = source_changes(lab)
    if changed:
        return (f"ablab's source has uncommitted changes ({_listed(changed)}): they are part of every run's code "
                "version and saved beside each run (ablab.diff), so these runs are reused only by that same diff.")
    return None


def refuse_dirty(lab: Path, allow_dirty: bool) -> list[str]:
    """The lab's uncommitted files; a UserError when there are some and `allow_dirty` is not given."""
    changed = lab_changes(lab) or []
    if changed and not allow_dirty:
        raise UserError(f"The lab's checkout has uncommitted changes ({_listed(changed)}); commit them, or pass "
                        "--allow-dirty to run anyway (recorded with the study and its runs).")
    return changed


def record_allowed_dirty(lab: Path, study: str, changed: list[str]) -> None:
    """Keep with the study that it ran on a dirty checkout: when, which files, at which code version."""
    if not changed:
        return
    at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lab_git, _ = git_state(lab)
    entry = {"files": changed, "commit": lab_git.get("commit"), "diff_sha256": lab_git.get("diff_sha256"),
             "code_version": code_version(git_state(ABLAB_SOURCE)[0])}
    with Ledger(lab) as ledger:
        ledger.update_study_data(study, {"allowed_dirty": {at: entry}})


def stale_warning(lab: Path, ref: str) -> str | None:
    """One sentence when `ref` is not the current baseline of its name: the newer one and its diff."""
    name, _ = baselines.parse_ref(ref)
    size = baselines.size_of(ref)
    with Ledger(lab) as ledger:
        current = next((b["ref"] for b in ledger.baselines() if b["name"] == name and b.get("current")), None)
    if current is None or current == ref.partition("/")[0]:
        return None
    current = f"{current}/{size}" if size and size in baselines.load(lab, current).sizes else current
    changes = config_mod.diff(baselines.load(lab, ref).config, baselines.load(lab, current).config)
    shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes) or "no config changes"
    return (f"Baseline {ref} is not the current '{name}' baseline: {current} is (its changes: {shown}); point "
            f"design.baseline at {current} to compare with the current recipe.")


def code_version_warning(lab: Path, plan: Plan) -> str | None:
    """One sentence when finished runs of the study's baseline arm were trained at another code
    version than this checkout's: which seeds will be retrained and which this study keeps."""
    here = code_version(git_state(ABLAB_SOURCE)[0])
    base = plan.rows[0].arm
    hashes = {config_mod.config_hash(with_seed(base.config, seed, "")): seed for seed in plan.spec.seeds}
    with Ledger(lab) as ledger:
        runs = ledger.finished_with_hashes(list(hashes))
        linked = {seed: run_id for (arm, seed), run_id in ledger.study_runs(plan.spec.name).items() if arm == base.name}
    kept = sorted({hashes[r.config_hash] for r in runs if r.id == linked.get(hashes[r.config_hash])
                   and r.code_version != here})
    current = {hashes[r.config_hash] for r in runs if r.code_version == here}
    elsewhere = {hashes[r.config_hash]: r.code_version for r in runs if r.code_version != here}
    retrained = sorted(set(elsewhere) - current - set(linked))
    if not retrained and not kept:
        return None
    versions = ", ".join(sorted({elsewhere[s] or "unknown" for s in retrained + kept}))
    parts = []
    if retrained:
        parts.append(f"seeds {', '.join(map(str, retrained))} will be retrained (a run is reused only at the same "
                     "code version)")
    if kept:
        parts.append(f"seeds {', '.join(map(str, kept))} keep the runs this study already finished")
    return (f"The baseline {plan.baseline.ref}'s finished runs were trained at code version {versions}, not this "
            f"checkout's {here}: " + "; ".join(parts) + ".")


def plan_warnings(lab: Path, plan: Plan) -> list[str]:
    """Every warning for a study about to run, one sentence each, in the order above."""
    found = [stale_warning(lab, plan.spec.baseline), dirty_warning(lab), source_warning(lab),
             code_version_warning(lab, plan)]
    return [w for w in found if w]
