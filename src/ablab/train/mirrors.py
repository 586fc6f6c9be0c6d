"""Mirrors: copies of a run's config and metrics in Weights & Biases, MLflow or TensorBoard.

The ledger stays the source of truth; a mirror is a view for people who live in those tools. Each
is an optional extra (`pip install 'ablab[wandb]'`, `[mlflow]`, `[tensorboard]`), enabled by
`--log-to NAME[,NAME]` or `[log] to = [...]` in ablab.toml. A mirror that fails while a run trains
is switched off with an event in the run's record; it never stops the run.
"""

from __future__ import annotations

import importlib.util
import json
import numbers
import os
import time
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.errors import UserError

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}


def _scalars(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class WandbMirror:
    """W&B run with the ablab run id; offline unless WANDB_MODE says otherwise."""
    name = "wandb"

    def start(self, lab: Path, run_id: str, run_name: str, cfg: dict) -> None:
        import wandb

        self.run = wandb.init(project=lab.name or "ablab", id=run_id, name=run_name or run_id, config=cfg,
                              dir=str(_mirror_dir(lab, "wandb")), mode=os.environ.get("WANDB_MODE", "offline"),
                              resume="allow", reinit="create_new")

    def log(self, row: dict) -> None:
        self.run.log(_scalars(row), step=row["step"])

    def finish(self, status: str, result: dict) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in _scalars(result.get("final", {})).items()})
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "finished" else 1)


class MlflowMirror:
    """MLflow run in the lab's own SQLite tracking store unless MLFLOW_TRACKING_URI is set."""
    name = "mlflow"
    STATUS = {"finished": "FINISHED", "interrupted": "KILLED"}

    def start(self, lab: Path, run_id: str, run_name: str, cfg: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_mirror_dir(lab, 'mlflow') / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(lab.name or "ablab")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(lab.name or "ablab")
        found = self.client.search_runs([experiment_id], f"tags.`ablab.run_id` = '{run_id}'", max_results=1)
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
            return
        run = self.client.create_run(experiment_id, run_name=run_name or run_id, tags={"ablab.run_id": run_id})
        self.run_id = run.info.run_id
        flat = config_mod.flatten(config_mod.from_dict(cfg))
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in flat.items()])

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, row["step"]) for k, v in _scalars(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str, result: dict) -> None:
        self.client.set_terminated(self.run_id, self.STATUS.get(status, "FAILED"))


class TensorBoardMirror:
    """Scalars under the lab's .ablab/tensorboard/<run id>/, viewable with `tensorboard --logdir`."""
    name = "tensorboard"

    def start(self, lab: Path, run_id: str, run_name: str, cfg: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(_mirror_dir(lab, "tensorboard") / run_id))
        self.writer.add_text("config", f"```\n{json.dumps(cfg, indent=2)}\n```")

    def log(self, row: dict) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def finish(self, status: str, result: dict) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


MIRRORS = {"wandb": WandbMirror, "mlflow": MlflowMirror, "tensorboard": TensorBoardMirror}


def _mirror_dir(lab: Path, name: str) -> Path:
    folder = lab / ".ablab" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_mirrors(names: list[str]) -> list[Any]:
    """Mirror objects for `names`, after checking each is known and its package is installed."""
    mirrors = []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        if name not in MIRRORS:
            raise UserError(f"Unknown mirror '{name}'; --log-to takes {', '.join(MIRRORS)}.")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"Mirroring to {name} needs the {PACKAGES[name]} package; "
                            f"install it with `pip install 'ablab[{name}]'`.")
        mirrors.append(MIRRORS[name]())
    return mirrors
