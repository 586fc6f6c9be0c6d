"""The study sheet (reports/studies/NAME.md, the experiment-sheet template's sections 0-11) and the
lab log (reports/LOG.md). Both are regenerated from the ledger at any time; the researcher's own
words (interpretation, decision, follow-up questions) live in the ledger and are kept."""

from __future__ import annotations

import math
from pathlib import Path

from ablab.analysis import stats
from ablab.analysis.benchmarks import BenchmarkRow, benchmark_table
from ablab.analysis.runs import markdown_table
from ablab.analysis.samples import SampleTable, side_by_side
from ablab.analysis.scope import scope_sentences
from ablab.analysis.verdicts import BASELINE_ARM, ArmResult, analyze, status
from ablab.report.lablog import write_log
from ablab.report.profile_figure import profile_markdown
from ablab.report.size_table import size_lines
from ablab.report.study_figures import study_figures
from ablab.store.ledger import Ledger

AXIS_NAMES = {"tokens": "Equal tokens seen", "steps": "Equal optimizer steps", "wall_clock": "Equal wall-clock time"}
RESEARCHER = "_(the researcher's; write it with `ablab study conclude {name}`)_"


def _pm(values: list[float], fmt: str = ".4f") -> str:
    """Mean ± std over the seeds that have a value (a missing or NaN seed is left out)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return "—"
    s = stats.summarize(present)
    return f"{s.mean:{fmt}}" if s.n == 1 else f"{s.mean:{fmt}} ± {s.std:{fmt}}"


def _final(runs: list, key: str) -> list[float]:
    return [r.result.get("final", {}).get(key) if r is not None and r.status == "finished" else None for r in runs]


def _params(runs: list) -> str:
    """The arm's parameter count (non-embedding in brackets), which tied embeddings or a width change move."""
    counts = {(r.result.get("params"), r.result.get("non_embedding_params")) for r in runs
              if r is not None and r.result.get("params") is not None}
    return ", ".join(f"{total:,}" + (f" ({inner:,})" if inner is not None else "")
                     for total, inner in sorted(counts)) or "—"


def _results_table(spec: dict, cells: dict, memory: bool) -> list[str]:
    columns = (["config", "step time (s)", "tokens/s", "peak memory (MB)", "final val loss"] if memory else
               ["config", "params (non-embedding)", "final val loss", "final train loss", "final ppl", "tokens/s",
                "peak memory (MB)", "notes"])
    rows = []
    for arm in spec["arms"]:
        runs = [cells[(arm, s)] for s in spec["seeds"]]
        done = [r for r in runs if r is not None and r.status == "finished"]
        notes = f"{len(done)}/{len(runs)} seeds finished"
        diverged = sum(1 for r in runs if r is not None and r.status == "diverged")
        notes += f", {diverged} diverged" if diverged else ""
        speed, memory_mb, val_loss = (_pm(_final(runs, "tokens_per_s"), ".0f"),
                                      _pm(_final(runs, "peak_memory_mb"), ".0f"), _pm(_final(runs, "val_loss")))
        if memory:
            step_time = [r.result["train_seconds"] / r.result["steps"] for r in done if r.result.get("steps")]
            rows.append([arm, _pm(step_time), speed, memory_mb, val_loss])
        else:
            rows.append([arm, _params(runs), val_loss, _pm(_final(runs, "train_loss")),
                         _pm(_final(runs, "val_ppl"), ".2f"), speed, memory_mb, notes])
    return markdown_table(columns, rows)


