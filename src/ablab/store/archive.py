"""Moving runs between labs: `ablab export` writes one archive, `ablab import` reads it back, or
rebuilds the ledger rows of bare run directories (copied from another machine, or written before the
lab had a ledger) from the files every run directory holds.

An archive is a .tar.gz holding `ablab-export.json` (the ledger rows of each run: the run, its
metrics, events, notes and tags, so what exists only in the ledger survives) and the run directories
under `runs/<id>/`, checkpoints left out unless asked for. Importing is idempotent: a run whose id
is already in the ledger is skipped, whatever its source, unless both copies are settled (finished
or diverged) and their records differ: then nothing is imported (a settled record never changes). Each run goes in whole: its directory is
assembled in a hidden folder and renamed into place, then its rows are written in one transaction.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import ablab
from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run
from ablab.store.record import RUN_ID_BYTES, content_key, is_run_id, read_jsonl, runs_root, sample_rows
from ablab.store.schema import SCHEMA_VERSION, SETTLED_STATUSES
from ablab.store.tables import dump

MANIFEST = "ablab-export.json"
FORMAT = "ablab-export"
FORMAT_VERSION = 1
RUN_FIELDS = {f.name for f in fields(Run)} - {"tags"}


@dataclass
class ExportReport:
    path: Path
    runs: int
    bytes: int
    without_directory: list[str] = field(default_factory=list)  # in the ledger, folder gone: rows only


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)


# -- export ---------------------------------------------------------------------------------------
def export_lab(lab: Path, out: Path | None = None, run_ids: list[str] | None = None,
               with_checkpoints: bool = False) -> ExportReport:
    """Write the chosen runs (all when none are named) of `lab` into the archive `out` (default: a
    dated file in the current directory)."""
    out = out or Path(f"{lab.name or 'lab'}-{datetime.now():%Y%m%d-%H%M%S}.tar.gz")
    if out.exists():
        raise UserError(f"{out} already exists; pass --out with a new file name or remove it first.")
    with Ledger(lab) as ledger:
        runs = ledger.runs(ids=[ledger.resolve(r) for r in run_ids]) if run_ids else ledger.runs()
        if not runs:
            raise UserError("This lab's ledger holds no runs to export; `ablab import` run directories first.")
        entries = [{"run": {k: v for k, v in asdict(run).items() if k in RUN_FIELDS}, "tags": run.tags,
                    "metrics": ledger.metrics(run.id), "events": ledger.events(run.id),
                    "notes": ledger.notes(run.id)} for run in runs]
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "ledger_schema": SCHEMA_VERSION,
                "ablab_version": ablab.__version__, "exported_at": datetime.now(timezone.utc).isoformat(),
                "with_checkpoints": with_checkpoints, "runs": entries}
    report = ExportReport(out, len(runs), 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")  # renamed when complete: no half-written archive under `out`
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, sort_keys=True).encode())
            for run in runs:
                folder = runs_root(lab) / run.id
                if not folder.is_dir():
                    report.without_directory.append(run.id)
                    continue
                for path in _run_files(folder, with_checkpoints):
                    tar.add(path, arcname=f"runs/{run.id}/{path.relative_to(folder).as_posix()}", recursive=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    report.bytes = out.stat().st_size
    return report


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _run_files(folder: Path, with_checkpoints: bool) -> list[Path]:
    """A run directory's regular files; hidden names are temp files of an unfinished write."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") for p in parts) or (parts[0] == "checkpoints" and not with_checkpoints):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


# -- import ---------------------------------------------------------------------------------------
def import_runs(lab: Path, sources: list[Path]) -> ImportReport:
    """Bring archives and run directories (or folders of run directories) into `lab`. Every source
    is read and checked before anything is written, so that one bad source imports nothing."""
    report = ImportReport()
    with contextlib.ExitStack() as open_archives:
        checked = []
        for source in sources:
            if source.is_dir():
                checked.append((None, [_read_directory(folder) for folder in _run_folders(source)]))
            elif source.is_file():
                checked.append((source, _read_archive(source, open_archives)))
            else:
                raise UserError(f"{source} does not exist; pass an archive written by `ablab export` or a run directory.")
        with Ledger(lab) as ledger:
            _refuse_conflicts(ledger, [run for archive, found in checked
                                       for run in (found[3].values() if archive else [f[1] for f in found])])
            for archive, found in checked:
                if archive is None:
                    for folder, run, metrics, events in found:
                        _import_directory(ledger, lab, folder, run, metrics, events, report)
                else:
                    _import_archive(ledger, lab, archive, *found, report)
    return report


