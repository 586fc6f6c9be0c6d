"""Tables of runs from the ledger, for `ablab runs`, `show`, `diff`, `compare`, `note` and `tag`.

Everything here returns plain data (a `Table` of dict rows, or sections of them) and prints
nothing; the CLI prints, `ablab.report.plots` draws. Listing reads the ledger's summaries (one query,
no config or provenance decoded), so it stays fast for a lab of many thousand runs.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run, ledger_path
from ablab.store.record import STATUSES, now_iso
from ablab.store.tables import finite

# Columns of `ablab runs`, in order; each is a key of every row.
COLUMNS = ["id", "name", "status", "created", "steps", "tokens", "val_loss", "best_val_loss",
           "tokens_per_s", "params", "tags"]
FINAL_METRICS = ["train_loss", "val_loss", "val_ppl", "val_bpb", "tokens_per_s", "mfu", "peak_memory_mb",
                 "grad_norm"]
DELTA_METRICS = ["val_loss", "train_loss", "val_bpb", "tokens_per_s", "peak_memory_mb"]  # for `diff`
COMPARE_COLUMNS = ["id", "name", "steps", "tokens", "train_seconds", "train_loss", "val_loss", "val_bpb",
                   "tokens_per_s", "peak_memory_mb"]
FORMATS = ("table", "csv", "json", "markdown")
# Provenance facts that differ between almost any two runs and say nothing the config diff does not.
NOT_DIFFED = {"command", "cwd"}


@dataclass
class Table:
    columns: list[str]  # the keys of each row, in display order
    rows: list[dict[str, Any]]


@dataclass
class Curve:
    """One run's metric rows (merged per step, as the ledger holds them) for plotting."""
    run_id: str
    label: str
    rows: list[dict[str, Any]]


def open_ledger(lab: Path) -> Ledger:
    """The lab's ledger, which these commands read but never create (a mistyped --lab must not
    leave an empty .ablab/ behind)."""
    if not ledger_path(lab).exists():
        raise UserError(f"{lab} has no ledger, so no runs; run this inside a lab or pass --lab with its folder.")
    return Ledger(lab)


# -- ablab runs ---------------------------------------------------------------------------------------
def list_runs(lab: Path, status: str | None = None, name: str | None = None, tag: str | None = None,
              where: typing.Sequence[str] = (), sort: str | None = None, desc: bool = False,
              limit: int | None = None, config_columns: typing.Sequence[str] = (),
              ledger: Ledger | None = None) -> Table:
    """Runs as rows of COLUMNS plus `config_columns` (dotted config keys, e.g. model.d_model),
    filtered like Ledger.runs and sorted by a column or final metric (`-key` or desc=True for
    descending; runs lacking it go last). Without a sort, runs are oldest first and `limit` keeps
    the newest; with one, `limit` keeps the first rows. `ledger`: one already open (a read-only
    one, for the dashboard), else the lab's is opened."""
    if status is not None and status not in STATUSES:
        raise UserError(f"Status '{status}' is not one of {', '.join(STATUSES)}; pick one of those.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, not {limit}.")
    filters = parse_where(where)
    extra = check_config_columns(config_columns)
    columns = list(COLUMNS) + extra
    if ledger is None and not ledger_path(lab).exists():  # no runs yet; listing must not create a ledger
        return Table(columns, [])
    with contextlib.nullcontext(ledger) if ledger else Ledger(lab) as reader:
        found = reader.summaries(status=status, name=name, tag=tag, where=filters)
        values = reader.config_values(extra)
    rows = [_row(run) | dict(zip(extra, values.get(run["id"], []))) for run in found]
    if sort:
        key, desc = (sort[1:], True) if sort.startswith("-") else (sort, desc)
        _check_sort_key(key, found, extra)
        if key not in columns:  # a final metric: show the numbers the order comes from
            columns.append(key)
            for row, run in zip(rows, found):
                row[key] = run["result"].get("final", {}).get(key)
        rows = _sorted(rows, key, desc)
    if limit is not None:
        rows = rows[:limit] if sort else rows[-limit:]
    return Table(columns, rows)


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    result = summary["result"]
    final = result.get("final", {})
    return {"id": summary["id"], "name": summary["name"], "status": summary["status"],
            "created": summary["created_at"], "steps": result.get("steps"), "tokens": result.get("tokens_seen"),
            "val_loss": final.get("val_loss"), "best_val_loss": result.get("best", {}).get("val_loss"),
            "tokens_per_s": final.get("tokens_per_s"), "params": result.get("params"), "tags": summary["tags"]}


