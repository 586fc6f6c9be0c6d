"""The lab report: one self-contained HTML page (reports/index.html) and its markdown twin for the
repository (reports/research_report.md), both regenerated from the ledger at any time.

Sections: the lab at a glance, dated baselines and their lineage, studies with verdicts and loss
curves, every run in a sortable table, and the newest benchmark result per run and task. The page
loads nothing from the network (inline CSS and JS, plots as data: URIs), so it opens the same when
mailed, archived or read offline years later. Runs come from Ledger.summaries and benchmark results
from one evals() query, never one query per run, so a lab of thousands of runs reports in seconds.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ablab.errors import UserError
from ablab.ledger import Ledger, ledger_path
from ablab.record import STATUSES, now_iso
from ablab.runs import Table, cell, list_runs
from ablab.scaling_report import fit_rows, scaling_section
from ablab.study import BASELINE_ARM
from ablab.study_figures import study_figures
from ablab.study_runner import ArmResult, analyze, status

# The runs table: (key of a list_runs row, heading); numeric columns sort as numbers.
RUN_COLUMNS = [("id", "id"), ("name", "name"), ("status", "status"), ("created", "created"), ("steps", "steps"),
               ("tokens", "tokens"), ("params", "params"), ("val_loss", "final val_loss"),
               ("best_val_loss", "best val_loss"), ("tokens_per_s", "tokens/s"), ("tags", "tags")]
NUMERIC = {"steps", "tokens", "params", "val_loss", "best_val_loss", "tokens_per_s"}
RECENT_RUNS = 50  # rows of the markdown runs table: the repository copy stays readable in a diff

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f3f3f3}table.sortable th{cursor:pointer}table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.supported{color:#11722c;font-weight:600}.refuted{color:#b3261e;font-weight:600}.inconclusive{color:#8a6d00}
.missing{color:#b3261e}.muted{color:#777}img{max-width:100%;border:1px solid #eee}nav a{margin-right:1em}
dt{font-weight:600}dd{margin:0 0 .3em 1.5em}"""

# Click a header to sort by it, again to reverse; numbers (data-v) compare as numbers, blanks go last.
SORT_JS = """function sortBy(th){const body=th.closest("table").tBodies[0],i=th.cellIndex,num=th.dataset.type==="num";
const dir=th.dataset.dir==="asc"?"desc":"asc",sign=dir==="asc"?1:-1;
for(const other of th.parentNode.cells)delete other.dataset.dir;th.dataset.dir=dir;
const key=td=>{const v=td.dataset.v??td.textContent.trim();return v===""?null:num?Number(v):v;};
const rows=Array.from(body.rows,r=>[key(r.cells[i]),r]);
rows.sort(([a],[b])=>a===null?(b===null?0:1):b===null?-1:sign*(num?a-b:String(a).localeCompare(String(b))));
for(const [,r] of rows)body.appendChild(r);}
document.querySelectorAll("table.sortable th").forEach(th=>th.addEventListener("click",()=>sortBy(th)));"""


@dataclass
class StudyView:
    """One study as the report shows it."""
    record: dict
    arms: list[ArmResult]
    floor: float  # the baseline arm's seed-noise floor of the metric
    missing: list[str]  # "arm seed N: why" for each (arm, seed) without a finished run
    figures: list[Path]  # the study's PNGs in reports/studies/ (the same the sheet embeds)


@dataclass
class LabView:
    name: str
    generated: str
    baselines: list[dict]
    studies: list[StudyView]
    runs: Table  # list_runs rows, oldest first
    evals: list[dict]  # the newest benchmark result per (run, task)


def gather(lab: Path, curves: bool = True) -> LabView:
    """Everything the report shows, read from the ledger (curves: each study run's metric rows)."""
    if not ledger_path(lab).exists():
        raise UserError(f"{lab} has no ledger, so nothing to report; run this inside a lab or pass --lab with its folder.")
    with Ledger(lab) as ledger:
        found, evals = ledger.baselines(), ledger.evals()
        names = [s["name"] for s in ledger.studies() if s["spec"].get("kind") != "ladder"]  # ladders: no hypothesis
    return LabView(lab_name(lab), now_iso()[:19].replace("T", " ") + " UTC", found,
                   [_study_view(lab, name, curves) for name in names], list_runs(lab), newest_evals(evals))