def _refuse_conflicts(ledger: Ledger, runs: list[Run]) -> None:
    """Refuse the whole import when a settled run (finished or diverged) it brings is here already
    with another record under the same id: a settled record is never changed, and skipping it would
    hide that two labs disagree about one run. An identical one is skipped as before."""
    for run in runs:
        here = ledger.runs(ids=[run.id])
        if not here or here[0].status not in SETTLED_STATUSES or run.status not in SETTLED_STATUSES:
            continue
        mine = (here[0].config_hash, here[0].seed, here[0].status, dump(here[0].result.get("final", {})))
        if mine != (run.config_hash, run.seed, run.status, dump(run.result.get("final", {}))):
            raise UserError(f"Run {run.id} is already in this lab as a {here[0].status} run with another record "
                            "(config, seed, status or final metrics differ), and a settled run is never changed; "
                            f"nothing was imported. Remove this lab's copy first (`ablab runs rm {run.id} --force`) "
                            "if the incoming one is the right record.")


def _run_folders(source: Path) -> list[Path]:
    if (source / "config.json").is_file():
        return [source]
    # Oldest first, as the source ledger listed them, so the imported rows list in the same order.
    children = sorted((p for p in source.iterdir() if (p / "config.json").is_file()),
                      key=lambda p: (str(_read_json(p / "result.json").get("created_at", "")), p.name))
    if not children:
        raise UserError(f"{source} is not a run directory (it has no config.json, nor do its subfolders); "
                        "pass .ablab/runs/<id> folders or an archive written by `ablab export`.")
    return children


def _read_directory(folder: Path) -> tuple[Path, Run, list[dict], list[dict]]:
    """A run directory's rows, after checking that it names an ablab run id (its folder goes under runs/)."""
    run, metrics, events = run_from_directory(folder)
    if not is_run_id(run.id):
        raise UserError(f"{folder} names run id {run.id!r}, which is not an ablab run id ({2 * RUN_ID_BYTES} "
                        "lowercase hex digits); import nothing from it, or rename it after a run of this lab.")
    return folder, run, metrics, events


def _import_directory(ledger: Ledger, lab: Path, folder: Path, run: Run, metrics: list[dict], events: list[dict],
                      report: ImportReport) -> None:
    if ledger.has_run(run.id):
        report.already_present.append(run.id)
        return
    target = runs_root(lab) / run.id
    if not target.exists():  # a folder already there (this lab's own, or an earlier import) is kept
        tmp = runs_root(lab) / f".import-{run.id}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns(".*"))
        os.replace(tmp, target)
    ledger.import_run(run, metrics, events, notes=[], tags=[])
    ledger.record_evals(read_jsonl(target / "evals.jsonl"))
    ledger.record_samples(run.id, sample_rows(read_jsonl(target / "samples.jsonl")))
    report.imported.append(run.id)


def run_from_directory(folder: Path) -> tuple[Run, list[dict], list[dict]]:
    """The ledger rows of a run rebuilt from its files: (run, metric rows, events)."""
    saved = _read_json(folder / "config.json", required=True)
    result = _read_json(folder / "result.json")
    provenance = _read_json(folder / "provenance.json")
    config, config_hash = saved.get("config"), saved.get("config_hash")
    if not isinstance(config, dict) or not isinstance(config_hash, str):
        raise UserError(f"{folder / 'config.json'} lacks its config or config_hash; it was not written by "
                        "ablab, so import the runs around it without it.")
    seed = config.get("seed", result.get("seed", 0))
    data_fingerprint = result.get("data_fingerprint") or provenance.get("data_fingerprint")
    code_version = provenance.get("code_version")
    key = content_key(config_hash, seed, data_fingerprint, code_version) if data_fingerprint and code_version else None
    created = datetime.fromtimestamp((folder / "config.json").stat().st_mtime, timezone.utc)
    run = Run(id=result.get("run_id") or folder.name, name=result.get("name", config.get("name", "")),
              status=_imported_status(result.get("status", "interrupted")),
              created_at=result.get("created_at") or created.isoformat(timespec="seconds"),
              finished_at=result.get("finished_at"), config_hash=config_hash, seed=seed,
              data_fingerprint=data_fingerprint, code_version=code_version, content_key=key, config=config,
              provenance=provenance, result=result, host=(provenance.get("host") or {}).get("name"))
    metrics = [r for r in read_jsonl(folder / "metrics.jsonl") if isinstance(r.get("step"), int)]
    events = [e for e in read_jsonl(folder / "events.jsonl") if {"step", "kind", "time"} <= e.keys()]
    return run, metrics, events


def _imported_status(status: str) -> str:
    # No process of this lab trains an imported run, so one recorded as running was cut off (or is
    # still going elsewhere, where it goes on without this copy): here it is interrupted, resumable.
    return "interrupted" if status == "running" else status


def _read_json(path: Path, required: bool = False) -> dict:
    if not path.exists() and not required:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read as JSON ({err}); restore it from a backup, or import the "
                        "other runs without this one.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; restore it from a backup, or import the other runs without this one.")
    return data