def parse_where(items: typing.Sequence[str]) -> dict[str, Any]:
    """`model.d_model=384` -> {'model.d_model': 384}, the value coerced to the config field's type
    so that it matches the JSON the ledger holds; unknown keys get a did-you-mean."""
    found = {}
    for item in items:
        key, text = config_mod.parse_override(item)
        section, _, field_name = key.rpartition(".")
        owner = config_mod.SECTION_TYPES[section] if section else config_mod.Config
        found[key] = config_mod.coerce(key, text, typing.get_type_hints(owner)[field_name])
    return found


def check_config_columns(keys: typing.Sequence[str]) -> list[str]:
    """Dotted config keys asked for as extra columns, each once, in the order given; an unknown
    one is refused with a did-you-mean."""
    known = config_mod.flat_keys()
    for key in keys:
        if key not in known:
            raise UserError(f"--columns: '{key}' is not a config key.{config_mod.did_you_mean(key, known)} "
                            "`ablab config keys` lists them.")
    return list(dict.fromkeys(keys))


def _check_sort_key(key: str, summaries: list[dict], extra: typing.Sequence[str] = ()) -> None:
    known = set(COLUMNS) | set(FINAL_METRICS) | set(extra)
    known |= {k for s in summaries for k in s["result"].get("final", {})}
    if key not in known:
        match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise UserError(f"Cannot sort by '{key}': it is neither a column nor a final metric.{hint}")


def _sorted(rows: list[dict], key: str, desc: bool) -> list[dict]:
    present = [row for row in rows if row.get(key) is not None]
    present.sort(key=lambda row: row[key], reverse=desc)
    return present + [row for row in rows if row.get(key) is None]


