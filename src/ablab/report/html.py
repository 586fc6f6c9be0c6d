"""The lab report: one self-contained HTML page (reports/index.html) and its markdown twin for the
repository (reports/research_report.md), both regenerated from the ledger at any time.

Sections: the lab at a glance, dated baselines and their lineage, studies with verdicts and loss
curves, the map of ideas (ablab.report.idea_map), every run in a sortable table, and the newest
benchmark result per run and task. The page
loads nothing from the network (inline CSS and JS, plots as data: URIs), so it opens the same when
mailed, archived or read offline years later. Runs come from Ledger.summaries and benchmark results
from one evals() query, never one query per run, so a lab of thousands of runs reports in seconds.
"""

from __future__ import annotations

import base64
import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jinja2

from ablab import config as config_mod
from ablab.analysis.runs import Table, cell, list_runs, markdown_table
from ablab.analysis.scope import scope_sentences
from ablab.analysis.verdicts import BASELINE_ARM, ArmResult, analyze, status
from ablab.data.cache import write_atomic
from ablab.errors import UserError
from ablab.lab import LAB_FILE
from ablab.report.idea_map import map_section
from ablab.report.scaling import fit_rows, scaling_section
from ablab.report.study_figures import study_figures
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.record import STATUSES, now_iso

# The runs table: (key of a list_runs row, heading); numeric columns sort as numbers. The seed and the
# config keys the lab's studies vary come after the name (see run_columns).
RUN_COLUMNS = [("id", "id"), ("name", "name"), ("status", "status"), ("created", "created"), ("steps", "steps"),
               ("tokens", "tokens"), ("params", "params"), ("val_loss", "final val_loss"),
               ("best_val_loss", "best val_loss"), ("tokens_per_s", "tokens/s"), ("tags", "tags")]
NUMERIC = {"seed", "steps", "tokens", "params", "val_loss", "best_val_loss", "tokens_per_s"}
RECENT_RUNS = 50  # rows of the markdown runs table: the repository copy stays readable in a diff

@dataclass
class StudyView:
    """One study as the report shows it."""
    record: dict
    arms: list[ArmResult]
    floor: float  # the baseline arm's seed-noise floor of the metric
    missing: list[str]  # "arm seed N: why" for each (arm, seed) without a finished run
    figures: list[Path]  # the study's PNGs in reports/studies/ (the same the sheet embeds)
    scopes: dict[str, str] = field(default_factory=dict)  # arm -> its verdict with the scope it was tested at


@dataclass
class LabView:
    name: str
    generated: str
    baselines: list[dict]
    studies: list[StudyView]
    runs: Table  # list_runs rows, oldest first, with the seed and the variables' config values
    evals: list[dict]  # the newest benchmark result per (run, task)
    variables: list[str]  # the config keys the lab's studies and ladders vary, in first-seen order


def gather(lab: Path, curves: bool = True) -> LabView:
    """Everything the report shows, read from the ledger (curves: each study run's metric rows)."""
    if not ledger_path(lab).exists() and (lab / LAB_FILE).is_file():  # a new lab, from `ablab init`
        raise UserError(f"Nothing to report yet in {lab}: it has no runs, baselines or studies; train a run first, "
                        "e.g. `ablab run -c config.toml`.")
    if not ledger_path(lab).exists():
        raise UserError(f"{lab} has no ledger, so nothing to report; run this inside a lab or pass --lab with its folder.")
    with Ledger(lab) as ledger:
        found, evals, studies = ledger.baselines(), ledger.evals(), ledger.studies()
    names = [s["name"] for s in studies if s["spec"].get("kind") != "ladder"]  # ladders: no hypothesis
    variables = study_variables(studies)
    return LabView(lab_name(lab), now_iso()[:19].replace("T", " ") + " UTC", found,
                   [_study_view(lab, name, curves) for name in names],
                   list_runs(lab, config_columns=["seed", *variables]), newest_evals(evals), variables)


