"""Bad input, fuzzed: hundreds of wrong command lines, option values, config overrides, study files,
CSVs and task files, each of which must end in one `error:` sentence naming the option, key or file,
exit code 2, no traceback, an intact ledger, and nothing written (no new ledger row, no new file).

The cases run in this process through the CLI's error boundary (`boundary.run(app)`), not one
subprocess each: refused input never trains, so the whole table takes seconds. A few run in a real
subprocess too (`test_refusals_in_a_real_process`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import sys
import typing
from pathlib import Path

import pytest

from ablab import config as C
from ablab.api import Lab
from ablab.cli import boundary
from ablab.cli.main import app
from ablab.lab import init_lab
from ablab.study import baselines

from conftest import run_cli

REF = "tiny@2026-11-01"
# A model that trains 4 steps in about a second; peak_flops set, so MFU needs no matmul benchmark.
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "data.seq_len=32",
        "data.batch_size=4", "train.max_steps=4", "eval.every=0", "eval.tokens=256", "train.peak_flops=1e12",
        "train.checkpoint_every=4"]
STUDY = {
    "meta": {"name": "fz", "category": "optimizer", "date": "2026-11-21"},
    "objective": {"question": "Does a higher lr help?"},
    "hypothesis": {"mechanism": "m", "prediction": "p", "falsification": "f", "metric": "val_loss",
                   "direction": "decrease", "min_effect": 0.01, "read_at": "final"},
    "design": {"baseline": REF, "axis": "steps", "budget": 4, "seeds": [0], "variables": {"optim.lr": [0.03]}},
    "expected": {"outcomes": "o"},
}
TASK = {"name": "caps", "version": 1, "type": "multiple_choice", "data_file": "caps.jsonl",
        "context": "Capital of {country}?", "choices": "options", "label": "answer"}


# -- the lab every case is wrong about -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, typing.Any]:
    """A lab with one finished run, a baseline, a study that has run (two runs), and the bad input
    files beside it, under one root folder that the cases must leave as they found it."""
    root = tmp_path_factory.mktemp("fuzz")
    lab = root / "lab"
    init_lab(lab)
    (lab / "config.toml").write_text(C.save_toml(C.load("quickstart", TINY)), encoding="utf-8")
    run_id = Lab(lab).run(C.load("quickstart", TINY)).run_id
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", C.load(None, TINY), [0]))
    study_file = lab / "studies" / "fz.toml"
    study_file.write_text(C.dump_toml(STUDY), encoding="utf-8")
    assert Lab(lab).study(study_file).run(say=lambda _: None) == "finished"
    inputs = root / "inputs"
    _write_inputs(inputs)
    init_lab(root / "empty-lab")
    (root / "not-a-lab").mkdir()
    return {"root": root, "lab": lab, "run": run_id, "ref": REF, "study": "fz", "study_file": str(study_file),
            "in": str(inputs), "empty": str(root / "empty-lab"), "nolab": str(root / "not-a-lab")}


def _write_inputs(inputs: Path) -> None:
    inputs.mkdir()
    for name, (section, key, value) in STUDY_CASES.items():
        study = {s: dict(t) for s, t in STUDY.items()}
        if value is _MISSING:
            study[section].pop(key)
        elif section:
            study[section][key] = value
            if key == "arms":  # named arms replace the variables
                study["design"].pop("variables")
        else:
            study[key] = value
        (inputs / f"{name}.toml").write_text(C.dump_toml(study), encoding="utf-8")
    (inputs / "binary-study.toml").write_bytes(b"\xff\xfe\x00[meta]\x00")
    for name, text in CSV_FILES.items():
        (inputs / name).write_bytes(text.encode() if isinstance(text, str) else text)
    (inputs / "caps.jsonl").write_text('{"country": "France", "options": ["Paris", "Rome"], "answer": 0}\n')
    for name, changes in TASK_FILES.items():
        task = {k: v for k, v in {**TASK, **changes}.items() if v is not _MISSING}
        (inputs / name).write_text(C.dump_toml(task), encoding="utf-8")
    (inputs / "binary-task.toml").write_bytes(b"\x00\xff\xfe")
    (inputs / "model-is-3.toml").write_text("model = 3\n")
    (inputs / "binary-config.toml").write_bytes(b"\xff\xfe\x00")
    (inputs / "bad-toml.toml").write_text("[model\nd_model = \n")
    (inputs / "typo-config.toml").write_text("[model]\nd_modle = 64\n")
    (inputs / "a-file").write_text("not a folder\n")
    (inputs / "folder.toml").mkdir()


_MISSING = object()
# Study files: name -> (section, key, value); each must be refused naming the key.
STUDY_CASES: dict[str, tuple[str, str, typing.Any]] = {
    "seeds-text": ("design", "seeds", "abc"), "seeds-int": ("design", "seeds", 3),
    "seeds-strings": ("design", "seeds", ["a"]), "seeds-huge": ("design", "seeds", [10**20]),
    "seeds-float": ("design", "seeds", [1e20]), "seeds-negative": ("design", "seeds", [-1]),
    "seeds-repeated": ("design", "seeds", [0, 0]), "seeds-bool": ("design", "seeds", [True]),
    "seeds-empty": ("design", "seeds", []),
    "budget-text": ("design", "budget", "lots"), "budget-nan": ("design", "budget", math.nan),
    "budget-inf": ("design", "budget", math.inf), "budget-zero": ("design", "budget", 0),
    "budget-negative": ("design", "budget", -5), "budget-missing": ("design", "budget", _MISSING),
    "min-effect-text": ("hypothesis", "min_effect", "big"), "min-effect-nan": ("hypothesis", "min_effect", math.nan),
    "min-effect-negative": ("hypothesis", "min_effect", -0.1),
    "read-at-number": ("hypothesis", "read_at", 5), "read-at-word": ("hypothesis", "read_at", "later"),
    "metric-number": ("hypothesis", "metric", 5), "metric-unknown": ("hypothesis", "metric", "accuracy"),
    "direction-bad": ("hypothesis", "direction", "sideways"),
    "metrics-number": ("design", "metrics", 5), "metrics-unknown": ("design", "metrics", ["val_los"]),
    "benchmark-limit-text": ("design", "benchmark_limit", "many"),
    "benchmark-limit-negative": ("design", "benchmark_limit", -1),
    "benchmarks-number": ("design", "benchmarks", 3), "benchmarks-ints": ("design", "benchmarks", [1, 2]),
    "variables-text": ("design", "variables", "x"), "variables-unknown-key": ("design", "variables", {"optim.lrr": [1]}),
    "variables-not-list": ("design", "variables", {"optim.lr": 0.1}),
    "variables-bad-value": ("design", "variables", {"optim.lr": ["fast"]}),
    "variables-nan": ("design", "variables", {"optim.lr": [math.nan]}),
    "variables-out-of-range": ("design", "variables", {"model.d_model": [1 << 40]}),
    "arms-number": ("design", "arms", {"a": 5}),
    "arms-bad-key": ("design", "arms", {"a": {"optim.lrr": 0.1}}),
    "name-number": ("meta", "name", 5), "name-path": ("meta", "name", "../../evil"),
    "name-missing": ("meta", "name", _MISSING),
    "category-bad": ("meta", "category", "vibes"), "question-number": ("objective", "question", 7),
    "axis-bad": ("design", "axis", "epochs"), "mode-bad": ("design", "mode", "random"),
    "frozen-number": ("design", "frozen", 5), "frozen-unknown": ("design", "frozen", ["optim.lrr"]),
    "baseline-missing": ("design", "baseline", _MISSING), "baseline-bad-ref": ("design", "baseline", "main"),
    "baseline-unknown": ("design", "baseline", "nope@2026-01-01"),
    "unknown-design-key": ("design", "seed", [0]), "unknown-meta-key": ("meta", "owner", "me"),
    "unknown-hypothesis-key": ("hypothesis", "metrc", "val_loss"), "unknown-section": ("", "results", {"a": 1}),
    "section-not-table": ("", "design", 5), "expected-number": ("expected", "outcomes", 3),
}
# What each study case's message names (the key, or for the baseline cases the reference).
STUDY_SAYS = {"baseline-missing": "'baseline'", "baseline-bad-ref": "'main'", "baseline-unknown": "nope@2026-01-01",
              "unknown-section": "[results]", "section-not-table": "[design]", "name-missing": "'name'",
              "budget-missing": "'budget'", "variables-unknown-key": "optim.lrr", "variables-not-list": "'optim.lr'", "frozen-unknown": "optim.lrr",
              "arms-bad-key": "optim.lrr", "variables-bad-value": "optim.lr", "variables-nan": "optim.lr",
              "variables-out-of-range": "model.d_model", "unknown-design-key": "'seed'",
              "unknown-meta-key": "'owner'", "unknown-hypothesis-key": "'metrc'", "seeds-empty": "design.seeds"}

CSV_FILES: dict[str, typing.Any] = {
    "binary.csv": b"N,D,loss\n\xff\xfe\x00\x01\n", "nul.csv": "N,D,loss\n1,2,\x003\n",
    "ragged.csv": "N,D,loss\n1e6,1e9,3\n4e6,5e9\n", "long-row.csv": "N,D,loss\n1e6,1e9,3,9\n",
    "no-columns.csv": "a,b\n1,2\n", "non-numeric.csv": "N,D,loss\n1e6,1e9,three\n",
    "nan-cell.csv": "N,D,loss\n1e6,1e9,nan\n", "negative.csv": "N,D,loss\n-1e6,1e9,3\n",
    "empty.csv": "", "header-only.csv": "N,D,loss\n",
    "identical.csv": "N,D,loss\n" + "1e6,1e9,3.0\n" * 6,
}
CSV_SAYS = {"binary.csv": "binary.csv", "nul.csv": "nul.csv", "ragged.csv": "line 3", "long-row.csv": "line 2",
            "no-columns.csv": "'loss'", "non-numeric.csv": "line 2", "nan-cell.csv": "line 2",
            "negative.csv": "line 2", "empty.csv": "empty.csv", "header-only.csv": "header-only.csv",
            "identical.csv": "distinct"}
TASK_FILES: dict[str, dict] = {
    "task-unknown-key.toml": {"contxt": "x"}, "task-bad-type.toml": {"type": "essay"},
    "task-version-text.toml": {"version": "one"}, "task-missing-context.toml": {"context": _MISSING},
    "task-no-data.toml": {"data_file": "nope.jsonl"}, "task-bad-field.toml": {"context": "{capital}?"},
    "task-wrong-type-key.toml": {"until": ["\n"]}, "task-choices-number.toml": {"choices": 3},
}
TASK_SAYS = {"task-unknown-key.toml": "'contxt'", "task-bad-type.toml": "'essay'", "task-version-text.toml": "'version'",
             "task-missing-context.toml": "context", "task-no-data.toml": "nope.jsonl",
             "task-bad-field.toml": "'capital'", "task-wrong-type-key.toml": "'until'",
             "task-choices-number.toml": "choices"}


# -- the table --------------------------------------------------------------------------------------------
def _option_cases() -> list[tuple[list[str], str]]:
    """Every numeric option of every command, out of range, non-finite and of the wrong type."""
    bad_counts = ["0", "-3", "abc"]
    cases = []
    table = {
        ("preflight", "-c", "quickstart"): {"--steps": [*bad_counts, "100001", "1.5"], "--batch-size": [*bad_counts, "70000"],
                                             "--target": ["nan", "-1", "inf", "abc"]},
        ("eval", "{run}", "-t", "piqa"): {"--limit": ["-1", "-100", "abc"], "--batch-size": [*bad_counts, "100000"],
                                          "--fewshot": ["-1", "101", "abc"], "--seed": ["-1", "4294967296"]},
        ("sample", "{run}"): {"--tokens": ["-5", "0", "100000000", "10001", "abc"],
                              "--temperature": ["-1", "nan", "inf", "101", "abc"], "--top-k": ["-3", "abc"],
                              "--seed": ["-1", "4294967296"]},
        ("resume", "{run}"): {"--nproc": ["0", "-1", "5000", "abc"]},
        ("run", "-c", "quickstart"): {"--nproc": ["0", "-2"]},
        ("data", "prepare", "tiny-shakespeare"): {"--seq-len": ["0", "-5", "100000000000", "abc"],
                                                  "--vocab-size": ["0", "2000000", "abc"]},
        ("baseline", "tiers", "{ref}"): {"--steps": ["0,5", "-1,5", "5", "a,b", "10,5", "5,5,5"], "--limit": ["-1", "abc"]},
        ("baseline", "new", "fresh", "-c", "quickstart"): {
            "--seeds": ["-1,99999999999999999999", "1,1", "abc", "0.5", "4294967296", "nan", "inf", ""],
            "--date": ["2026-13-45", "tomorrow"]},
        ("study", "run", "{study_file}", "--yes"): {"--workers": ["0", "-1", "abc"], "--retries": ["-1", "abc"],
                                                    "--executor": [("bogus", "'bogus'")]},
        ("ladder", "{ref}", "--sizes", "32x1", "--tokens", "4096", "--yes"): {
            "--seeds": ["-1", "1,1", "x"], "--workers": ["0"], "--retries": ["-1"], "--convention": [("7ND", "7ND")]},
        ("ladder", "{ref}", "--tokens", "4096", "--yes"): {"--sizes": ["bogus", "0x1", "32"]},
        ("ladder", "{ref}", "--sizes", "32x1", "--yes"): {"--flops": ["nan", "abc"]},
        # The ledger's queries name the value they cannot use (and a did-you-mean).
        ("runs",): {"--limit": ["0", "-1", "abc"], "--sort": [("bogus", "'bogus'"), ("val_los", "'val_loss'")],
                    "--format": [("xml", "'xml'"), ("yaml", "'yaml'")], "--status": [("bogus", "'bogus'")],
                    "--where": [("bad", "'bad'"), ("model.dmodel=3", "'model.d_model'"), ("model.d_model", "model.d_model")]},
        ("correlate",): {"--method": [("kendall", "kendall")]},
        ("compare", "{run}"): {"--x": ["epochs"]},
        ("scaling", "fit", "--csv", "{in}/identical.csv", "--n-column", "N", "--d-column", "D"): {
            "--convention": [("7ND", "7ND")]},
    }
    for prefix, options in table.items():
        for option, values in options.items():
            for value in values:  # a value, or (value, what the message names when it is not the option)
                value, says = value if isinstance(value, tuple) else (value, option)
                cases.append(([*prefix, option, value], says))
    return cases


def _override_value(key: str, typ: typing.Any) -> list[str]:
    if typing.get_origin(typ) is typing.Literal:
        return ["bogus"]
    if typ == C.AutoInt:  # a number or "auto": what is neither, or a number out of range
        return ["abc", "1.5", "-1"]
    if typ == C.DiagnosticsSetting:  # true, false or names of diagnostics: an unknown name is refused
        return ["grad_norm"]
    if typ == C.CorpusSetting:  # a name, a path or a mixture: a mixture of one corpus is refused
        return ["{{tiny-shakespeare=1}}"]  # doubled braces: argv is str.format-ted with the world
    return {bool: ["maybe"], int: ["abc", "1.5", "-1"], float: ["abc", "nan", "-inf"], str: []}[typ]


def _config_cases() -> list[tuple[list[str], str]]:
    """Every config key with a value of the wrong type, a non-finite or a negative number (no
    number in a config may be negative), and every size above its maximum."""
    cases = []
    types = {f"{section}.{name}": typ for section, cls in C.SECTION_TYPES.items()
             for name, typ in typing.get_type_hints(cls).items()} | {"seed": int}
    for key in C.flat_keys():
        for value in _override_value(key, types.get(key, str)):
            if key == "data.vocab_size" and value == "-1":  # only BPE has a vocabulary size to train
                value = "-1 data.tokenizer=bpe"
            cases.append((["run", "-c", "quickstart", *TINY, *f"{key}={value}".split()], key))
    for key, limit in C.MAXIMA.items():
        cases.append((["run", "-c", "quickstart", *TINY, f"{key}={limit * 2}"], key))
    cases += [(["run", "-c", "quickstart", "model.d_model=100"], "model.n_heads"),
              (["run", "-c", "quickstart", "model.d_modl=64"], "model.d_model"),
              (["run", "-c", "quickstart", "d_model"], "d_model"), (["run", "-c", "nosuchpreset"], "nosuchpreset"),
              (["run", "-c", "{in}/model-is-3.toml"], "model-is-3.toml"),
              (["run", "-c", "{in}/binary-config.toml"], "binary-config.toml"),
              (["run", "-c", "{in}/bad-toml.toml"], "bad-toml.toml"), (["run", "-c", "{in}/typo-config.toml"], "d_modle"),
              (["run", "-c", "{in}/folder.toml"], "folder.toml"),
              (["preflight", "-c", "quickstart", "optim.lr=nan"], "optim.lr"),
              (["baseline", "new", "fresh", "-c", "quickstart", "seed=1e20"], "seed"),
              (["data", "prepare", "tiny-shakespeare", "--tokenizer", "bogus"], "data.tokenizer")]
    return cases


def _file_cases() -> list[tuple[list[str], str]]:
    cases = [(["study", "plan", f"{{in}}/{name}.toml", "--no-probe"], STUDY_SAYS.get(name, f"{section}.{key}"
              if section else key)) for name, (section, key, _) in STUDY_CASES.items()]
    cases += [(["study", "plan", "{in}/binary-study.toml"], "binary-study.toml"),
              (["study", "plan", "{in}/nope.toml"], "nope.toml"), (["study", "plan", "{in}/folder.toml"], "folder.toml"),
              (["study", "run", "{in}/seeds-huge.toml", "--yes"], "design.seeds")]
    cases += [(["scaling", "fit", "--csv", f"{{in}}/{name}", "--n-column", "N", "--d-column", "D"], says)
              for name, says in CSV_SAYS.items()]
    cases += [(["scaling", "fit", "--csv", "{in}/nope.csv", "--n-column", "N", "--d-column", "D"], "nope.csv"),
              (["scaling", "fit", "--csv", "{in}/identical.csv"], "--n-column"),
              (["scaling", "fit", "--csv", "{in}/folder.toml", "--n-column", "N", "--d-column", "D"], "folder.toml")]
    cases += [(["eval", "{run}", "-t", f"{{in}}/{name}"], says) for name, says in TASK_SAYS.items()]
    cases += [(["eval", "{run}", "-t", "{in}/binary-task.toml"], "binary-task.toml"),
              (["eval", "{run}", "-t", "{in}/nope.toml"], "nope.toml"), (["eval", "{run}", "-t", "piqaa"], "piqaa"),
              (["eval", "{run}"], "--tasks")]
    return cases


def _name_and_path_cases() -> list[tuple[list[str], str]]:
    cases = [(["study", "new", name], "Study name") for name in ("../../evil-study", "", ".hidden", "a/b", "a b")]
    cases += [(["study", "new", "ok", "--baseline", "nosuch"], "nosuch"),
              (["study", "new", "ok", "--baseline", "nosuch@2026-01-01"], "nosuch@2026-01-01"),
              (["study", "new", "fz"], "already exists")]
    cases += [(["baseline", "new", name, "-c", "quickstart"], "Baseline name") for name in ("../evil", "a b", "", ".x")]
    cases += [(["baseline", "new", "tiny", "-c", "quickstart", "--date", "2026-11-01"], "tiny@2026-11-01"),
              (["init", "{in}/a-file"], "a-file"), (["init", "/proc/nope"], "/proc/nope"),
              (["report", "--lab", "{empty}"], "Nothing to report yet")]
    for command in (["gc"], ["runs"], ["show", "{run}"], ["report"], ["export"], ["study", "status", "fz"],
                    ["baseline", "list"], ["baseline", "show", "{ref}"], ["sample", "{run}"], ["eval", "{run}", "-t", "piqa"],
                    ["resume", "{run}"], ["run", "-c", "quickstart"], ["note", "{run}", "text"], ["tag", "{run}", "t"],
                    ["correlate"], ["dynamics", "{run}"], ["study", "new", "x"], ["baseline", "new", "x", "-c", "quickstart"]):
        cases.append(([*command, "--lab", "{nolab}"], "--lab"))
        cases.append(([*command, "--lab", "{nolab}/typo"], "typo"))
    outs = [["compare", "{run}", "--out"], ["export", "--out"], ["report", "--out"], ["correlate", "--out"],
            ["scaling", "gain", "fz", "--out"], ["dynamics", "{run}", "--out"], ["export-hf", "{run}"]]
    for command in outs:
        cases.append(([*command, "/nonexistent/dir/x.png"], "/nonexistent/dir"))
    cases += [(["compare", "{run}", "--out", "{in}"], "is a folder"), (["export", "--out", "{in}"], "is a folder"),
              (["report", "--out", "{in}/a-file"], "a-file"), (["export-hf", "{run}", "{in}/a-file"], "a-file")]
    return cases


def _reference_cases() -> list[tuple[list[str], str]]:
    """Run ids, baseline refs and study names that do not exist, and the CLI library's own errors."""
    cases = [([*command], says) for command, says in [
        (["show", "zzzz"], "zzzz"), (["diff", "{run}", "zzzz"], "zzzz"), (["sample", "zzzz"], "zzzz"),
        (["resume", "zzzz"], "zzzz"), (["eval", "zzzz", "-t", "piqa"], "zzzz"), (["note", "zzzz", "x"], "zzzz"),
        (["tag", "zzzz", "t"], "zzzz"), (["tag", "{run}", "two words"], "one word"), (["export", "zzzz"], "zzzz"),
        (["dynamics", "zzzz"], "zzzz"), (["compare", "zzzz"], "zzzz"), (["export-hf", "zzzz", "{in}/hf"], "zzzz"),
        (["baseline", "show", "nosuch@2026-01-01"], "nosuch@2026-01-01"), (["baseline", "show", "nosuch"], "nosuch"),
        (["baseline", "run", "nosuch@2026-01-01"], "nosuch@2026-01-01"),
        (["baseline", "diff", "{ref}", "nosuch@2026-01-01"], "nosuch@2026-01-01"),
        (["baseline", "promote", "nosuch", "--arm", "x"], "nosuch"), (["baseline", "promote", "fz", "--arm", "nope"], "nope"),
        (["baseline", "tiers", "nosuch@2026-01-01"], "nosuch@2026-01-01"),
        (["study", "status", "nosuch"], "nosuch"), (["study", "conclude", "nosuch", "--decision", "x"], "nosuch"),
        (["scaling", "gain", "nosuch"], "nosuch"), (["scaling", "gain", "--run", "zzzz"], "zzzz"),
        (["scaling", "fit", "--study", "nosuch"], "nosuch"), (["ladder", "nosuch@2026-01-01", "--sizes", "32x1", "--tokens", "4096"], "nosuch"),
        (["correlate", "--study", "nosuch"], "nosuch"), (["import", "{in}/nope.tar.gz"], "nope.tar.gz"),
        (["import", "{in}/a-file"], "a-file"),
    ]]
    usage = [["--bogus"], ["nosuchcmd"], ["show"], ["run", "-c"], ["study", "plan"], ["eval"], ["study", "nosuch"],
             ["baseline", "nosuch"], ["data", "nosuch"], ["scaling", "nosuch"], ["diff", "{run}"], ["note", "{run}"],
             ["baseline", "promote", "fz"], ["ladder", "{ref}"], ["sample", "{run}", "--tokens"], ["runs", "--bogus"],
             ["study", "run"], ["export-hf", "{run}"], ["import"]]
    cases += [(argv, "--help") for argv in usage] + [(["tag", "{run}"], "TAG")]
    return cases