# -- text forms of a table ----------------------------------------------------------------------------
def cell(key: str, value: Any) -> str:
    """A value as a person reads it: five significant digits (enough for a loss, and for a config's
    0.006 or 1e-08 as written), big numbers with commas."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if key in ("created", "finished") and isinstance(value, str):
        return value[:16].replace("T", " ")  # to the minute; the full timestamp is in json/csv
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if key in ("tokens", "params") else str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.5g}"
    return str(value)


def render(table: Table, fmt: str) -> str:
    """The table as csv, json (a list of objects), or a markdown pipe table. ("table", the rich
    terminal table, is drawn by the CLI.)"""
    if fmt == "json":
        return to_json([{k: row.get(k) for k in table.columns} for row in table.rows])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_csv_value(row.get(key)) for key in table.columns])
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        return "\n".join(markdown_table(table.columns, [[cell(k, row.get(k)) for k in table.columns]
                                                        for row in table.rows]))
    raise UserError(f"Format '{fmt}' is not one of {', '.join(FORMATS)}; pick one of those.")


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()  # as in json and the other formats
    return "" if value is None else value


def to_json(value: Any) -> str:
    """One JSON document that any JSON reader parses (what every `--json` prints): a NaN or
    infinity becomes null, a value JSON has no form for (a path, a date) its text."""
    return json.dumps(finite(value), indent=2, allow_nan=False, default=str)


def as_document(sections: dict[str, Table]) -> dict[str, Any]:
    """Titled sections (from show or diff) as one JSON-ready document: a key/value section becomes
    an object (its keys with underscores for spaces: `stop_reason`, `final_val_loss`), any other a
    list of row objects; `config [model]` and the like nest under `config`."""
    document: dict[str, Any] = {}
    for title, table in sections.items():
        if table.columns[:2] == ["key", "value"]:
            content: Any = {row["key"].replace(" ", "_"): row["value"] for row in table.rows}
        else:
            content = [{key: row.get(key) for key in table.columns} for row in table.rows]
        if title.startswith("config ["):
            document.setdefault("config", {})[title[len("config ["):-1]] = content
        else:
            document[title] = content
    return document


def markdown_table(columns: typing.Sequence[str], rows: typing.Iterable[typing.Sequence[Any]]) -> list[str]:
    """A markdown pipe table as lines, the one writer of them (runs, sheets, the report). A bar in
    a cell is escaped and a line break becomes a space, so one row always stays one table row."""
    def text(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(map(text, columns)) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(map(text, row)) + " |" for row in rows)]


# -- ablab show ---------------------------------------------------------------------------------------
def show(lab: Path, ref: str) -> dict[str, Table]:
    """One run in titled sections: run, config (one per section), provenance, metrics, events, notes,
    tag history (every tag added or removed, with its time: taking a tag off keeps that it was on)."""
    with open_ledger(lab) as ledger:
        run = ledger.run(ref)
        events, notes, tag_history = ledger.events(run.id), ledger.notes(run.id), ledger.tag_history(run.id)
        evals = ledger.evals([run.id])
    r = run.result
    summary = {"id": run.id, "name": run.name, "status": run.status, "created": run.created_at,
               "finished": run.finished_at, "stop reason": r.get("stop_reason"), "steps": r.get("steps"),
               "tokens": r.get("tokens_seen"), "train seconds": r.get("train_seconds"), "params": r.get("params"),
               "seed": run.seed, "tags": run.tags}
    sections = {"run": _pairs(summary)}
    top = {k: v for k, v in run.config.items() if not isinstance(v, dict)}
    sections["config"] = _pairs(top)
    for section, values in run.config.items():
        if isinstance(values, dict):
            sections[f"config [{section}]"] = _pairs(values)
    sections["provenance"] = _pairs(provenance_facts(run))
    best = r.get("best", {})
    metrics = {f"final {k}": v for k, v in run.final.items()}
    metrics |= {"best val_loss": best.get("val_loss"), "best at step": best.get("step")}
    sections["metrics"] = _pairs(metrics)
    sections["benchmarks"] = Table(["step", "task", "version", "fewshot", "n", "acc", "acc_stderr", "centered"],
                                   [{**e, "version": e["task_version"], "fewshot": e["num_fewshot"], **e["metrics"]}
                                    for e in evals])
    sections["events"] = Table(["step", "kind", "message"], events)
    sections["notes"] = Table(["time", "text"], notes)
    sections["tag_history"] = Table(["time", "action", "tag"],  # '' time: tagged before the ledger kept history
                                    [row | {"time": row["time"] or "(before history)"} for row in tag_history])
    return sections


def _pairs(values: dict[str, Any]) -> Table:
    return Table(["key", "value"], [{"key": k, "value": v} for k, v in values.items()])


def provenance_facts(run: Run) -> dict[str, Any]:
    """Where a run came from, flattened to dotted keys in reading order."""
    p = run.provenance
    facts: dict[str, Any] = {}
    for key in ("git", "ablab_git"):
        git = p.get(key)
        if isinstance(git, dict) and git.get("available"):
            facts |= {f"{key}.{k}": git.get(k) for k in ("commit", "branch", "dirty")}
        elif git is not None:
            facts[key] = git if isinstance(git, str) else f"unavailable ({git.get('reason', 'unknown')})"
    facts["code_version"] = p.get("code_version", run.code_version)
    command = p.get("command")
    facts["command"] = shlex.join(command) if isinstance(command, list) else command
    facts["cwd"] = p.get("cwd")
    facts |= {f"versions.{k}": v for k, v in p.get("versions", {}).items()}
    host = p.get("host", {})
    gpu = host.get("gpu", {})
    facts |= {f"host.{k}": host.get(k) for k in ("name", "os", "cpu", "cores")}
    if isinstance(gpu, dict):
        gpu = ", ".join(gpu.get("models", [])) or gpu.get("note")
    facts["host.gpu"] = gpu
    facts["data_fingerprint"] = p.get("data_fingerprint", run.data_fingerprint)
    facts["tokenizer_fingerprint"] = p.get("tokenizer_fingerprint")
    facts["config_hash"] = p.get("config_hash", run.config_hash)
    return facts


# -- ablab diff ---------------------------------------------------------------------------------------
def diff(lab: Path, ref_a: str, ref_b: str) -> dict[str, Table]:
    """What differs between two runs: config keys, provenance facts, and final metric deltas (b - a)."""
    with open_ledger(lab) as ledger:
        a, b = ledger.run(ref_a), ledger.run(ref_b)
    cfg_a = config_mod.from_dict(a.config, where=f"run {a.id}'s config")
    cfg_b = config_mod.from_dict(b.config, where=f"run {b.id}'s config")
    config_rows = [{"key": k, "a": va, "b": vb} for k, va, vb in config_mod.diff(cfg_a, cfg_b)]
    facts_a, facts_b = provenance_facts(a), provenance_facts(b)
    keys = list(facts_a) + [k for k in facts_b if k not in facts_a]
    provenance_rows = [{"key": k, "a": facts_a.get(k), "b": facts_b.get(k)} for k in keys
                       if k not in NOT_DIFFED and facts_a.get(k) != facts_b.get(k)]
    metric_rows = []
    for metric in DELTA_METRICS:
        va, vb = a.final.get(metric), b.final.get(metric)
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        metric_rows.append({"metric": metric, "a": va, "b": vb, "b-a": delta})
    return {"runs": Table(["run", "id", "name"], [{"run": "a", "id": a.id, "name": a.name},
                                                  {"run": "b", "id": b.id, "name": b.name}]),
            "config": Table(["key", "a", "b"], config_rows),
            "provenance": Table(["key", "a", "b"], provenance_rows),
            "metrics": Table(["metric", "a", "b", "b-a"], metric_rows)}


# -- ablab compare ------------------------------------------------------------------------------------
def compare(lab: Path, refs: typing.Sequence[str]) -> tuple[list[Curve], Table]:
    """Each run's loss curves, and a table of their final metrics, in the order given."""
    curves, rows = [], []
    with open_ledger(lab) as ledger:
        for ref in refs:
            run = ledger.run(ref)
            label = f"{run.id} {run.name}".strip()
            curves.append(Curve(run.id, label, ledger.metrics(run.id)))
            rows.append({"id": run.id, "name": run.name, "steps": run.result.get("steps"),
                         "tokens": run.result.get("tokens_seen"), "train_seconds": run.result.get("train_seconds"),
                         **{k: run.final.get(k) for k in COMPARE_COLUMNS[5:]}})
    return curves, Table(list(COMPARE_COLUMNS), rows)


