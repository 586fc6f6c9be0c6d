import csv
import io
import json
import re

import pytest

from ablab import config as C
from ablab.analysis import runs
from ablab.errors import UserError
from ablab.report.plots import plot_curves
from ablab.store.ledger import Ledger
from ablab.train.launch import start_run

from conftest import TINY, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_cache):
    """Four real tiny runs: base (seed 0, d64), a second `base` that differs only in seed and
    d_model, `rerun` (base's config again, forced), and `blowup` (diverged)."""
    folder = tmp_path_factory.mktemp("runs-lab")
    short = [*TINY, "train.max_steps=20", "eval.every=10"]
    ids = {
        "base": start_run(C.load(None, [*short, "seed=0", "name=base"]), folder).run_id,
        "other": start_run(C.load(None, [*short, "seed=1", "model.d_model=32", "name=base"]), folder).run_id,
        "rerun": start_run(C.load(None, [*short, "seed=0", "name=rerun"]), folder, force=True).run_id,
        "blowup": start_run(C.load(None, [*short, "name=blowup", "optim.lr=1e8", "optim.adamw_lr=1e8",
                                          "optim.grad_clip=0", "schedule.warmup_steps=0"]), folder).run_id,
    }
    runs.add_tag(folder, ids["base"], "baseline")
    runs.add_tag(folder, ids["rerun"], "baseline")
    return folder, ids


def listed(lab_dir, **filters) -> list[str]:
    return [row["id"] for row in runs.list_runs(lab_dir, **filters).rows]


def one_clear_sentence(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_fixture_made_what_the_tests_assume(lab):
    folder, ids = lab
    with Ledger(folder) as ledger:
        status = {key: ledger.run(run_id).status for key, run_id in ids.items()}
    assert status == {"base": "finished", "other": "finished", "rerun": "finished", "blowup": "diverged"}


def test_runs_filter_by_status_name_tag_and_config_values(lab):
    folder, ids = lab
    base, other, rerun, blowup = ids.values()
    assert listed(folder) == [base, other, rerun, blowup]  # oldest first
    assert listed(folder, status="diverged") == [blowup]
    assert listed(folder, status="finished") == [base, other, rerun]
    assert listed(folder, name="base") == [base, other]
    assert listed(folder, name="b*") == [base, other, blowup]
    assert listed(folder, tag="baseline") == [base, rerun]
    # The value is coerced to the field's type: the text "32" would match no integer in the ledger.
    assert listed(folder, where=["model.d_model=32"]) == [other]
    assert listed(folder, where=["model.d_model=64", "seed=0"]) == [base, rerun, blowup]
    assert listed(folder, where=["optim.lr=1e8"]) == [blowup]
    assert listed(folder, where=["model.d_model=64"], tag="baseline", name="rerun") == [rerun]
    with pytest.raises(UserError, match="Did you mean 'model.d_model'"):
        runs.list_runs(folder, where=["model.d_modl=64"])
    with pytest.raises(UserError, match="model.d_model must be an integer"):
        runs.list_runs(folder, where=["model.d_model=wide"])
    with pytest.raises(UserError, match="finished"):
        runs.list_runs(folder, status="done")


def test_runs_sort_by_a_metric_with_runs_lacking_it_last(lab):
    folder, ids = lab
    with Ledger(folder) as ledger:
        val_loss = {run_id: ledger.run(run_id).final.get("val_loss") for run_id in ids.values()}
    assert val_loss[ids["blowup"]] is None and val_loss[ids["other"]] != val_loss[ids["base"]]
    finished = [i for i in val_loss if val_loss[i] is not None]
    rows = runs.list_runs(folder, sort="val_loss").rows
    assert [r["val_loss"] for r in rows[:3]] == sorted(val_loss[i] for i in finished)
    assert [r["id"] for r in rows] == sorted(finished, key=val_loss.get) + [ids["blowup"]]
    for descending in (runs.list_runs(folder, sort="-val_loss"), runs.list_runs(folder, sort="val_loss", desc=True)):
        assert [r["id"] for r in descending.rows] == sorted(finished, key=val_loss.get, reverse=True) + [ids["blowup"]]
    by_bpb = runs.list_runs(folder, sort="val_bpb", limit=2)
    assert by_bpb.columns[-1] == "val_bpb" and len(by_bpb.rows) == 2
    assert by_bpb.rows[0]["val_bpb"] <= by_bpb.rows[1]["val_bpb"]
    assert listed(folder, limit=1) == [ids["blowup"]]  # unsorted: the newest
    with pytest.raises(UserError, match="Did you mean 'val_loss'"):
        runs.list_runs(folder, sort="val_los")


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "table"])
def test_every_runs_format_parses(lab, fmt):
    folder, ids = lab
    result = run_cli("runs", "--format", fmt, "--lab", str(folder), cwd=folder)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["id"] for r in rows] == list(ids.values()) and list(rows[0]) == runs.COLUMNS
        assert rows[0]["tags"] == "baseline" and float(rows[0]["val_loss"]) > 0
    elif fmt == "json":
        rows = json.loads(out)
        assert [r["id"] for r in rows] == list(ids.values()) and list(rows[0]) == runs.COLUMNS
        assert rows[0]["tags"] == ["baseline"] and rows[3]["status"] == "diverged" and rows[3]["val_loss"] is None
    elif fmt == "markdown":
        lines = out.strip().splitlines()
        assert lines[0] == "| " + " | ".join(runs.COLUMNS) + " |" and set(lines[1]) <= set("|-")
        assert len(lines) == 2 + len(ids)
        assert all(line.startswith(f"| {run_id} |") for line, run_id in zip(lines[2:], ids.values()))
    else:
        assert all(run_id in out for run_id in ids.values()) and "val_loss" in out
    assert "baseline" in out