def lab_name(lab: Path) -> str:
    """The [lab] name of ablab.toml, else the folder's name (the name is only a title here: a broken
    ablab.toml is reported by the commands that use its settings)."""
    try:
        return tomllib.loads((lab / "ablab.toml").read_text(encoding="utf-8"))["lab"]["name"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return lab.resolve().name


def _study_view(lab: Path, name: str, with_curves: bool) -> StudyView:
    record, cells = status(lab, name)
    missing = [f"{arm} seed {seed}: " + ("no run yet" if run is None else f"run {run.id} is {run.status}")
               for (arm, seed), run in cells.items() if run is None or run.status != "finished"]
    _, arms, floor = analyze(lab, name)
    figures = study_figures(lab, name, record["spec"], cells, lab / "reports" / "studies") if with_curves else []
    return StudyView(record, arms, floor, missing, figures)


def newest_evals(rows: list[dict]) -> list[dict]:
    """The newest result per (run, task). Ledger.evals orders by run, step, task, then time, so a
    later row (a later step, or the same step evaluated again) replaces an earlier one."""
    newest = {(row["run_id"], row["task"]): row for row in rows}
    return [newest[key] for key in sorted(newest)]


def lineage(baselines: list[dict]) -> list[list[str]]:
    """Each chain of promotions from a root baseline (promoted from none in this lab) to a baseline
    nothing was promoted from yet, e.g. [['main@2026-11-01', 'main@2026-11-21']]."""
    refs = {b["ref"] for b in baselines}
    children: dict[str, list[str]] = {}
    for b in baselines:
        if b.get("parent") in refs:
            children.setdefault(b["parent"], []).append(b["ref"])
    chains: list[list[str]] = []

    def walk(chain: list[str]) -> None:
        following = [c for c in children.get(chain[-1], []) if c not in chain]  # a hand-made cycle must end
        if not following:
            chains.append(chain)
        for child in following:
            walk([*chain, child])

    for b in baselines:
        if b.get("parent") not in refs:
            walk([b["ref"]])
    return chains


# -- the tables both forms share: (headings, rows of text) ------------------------------------------
def _num(value: Any, fmt: str = ".4f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{fmt}}"


def status_counts(runs: Table) -> str:
    counts = Counter(row["status"] for row in runs.rows)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    return f"{len(runs.rows)} runs" + (f": {', '.join(parts)}" if parts else "")


def baseline_table(baselines: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = [[b["ref"], ", ".join(map(str, b["seeds"])), "current" if b.get("current") else "",
             b.get("parent") or "—", ", ".join(b.get("justified_by") or []) or "—",
             _num((b.get("noise_floor") or {}).get("val_loss"), ".3g")] for b in baselines]
    return ["baseline", "seeds", "current", "promoted from", "justified by", "val_loss noise floor"], rows


def arm_table(study: StudyView) -> tuple[list[str], list[list[str]]]:
    """Per arm: the metric's mean ± std over seeds, the paired difference from the baseline arm
    with its 95% CI and p, and the verdict sentence."""
    metric, rows = study.record["spec"]["metric"], []
    for r in study.arms:
        s, c = r.summary, r.comparison
        spread = "—" if s is None else _num(s.mean) + ("" if math.isnan(s.std) else f" ± {s.std:.4f}")
        verdict = (r.verdict.rule if r.verdict else "the reference arm" if r.arm == BASELINE_ARM
                   else "no verdict: fewer than 2 seeds paired with the baseline")
        rows.append([r.arm, ", ".join(f"{k}={v}" for k, v in r.changes.items()) or "—", spread,
                     f"{s.n if s else 0}/{len(r.values)}",
                     f"{c.mean_diff:+.4g} [{c.ci_low:+.4g}, {c.ci_high:+.4g}]" if c else "—",
                     _num(c.p, ".3g") if c else "—", verdict])
    return ["arm", "changes", f"{metric} (mean ± std)", "seeds", "diff vs baseline [95% CI]", "p", "verdict"], rows


def study_facts(study: StudyView) -> list[tuple[str, str]]:
    spec, record = study.record["spec"], study.record
    return [("Question", spec["question"]), ("Prediction", spec["prediction"]), ("Baseline", record["baseline"]),
            ("Metric", f"{spec['metric']} ({spec['read_at']}) should {spec['direction']} by at least "
                       f"{spec['min_effect']:g}; seeds {', '.join(map(str, spec['seeds']))}"),
            ("Seed-noise floor", f"{_num(study.floor, '.3g')} (std of the baseline arm over its seeds)")]


def conclusions(study: StudyView) -> list[tuple[str, str]]:
    notes = study.record.get("data", {}).get("conclusion") or {}
    return [(label, notes[key]) for key, label in (("interpretation", "Interpretation"), ("decision", "Decision"),
                                                   ("follow_up", "Follow-up")) if notes.get(key)]


def benchmark_table(evals: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = [[e["run_id"], str(e["step"]), e["task"], str(e["task_version"]), str(e.get("n", "")),
             _num(e["metrics"].get("acc")) + (f" ± {e['metrics']['acc_stderr']:.4f}"
                                               if e["metrics"].get("acc_stderr") is not None else ""),
             _num(e["metrics"].get("centered"), "+.4f")] for e in evals]
    return ["run", "step", "task", "version", "n", "acc ± stderr", "centered"], rows


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- HTML --------------------------------------------------------------------------------------------
def build_report(lab: Path, out_dir: Path | None = None, extra_sections: Sequence[tuple[str, str]] = (),
                 *, plots: bool = True, view: LabView | None = None) -> Path:
    """Write OUT_DIR/index.html (default lab/reports): one self-contained page of the whole lab.
    `extra_sections` are (title, HTML) pairs appended as given; `plots=False` skips the loss curves."""
    view = view or gather(lab, curves=plots)  # a view passed in is shared with write_research_report
    sections = [("Baselines and their lineage", _html_baselines(view.baselines)),
                ("Studies with verdicts", "".join(_html_study(s, plots) for s in view.studies)
                 or "<p class=muted>No studies yet.</p>"),
                ("Runs", _html_runs(view.runs))]
    if view.evals:
        sections.append(("Benchmarks", _html_table(*benchmark_table(view.evals))))
    scaling = scaling_section(lab, lab / "reports" / "scaling", plots)
    if scaling is not None:
        sections.append(scaling)
    sections += list(extra_sections)
    anchors = [re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") for title, _ in sections]
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, (t, _) in zip(anchors, sections))
    body = "".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>{content}</section>'
                   for a, (t, content) in zip(anchors, sections))
    name = html.escape(view.name)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ablab report: {name}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f'<header><h1>ablab report: {name}</h1><p>Generated {html.escape(view.generated)} from the ledger. '
            f'{html.escape(status_counts(view.runs))}; {len(view.baselines)} baselines, {len(view.studies)} studies.'
            f'</p><nav>{nav}</nav></header>{body}<script>{SORT_JS}</script></body></html>\n')
    path = (out_dir if out_dir is not None else lab / "reports") / "index.html"
    _write_atomic(path, page)
    return path


def _html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(text: str) -> str:
    """A cell's text, with a verdict's leading outcome word coloured."""
    outcome = text.split(":", 1)[0]
    if outcome in ("supported", "refuted", "inconclusive"):
        return f'<span class="{outcome}">{outcome}</span>{html.escape(text[len(outcome):])}'
    return html.escape(text)


def _html_baselines(baselines: list[dict]) -> str:
    if not baselines:
        return "<p class=muted>No baselines yet.</p>"
    chains = "".join(f"<li>{' &rarr; '.join(html.escape(ref) for ref in chain)}</li>" for chain in lineage(baselines))
    return _html_table(*baseline_table(baselines)) + f"<h3>Lineage</h3><ul>{chains}</ul>"


def _html_study(study: StudyView, plots: bool) -> str:
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in study_facts(study))
    notes = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in conclusions(study))
    missing = ("<p class=missing>Missing: " + "; ".join(map(html.escape, study.missing)) + "</p>"
               if study.missing else "")
    image = "".join(f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,'
                    f'{base64.b64encode(png.read_bytes()).decode("ascii")}">' for png in study.figures) if plots else ""
    return (f"<article><h3>{html.escape(study.record['name'])}</h3><dl>{facts}</dl>{missing}"
            f"{_html_table(*arm_table(study))}{f'<dl>{notes}</dl>' if notes else ''}{image}</article>")


