"""Bad input ends in one sentence and exit 2, never a traceback; a bug ends in a crash report; the
config refuses non-finite and out-of-range numbers; the ledger never stores a non-finite number."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from ablab import config as C
from ablab.errors import ConfigError, UserError
from ablab.store.ledger import Ledger, Run
from ablab.store.record import now_iso

from conftest import ABLAB

# Usage errors of the CLI library itself: each names the problem and the help to read.
USAGE = [
    (["--bogus"], "No such option: --bogus"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["runs", "--limit", "abc"], "'--limit'"),
    (["show"], "Missing argument"),
    (["run", "-c"], "requires an argument"),
    (["study", "plan"], "Missing argument"),
    (["eval"], "Missing argument"),
]


def ablab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ABLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("args, says", USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_errors_are_one_sentence_and_exit_2(args, says, tmp_path):
    result = ablab(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert says in result.stderr and "--help" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".ablab").exists()  # nothing written


@pytest.mark.parametrize("args", [[], ["study"], ["baseline"]])
def test_a_bare_command_group_prints_its_help_and_exits_2(args, tmp_path):
    result = ablab(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "Usage: ablab" in result.stdout


def test_version(tmp_path):
    import ablab as package

    result = ablab("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"ablab {package.__version__}"


def test_a_bug_is_one_sentence_with_a_crash_report_holding_the_traceback(tmp_path):
    """A command that raises something no user caused: exit 1, no traceback on the terminal, the
    traceback in a crash report under $ABLAB_CACHE."""
    probe = ("import sys\nfrom ablab.cli import boundary\nfrom ablab.cli.main import app\n"
             "@app.command('explode')\ndef explode():\n    raise ZeroDivisionError('boom in the trainer')\n"
             "sys.argv = ['ablab', 'explode']\nsys.exit(boundary.run(app))")
    env = {"ABLAB_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "internal error, which is a bug" in result.stderr
    reports = list((tmp_path / "cache" / "crash-reports").glob("crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in result.stderr
    text = reports[0].read_text()
    assert "Traceback" in text and "ZeroDivisionError: boom in the trainer" in text and "explode" in text


# Non-finite and out-of-range numbers: refused when the config is built, naming the key.
BAD_NUMBERS = [
    "optim.lr=nan", "optim.lr=inf", "optim.grad_clip=nan", "optim.weight_decay=inf", "optim.adamw_lr=nan",
    "optim.eps=nan", "optim.eps=0", "model.rope_base=0", "model.rope_base=-1", "model.rope_base=nan",
    "model.init_std=-1", "train.max_seconds=nan", "train.spike_factor=nan", "train.peak_flops=nan",
    "seed=1e20", "seed=-1", "model.d_model=1099511627776", "data.seq_len=1e9", "data.batch_size=1e9",
    "schedule.min_lr_ratio=nan", "data.val_fraction=nan", "model.dropout=nan",
]


@pytest.mark.parametrize("override", BAD_NUMBERS)
def test_non_finite_and_out_of_range_numbers_are_refused_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        C.load("quickstart", [override])


def test_a_config_built_in_python_is_checked_too():
    cfg = C.load("quickstart")
    with pytest.raises(ConfigError, match="optim.lr must be a finite number"):
        C.replace(cfg, {"optim.lr": math.nan})
    with pytest.raises(ConfigError, match="model.rope_base"):  # a Config validates when it is constructed
        C.Config(model=C.ModelConfig(rope_base=-1.0))


def test_a_refused_number_through_the_command_line_writes_nothing(tmp_path):
    result = ablab("run", "-c", "quickstart", "train.peak_flops=nan", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.peak_flops must be a finite number" in result.stderr
    assert not (tmp_path / ".ablab").exists()


def test_the_ledger_stores_a_non_finite_number_as_null_and_stays_queryable(tmp_path):
    """A NaN in a result (a diverged loss, a bad measurement) once broke every query of the lab."""
    with Ledger(tmp_path) as ledger:
        ledger.record_run(Run(id="nan0run1", name="n", status="running", created_at=now_iso(), finished_at=None,
                              config_hash="h", seed=0, data_fingerprint=None, code_version=None, content_key=None,
                              config={"train": {"peak_flops": 0.0}}, provenance={}, result={}))
        ledger.log_metrics("nan0run1", [{"step": 0, "train_loss": math.nan, "mfu": math.inf}])
        ledger.finish_run("nan0run1", "diverged", {"final": {"train_loss": math.nan, "val_loss": 2.5}}, now_iso())
        run = ledger.run("nan0run1")
        assert run.final == {"train_loss": None, "val_loss": 2.5}
        assert ledger.metrics("nan0run1") == [{"step": 0, "train_loss": None, "mfu": None}]
        assert [s["id"] for s in ledger.summaries(where={"train.peak_flops": 0.0})] == ["nan0run1"]
    listed = ablab("runs", "--sort", "val_loss", cwd=tmp_path)
    assert listed.returncode == 0 and "nan0run1" in listed.stdout, listed.stderr


@pytest.mark.parametrize("args", [["gc"], ["gc", "--dry-run"], ["runs"], ["report"], ["baseline", "list"]])
def test_a_reading_command_outside_a_lab_leaves_the_folder_as_it_was(args, tmp_path):
    """Run by mistake in a folder that is no lab (no --lab, nothing above it), a command that only
    reads or prunes creates no ledger there."""
    result = ablab(*args, cwd=tmp_path)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode in (0, 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seeds", [[0, 0], [-1], [2**32], [1.5]])
def test_a_baseline_with_unusable_seeds_is_refused_before_its_file_is_written(seeds, tmp_path):
    """The library refuses what `--seeds` refuses (one rule, config.seeds_problem), whoever calls it."""
    from ablab.study import baselines

    with pytest.raises(UserError, match="cannot be used"):
        baselines.create(tmp_path, baselines.Baseline("main", "2026-12-01", C.Config(), seeds))
    assert not (tmp_path / "baselines").exists() and not (tmp_path / ".ablab").exists()
