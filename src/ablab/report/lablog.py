"""reports/LOG.md, the lab log in the CS336 experiment-log format: a summary table (one row per arm),
then per study its date, name and category, hypothesis, configuration changes, results against the
baseline in % with the best val loss and its step, throughput and training time from the records,
each verdict with its scope, the loss curves by step and by wall-clock, the exact reproduce command
and commit, and the researcher's observations, decision and next steps; then key findings by
category, recommendations and the computing environment.

Everything is regenerated from the ledger; the hand-written parts are read from where they are kept
(observations, decision and next steps with the study, `ablab study conclude`; findings and
recommendations in reports/log-notes.toml, `ablab log findings` / `ablab log recommend`), never
from the previous LOG.md, so regenerating can lose none of them.
"""

from __future__ import annotations

import math
from pathlib import Path

from ablab.analysis import stats
from ablab.analysis.runs import markdown_table
from ablab.analysis.scope import arm_scope, hardware_class, metric_words, scope_sentences
from ablab.analysis.verdicts import BASELINE_ARM, ArmResult, analyze, status
from ablab.data.cache import write_atomic
from ablab.report.log_notes import FINDING_CATEGORIES, RECOMMENDATION_KINDS, read_notes
from ablab.report.study_figures import study_figures
from ablab.store.ledger import Ledger

LOG_COLUMNS = ["#", "study", "date", "arm", "seeds", "final val loss", "best val loss", "vs baseline",
               "train time", "verdict"]
UNWRITTEN = "_(not written yet; `ablab study conclude {name}`)_"
UNCATEGORISED = "uncategorised"


