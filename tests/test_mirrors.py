import importlib.util

import pytest

from ablab import config as C
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.store.record import RunRecord
from ablab.train import mirrors
from ablab.train.launch import start_run
from ablab.train.mirrors import make_mirrors

from conftest import TINY


def tiny_run(tmp_path, log_to=(), steps=20):
    cfg = C.load(None, [*TINY, f"train.max_steps={steps}", "eval.every=10", "name=mirrored"])
    return start_run(cfg, tmp_path, log_to=log_to)


def needs(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None,
                              reason=f"{package} is not installed (pip install 'ablab[{package}]' to test this mirror)")


def test_unknown_or_missing_mirror_is_a_clear_error(monkeypatch):
    with pytest.raises(UserError, match="Unknown mirror 'neptune'; --log-to takes wandb, mlflow, tensorboard"):
        make_mirrors(["neptune"])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name))
    with pytest.raises(UserError, match=r"pip install 'ablab\[wandb\]'"):
        make_mirrors(["wandb"])


class BrokenMirror:
    name = "broken"

    def start(self, *args):
        pass

    def log(self, row):
        raise ConnectionError("tracking server unreachable")

    def finish(self, *args):
        raise AssertionError("a switched-off mirror must not be called again")


def test_a_failing_mirror_is_switched_off_and_the_run_finishes(tmp_path, monkeypatch):
    monkeypatch.setitem(mirrors.MIRRORS, "broken", BrokenMirror)
    monkeypatch.setitem(mirrors.PACKAGES, "broken", "json")
    outcome = tiny_run(tmp_path, log_to=["broken"])
    assert outcome.status == "finished"
    events = RunRecord.open(tmp_path, outcome.run_id).events()
    assert [e["kind"] for e in events] == ["mirror_failed"]
    assert "unreachable" in events[0]["message"]
    assert len(Ledger(tmp_path).metrics(outcome.run_id)) >= 3  # the ledger kept every row


@needs("tensorboard")
def test_tensorboard_mirror_holds_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = tiny_run(tmp_path, log_to=["tensorboard"])
    events = EventAccumulator(str(tmp_path / ".ablab" / "tensorboard" / outcome.run_id))
    events.Reload()
    ledger_rows = Ledger(tmp_path).metrics(outcome.run_id)
    val_steps = [r["step"] for r in ledger_rows if "val_loss" in r]
    assert [e.step for e in events.Scalars("val_loss")] == val_steps
    assert events.Scalars("val_loss")[-1].value == pytest.approx(outcome.result["final"]["val_loss"], rel=1e-6)


@needs("mlflow")
def test_mlflow_mirror_holds_params_and_metrics(tmp_path):
    from mlflow.tracking import MlflowClient

    outcome = tiny_run(tmp_path, log_to=["mlflow"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.ablab' / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tmp_path.name)
    [run] = client.search_runs([experiment.experiment_id], f"tags.`ablab.run_id` = '{outcome.run_id}'")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "64"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert history[-1].value == pytest.approx(outcome.result["final"]["val_loss"], rel=1e-6)


@needs("wandb")
def test_wandb_offline_mirror_writes_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "600")  # a loaded machine must not switch the mirror off
    outcome = tiny_run(tmp_path, log_to=["wandb"])
    failed = [e["message"] for e in RunRecord.open(tmp_path, outcome.run_id).events() if e["kind"] == "mirror_failed"]
    assert failed == []  # the mirror stayed on to the end
    # run.finish() returns before wandb's service process closes the run's stream, and only that
    # close writes the buffered records to the .wandb file (until then it holds the 7-byte header).
    # Tearing the service down waits for every stream to close, so the file is complete after it.
    import wandb
    wandb.teardown()
    runs = list((tmp_path / ".ablab" / "wandb" / "wandb").glob(f"offline-run-*-{outcome.run_id}"))
    assert len(runs) == 1
    # wandb keeps an offline run as protobuf records for `wandb sync`; its reader is private, so
    # check that the history and summary records carry the mirrored keys.
    data = (runs[0] / f"run-{outcome.run_id}.wandb").read_bytes()
    for key in (b"train_loss", b"val_loss", b"tokens_per_s", b"final/val_loss", b"model"):
        assert key in data, key
