"""The CLI conventions users expect: --json on show, diff, study status and baseline list/show;
`runs --columns`; `config show` and `config keys` (from the same ranges as validation); shell
completion; `runs rm`; `tag --remove`."""

import json
import math
import os
import shutil
import tomllib

import pytest

from ablab import config as C
from ablab import config_keys as K
from ablab.analysis import runs
from ablab.analysis.runs import to_json
from ablab.errors import ConfigError
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.runner import make_plan, run_baseline, run_study
from ablab.train.launch import start_run

from conftest import run_cli

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "data.seq_len=32",
        "data.batch_size=4", "train.max_steps=4", "eval.every=0", "eval.tokens=256"]
BASE = "tiny@2026-11-01"
STUDY = f'''[meta]
name = "lr"
category = "optimizer"
date = "2026-11-21"
[objective]
question = "Does a lower lr change the loss?"
[hypothesis]
mechanism = "m"
prediction = "p"
falsification = "f"
metric = "val_loss"
direction = "decrease"
min_effect = 0.01
read_at = "final"
[design]
baseline = "{BASE}"
axis = "tokens"
budget = 640
seeds = [0, 1]
variables = {{ "optim.lr" = [0.01] }}
'''


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which many JSON readers cannot parse."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def one_clear_sentence(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_cache):
    """A tiny baseline (2 seeds, trained: its runs are named tiny@2026-11-01/seedN), a study `lr`
    against it (2 arms x 2 seeds; at equal tokens, so its runs are not the baseline's), and two free
    runs `free-a` and `free-b` that belong to nothing, both tagged `keep`."""
    folder = tmp_path_factory.mktemp("conventions-lab")
    cfg = C.load(None, TINY)
    baselines.create(folder, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    run_baseline(folder, BASE, say=lambda s: None)
    study_file = folder / "studies" / "lr.toml"
    study_file.parent.mkdir(exist_ok=True)
    study_file.write_text(STUDY)
    assert run_study(folder, make_plan(folder, study_file, probe=False), say=lambda s: None) == "finished"
    ids = {name: start_run(C.load(None, [*TINY, f"name={name}", f"seed={seed}"]), folder).run_id
           for name, seed in (("free-a", 5), ("free-b", 6))}
    for run_id in ids.values():
        runs.add_tag(folder, run_id, "keep")
    with Ledger(folder) as ledger:
        ids |= {f"study-{arm}-{seed}": run_id for (arm, seed), run_id in ledger.study_runs("lr").items()}
        ids |= {f"base-{run.seed}": run.id for run in ledger.runs(name=f"{BASE}/seed*")}
    return folder, ids


@pytest.fixture
def lab_copy(lab, tmp_path):
    """A copy of the module's lab for a test that removes runs."""
    folder, ids = lab
    copy = tmp_path / "lab"
    shutil.copytree(folder, copy)
    return copy, ids


def cli(lab_dir, *args, **kwargs):
    return run_cli(*args, "--lab", str(lab_dir), cwd=lab_dir, **kwargs)


# -- --json ---------------------------------------------------------------------------------------------
def test_show_json_is_one_document_with_the_documented_keys(lab):
    folder, ids = lab
    result = cli(folder, "show", ids["free-a"], "--json")
    assert result.returncode == 0, result.stderr
    doc = strict_json(result.stdout)  # the whole of stdout is the document
    assert list(doc) == ["run", "config", "provenance", "metrics", "benchmarks", "events", "notes", "tag_history"]
    assert [(r["action"], r["tag"]) for r in doc["tag_history"]] == [("add", "keep")] and doc["tag_history"][0]["time"]
    assert doc["run"]["id"] == ids["free-a"] and doc["run"]["tags"] == ["keep"] and doc["run"]["stop_reason"]
    assert doc["config"]["model"]["d_model"] == 32 and doc["config"]["name"] == "free-a"
    assert C.from_dict(doc["config"]).seed == 5  # the config section is a loadable config
    assert isinstance(doc["metrics"]["final_val_loss"], float) and doc["metrics"]["best_at_step"] == 4
    assert isinstance(doc["events"], list) and isinstance(doc["notes"], list)


def test_diff_json_lists_exactly_the_changed_keys(lab):
    folder, ids = lab
    result = cli(folder, "diff", ids["free-a"], ids["free-b"], "--json")
    doc = strict_json(result.stdout)
    assert list(doc) == ["runs", "config", "provenance", "metrics"]
    assert [r["id"] for r in doc["runs"]] == [ids["free-a"], ids["free-b"]]
    assert {(r["key"], r["a"], r["b"]) for r in doc["config"]} == {("name", "free-a", "free-b"), ("seed", 5, 6)}
    assert {r["metric"] for r in doc["metrics"]} >= {"val_loss", "train_loss"}
    assert all(set(r) == {"metric", "a", "b", "b-a"} for r in doc["metrics"])


def test_json_writes_non_finite_numbers_as_null():
    text = to_json({"loss": math.nan, "rows": [math.inf, -math.inf, 1.5], "nested": {"x": math.nan}})
    assert strict_json(text) == {"loss": None, "rows": [None, None, 1.5], "nested": {"x": None}}


def test_study_status_json_has_every_cell_and_the_verdict(lab):
    folder, ids = lab
    doc = strict_json(cli(folder, "study", "status", "lr", "--json").stdout)
    assert {k: doc[k] for k in ("study", "baseline", "metric", "seeds")} == \
        {"study": "lr", "baseline": BASE, "metric": "val_loss", "seeds": [0, 1]}
    cells = {(c["arm"], c["seed"]): c for c in doc["cells"]}
    assert set(cells) == {("baseline", 0), ("baseline", 1), ("optim.lr=0.01", 0), ("optim.lr=0.01", 1)}
    assert all(c["status"] == "finished" and isinstance(c["value"], float) for c in cells.values())
    assert all(cells[(arm, seed)]["run_id"] == ids[f"study-{arm}-{seed}"] for arm, seed in cells)
    assert [v["arm"] for v in doc["verdicts"]] == ["optim.lr=0.01"]
    assert doc["verdicts"][0]["outcome"] in ("supported", "refuted", "inconclusive") and doc["verdicts"][0]["rule"]


def test_baseline_list_and_show_json(lab):
    folder, _ = lab
    listed = strict_json(cli(folder, "baseline", "list", "--json").stdout)
    assert [b["ref"] for b in listed] == [BASE]
    assert set(listed[0]) == {"ref", "name", "date", "current", "seeds", "parent", "justified_by", "noise_floor",
                              "created_at"}
    assert listed[0]["current"] is True and listed[0]["seeds"] == [0, 1]
    assert isinstance(listed[0]["noise_floor"]["val_loss"], float)
    shown = strict_json(cli(folder, "baseline", "show", BASE, "--json").stdout)
    assert shown["ref"] == BASE and shown["seeds"] == [0, 1]
    assert C.from_dict(shown["config"]) == C.load(None, TINY)


def test_a_json_command_that_fails_prints_nothing_on_stdout(lab):
    folder, _ = lab
    result = cli(folder, "show", "zzzz", "--json")
    assert "zzzz" in one_clear_sentence(result) and result.stdout == ""


# -- runs --columns -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_runs_columns_adds_config_keys_in_every_format(lab, fmt):
    folder, ids = lab
    result = cli(folder, "runs", "--tag", "keep", "--columns", "model.d_model,seed,train.compile", "--format", fmt)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    if fmt == "json":
        rows = strict_json(out)
        assert [(r["id"], r["model.d_model"], r["seed"], r["train.compile"]) for r in rows] == \
            [(ids["free-a"], 32, 5, False), (ids["free-b"], 32, 6, False)]
    elif fmt == "csv":
        lines = out.strip().splitlines()
        assert lines[0].endswith(",model.d_model,seed,train.compile")
        assert lines[1].startswith(ids["free-a"]) and lines[1].endswith(",32,5,false")
    elif fmt == "markdown":
        lines = out.strip().splitlines()
        assert lines[0].endswith("| model.d_model | seed | train.compile |")
        assert lines[3].startswith(f"| {ids['free-b']} |") and lines[3].endswith("| 32 | 6 | false |")
    else:
        header = next(line for line in out.splitlines() if "model.d_model" in line)
        assert header.split()[-3:] == ["model.d_model", "seed", "train.compile"]
        row = next(line for line in out.splitlines() if ids["free-b"] in line)
        assert row.split()[-3:] == ["32", "6", "false"]


def test_runs_columns_sorts_by_a_config_column_and_keeps_other_listing_options(lab):
    folder, ids = lab
    table = runs.list_runs(folder, tag="keep", sort="-seed", config_columns=["seed"])
    assert [r["id"] for r in table.rows] == [ids["free-b"], ids["free-a"]]
    listed = strict_json(cli(folder, "runs", "--status", "finished", "--name", "free-*", "--format", "json").stdout)
    assert [r["id"] for r in listed] == [ids["free-a"], ids["free-b"]] and "seed" not in listed[0]


def test_runs_columns_refuses_an_unknown_key_with_did_you_mean(lab):
    folder, _ = lab
    line = one_clear_sentence(cli(folder, "runs", "--columns", "model.d_model,optim.lrr"))
    assert "'optim.lrr' is not a config key" in line and "Did you mean 'optim.lr'" in line


# -- config show / config keys -------------------------------------------------------------------------
def test_config_show_prints_the_resolved_config_with_comments(tmp_path):
    result = run_cli("config", "show", "-c", "quickstart", "model.d_model=192", "model.n_heads=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "d_model = 192" in text and "# residual stream width" in text
    lines, section = {}, ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif " = " in line:
            lines[section + line.split(" = ")[0]] = line
    comments = K.field_comments()
    assert list(lines) == C.flat_keys()
    assert all(lines[key].endswith(f"  # {comments[key]}") for key in lines), lines
    saved = tmp_path / "wider.toml"
    saved.write_text(text)  # the output is a config file that loads back to the same config
    assert C.load(saved) == C.load("quickstart", ["model.d_model=192", "model.n_heads=6"])
    assert not (tmp_path / ".ablab").exists()


def test_config_show_refuses_a_bad_override_in_one_sentence(tmp_path):
    line = one_clear_sentence(run_cli("config", "show", "model.d_modle=3", cwd=tmp_path))
    assert "Did you mean 'model.d_model'" in line


def test_config_keys_lists_every_key_with_type_default_range_and_comment(tmp_path):
    rows = strict_json(run_cli("config", "keys", "--json", cwd=tmp_path).stdout)
    assert [r["key"] for r in rows] == C.flat_keys()
    by_key = {r["key"]: r for r in rows}
    assert all(r["comment"] for r in rows), [r["key"] for r in rows if not r["comment"]]
    assert by_key["model.d_model"] == {"key": "model.d_model", "type": "int", "default": 128, "range": "[1, 65,536]",
                                       "choices": None, "cosmetic": False, "comment": "residual stream width"}
    assert by_key["model.norm"]["choices"] == ["rmsnorm", "layernorm", "none"]
    assert by_key["optim.lr"]["range"] == "finite, > 0" and by_key["seed"]["range"] == "[0, 2**32)"
    assert by_key["train.log_every"]["cosmetic"] is True
    table = run_cli("config", "keys", cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}).stdout
    assert all(key in table for key in C.flat_keys()) and "rmsnorm | layernorm | none" in table


@pytest.mark.parametrize("key", sorted(C.RANGES))
def test_every_listed_range_is_the_one_validation_enforces(key):
    """Values just inside each end of a key's listed range are accepted and values just outside are
    refused naming the key: `config keys` and validate() read the same table."""
    allowed = C.RANGES[key]
    step = 1 if K.key_type(key) is int else 1e-6
    # Settings that keep the cross-field checks (divisibility, a stopping rule) out of the way.
    base = ["train.max_steps=10", "train.max_tokens=1000", "model.positions=none", "data.batch_size=1024"]
    base += {"model.d_model": ["model.n_heads=1"], "model.n_heads": ["model.d_model=1024"]}.get(key, [])
    base += ["data.tokenizer=bpe"] if allowed.when else []

    def accepted(value) -> bool:
        # A global batch is held by grad_accum = "auto" in whole sequences (seq_len 1: any number is).
        held = ["train.grad_accum=auto", "data.batch_size=auto", "data.seq_len=1"] \
            if key == "train.global_batch_tokens" and value > 0 else []
        try:
            C.load(None, [*base, *held, f"{key}={value}"])
            return True
        except ConfigError as err:
            assert key in str(err), str(err)
            return False

    low = allowed.low + (step if allowed.low_open else 0)
    if key == "model.n_heads":
        low = 1  # d_model=1024 divides by 1 and 2, not by every n_heads near the cap
    assert accepted(low) and not accepted(low - step)
    if allowed.high is not None:
        high = allowed.high - (step if allowed.high_open else 0)
        if key == "model.n_heads":
            high = 1024
        assert accepted(high) and not accepted(high + step)


# -- shell completion ---------------------------------------------------------------------------------
def test_shell_completion_script_is_printed_and_completes_commands(tmp_path):
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = run_cli("--show-completion", "bash", cwd=tmp_path, env=env)
    assert script.returncode == 0 and "Traceback" not in script.stderr, script.stderr
    assert "_ABLAB_COMPLETE=complete_bash" in script.stdout and "complete " in script.stdout
    detected = run_cli("--show-completion", cwd=tmp_path)  # the shell found from the parent processes
    assert detected.returncode in (0, 1) and "Traceback" not in detected.stderr + detected.stdout
    words = {**os.environ, "COMP_WORDS": "ablab runs r", "COMP_CWORD": "2", "_ABLAB_COMPLETE": "complete_bash"}
    assert run_cli(cwd=tmp_path, env=words).stdout.split() == ["rm"]
    words |= {"COMP_WORDS": "ablab config ", "COMP_CWORD": "2"}
    assert set(run_cli(cwd=tmp_path, env=words).stdout.split()) == {"show", "keys"}
    assert "--install-completion" in run_cli("--help", cwd=tmp_path).stdout


# -- runs rm --------------------------------------------------------------------------------------------
def test_runs_rm_removes_exactly_one_runs_rows_and_directory(lab_copy):
    folder, ids = lab_copy
    gone = ids["free-a"]
    runs.add_note(folder, gone, "to be removed")
    with Ledger(folder) as ledger:
        before = ledger.row_counts()
        others = {run.id: (len(ledger.metrics(run.id)), len(ledger.events(run.id)), run.tags)
                  for run in ledger.runs() if run.id != gone}
        own = {"runs": 1, "metrics": len(ledger.metrics(gone)), "events": len(ledger.events(gone)), "notes": 1,
               "tags": 1, "tag_history": 1}
    result = cli(folder, "runs", "rm", gone[:5], "--yes")
    assert result.returncode == 0 and f"removed {gone}" in result.stdout, result.stderr
    assert not (folder / ".ablab" / "runs" / gone).exists() and not (folder / ".ablab" / "trash").exists()
    with Ledger(folder) as ledger:
        after = ledger.row_counts()
        assert not ledger.has_run(gone)
        assert {run.id: (len(ledger.metrics(run.id)), len(ledger.events(run.id)), run.tags)
                for run in ledger.runs()} == others  # every other run's rows unchanged
    assert {table: before[table] - after[table] for table in before if before[table] != after[table]} == \
        {table: n for table, n in own.items() if n}
    assert all((folder / ".ablab" / "runs" / run_id).is_dir() for run_id in others)


def test_runs_rm_asks_first_and_a_no_removes_nothing(lab_copy):
    folder, ids = lab_copy
    result = cli(folder, "runs", "rm", ids["free-b"], input="n\n")
    assert result.returncode == 1 and "nothing removed" in result.stdout
    assert (folder / ".ablab" / "runs" / ids["free-b"]).is_dir()
    with Ledger(folder) as ledger:
        assert ledger.has_run(ids["free-b"])
    assert cli(folder, "runs", "rm", ids["free-b"], input="y\n").returncode == 0
    with Ledger(folder) as ledger:
        assert not ledger.has_run(ids["free-b"])


@pytest.mark.parametrize("which, says", [("study-optim.lr=0.01-0", "study lr (arm optim.lr=0.01, seed 0)"),
                                         ("base-1", f"baseline {BASE}")])
def test_runs_rm_refuses_a_run_a_study_or_baseline_is_built_on_unless_forced(lab_copy, which, says):
    folder, ids = lab_copy
    run_id = ids[which]
    with Ledger(folder) as ledger:
        before = ledger.row_counts()
    line = one_clear_sentence(cli(folder, "runs", "rm", ids["free-a"], run_id, "--yes"))
    assert says in line and "--force" in line
    with Ledger(folder) as ledger:
        assert ledger.row_counts() == before  # refused: nothing removed, not even the free run named first
    assert (folder / ".ablab" / "runs" / run_id).is_dir()
    assert cli(folder, "runs", "rm", run_id, "--force", "--yes").returncode == 0
    with Ledger(folder) as ledger:
        assert not ledger.has_run(run_id) and run_id not in ledger.study_runs("lr").values()
    cells = strict_json(cli(folder, "study", "status", "lr", "--json").stdout)["cells"]
    missing = [(c["arm"], c["seed"]) for c in cells if c["status"] == "missing"]
    assert missing == ([("optim.lr=0.01", 0)] if which.startswith("study") else [])


def test_runs_rm_refuses_a_run_whose_lock_a_trainer_holds(lab_copy):
    from ablab.store.runlock import RunLock

    folder, ids = lab_copy
    with Ledger(folder) as ledger:
        before = ledger.row_counts()
    lock = RunLock(ids["free-b"], folder / ".ablab" / "runs" / ids["free-b"]).acquire()  # as a trainer does
    try:
        line = one_clear_sentence(cli(folder, "runs", "rm", ids["free-a"], ids["free-b"], "--yes"))
    finally:
        lock.release()
    assert f"pid {os.getpid()}" in line
    with Ledger(folder) as ledger:
        assert ledger.row_counts() == before  # refused before anything went, the free run named first included
    assert (folder / ".ablab" / "runs" / ids["free-a"]).is_dir()


def test_runs_rm_sweeps_a_half_deleted_trash_folder(lab_copy):
    """A removal killed while deleting leaves only a folder under .ablab/trash, never a half run
    directory; the next removal deletes it."""
    folder, ids = lab_copy
    leftover = folder / ".ablab" / "trash" / "deadbeef-1234"
    (leftover / "checkpoints").mkdir(parents=True)
    assert cli(folder, "runs", "rm", ids["free-a"], "--yes").returncode == 0
    assert not (folder / ".ablab" / "trash").exists()


def test_runs_rm_of_an_unknown_run_is_one_sentence(lab_copy):
    folder, _ = lab_copy
    assert "zzzz" in one_clear_sentence(cli(folder, "runs", "rm", "zzzz", "--yes"))


# -- tag --remove ---------------------------------------------------------------------------------------
def test_tag_remove_takes_the_tag_off_and_names_the_tags_a_run_has(lab_copy):
    folder, ids = lab_copy
    run_id = ids["free-a"]
    assert cli(folder, "tag", run_id, "reviewed").returncode == 0
    assert cli(folder, "tag", run_id, "--remove", "reviewed").returncode == 0
    with Ledger(folder) as ledger:
        assert ledger.run(run_id).tags == ["keep"] and ledger.run(ids["free-b"]).tags == ["keep"]
    line = one_clear_sentence(cli(folder, "tag", run_id, "--remove", "reviewed"))
    assert f"Run {run_id} has no tag 'reviewed'" in line and "its tags are keep" in line
    assert "not both or neither" in one_clear_sentence(cli(folder, "tag", run_id))
    assert "not both or neither" in one_clear_sentence(cli(folder, "tag", run_id, "x", "--remove", "keep"))


def test_the_commented_toml_of_the_defaults_loads_back_to_them():
    doc = tomllib.loads(K.commented_toml(C.Config()))
    assert C.from_dict(doc) == C.Config()