@contextlib.contextmanager
def _archive_errors(path: Path):
    """An archive that cannot be read, or whose manifest is damaged, becomes one sentence naming it."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        reason = (str(err).splitlines() or [""])[0].rstrip(":")  # tarfile's ReadError spans several lines
        raise UserError(f"{path} is not a readable archive ({type(err).__name__}: {reason}); pass a complete file "
                        "written by `ablab export`, or a run directory.") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path} holds a damaged {MANIFEST} ({type(err).__name__}: {err}); export the runs "
                        "again with `ablab export`.") from None


def _read_archive(path: Path, open_archives: contextlib.ExitStack) -> tuple:
    """(the archive, its manifest entries by run id, each run's members, each run's Run), all checked;
    the archive stays open in `open_archives` for _import_archive to extract from."""
    with _archive_errors(path):
        tar = open_archives.enter_context(tarfile.open(path, "r:*"))
        members = tar.getmembers()  # reads the whole archive first: a truncated one changes nothing
        entries = _read_manifest(tar, path)
        by_run = _members_by_run(members, entries, path)
        runs = {run_id: _run_from_entry(entry) for run_id, entry in entries.items()}  # all checked first
    return tar, entries, by_run, runs


def _import_archive(ledger: Ledger, lab: Path, path: Path, tar: tarfile.TarFile, entries: dict[str, dict],
                    by_run: dict[str, list[tarfile.TarInfo]], runs: dict[str, Run], report: ImportReport) -> None:
    with _archive_errors(path):
        for run_id, entry in entries.items():
            if ledger.has_run(run_id):
                report.already_present.append(run_id)
                continue
            target = runs_root(lab) / run_id
            if not target.exists():
                _extract_run(tar, by_run.get(run_id, []), target)
            ledger.import_run(runs[run_id], entry["metrics"], entry["events"], entry["notes"], entry["tags"])
            ledger.record_evals(read_jsonl(target / "evals.jsonl"))
            ledger.record_samples(run_id, sample_rows(read_jsonl(target / "samples.jsonl")))
            report.imported.append(run_id)


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict[str, dict]:
    """The archive's runs by id, after checking it is an ablab export this version can read."""
    try:
        manifest = json.load(tar.extractfile(MANIFEST))
    except KeyError:
        raise UserError(f"{path} holds no {MANIFEST}, so it is not an ablab export; pass a file written by "
                        "`ablab export`, or unpack it and import its run directories.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not an ablab export (its {MANIFEST} has another format); pass a file "
                        "written by `ablab export`.")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer ablab (export format {manifest['format_version']}); "
                        "upgrade ablab to import it.")
    entries = {entry["run"]["id"]: entry for entry in manifest["runs"]}
    for run_id in entries:
        if not is_run_id(run_id):  # the id becomes a folder name under runs/ and a ledger row
            raise UserError(f"{path} names run id {run_id!r} in its {MANIFEST}, which is not an ablab run id "
                            f"({2 * RUN_ID_BYTES} lowercase hex digits); import nothing from it, or export the "
                            "runs again with `ablab export`.")
    return entries


def _members_by_run(members: list[tarfile.TarInfo], entries: dict, path: Path) -> dict[str, list[tarfile.TarInfo]]:
    """Each run's files, refusing anything that could land outside its run directory."""
    by_run: dict[str, list[tarfile.TarInfo]] = {}
    for member in members:
        if member.name == MANIFEST:
            continue
        parts = PurePosixPath(member.name).parts
        why = _unsafe(member, parts, entries)
        if why:
            raise UserError(f"{path} holds an unexpected entry '{member.name}' ({why}), so it was not written by "
                            "`ablab export`; import nothing from it, or unpack it by hand.")
        if member.isfile():
            by_run.setdefault(parts[1], []).append(member)
    return by_run


def _unsafe(member: tarfile.TarInfo, parts: tuple[str, ...], entries: dict) -> str | None:
    """Why a member could land outside its run directory (or is something export never writes), or None."""
    if member.name.startswith("/"):
        return "an absolute path"
    if any(p in ("", ".", "..") for p in parts):
        return "a path with '..'"
    if member.issym() or member.islnk():
        return f"a link to '{member.linkname}'"
    if not (member.isfile() or member.isdir()):
        return "neither a file nor a folder"
    if len(parts) < 3 or parts[0] != "runs" or parts[1] not in entries:
        return f"outside runs/<id>/ of the runs its {MANIFEST} lists"
    return None


def _extract_run(tar: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    tmp = target.with_name(f".import-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "checkpoints").mkdir(parents=True)
        for member in members:
            dest = tmp.joinpath(*PurePosixPath(member.name).parts[2:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_from_entry(entry: dict) -> Run:
    """The entry's run, after checking its rows have what the ledger needs (KeyError or TypeError if not)."""
    run = Run(**{k: v for k, v in entry["run"].items() if k in RUN_FIELDS})
    run.status = _imported_status(run.status)
    for row in entry["metrics"]:
        int(row["step"])
    for event in entry["events"]:
        event["step"], event["kind"], event["time"]
    for note in entry["notes"]:
        note["time"], note["text"]
    if not all(isinstance(tag, str) for tag in entry["tags"]):
        raise TypeError("tags must be strings")
    return run
