"""`baseline retrain`: the current baseline of a name again, dated today, on the current code.

A baseline's numbers are only as current as the code and data they were trained on. Retraining makes
NAME@<date> from the current one's config as the current code resolves it (its set keys kept, its
defaulted keys re-resolved: ablab.study.baselines.current_config), trains every seed afresh (never
reusing a run of the older date: the point is to measure today's code), and compares each final
metric with the previous date over the same seeds. A difference beyond the seed-noise floor is drift:
code, data or a default changed the numbers, and the report names the commits between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ablab import config as config_mod
from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import commits_between
from ablab.study import baselines
from ablab.train import launch

# The metrics drift is judged on: what the code and data compute, where lower is better. Throughput
# and peak memory are shown beside them but not judged: they move with the machine and its load.
JUDGED = ("val_loss", "val_bpb", "train_loss")


@dataclass
class MetricDrift:
    metric: str
    old: float  # mean over the previous date's seeds
    new: float  # mean over the retrained seeds
    floor: float  # the seed-noise floor: the larger std over seeds of the two (nan below two seeds)

    @property
    def difference(self) -> float:
        return self.new - self.old

    @property
    def outcome(self) -> str:
        """'regression', 'improvement', 'no drift', 'unknown' (no floor below two seeds) or 'not judged'."""
        if self.metric not in JUDGED:
            return "not judged"
        if self.difference == 0:
            return "no drift"
        if not self.floor == self.floor:
            return "unknown"
        if abs(self.difference) <= self.floor:
            return "no drift"
        return "improvement" if self.difference < 0 else "regression"

    def sentence(self) -> str:
        head = f"{self.metric}: {self.old:.4g} -> {self.new:.4g} ({self.difference:+.4g})"
        if self.outcome in ("regression", "improvement"):
            return f"{head}: drift: {self.outcome} of {abs(self.difference):.4g} (above the noise floor {self.floor:.3g})"
        if self.outcome == "not judged":
            return f"{head}: not judged (it depends on the machine and its load)"
        if self.outcome == "unknown":
            return f"{head}: no noise floor to judge it by (it needs two seeds)"
        return f"{head}: no drift" + (f" (within the noise floor {self.floor:.3g})" if self.difference else "")


@dataclass
class DriftReport:
    previous: str  # the older baseline's ref
    current: str  # the retrained one's ref
    config_changes: list[tuple[str, Any, Any]]  # (key, old, new): defaults the current code resolves otherwise
    metrics: list[MetricDrift] = field(default_factory=list)
    commits: dict[str, list[str] | None] = field(default_factory=dict)  # checkout root -> commits between
    commit_pair: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # root -> (old, new)
    missing: str = ""  # why there is no comparison, when there is none

    @property
    def drifted(self) -> list[MetricDrift]:
        return [m for m in self.metrics if m.outcome in ("regression", "improvement")]

    def lines(self) -> list[str]:
        out = [f"{self.current} retrained from {self.previous}"]
        out += [f"config: {key}: {old!r} -> {new!r} (the current code's default)" for key, old, new in
                self.config_changes]
        if self.missing:
            return out + [self.missing]
        out += [m.sentence() for m in self.metrics]
        for root, (old, new) in self.commit_pair.items():
            found = self.commits.get(root)
            if old is None or new is None:
                out.append(f"commits in {root}: not known for both baselines' runs")
            elif found is None:
                out.append(f"commits in {root}: {old[:12]} or {new[:12]} is not in that checkout")
            elif old == new:
                out.append(f"commits in {root}: none (both trained at {old[:12]})")
            else:
                out.append(f"commits in {root} between {old[:12]} and {new[:12]}: " + ("; ".join(found) or "none"))
        drifted = self.drifted
        out.append("drift: " + ", ".join(f"{m.outcome} in {m.metric}" for m in drifted) if drifted else "no drift")
        return out

    def to_dict(self) -> dict:
        return {"previous": self.previous, "config_changes": [list(c) for c in self.config_changes],
                "metrics": {m.metric: {"old": m.old, "new": m.new, "difference": m.difference, "floor": m.floor,
                                       "outcome": m.outcome} for m in self.metrics},
                "commits": {root: {"old": old, "new": new, "between": self.commits.get(root)}
                            for root, (old, new) in self.commit_pair.items()},
                "missing": self.missing or None}


def previous_baseline(lab: Path, name: str) -> baselines.Baseline:
    """The current baseline of `name`, or a UserError naming how to make one."""
    with Ledger(lab) as ledger:
        current = [b for b in ledger.baselines() if b["name"] == name and b.get("current")]
    if not current:
        raise UserError(f"No baseline named '{name}' in this lab; create one with `ablab baseline new {name} -c CONFIG`.")
    return baselines.load(lab, current[0]["ref"])


def retrain(lab: Path, name: str, date: str | None = None, seeds: list[int] | None = None,
            say: Callable[[str], None] = print, progress_for: Callable[[str, int], Any] | None = None,
            on_cell: Callable[[str, int, str], None] | None = None) -> list[DriftReport]:
    """Make NAME@`date` (default today) from the current NAME on the current code, train its seeds
    afresh (a family: at each of its sizes), store and return the comparison of each size with the
    previous date (one report; one per size for a family). Run again with the same date, it
    continues that retrain: its finished runs count, an interrupted one resumes, the rest train."""
    current = previous_baseline(lab, name)
    date = baselines.check_date(date) if date else baselines.today()
    continuing = current.date == date and current.justified_by == ["retrain"] and current.parent is not None
    previous = baselines.load(lab, current.parent) if continuing else current
    if date <= previous.date:
        raise UserError(f"A retrained baseline must be dated after {previous.ref}; pass --date later than "
                        f"{previous.date}.")
    new = current if continuing else baselines.Baseline(
        name, date, baselines.current_config(previous), seeds or previous.seeds, previous.ref, ["retrain"],
        previous.set_keys, previous.sizes)
    with Ledger(lab) as ledger:  # before anything trains: the runs of the previous date, not today's
        old_runs = [_older_runs(ledger, old, new.name, date) for old in previous.members()]
    if not continuing:
        baselines.create(lab, new)
    reports = []
    for old, fresh, before in zip(previous.members(), new.members(), old_runs):
        reports.append(compare(old, fresh, before, _train_afresh(lab, fresh, say, progress_for, on_cell)))
    with Ledger(lab) as ledger:
        ledger.update_baseline_data(name, date, {"drift": {r.current: r.to_dict() for r in reports}})
    for fresh in new.members():
        with Ledger(lab) as ledger:
            floor = baselines.noise_floor(ledger, fresh.config, fresh.seeds)
            ledger.update_baseline_data(name, date, {"size_floors": {fresh.size: floor}} if fresh.size else floor)
    return reports


def _older_runs(ledger: Ledger, old: baselines.Baseline, name: str, date: str) -> dict[int, Run]:
    """Per seed, the newest finished run of `old`'s config that is not one of the retrain's own."""
    own = f"{name}@{date}"
    seed_of = {config_mod.config_hash(config_mod.replace(old.config, {"seed": seed})): seed for seed in old.seeds}
    return {seed_of[run.config_hash]: run for run in ledger.finished_with_hashes(list(seed_of))
            if not run.name.startswith(own)}


def _train_afresh(lab: Path, baseline: baselines.Baseline, say: Callable[[str], None],
                  progress_for: Callable[[str, int], Any] | None,
                  on_cell: Callable[[str, int, str], None] | None) -> dict[int, Run]:
    """Every seed of `baseline` as a run of its own (forced: never an older date's run of the same
    content key): one this retrain already finished counts, one it left interrupted resumes."""
    runs = {}
    for seed in baseline.seeds:
        cfg = config_mod.replace(baseline.config, {"seed": seed, "name": f"{baseline.ref}/seed{seed}"})
        with Ledger(lab) as ledger:
            own = [r for r in ledger.runs(name=cfg.name) if r.config_hash == config_mod.config_hash(cfg)]
        done = next((r for r in reversed(own) if r.status == "finished"), None)
        stopped = next((r for r in reversed(own) if r.status == "interrupted"), None)
        progress = progress_for(baseline.ref, seed) if progress_for else None
        if done is not None:
            outcome = launch.Outcome(done.id, done.status, done.result, reused=True)
        elif stopped is not None:
            outcome = launch.resume_run(lab, stopped.id, progress)
        else:
            outcome = launch.start_run(cfg, lab, progress, force=True)
        say(f"{baseline.ref} seed {seed}: run {outcome.run_id} {'already trained' if done else outcome.status}")
        if on_cell is not None:
            on_cell(baseline.ref, seed, "reused" if done else outcome.status)
        if outcome.status != "finished":
            raise UserError(f"Run {outcome.run_id} of {baseline.ref} seed {seed} ended {outcome.status}; run "
                            f"`ablab baseline retrain {baseline.name} --date {baseline.date}` again to continue.")
        with Ledger(lab) as ledger:
            runs[seed] = ledger.run(outcome.run_id)
    return runs


def compare(previous: baselines.Baseline, new: baselines.Baseline, old_runs: dict[int, Run],
            new_runs: dict[int, Run]) -> DriftReport:
    """Per final metric, the previous date's mean over the seeds both have against the new one's,
    judged against the larger seed-noise floor of the two; and the commits between their runs."""
    from ablab.analysis import stats  # here: stats loads scipy, which the command line's start does without

    report = DriftReport(previous.ref, new.ref, config_mod.diff(previous.config, new.config))
    shared = sorted(set(old_runs) & set(new_runs))
    if not shared:
        report.missing = (f"no comparison: {previous.ref} has no finished run at the seeds "
                          f"{', '.join(map(str, new.seeds))}; it was never run, so there is nothing to drift from")
        return report
    for metric in baselines.FLOOR_METRICS:
        old = [old_runs[s].final.get(metric) for s in shared]
        fresh = [new_runs[s].final.get(metric) for s in shared]
        if any(v is None or not math.isfinite(v) for v in old + fresh):
            continue
        floor = max(stats.noise_floor(old), stats.noise_floor(fresh))
        report.metrics.append(MetricDrift(metric, sum(old) / len(old), sum(fresh) / len(fresh), floor))
    for root, (old, new_commit) in _commit_pairs(old_runs.values(), new_runs.values()).items():
        report.commit_pair[root] = (old, new_commit)
        if old and new_commit and old != new_commit:
            report.commits[root] = commits_between(root, old, new_commit)
        elif old and new_commit:
            report.commits[root] = []
    return report


def _commit_pairs(old_runs, new_runs) -> dict[str, tuple[str | None, str | None]]:
    """checkout root -> (the commit the newest previous run was trained at, the newest new run's), for
    the lab's checkout and ablab's own (one entry when they are one checkout)."""
    def commits(runs) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for run in sorted(runs, key=lambda r: r.created_at):  # the newest wins
            for key in ("git", "ablab_git"):
                git = run.provenance.get(key)
                if isinstance(git, dict) and git.get("available"):
                    found[git["root"]] = git.get("commit")
        return found

    old, new = commits(old_runs), commits(new_runs)
    return {root: (old.get(root), new.get(root)) for root in {**old, **new}}