def mean_pm(values: list, fmt: str = ".4f") -> str:
    """Mean ± std over the values present (None and NaN left out); '—' when there are none."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return "—"
    s = stats.summarize(present)
    return f"{s.mean:{fmt}}" if s.n == 1 else f"{s.mean:{fmt}} ± {s.std:{fmt}}"


def _finished(cells: dict, arm: str) -> list:
    return [r for (a, _), r in cells.items() if a == arm and r is not None and r.status == "finished"]


def percent_vs_baseline(result: ArmResult, base: ArmResult | None) -> float | None:
    """The arm's mean change of the metric against the baseline's mean over the same seeds, in %."""
    if result.comparison is None or base is None:
        return None
    paired = [b for a, b in zip(result.values, base.values) if not (math.isnan(a) or math.isnan(b))]
    mean = sum(paired) / len(paired) if paired else 0.0
    return None if mean == 0 else 100 * result.comparison.mean_diff / mean


def _best_at(runs: list) -> str:
    """'1.9876 ± 0.0120 at step 20' (steps as a range when seeds differ)."""
    best = [r.result.get("best", {}) for r in runs]
    steps = sorted({b.get("step") for b in best if b.get("step") is not None})
    where = "" if not steps else f" at step {steps[0]:,}" if len(steps) == 1 else f" at steps {steps[0]:,}-{steps[-1]:,}"
    return mean_pm([b.get("val_loss") for b in best]) + where


def _throughput(runs: list) -> str:
    rates = [r.result["tokens_seen"] / r.result["train_seconds"] for r in runs
             if r.result.get("tokens_seen") and r.result.get("train_seconds")]
    return mean_pm(rates, ".0f")


def _train_time(runs: list) -> str:
    seconds = [r.result.get("train_seconds") for r in runs if r.result.get("train_seconds") is not None]
    if not seconds:
        return "—"
    return f"{mean_pm(seconds, '.1f')} s per run, {sum(seconds) / 3600:.3f} h in all"


def _reproduce(lab: Path, spec: dict, runs: list) -> list[str]:
    """The command that reruns the study, and the commits its runs were trained at."""
    path = Path(spec["path"]) if spec.get("path") else Path("studies") / f"{spec['name']}.toml"
    if path.is_absolute() and path.is_relative_to(lab.resolve()):
        path = path.relative_to(lab.resolve())
    lab_git = [r.provenance.get("git", {}) for r in runs]
    code_git = [g if isinstance(g, dict) else lab_git[i] for i, g in  # "same as git": one checkout holds both
                enumerate(r.provenance.get("ablab_git", {}) for r in runs)]
    commits = sorted({(g.get("commit") or "")[:12] for g in lab_git} - {""})
    where = "the lab's checkout"
    if not commits:  # the lab is no git checkout: the commit of the ablab code the runs trained with
        commits, where = sorted({(g.get("commit") or "")[:12] for g in code_git} - {""}), "ablab's checkout"
    dirty = any(g.get("dirty") for g in lab_git + code_git)
    at = f"at commit {', '.join(commits)} ({where})" if commits else "(no git commit recorded)"
    versions = sorted({r.code_version for r in runs if r.code_version})
    return [f"- **Reproduce**: `ablab study run {path.as_posix()}` {at}"
            + (", with uncommitted changes then" if dirty else ""),
            f"  - ablab code version of its runs: {', '.join(versions) or 'not recorded'}"]


def _curves(lab: Path, spec: dict, cells: dict) -> list[str]:
    """Links to the loss curves by step and by wall-clock, drawn now if the sheet has not drawn them."""
    folder = lab / "reports" / "studies"
    name = spec["name"]
    wanted = {"By gradient steps": f"{name}-loss-steps.png", "By wall-clock time": f"{name}-loss-time.png"}
    if not all((folder / f).exists() for f in wanted.values()) and any(r is not None for r in cells.values()):
        study_figures(lab, name, spec, cells, folder)
    return ["- **Loss curves** (mean and band over seeds; train dashed):",
            *[f"  - {label}: ![{name} {label.lower()}](studies/{file})" if (folder / file).exists()
              else f"  - {label}: no curve yet (no logged evaluation)" for label, file in wanted.items()]]


def _conclusion_lines(name: str, conclusion: dict) -> list[str]:
    lines = [f"- **Observations**: {conclusion.get('interpretation') or UNWRITTEN.format(name=name)}",
             f"- **Decision**: {conclusion.get('decision') or UNWRITTEN.format(name=name)}"]
    override = conclusion.get("override")
    if override:
        went_past = ", ".join(f"{arm} ({verdict})" for arm, verdict in override.get("arms", {}).items())
        lines.append(f"  - Adopted against the verdict{' of ' + went_past if went_past else ''}, with --override: "
                     f"{override.get('reason')} ({override.get('time', '')[:10]})")
    lines.append(f"- **Next steps**: {conclusion.get('follow_up') or UNWRITTEN.format(name=name)}")
    return lines


def _study_entry(lab: Path, i: int, record: dict, cells: dict, results: list[ArmResult]) -> tuple[list, list]:
    """(the study's entry lines, its summary-table rows)."""
    spec, name = record["spec"], record["name"]
    base = next((r for r in results if r.arm == BASELINE_ARM), None)
    scopes = scope_sentences(spec, cells, results)
    table, rows = [], []
    for r in results:
        runs = _finished(cells, r.arm)
        pct = percent_vs_baseline(r, base)
        vs = "—" if r.arm == BASELINE_ARM else "not compared yet" if pct is None else f"{pct:+.2f}%"
        verdict = ("the reference arm" if r.arm == BASELINE_ARM else r.verdict.outcome if r.verdict
                   else "no verdict yet")
        final = mean_pm([x.result.get("final", {}).get("val_loss") for x in runs])
        best = mean_pm([x.result.get("best", {}).get("val_loss") for x in runs])
        hours = sum(x.result.get("train_seconds", 0) for x in runs) / 3600
        rows.append([i, name, spec["date"], r.arm, f"{len(runs)}/{len(spec['seeds'])}", final, best, vs,
                     f"{hours:.2f} h", verdict])
        table.append([r.arm, ", ".join(f"{k}={v}" for k, v in r.changes.items()) or "—", final, _best_at(runs),
                      vs, _throughput(runs), _train_time(runs), verdict])
    everything = [x for r in results for x in _finished(cells, r.arm)]
    conclusion = record.get("data", {}).get("conclusion", {})
    lines = [f"## Experiment {i}: {name}", "", f"- **Date**: {spec['date']}",
             f"- **Experiment name**: `{name}` (category: {spec.get('category') or UNCATEGORISED})",
             f"- **Hypothesis/Motivation**: {spec['question']} Prediction: {spec['prediction']}",
             f"- **Configuration changes** against {record['baseline']}: "
             + ("; ".join(f"{r.arm}: " + ", ".join(f"{k}={v}" for k, v in r.changes.items())
                          for r in results if r.arm != BASELINE_ARM) or "none"),
             f"- **Results** ({metric_words(spec)} decides; % against the baseline's mean over the same seeds):", "",
             *markdown_table(["arm", "changes", "final val loss", "best val loss", f"vs baseline ({spec['metric']})",
                              "throughput (tokens/s)", "training time", "verdict"], table), "",
             "- **Scoped verdicts**:", *[f"  - {arm}: {sentence}" for arm, sentence in scopes.items()],
             f"  - baseline tested at: {arm_scope(spec, _finished(cells, BASELINE_ARM))}",
             *_curves(lab, spec, cells), *_reproduce(lab, spec, everything), *_conclusion_lines(name, conclusion),
             "", "---", ""]
    return lines, rows


def _one_line(text: str) -> str:
    """A note as one list item: its line breaks become spaces (a break would end the item)."""
    return " ".join(text.split())


def _findings(entries: list[tuple[dict, dict[str, str]]], notes: list[dict]) -> list[str]:
    """Key findings: per category, the studies of that category (their scoped verdicts) and the
    researcher's findings; categories with neither are left out."""
    order = [*FINDING_CATEGORIES, *sorted({r["spec"].get("category") or UNCATEGORISED for r, _ in entries}
                                          - set(FINDING_CATEGORIES))]
    lines = ["## Key findings", ""]
    for category in order:
        studies = [(r, s) for r, s in entries if (r["spec"].get("category") or UNCATEGORISED) == category]
        written = [n for n in notes if n.get("category") == category]
        if not studies and not written:
            continue
        lines += [f"### {category[:1].upper()}{category[1:]}", ""]
        lines += [f"- {_one_line(n['text'])}" + (f" (study {n['study']})" if n.get("study") else "") for n in written]
        lines += [f"- Study {r['name']}, {arm}: {sentence}." for r, scopes in studies for arm, sentence in scopes.items()]
        lines.append("")
    if len(lines) == 2:
        lines += ["_(none yet: run a study, or write one with `ablab log findings --category CATEGORY \"TEXT\"`)_", ""]
    return lines


def _recommendations(notes: list[dict]) -> list[str]:
    lines = ["## Recommendations", ""]
    for i, (kind, title) in enumerate(RECOMMENDATION_KINDS.items(), 1):
        written = [n for n in notes if n.get("kind") == kind]
        lines += [f"{i}. **{title}**:", *([f"   - {_one_line(n['text'])}" for n in written] or
                                          [f"   - _(not written yet; `ablab log recommend --kind \"{kind}\" \"TEXT\"`)_"])]
    return [*lines, ""]


def _environment(runs: list) -> list[str]:
    """The computing environment of the logged runs: one row per distinct machine and software set."""
    counts: dict[tuple, int] = {}
    for r in runs:
        host, versions = r.provenance.get("host", {}) or {}, r.provenance.get("versions", {}) or {}
        gpu = host.get("gpu", {}) or {}
        key = (hardware_class(r), versions.get("torch") or r.result.get("hardware", {}).get("torch") or "—",
               gpu.get("cuda") or "none", host.get("os") or "—", versions.get("python") or "—")
        counts[key] = counts.get(key, 0) + 1
    rows = [[*key, n] for key, n in sorted(counts.items())]
    return ["## Appendix: computing environment", "",
            "From each run's provenance (hardware, software, system), which explains differences in speed.", "",
            *(markdown_table(["hardware", "torch", "CUDA", "OS", "python", "runs"], rows) if rows
              else ["No finished runs yet."]), ""]


def write_log(lab: Path) -> Path:
    """Regenerate reports/LOG.md from the ledger and reports/log-notes.toml (oldest study first)."""
    with Ledger(lab) as ledger:
        studies = [s for s in ledger.studies() if s["spec"].get("kind") != "ladder"]  # ladders have no hypothesis
    entries, rows, scoped, runs = [], [], [], []
    for i, study in enumerate(studies, 1):
        record, cells = status(lab, study["name"])
        results = analyze(lab, study["name"])[1]
        lines, arm_rows = _study_entry(lab, i, record, cells, results)
        entries += lines
        rows += arm_rows
        scoped.append((record, scope_sentences(record["spec"], cells, results)))
        runs += [r for r in cells.values() if r is not None and r.status == "finished"]
    notes = read_notes(lab)
    unique = list({r.id: r for r in runs}.values())  # a run two studies share counts once
    text = ["# Lab log", "",
            "Regenerated from the ledger by ablab; the hand-written parts (observations, decisions and next steps: "
            "`ablab study conclude`; findings and recommendations: `ablab log findings` / `ablab log recommend`, "
            "kept in reports/log-notes.toml) are kept.", "",
            "## Experiment summary table", "", *markdown_table(LOG_COLUMNS, rows), "", "---", "", *entries,
            *_findings(scoped, notes["findings"]), *_recommendations(notes["recommendations"]),
            *_environment(unique)]
    path = lab / "reports" / "LOG.md"
    write_atomic(path, "\n".join(text).encode("utf-8"))
    return path