def study_variables(studies: list[dict]) -> list[str]:
    """The config keys that studies vary (their variables) and ladders change per rung, each once: the
    columns a reader of the runs table needs to tell one arm's runs from another's. A key this code
    no longer has (a study from an older version) is left out rather than failing the report."""
    known = config_mod.flat_keys()
    keys = [key for s in studies for key in [*(s["spec"].get("variables") or {}),
                                             *(k for changes in (s["spec"].get("arms") or {}).values()
                                               for k in (changes or {}))]]
    return [key for key in dict.fromkeys(keys) if key in known and key != "seed"]


def run_columns(view: LabView) -> list[tuple[str, str]]:
    """RUN_COLUMNS with the seed and the study variables after the run's name."""
    return [*RUN_COLUMNS[:2], ("seed", "seed"), *((key, key) for key in view.variables), *RUN_COLUMNS[2:]]


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
    return StudyView(record, arms, floor, missing, figures, scope_sentences(record["spec"], cells, arms))


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
    with its 95% CI and p (and the Holm-adjusted p the verdict read, with several arms), and the
    verdict sentence with any surprise to check."""
    metric, rows = study.record["spec"]["metric"], []
    for r in study.arms:
        s, c, v = r.summary, r.comparison, r.verdict
        spread = "—" if s is None else _num(s.mean) + ("" if math.isnan(s.std) else f" ± {s.std:.4f}")
        verdict = (v.rule + (f"; {v.surprise}" if v.surprise else "") if v else "the reference arm"
                   if r.arm == BASELINE_ARM else "no verdict: fewer than 2 seeds paired with the baseline")
        p = _num(c.p, ".3g") if c else "—"
        if v and "Holm" in v.adjustment:
            p += f" (Holm-adjusted {v.p:.3g})"
        rows.append([r.arm, ", ".join(f"{key}={value}" for key, value in r.changes.items()) or "—", spread,
                     f"{s.n if s else 0}/{len(r.values)}",
                     f"{c.mean_diff:+.4g} [{c.ci_low:+.4g}, {c.ci_high:+.4g}]" if c else "—", p, verdict])
    return ["arm", "changes", f"{metric} (mean ± std)", "seeds", "diff vs baseline [95% CI]", "p", "verdict"], rows


def study_facts(study: StudyView) -> list[tuple[str, str]]:
    spec, record = study.record["spec"], study.record
    return [("Question", spec["question"]), ("Prediction", spec["prediction"]), ("Baseline", record["baseline"]),
            ("Metric", f"{spec['metric']} ({spec['read_at']}) should {spec['direction']} by at least "
                       f"{spec['min_effect']:g}; seeds {', '.join(map(str, spec['seeds']))}"),
            ("Seed-noise floor", f"{_num(study.floor, '.3g')} (std of the baseline arm over its seeds)"),
            *((f"Claim for {arm}", sentence) for arm, sentence in study.scopes.items())]


def conclusions(study: StudyView) -> list[tuple[str, str]]:
    notes = study.record.get("data", {}).get("conclusion") or {}
    override = notes.get("override") or {}
    return [(label, notes[key]) for key, label in (("interpretation", "Interpretation"), ("decision", "Decision"),
                                                   ("follow_up", "Follow-up")) if notes.get(key)] + (
        [("Adopted against the verdict (--override)", override["reason"])] if override.get("reason") else [])


def benchmark_table(evals: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = [[e["run_id"], str(e["step"]), e["task"], str(e["task_version"]), str(e.get("n", "")),
             _num(e["metrics"].get("acc")) + (f" ± {e['metrics']['acc_stderr']:.4f}"
                                               if e["metrics"].get("acc_stderr") is not None else ""),
             _num(e["metrics"].get("centered"), "+.4f")] for e in evals]
    return ["run", "step", "task", "version", "n", "acc ± stderr", "centered"], rows


# -- HTML --------------------------------------------------------------------------------------------
# The page's markup lives in templates/report.html.j2; autoescape escapes every value put into it.
PAGE = jinja2.Environment(loader=jinja2.PackageLoader("ablab.report", "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def build_report(lab: Path, out_dir: Path | None = None, extra_sections: Sequence[tuple[str, str]] = (),
                 *, plots: bool = True, view: LabView | None = None) -> Path:
    """Write OUT_DIR/index.html (default lab/reports): one self-contained page of the whole lab.
    `extra_sections` are (title, HTML) pairs appended as given; `plots=False` skips the loss curves."""
    view = view or gather(lab, curves=plots)  # a view passed in is shared with write_research_report
    sections = [{"title": "Baselines and their lineage", "kind": "baselines"},
                {"title": "Studies with verdicts", "kind": "studies"},
                {"title": "Map of ideas", "html": map_section(lab, view.studies)},  # inline SVG, escaped there
                {"title": "Runs", "kind": "runs"}]
    if view.evals:
        sections.append({"title": "Benchmarks", "kind": "benchmarks"})
    scaling = scaling_section(lab, lab / "reports" / "scaling", plots)
    if scaling is not None:
        sections.append({"title": "Scaling fits", "kind": "scaling", "scaling": scaling})
    sections += [{"title": title, "html": content}  # HTML built by the caller, put in unescaped
                 for title, content in extra_sections]
    for section in sections:
        section["anchor"] = re.sub(r"[^a-z0-9]+", "-", section["title"].lower()).strip("-")
    columns, rows = baseline_table(view.baselines)
    page = PAGE.get_template("report.html.j2").render(
        name=view.name, generated=view.generated, counts=status_counts(view.runs), n_baselines=len(view.baselines),
        sections=sections, outcomes=("supported", "refuted", "inconclusive"),
        baselines={"columns": columns, "rows": rows, "chains": lineage(view.baselines)},
        studies=[_study_context(s, plots) for s in view.studies], runs=_runs_context(view.runs, run_columns(view)),
        benchmarks=dict(zip(("columns", "rows"), benchmark_table(view.evals))))
    path = (out_dir if out_dir is not None else lab / "reports") / "index.html"
    write_atomic(path, (page + "\n").encode("utf-8"))
    return path


def _study_context(study: StudyView, plots: bool) -> dict[str, Any]:
    columns, rows = arm_table(study)
    images = [(png.stem, "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii"))
              for png in study.figures] if plots else []
    return {"name": study.record["name"], "facts": study_facts(study), "missing": study.missing,
            "arms": {"columns": columns, "rows": rows}, "notes": conclusions(study), "images": images}


def _runs_context(runs: Table, columns: list[tuple[str, str]]) -> dict[str, Any]:
    """Every run, newest first, as (text, raw) cells: a numeric cell carries its raw value (data-v,
    "" when missing) so that the page sorts it as a number; other cells have raw None. A variable's
    column is numeric when every run that has it holds a number (a learning rate, a width)."""
    def raw(value: Any) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)

    numeric = {key for key, _ in columns if key in NUMERIC or (key not in dict(RUN_COLUMNS) and all(
        isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
        for row in runs.rows if row.get(key) is not None))}
    rows = [[(cell(key, row.get(key)), raw(row.get(key)) if key in numeric else None) for key, _ in columns]
            for row in reversed(runs.rows)]
    return {"headings": [(title, key in numeric) for key, title in columns], "rows": rows}


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
        lines += [*markdown_table(*baseline_table(view.baselines)), "", "Lineage:", "",
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
              *markdown_table([title for _, title in run_columns(view)],
                              [[cell(key, row.get(key)) for key, _ in run_columns(view)] for row in recent]), ""]
    if view.evals:
        lines += ["## Benchmarks", "", "The newest result per run and task.", "",
                  *markdown_table(*benchmark_table(view.evals)), ""]
    with Ledger(lab) as ledger:
        fits = ledger.fits()
    if fits:
        lines += ["## Scaling fits", "", *markdown_table(*fit_rows(fits)), ""]
    path = reports / "research_report.md"
    write_atomic(path, "\n".join(lines).encode("utf-8"))
    return path


def _md_study(study: StudyView, reports: Path, plots: bool) -> list[str]:
    name = study.record["name"]
    lines = [f"### {name}", "", *[f"- {k}: {v}" for k, v in study_facts(study)]]
    if study.missing:
        lines.append(f"- Missing: {'; '.join(study.missing)}")
    lines += ["", *markdown_table(*arm_table(study)), ""]
    for label, text in conclusions(study) or [("Conclusion", f"not written yet; `ablab study conclude {name}`")]:
        lines += [f"**{label}.** {text}", ""]
    if plots:
        lines += [f"![{png.stem}]({png.relative_to(reports).as_posix()})" for png in study.figures] + [""]
    return lines