# -- ablab note / ablab tag ---------------------------------------------------------------------------
def add_note(lab: Path, ref: str, text: str) -> str:
    """Attach a dated note to a run; returns the run's full id."""
    if not text.strip():
        raise UserError("The note is empty; write the text in quotes after the run id.")
    with open_ledger(lab) as ledger:
        run_id = ledger.resolve(ref)
        ledger.add_note(run_id, text.strip(), now_iso())
    return run_id


def remove_tag(lab: Path, ref: str, tag: str) -> str:
    """Take a tag off a run; returns the run's full id. A tag the run does not have is an error
    that names the tags it has."""
    with open_ledger(lab) as ledger:
        run = ledger.run(ref)
        if not ledger.remove_tag(run.id, tag):
            has = f"its tags are {', '.join(run.tags)}" if run.tags else "it has no tags"
            raise UserError(f"Run {run.id} has no tag '{tag}' ({has}); name one of its tags to remove.")
    return run.id


def add_tag(lab: Path, ref: str, tag: str) -> str:
    """Tag a run (tags are kept once each); returns the run's full id."""
    if not tag or any(ch.isspace() or ch in ",;|" for ch in tag):
        raise UserError(f"Tag '{tag}' must be one word without spaces, commas, semicolons or bars; "
                        "use e.g. 'baseline' or 'lr-sweep'.")
    with open_ledger(lab) as ledger:
        run_id = ledger.resolve(ref)
        ledger.add_tag(run_id, tag)
    return run_id