def test_runs_cli_filters_and_rejects_bad_input(lab):
    folder, ids = lab
    result = run_cli("runs", "--where", "model.d_model=32", "--format", "json", "--lab", str(folder), cwd=folder)
    assert [r["id"] for r in json.loads(result.stdout)] == [ids["other"]]
    result = run_cli("runs", "--sort=-val_loss", "--limit", "1", "--format", "json", "--lab", str(folder), cwd=folder)
    assert len(json.loads(result.stdout)) == 1
    assert "Did you mean 'model.d_model'" in one_clear_sentence(
        run_cli("runs", "--where", "model.dmodel=32", "--lab", str(folder), cwd=folder))
    assert "csv" in one_clear_sentence(run_cli("runs", "--format", "xml", "--lab", str(folder), cwd=folder))


def test_diff_reports_exactly_the_changed_config_keys_and_metric_deltas(lab):
    folder, ids = lab
    d = runs.diff(folder, ids["base"], ids["other"])
    assert [(r["key"], r["a"], r["b"]) for r in d["config"].rows] == [("seed", 0, 1), ("model.d_model", 64, 32)]
    provenance_keys = {r["key"] for r in d["provenance"].rows}
    assert "config_hash" in provenance_keys and not provenance_keys & runs.NOT_DIFFED
    assert "versions.torch" not in provenance_keys and all(r["a"] != r["b"] for r in d["provenance"].rows)
    with Ledger(folder) as ledger:
        a, b = ledger.run(ids["base"]).final, ledger.run(ids["other"]).final
    deltas = {r["metric"]: r for r in d["metrics"].rows}
    assert list(deltas) == runs.DELTA_METRICS
    assert deltas["val_loss"]["a"] == a["val_loss"] and deltas["val_loss"]["b"] == b["val_loss"]
    assert deltas["val_loss"]["b-a"] == pytest.approx(b["val_loss"] - a["val_loss"])
    same = runs.diff(folder, ids["base"], ids["rerun"])
    assert [r["key"] for r in same["config"].rows] == ["name"]  # the forced rerun: only its cosmetic name
    out = run_cli("diff", ids["base"][:6], ids["other"], "--lab", str(folder), cwd=folder)
    assert out.returncode == 0, out.stderr
    config_part = out.stdout.split("provenance")[0]
    assert "model.d_model" in config_part and "seed" in config_part and "optim.lr" not in config_part