def _seed_table(spec: dict, cells: dict, results: list[ArmResult], events: dict[str, list[dict]]) -> list[str]:
    """One row per arm and seed: the numbers behind every mean, so a single odd seed shows."""
    metric = {r.arm: dict(zip(spec["seeds"], r.values)) for r in results}
    rows = []
    for arm in spec["arms"]:
        for seed in spec["seeds"]:
            run = cells[(arm, seed)]
            if run is None:
                rows.append([arm, seed, "—", "no run yet", "—", "—", "—", "—"])
                continue
            final = run.result.get("final", {})
            rows.append([arm, seed, run.id, run.status, _number(final.get("train_loss")),
                         _number(final.get("val_loss")), _number(metric[arm][seed]), len(events.get(run.id, []))])
    return markdown_table(["arm", "seed", "run", "status", "final train loss", "final val loss",
                           f"{spec['metric']} ({spec['read_at']})", "events"], rows)


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def _verdicts(results: list[ArmResult], spec: dict, floor: float) -> list[str]:
    lines = [f"Prediction: {spec['metric']} ({spec['read_at']}) should {spec['direction']} by at least "
             f"{spec['min_effect']:g} against the baseline; seed-noise floor of the baseline: "
             f"{floor:.3g} (std over its seeds).", ""]
    for r in results:
        if r.summary is not None and r.summary.n >= 2:
            lines.append(f"- {r.arm}: {spec['metric']} mean {r.summary.mean:.4f}, std {r.summary.std:.3g}, "
                         f"95% CI {r.summary.ci_low:.4f} to {r.summary.ci_high:.4f} over {r.summary.n} seeds.")
    lines.append("")
    for r in results:
        if r.arm == BASELINE_ARM:
            continue
        if r.verdict is None:
            lines.append(f"- **{r.arm}**: not enough paired seeds yet for a verdict.")
            continue
        c, v = r.comparison, r.verdict
        boot = (f"bootstrap {c.boot_low:+.4g} to {c.boot_high:+.4g}" if not math.isnan(c.boot_low)
                else c.boot_note or "no bootstrap interval")
        lines.append(f"- **{r.arm}**: **{v.outcome}**. Rule: {v.reason}. Difference {c.mean_diff:+.4g} "
                     f"(95% CI {c.ci_low:+.4g} to {c.ci_high:+.4g}; {boot}), paired t-test p = {c.p:.3g} "
                     f"over {c.n} seeds; {v.adjustment}.")
        if v.surprise:
            lines.append(f"  - {v.surprise[:1].upper()}{v.surprise[1:]}.")
    return lines


def write_sheet(lab: Path, name: str) -> Path:
    """Regenerate reports/studies/NAME.md (and its loss-curve plots) from the ledger."""
    _, results, floor = analyze(lab, name)  # first: a ladder, which has no sheet, is refused here
    record, cells = status(lab, name)
    spec, notes = record["spec"], record.get("data", {}).get("conclusion", {})
    folder = lab / "reports" / "studies"
    plots = _plots(folder, name, spec, cells, lab)
    provenance = next((r.provenance for r in cells.values() if r is not None), {})
    git = provenance.get("git", {})
    frozen = spec.get("frozen", {})
    bench_lines = benchmark_markdown(benchmark_table(lab, spec, cells))
    events = _events(lab, cells)
    sample_lines = samples_markdown(side_by_side(lab, spec, cells))
    lines = [
        f"# Study: {spec['name']}", "", "## 0. Experiment Meta", "",
        f"- Experiment name: {spec['name']}", f"- Category: {spec['category']}", f"- Date: {spec['date']}",
        f"- Baseline: {record['baseline']}",
        f"- Commit / branch: {git.get('commit') or 'not a git checkout'} / {git.get('branch') or '—'}"
        f"{' (dirty)' if git.get('dirty') else ''}", f"- Seeds: {', '.join(map(str, spec['seeds']))}", "",
        "## 1. Objective", "", spec["question"], "",
        "## 2. Hypothesis", "", f"- Mechanism: {spec['mechanism']}", f"- Prediction: {spec['prediction']}",
        f"- Falsification: {spec['falsification']}", "",
        "## 3. Controlled Variables (Frozen)", "", *[f"- {k}: {v}" for k, v in frozen.items()], "",
        "## 4. Independent Variable(s)", "",
        *markdown_table(["variable", "values"],
                        [[key, ", ".join(map(str, values))] for key, values in spec["variables"].items()]), "",
        "## 5. Experimental Design", "", f"- Budget per run: {spec['budget']:g} ({spec['axis']})",
        f"- Runs: {len(spec['arms'])} arms x {len(spec['seeds'])} seeds", "- Comparison axis:",
        *[f"  - {'☑' if axis == spec['axis'] else '☐'} {label}" for axis, label in AXIS_NAMES.items()], "",
        "## 6. Metrics to Log", "", "Train and val loss vs tokens, perplexity, bits per byte, step time, tokens/s, "
        "MFU, peak memory, global gradient norm, NaN/divergence events, loss spikes.", "",
        *(["Bits per byte (val_bpb) is the metric that compares across tokenizers and corpora: each arm is "
           "scored on its own validation text, and a loss per token is not in the same unit from one "
           "tokenizer to another.", ""] if spec["category"] == "data" else []),
        "## 7. Expected Outcomes", "", spec.get("expected") or "_(none written before running)_", "",
        "## 8. Results", "", "### Raw Observations", "", *_observations(cells, events), "",
        "### Quantitative Summary", "", *_results_table(spec, cells, memory=False), "",
        "### Per-seed Runs", "", *_seed_table(spec, cells, results, events), "",
        *(["### Memory / Systems Addendum", "", *_results_table(spec, cells, memory=True), "",
           *profile_markdown(record.get("data", {}).get("profile") or {}), ""]
          if spec["category"] == "memory" else []),
        *(["### Benchmarks", "", *bench_lines, ""] if bench_lines else []),
        *(["### Samples", "", *sample_lines, ""] if sample_lines else []),
        "### Verdict", "", *_verdicts(results, spec, floor), "", *[f"![{p.stem}]({p.name})" for p in plots], "",
        *size_lines(lab, name),
        "## 9. Interpretation", "", *_scope_lines(spec, cells, results),
        notes.get("interpretation") or RESEARCHER.format(name=name), "",
        "## 10. Decision", "", notes.get("decision") or RESEARCHER.format(name=name), "", *_override_lines(notes),
        "## 11. Follow-up Questions", "", notes.get("follow_up") or RESEARCHER.format(name=name), ""]
    path = folder / f"{name}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    write_log(lab)
    return path