def _html_runs(runs: Table) -> str:
    """Every run, newest first, sortable by any column (numbers carry their raw value in data-v)."""
    head = "".join(f'<th{" data-type=num" if key in NUMERIC else ""}>{html.escape(title)}</th>'
                   for key, title in RUN_COLUMNS)
    lines = []
    for row in reversed(runs.rows):
        cells = []
        for key, _ in RUN_COLUMNS:
            value, text = row.get(key), html.escape(cell(key, row.get(key)))
            if key in NUMERIC:
                raw = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)
                cells.append(f'<td class=num data-v="{raw}">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<p class=muted>{len(runs.rows)} runs, newest first; click a heading to sort.</p>'
            f'<table class="sortable" id="runs-table"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>')


# -- markdown ----------------------------------------------------------------------------------------
def write_research_report(lab: Path, *, plots: bool = True, view: LabView | None = None) -> Path:
    """Write reports/research_report.md (with the studies' figures in reports/studies/): the HTML
    report's content for the repository, with the researcher's conclusions and the newest runs."""
    view = view or gather(lab, curves=plots)
    reports = lab / "reports"
    recent = list(reversed(view.runs.rows[-RECENT_RUNS:]))
    lines = [f"# Research report: {view.name}", "",
             f"Generated {view.generated} from the ledger by `ablab report`. {status_counts(view.runs)}; "
             f"{len(view.baselines)} baselines, {len(view.studies)} studies.", "",
             "## Baselines and their lineage", ""]
    if view.baselines:
        lines += [*_md_table(*baseline_table(view.baselines)), "", "Lineage:", "",
                  *[f"- {' -> '.join(chain)}" for chain in lineage(view.baselines)], ""]
    else:
        lines += ["No baselines yet.", ""]
    lines += ["## Studies with verdicts", ""]
    for study in view.studies:
        lines += _md_study(study, reports, plots)
    if not view.studies:
        lines += ["No studies yet.", ""]
    lines += ["## Runs", "", f"The {len(recent)} most recent of {len(view.runs.rows)} runs, newest first "
              "(`ablab runs` lists them all).", "",
              *_md_table([title for _, title in RUN_COLUMNS],
                         [[cell(key, row.get(key)) for key, _ in RUN_COLUMNS] for row in recent]), ""]
    if view.evals:
        lines += ["## Benchmarks", "", "The newest result per run and task.", "",
                  *_md_table(*benchmark_table(view.evals)), ""]
    with Ledger(lab) as ledger:
        fits = ledger.fits()
    if fits:
        lines += ["## Scaling fits", "", *_md_table(*fit_rows(fits)), ""]
    path = reports / "research_report.md"
    _write_atomic(path, "\n".join(lines))
    return path


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    def md(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(map(md, columns)) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(map(md, row)) + " |" for row in rows]]


def _md_study(study: StudyView, reports: Path, plots: bool) -> list[str]:
    name = study.record["name"]
    lines = [f"### {name}", "", *[f"- {k}: {v}" for k, v in study_facts(study)]]
    if study.missing:
        lines.append(f"- Missing: {'; '.join(study.missing)}")
    lines += ["", *_md_table(*arm_table(study)), ""]
    for label, text in conclusions(study) or [("Conclusion", f"not written yet; `ablab study conclude {name}`")]:
        lines += [f"**{label}.** {text}", ""]
    if plots:
        lines += [f"![{png.stem}]({png.relative_to(reports).as_posix()})" for png in study.figures] + [""]
    return lines