def test_show_prints_provenance_and_every_event(lab):
    folder, ids = lab
    with Ledger(folder) as ledger:
        run = ledger.run(ids["blowup"])
        events = ledger.events(run.id)
    assert any(e["kind"] == "diverged" for e in events)
    out = run_cli("show", run.id, "--lab", str(folder), cwd=folder)
    assert out.returncode == 0, out.stderr
    assert run.provenance["code_version"] in out.stdout and run.provenance["data_fingerprint"] in out.stdout
    assert run.provenance["ablab_git"]["commit"] in out.stdout  # the tmp lab is no checkout; ablab's is
    for event in events:
        assert any(event["kind"] in line and event["message"] in line for line in out.stdout.splitlines()), event
    assert "config [model]" in out.stdout and re.search(r"status +diverged", out.stdout)


def test_compare_draws_train_and_val_curves_per_run_to_a_png(lab, tmp_path):
    folder, ids = lab
    curves, table = runs.compare(folder, [ids["base"], ids["other"]])
    assert [r["id"] for r in table.rows] == [ids["base"], ids["other"]]
    figure = plot_curves(curves, tmp_path / "all.png")
    assert (tmp_path / "all.png").read_bytes()[:8] == PNG_MAGIC
    assert [ax.get_xlabel() for ax in figure.axes] == ["step", "tokens", "training time (s)"]
    for ax in figure.axes:
        assert len(ax.lines) == 4  # two runs x (train, val)
    steps = figure.axes[0].lines
    assert max(steps[0].get_xdata()) == 20 and list(steps[1].get_xdata()) == [0, 10, 20]
    one = plot_curves(curves, tmp_path / "tokens.png", x="tokens")
    assert len(one.axes) == 1 and max(one.axes[0].lines[0].get_xdata()) == 20 * 16 * 64
    out = run_cli("compare", ids["base"], ids["other"], ids["blowup"], "--out", str(tmp_path / "cli.png"),
                  "--lab", str(folder), cwd=folder)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli.png").read_bytes()[:8] == PNG_MAGIC and str(tmp_path / "cli.png") in out.stdout
    assert all(run_id in out.stdout for run_id in ids.values() if run_id != ids["rerun"])
    assert "--x" in one_clear_sentence(run_cli("compare", ids["base"], "--x", "epochs", "--lab", str(folder),
                                               cwd=tmp_path))


def test_note_and_tag_round_trip_through_the_cli(lab):
    folder, ids = lab
    run_id = ids["other"]
    assert run_cli("note", run_id[:5], "narrower model, same loss trend", "--lab", str(folder), cwd=folder).returncode == 0
    for _ in range(2):  # tagging twice keeps one tag
        assert run_cli("tag", run_id, "reviewed", "--lab", str(folder), cwd=folder).returncode == 0
    listing = json.loads(run_cli("runs", "--tag", "reviewed", "--format", "json", "--lab", str(folder),
                                 cwd=folder).stdout)
    assert [r["id"] for r in listing] == [run_id] and listing[0]["tags"] == ["reviewed"]
    shown = run_cli("show", run_id, "--lab", str(folder), cwd=folder).stdout
    assert "narrower model, same loss trend" in shown and "reviewed" in shown
    assert "one word" in one_clear_sentence(run_cli("tag", run_id, "two words", "--lab", str(folder), cwd=folder))
    assert "zzzz" in one_clear_sentence(run_cli("note", "zzzz", "text", "--lab", str(folder), cwd=folder))


def test_reading_a_folder_without_a_ledger_creates_nothing(tmp_path):
    assert runs.list_runs(tmp_path).rows == []
    with pytest.raises(UserError, match="pass --lab"):
        runs.show(tmp_path, "3f2a")
    assert list(tmp_path.iterdir()) == []