def _scope_lines(spec: dict, cells: dict, results: list[ArmResult]) -> list[str]:
    """The computed claims, each with the scope it was tested at, that the interpretation starts from."""
    scopes = scope_sentences(spec, cells, results)
    return ["Claims, scoped to what was tested:", "", *[f"- {arm}: {sentence}." for arm, sentence in scopes.items()],
            ""] if scopes else []


def _override_lines(notes: dict) -> list[str]:
    """The --override a decision adopting an arm against its verdict was recorded with."""
    override = notes.get("override")
    if not override:
        return []
    went_past = ", ".join(f"{arm} ({verdict})" for arm, verdict in override.get("arms", {}).items())
    return [f"Adopted against the verdict{' of ' + went_past if went_past else ''}, with `--override`: "
            f"{override.get('reason')} (recorded {override.get('time', '')[:10]}).", ""]


def _events(lab: Path, cells: dict) -> dict[str, list[dict]]:
    """Run id -> its events (loss spikes, divergence, resumes, interruptions), oldest first."""
    with Ledger(lab) as ledger:
        return {run.id: ledger.events(run.id) for run in cells.values() if run is not None}


def _observations(cells: dict, events: dict[str, list[dict]]) -> list[str]:
    done = sum(1 for r in cells.values() if r is not None and r.status == "finished")
    lines = [f"- {done} of {len(cells)} runs finished; "
             f"{sum(map(len, events.values())) or 'no'} events (loss spikes, divergence, resumes) recorded."]
    for (arm, seed), run in cells.items():
        if run is None:
            continue
        if run.status != "finished":
            lines.append(f"- {arm}, seed {seed} (run {run.id}): {run.status}.")
        lines += [f"- {arm}, seed {seed} (run {run.id}), step {e['step']}: {e['kind']}: {e.get('message', '')}"
                  for e in events.get(run.id, [])]
    return lines


def _plots(folder: Path, name: str, spec: dict, cells: dict, lab: Path) -> list[Path]:
    return study_figures(lab, name, spec, cells, folder)


def samples_markdown(table: SampleTable | None) -> list[str]:
    """The sheet's samples: one row per prompt and mode, the baseline's and each arm's continuation
    side by side (a line break shown as ↵, so a row stays one row)."""
    if table is None:
        return []
    rows = [[prompt, mode, *(by_arm.get(arm, "—").replace("\n", "↵") for arm in table.arms)]
            for prompt, mode, by_arm in table.rows]
    return [f"The eval.prompts suite continued by the seed-{table.seed} runs at step {table.step:,}, the last step "
            "every arm sampled (greedy, and sampled at temperature 1 with the same seed in every arm).", "",
            *markdown_table(["prompt", "mode", *table.arms], rows)]


def benchmark_markdown(rows: list[BenchmarkRow]) -> list[str]:
    """The sheet's benchmark table: accuracy mean ± std over seeds, and the paired difference."""
    if not rows:
        return []
    table = []
    for r in rows:
        s, c = r.summary, r.comparison
        acc = f"{s.mean:.4f} ± {s.std:.4f}" if s and s.n > 1 else (f"{s.mean:.4f}" if s else "-")
        diff = f"{c.mean_diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if c else "-"
        table.append([r.task, r.arm, acc, s.n if s else 0, diff, f"{c.p:.3g}" if c else "-"])
    return markdown_table(["task", "config", "acc (mean ± std)", "seeds", "diff vs baseline (95% CI)", "p"], table)
