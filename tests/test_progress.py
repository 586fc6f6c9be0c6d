"""Progress on every long command: totals, %, ETA and the run's numbers in a terminal (rich's
recording console), plain lines without one, nothing with --quiet."""

import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ablab import config as C
from ablab.cli import progress
from ablab.cli.main import app
from ablab.cli.progress import Display, RunBar, StudyBars, run_budget
from ablab.data import pipeline
from ablab.lab import init_lab
from ablab.study import baselines
from ablab.train.launch import start_run

from conftest import TINY, run_cli
from test_study import write_study

ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def terminal(monkeypatch) -> Console:
    """The console progress draws on, as a terminal that records what it was shown."""
    console = Console(record=True, force_terminal=True, width=120)
    monkeypatch.setattr(progress, "err_console", console)
    return console


def invoke(*args: str):
    """The command line in this process (no torch import per test); its stderr is no terminal."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def plain_lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


# --- runs --------------------------------------------------------------------------------------------


def test_a_run_in_a_terminal_shows_its_total_percent_eta_loss_val_loss_and_tokens_per_second(tmp_path, terminal,
                                                                                             one_thread):
    init_lab(tmp_path)
    invoke("run", *TINY, "train.max_steps=30", "train.threads=1", "--lab", str(tmp_path))
    shown = terminal.export_text()
    assert "30/30 steps 100%" in shown and "/30 steps 50%" in shown
    assert re.search(r"/30 steps \d+%  ETA \d+:\d\d  loss \d\.\d{4}  [\d,]+ tok/s  val \d\.\d{4} @\d+", shown)


def test_a_run_off_a_terminal_prints_a_few_plain_lines_and_none_with_quiet(tmp_path, one_thread):
    init_lab(tmp_path)
    result = invoke("run", *TINY, "train.max_steps=40", "train.threads=1", "--lab", str(tmp_path))
    lines = plain_lines(result.stderr, "train: ")
    assert lines[0].startswith("train: 0/40 steps 0%  ETA ?") and "train: 40/40 steps 100%  ETA 0:00" in lines[-1]
    assert "\r" not in result.stderr and not ANSI.search(result.stderr)
    assert 5 <= len(lines) <= 14  # a line per tenth (and the final evaluation), not one per step
    assert any("loss" in line and "tok/s" in line and "val" in line for line in lines)
    quiet = invoke("run", *TINY, "train.max_steps=40", "train.threads=1", "seed=1", "--quiet", "--lab", str(tmp_path))
    assert "train: " not in quiet.stderr and "run " in quiet.stdout


def test_the_real_command_line_off_a_terminal_prints_plain_lines(tmp_path):
    init_lab(tmp_path)
    result = run_cli("run", *TINY, "train.max_steps=10", "train.threads=1", "eval.points=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train: 10/10 steps 100%  ETA 0:00" in result.stderr and not ANSI.search(result.stderr)


def test_the_binding_budget_is_the_total_steps_tokens_or_seconds():
    def cfg(*changes):
        return C.load(None, [*TINY, *changes])

    per_step = cfg().tokens_per_step
    assert run_budget(cfg("train.max_steps=100")) == ("steps", 100.0)
    assert run_budget(cfg("train.max_steps=100", f"train.max_tokens={10 * per_step + 5}")) == ("tokens", 10.0 * per_step)
    assert run_budget(cfg("train.max_steps=5", f"train.max_tokens={10 * per_step}")) == ("steps", 5.0)
    assert run_budget(cfg("train.max_steps=0", "train.max_seconds=30")) == ("s", 30.0)


def test_a_tokens_budget_counts_tokens_and_a_seconds_budget_counts_time():
    console = Console(record=True, force_terminal=False, width=200)
    tiny = C.load(None, [*TINY, "train.max_steps=0", "train.max_tokens=4096"])  # 4 steps of 1,024 tokens
    bar = RunBar(Display(console=console), tiny)
    bar(2, {"step": 2, "elapsed": 0.1, "train_loss": 3.0, "tokens_per_s": 1000.0})
    assert "train: 2,048/4,096 tokens 50%" in console.export_text()
    timed = C.load(None, [*TINY, "train.max_steps=0", "train.max_seconds=120"])
    bar = RunBar(Display(console=console), timed)
    bar(7, {"step": 7, "elapsed": 60.0, "train_loss": 3.0, "tokens_per_s": 1000.0})
    assert "train: 1:00/2:00 50%" in console.export_text()


def test_the_val_loss_says_which_step_it_is_from():
    console = Console(record=True, force_terminal=False, width=200)
    show = RunBar(Display(console=console), C.load(None, [*TINY, "train.max_steps=100"]))
    show(0, {"step": 0, "val_loss": 4.17})
    show(10, {"step": 10, "train_loss": 3.2, "tokens_per_s": 5000.0})
    show(20, {"step": 20, "train_loss": 2.9, "tokens_per_s": 5000.0, "val_loss": 2.95})
    lines = console.export_text().splitlines()
    assert lines[0].endswith("val 4.1700 @0")
    assert lines[1].endswith("loss 3.2000  5,000 tok/s  val 4.1700 @0")
    assert lines[2].endswith("loss 2.9000  5,000 tok/s  val 2.9500 @20")


# --- studies -----------------------------------------------------------------------------------------


def _study_lab(root: Path) -> Path:
    init_lab(root)
    cfg = C.load(None, [*TINY, "train.max_steps=20", "eval.every=10", "train.threads=1"])
    baselines.create(root, baselines.Baseline("tiny", "2026-11-01", cfg, [0]))
    write_study(root, "watched", 'variables = { "optim.lr" = [0.01] }', seeds="[0]")
    return root / "studies" / "watched.toml"


def test_a_study_on_the_local_executor_shows_runs_done_of_total_and_each_run_in_a_terminal(tmp_path, terminal):
    study = _study_lab(tmp_path)
    invoke("study", "run", str(study), "--yes", "--executor", "local", "--workers", "2", "--lab", str(tmp_path))
    shown = terminal.export_text()
    assert "study watched" in shown and "2/2 runs 100%  ETA 0:00" in shown and "/2 runs" in shown
    # the study's equal-tokens budget binds: each run's bar counts its 20,480 tokens
    assert re.search(r"  optim\.lr=0\.01 seed 0 [━╺╸ ]+ [\d,]+/20,480 tokens \d+%  ETA \d+:\d\d  loss", shown)
    assert re.search(r"  baseline seed 0 +[━╺╸ ]+ 20,480/20,480 tokens 100%", shown)
    assert shown.index("study watched") < shown.index("seed 0 ")  # the overall bar is shown first, on top


def test_a_study_off_a_terminal_prints_plain_lines_with_an_eta_and_none_with_quiet(tmp_path, monkeypatch):
    study = _study_lab(tmp_path)
    terminal = Console(record=True, force_terminal=False, width=200)  # a log file, not a terminal
    monkeypatch.setattr(progress, "err_console", terminal)
    invoke("study", "run", str(study), "--yes", "--executor", "local", "--workers", "2", "--lab", str(tmp_path))
    shown = terminal.export_text()
    overall = plain_lines(shown, "study watched: ")
    assert overall[0].startswith("study watched: 0/2 runs 0%  ETA ")
    assert overall[-1].startswith("study watched: 2/2 runs 100%  ETA 0:00")
    assert any(re.match(r"study watched: 1/2 runs 50%  ETA \d+:\d\d", line) for line in overall)
    runs = [line for line in shown.splitlines() if re.match(r"  \S+ seed 0: [\d,]+/20,480 tokens", line)]
    assert runs and all("ETA" in line for line in runs) and not ANSI.search(shown)
    quiet = Console(record=True, force_terminal=True, width=200)
    monkeypatch.setattr(progress, "err_console", quiet)
    again = invoke("study", "run", str(study), "--yes", "--quiet", "--lab", str(tmp_path))
    assert quiet.export_text() == "" and "reused" in again.stdout


def test_a_baseline_and_a_ladder_show_runs_done_of_total_and_each_run(tmp_path, one_thread):
    _study_lab(tmp_path)
    baseline = invoke("baseline", "run", "tiny@2026-11-01", "--lab", str(tmp_path))
    assert "baseline tiny@2026-11-01: 1/1 runs 100%  ETA 0:00" in baseline.stderr
    assert "  tiny@2026-11-01 seed 0: 20/20 steps 100%  ETA 0:00  loss" in baseline.stderr
    ladder = invoke("ladder", "tiny@2026-11-01", "--sizes", "32x1,48x1", "--tokens", "10240", "--yes",
                    "--lab", str(tmp_path))
    overall = plain_lines(ladder.stderr, "ladder tiny@2026-11-01: ")
    assert overall[0].startswith("ladder tiny@2026-11-01: 0/2 runs 0%  ETA ?")  # no plan estimate, no run ended yet
    assert re.match(r"ladder tiny@2026-11-01: 1/2 runs 50%  ETA \d+:\d\d$", overall[1])
    assert overall[-1] == "ladder tiny@2026-11-01: 2/2 runs 100%  ETA 0:00"
    assert "  d48L1@1.02e+04 seed 0: 10,240/10,240 tokens 100%  ETA 0:00" in ladder.stderr


def test_the_study_eta_is_the_plans_estimate_then_scaled_by_the_runs_that_ended():
    console = Console(record=True, force_terminal=False, width=200)
    bars = StudyBars(Display(console=console), "study s", 4, lambda arm, seed: None,
                     planned={"a": 10.0, "b": 30.0}, left={"a": 2, "b": 2})
    assert 79 < bars.eta() <= 80  # 2 x 10 + 2 x 30 seconds, from the plan
    bars.started -= 20  # the first run of a took twice its planned 10 seconds
    bars.on_cell("a", 0, "finished")
    assert bars.eta() == pytest.approx(2 * (10 + 60), rel=0.01)  # what is left, at the pace measured
    bars.on_cell("a", 1, "reused")
    assert "study s: 2/4 runs 50%" in console.export_text()
    unplanned = StudyBars(Display(console=console), "ladder", 3, lambda arm, seed: None)
    assert unplanned.eta() is None
    unplanned.started -= 30
    unplanned.on_cell("r", 0, "finished")
    assert unplanned.eta() == pytest.approx(60, rel=0.01)  # the mean of the runs that ended, per run left


# --- eval and data preparation -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory) -> tuple[Path, str]:
    lab = tmp_path_factory.mktemp("progress-eval")
    init_lab(lab)
    outcome = start_run(C.load(None, [*TINY, "data.tokenizer=byte", "train.max_steps=4", "eval.every=0"]), lab)
    return lab, outcome.run_id


def test_eval_shows_examples_done_of_each_tasks_total(byte_run, terminal, monkeypatch):
    lab, run_id = byte_run
    invoke("eval", run_id, "--tasks", "arithmetic", "--limit", "40", "--batch-size", "2", "--lab", str(lab))
    shown = terminal.export_text()
    assert "eval arithmetic" in shown and "16/40 examples 40%  ETA" in shown and "40/40 examples 100%" in shown
    monkeypatch.setattr(progress, "err_console", Console(stderr=True))  # the runner's stderr: no terminal
    result = invoke("eval", run_id, "--tasks", "arithmetic", "--limit", "40", "--batch-size", "2", "--lab", str(lab))
    lines = plain_lines(result.stderr, "eval arithmetic: ")
    assert lines[0] == "eval arithmetic: 0/40 examples 0%  ETA ?" and lines[-1].startswith(
        "eval arithmetic: 40/40 examples 100%  ETA 0:00")
    quiet = invoke("eval", run_id, "--tasks", "arithmetic", "--limit", "40", "--json", "--quiet", "--lab", str(lab))
    assert "examples" not in quiet.stderr and json.loads(quiet.stdout)["run_id"].startswith(run_id)


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """A folder of 100 stories, 600 kB, tokenized 64k characters at a time: progress moves between chunks."""
    monkeypatch.setattr(pipeline, "CHUNK_CHARS", 64 << 10)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    folder = tmp_path / "stories"
    folder.mkdir()
    for i in range(100):
        (folder / f"{i:03d}.txt").write_text(" ".join(words[(i * j) % 5] for j in range(1000)), encoding="utf-8")
    return folder


def test_data_preparation_shows_bytes_with_an_eta_and_documents(corpus, terminal):
    invoke("data", "prepare", str(corpus), "--tokenizer", "byte")
    shown = terminal.export_text()
    assert "tokenizing stories" in shown and "0.6/0.6 MB 100%  ETA 0:00  100 documents" in shown
    assert re.search(r"/0\.6 MB [1-9]\d%  ETA \d+:\d\d  \d+ documents", shown)


def test_data_preparation_off_a_terminal_prints_plain_lines_and_none_with_quiet(corpus):
    result = invoke("data", "prepare", str(corpus), "--tokenizer", "char")
    lines = plain_lines(result.stderr, "tokenizing stories: ")
    assert 5 <= len(lines) <= 12 and lines[0].startswith("tokenizing stories: 0.0/0.6 MB 0%  ETA ?")
    assert lines[-1].endswith("100%  ETA 0:00  100 documents") and not ANSI.search(result.stderr)
    quiet = invoke("data", "prepare", str(corpus), "--tokenizer", "bpe", "--vocab-size", "300", "--quiet")
    assert "tokenizing" not in quiet.stderr and "fingerprint" in quiet.stdout
