"""`ablab import` brings in ablab runs and nothing else: run ids must be ids ablab makes, and no
archive entry may land outside its run directory. A refused import writes no row and no folder."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from ablab.errors import UserError
from ablab.store.archive import import_runs
from ablab.store.ledger import Ledger
from ablab.store.record import runs_root

from conftest import run_cli

GOOD_ID = "abcd1234"


def entry(run_id: str) -> dict:
    """A complete manifest entry of one finished run, as `ablab export` writes it."""
    run = {"id": run_id, "name": "imported", "status": "finished", "created_at": "2026-11-01T00:00:00+00:00",
           "finished_at": "2026-11-01T00:01:00+00:00", "config_hash": "0123456789abcdef", "seed": 0,
           "data_fingerprint": "d", "code_version": "c", "content_key": "k", "config": {"seed": 0},
           "provenance": {}, "result": {"status": "finished"}, "host": "h", "pid": 1, "heartbeat": 0.0}
    return {"run": run, "metrics": [{"step": 0, "val_loss": 4.0}], "events": [], "notes": [], "tags": []}


def archive(path: Path, run_ids: list[str], members: list[tarfile.TarInfo] = (), files: dict[str, bytes] = ()) -> Path:
    """An export archive of `run_ids`, each with a result.json, plus extra `members` and `files`."""
    manifest = {"format": "ablab-export", "format_version": 1, "runs": [entry(i) for i in run_ids]}
    contents = {"ablab-export.json": json.dumps(manifest).encode(),
                **{f"runs/{i}/result.json": b'{"status": "finished"}' for i in run_ids if "/" not in i},
                **dict(files)}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for member in members:
            tar.addfile(member)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def nothing_imported(lab: Path, outside: Path) -> None:
    with Ledger(lab) as ledger:
        assert ledger.row_counts()["runs"] == 0 and ledger.row_counts()["metrics"] == 0
    assert not runs_root(lab).exists() or not any(runs_root(lab).iterdir())
    assert sorted(p.name for p in outside.iterdir()) == ["archives", "lab"]  # nothing written beside the lab


@pytest.fixture
def place(tmp_path) -> tuple[Path, Path]:
    """(the lab, a folder for archives), both inside tmp_path, which must hold nothing else afterwards."""
    (tmp_path / "lab").mkdir()
    (tmp_path / "archives").mkdir()
    return tmp_path / "lab", tmp_path / "archives"


def test_a_well_formed_hand_made_archive_imports(place):
    """The control: the archives below differ from this one only in what makes them malicious."""
    lab, archives = place
    assert import_runs(lab, [archive(archives / "good.tar.gz", [GOOD_ID])]).imported == [GOOD_ID]
    assert (runs_root(lab) / GOOD_ID / "result.json").is_file()
    with Ledger(lab) as ledger:
        assert ledger.run(GOOD_ID).status == "finished" and ledger.metrics(GOOD_ID) == [{"step": 0, "val_loss": 4.0}]


def bad_ids(tmp_path: Path) -> list[str]:
    return ["../../x", str(tmp_path / "abs" / "path"), "ABCD1234", "abcd123", "abcd1234/../x", "", "abcd12345"]


@pytest.mark.parametrize("which", range(7), ids=["dotdot", "absolute", "upper", "short", "nested", "empty", "long"])
def test_a_manifest_naming_a_run_id_ablab_never_makes_is_refused_and_imports_nothing(place, tmp_path, which):
    lab, archives = place
    bad = bad_ids(tmp_path)[which]
    path = archive(archives / "bad.tar.gz", [GOOD_ID, bad])  # a good run beside it stays out too
    with pytest.raises(UserError) as refused:
        import_runs(lab, [path])
    assert str(refused.value).startswith(f"{path} names run id {bad!r} in its ablab-export.json, which is not an "
                                         "ablab run id (8 lowercase hex digits)")
    nothing_imported(lab, tmp_path)
    assert not (tmp_path / "abs").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind, why", [
    ("absolute", "an absolute path"),
    ("dotdot", "a path with '..'"),
    ("symlink", "a link to '/etc/passwd'"),
    ("symlink-dir", "a link to '../../..'"),
    ("hardlink", "a link to '../../x'"),
    ("fifo", "neither a file nor a folder"),
    ("other-run", "outside runs/<id>/ of the runs its ablab-export.json lists"),
])
def test_an_archive_entry_that_could_land_outside_its_run_directory_is_refused(place, tmp_path, kind, why):
    lab, archives = place
    members, files = [], {}
    if kind == "absolute":
        files[str(tmp_path / "evil.txt")] = b"owned"
    elif kind == "dotdot":
        files[f"runs/{GOOD_ID}/../../evil.txt"] = b"owned"
    elif kind == "symlink":
        members.append(link(f"runs/{GOOD_ID}/metrics.jsonl", "/etc/passwd"))
    elif kind == "symlink-dir":
        members.append(link(f"runs/{GOOD_ID}/checkpoints", "../../.."))
    elif kind == "hardlink":
        members.append(link(f"runs/{GOOD_ID}/train.log", "../../x", tarfile.LNKTYPE))
    elif kind == "fifo":
        members.append(link(f"runs/{GOOD_ID}/pipe", "", tarfile.FIFOTYPE))
    else:
        files["runs/deadbeef/result.json"] = b"{}"
    path = archive(archives / "bad.tar.gz", [GOOD_ID], members, files)
    with pytest.raises(UserError) as refused:
        import_runs(lab, [path])
    message = str(refused.value)
    assert message.startswith(f"{path} holds an unexpected entry '") and f"({why})" in message
    assert message.count(". ") == 0 and message.endswith("unpack it by hand.")  # one sentence
    nothing_imported(lab, tmp_path)
    assert not (tmp_path / "evil.txt").exists()


def test_one_bad_source_among_several_imports_nothing(place, tmp_path):
    lab, archives = place
    good = archive(archives / "good.tar.gz", [GOOD_ID])
    bad = archive(archives / "bad.tar.gz", ["../../x"])
    with pytest.raises(UserError, match="not an ablab run id"):
        import_runs(lab, [good, bad])
    nothing_imported(lab, tmp_path)


def test_a_run_directory_naming_a_foreign_run_id_is_refused(place, tmp_path):
    lab, archives = place
    folder = archives / GOOD_ID
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": {"seed": 3}, "config_hash": "h"}))
    (folder / "result.json").write_text(json.dumps({"run_id": "../../../x", "status": "finished"}))
    with pytest.raises(UserError, match=rf"{folder} names run id '../../../x', which is not an ablab run id"):
        import_runs(lab, [folder])
    assert sorted(p.name for p in archives.iterdir()) == [GOOD_ID]
    nothing_imported(lab, tmp_path)


def test_the_command_refuses_a_malicious_archive_in_one_sentence_with_exit_2(place, tmp_path):
    lab, archives = place
    (lab / "ablab.toml").write_text("")
    path = archive(archives / "bad.tar.gz", [GOOD_ID], [link(f"runs/{GOOD_ID}/x", "/etc/passwd")])
    done = run_cli("import", str(path), cwd=lab, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and f"runs/{GOOD_ID}/x" in lines[0], done.stderr
    nothing_imported(lab, tmp_path)