CASES = _option_cases() + _config_cases() + _file_cases() + _name_and_path_cases() + _reference_cases()


def _snapshot(world: dict) -> tuple[set[str], dict[str, int], list]:
    """Every file under the root (ledger journals aside), each ledger table's row count, and the
    ledger's integrity check."""
    root = world["root"]
    files = {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm", "-journal"))}
    counts, integrity = {}, []
    for ledger in sorted(root.glob("*/.ablab/ledger.sqlite")):
        with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            counts |= {f"{ledger.parts[-3]}:{t}": db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
            integrity.append(db.execute("PRAGMA integrity_check").fetchone()[0])
    return files, counts, integrity


def refuse(argv: list[str], world: dict, capsys) -> str:
    """Run `ablab ARGV` in this process (in the lab's folder, so without --lab it is the lab) through
    the error boundary; return its one line of stderr after checking the standard: exit 2, one
    `error:` line, no traceback, nothing written."""
    argv = [a.format(**world) for a in argv]
    before = _snapshot(world)
    sys.argv = ["ablab", *argv]
    capsys.readouterr()
    code = boundary.run(app)
    out, err = capsys.readouterr()
    after = _snapshot(world)
    assert "Traceback" not in out + err
    assert code == 2, f"exit {code}: {err or out}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert after[2] == ["ok"] * len(after[2]), after[2]
    assert after[1] == before[1], "ledger rows changed"
    assert after[0] == before[0], f"files changed: {sorted(after[0] ^ before[0])}"
    return lines[0]


def _id(case: tuple[list[str], str]) -> str:
    return " ".join(case[0]).replace(" ".join(TINY), "TINY")


def test_the_table_is_large():
    assert len(CASES) >= 300, len(CASES)
    assert len({_id(c) for c in CASES}) == len(CASES), "duplicate cases"


@pytest.mark.parametrize("argv, says", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_refused_in_one_sentence_naming_it(argv, says, world, capsys, monkeypatch):
    monkeypatch.chdir(world["lab"])
    message = refuse(argv, world, capsys)
    assert says.format(**world) in message, message


def test_refused_inputs_never_created_anything_outside_the_lab():
    for path in ("/nonexistent", "/proc/nope"):
        assert not os.path.exists(path)


@pytest.mark.parametrize("argv, says", [
    (["sample", "{run}", "--temperature", "nan"], "--temperature"),
    (["study", "plan", "{in}/seeds-text.toml"], "design.seeds"),
    (["run", "-c", "quickstart", "train.peak_flops=nan"], "train.peak_flops"),
    (["gc", "--lab", "{nolab}"], "--lab"),
    (["nosuchcmd"], "nosuchcmd"),
])
def test_refusals_in_a_real_process(argv, says, world):
    argv = [a.format(**world) for a in argv]
    before = _snapshot(world)
    result = run_cli(*argv, cwd=world["lab"], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and says.format(**world) in result.stderr
    assert _snapshot(world) == before
