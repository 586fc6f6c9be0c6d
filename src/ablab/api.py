"""ablab's Python API, for notebooks and scripts: the same functions the `ablab` command calls.

    import ablab
    lab = ablab.Lab.init("my-lab")                       # or ablab.Lab("my-lab") for an existing lab
    run = lab.run("quickstart", train={"max_steps": 200}, seed=1)
    lab.runs(where={"model.d_model": 128}, sort="val_loss").frame()   # a pandas DataFrame (extra: pandas)
    study = lab.study("studies/lr-up.toml")
    study.plan().total_runs; study.run(); study.verdicts()
    lab.baseline("cpu@2026-11-21").run()                 # its seeds, then the seed-noise floor

Every error a user can cause is an ablab.errors.UserError with one sentence naming the fix, as on
the command line. Docs: docs/api.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ablab import config as config_mod
from ablab.analysis import runs as runs_mod
from ablab.analysis import verdicts
from ablab.analysis.scaling_data import fit_points, ledger_points, save_fits
from ablab.config import Config
from ablab.errors import UserError
from ablab.executors.base import Executor
from ablab.lab import find_lab, init_lab, mirror_names
from ablab.report import sheets
from ablab.report.html import build_report, write_research_report
from ablab.report.scaling import plot_fits
from ablab.store.ledger import Ledger, Run
from ablab.study import baselines, conclusion, runner
from ablab.study.ladder import Ladder, plan_ladder, run_ladder
from ablab.study.runner import Plan
from ablab.study.spec import parse
from ablab.train import launch
from ablab.train.evaluate import EvalReport, evaluate_run
from ablab.train.loop import Outcome, ProgressFn

__all__ = ["BaselineHandle", "Lab", "LadderOutcome", "Runs", "Study"]


class Runs(list):
    """Runs of a lab as ledger records (ablab.store.ledger.Run), in the order asked for."""

    def frame(self):
        """The runs as a pandas DataFrame: one row per run, its config flattened to `section.key`
        columns, its final metrics as `final.<metric>`. Needs the `pandas` extra."""
        try:
            import pandas  # an optional extra: the rest of the API works without it
        except ImportError:
            raise UserError("Runs.frame() needs pandas; install it with `pip install 'ablab[pandas]'`.") from None
        rows = []
        for run in self:
            row = {"id": run.id, "name": run.name, "status": run.status, "seed": run.seed,
                   "created_at": run.created_at, "steps": run.result.get("steps"),
                   "tokens": run.result.get("tokens_seen"), "params": run.result.get("params")}
            row |= {f"{section}.{key}": value for section, fields in run.config.items() if isinstance(fields, dict)
                    for key, value in fields.items()}
            row |= {f"final.{key}": value for key, value in run.final.items()}
            rows.append(row)
        return pandas.DataFrame(rows)


@dataclass
class Study:
    """A study of a lab, from its file (to plan and run it) or by name once it has run (to read
    its cells and verdicts, conclude it and write its sheet)."""
    lab: Path
    path: Path | None = None
    study_name: str | None = None

    @property
    def name(self) -> str:
        return self.study_name or parse(self._file()).name

    def _file(self) -> Path:
        if self.path is None:
            raise UserError(f"Study '{self.study_name}' was opened by name; open its file with "
                            "lab.study('studies/NAME.toml') to plan or run it.")
        return self.path

    def plan(self, probe: bool = True) -> Plan:
        """Each arm as a diff against the baseline, the frozen rest, steps, tokens, parameters and
        FLOPs; per arm the runs reused, to train and to resume; the time of what is left as a range,
        from finished runs of the same shape or (with `probe`) from timed real steps."""
        return runner.make_plan(self.lab, self._file(), probe=probe)

    def run(self, executor: str | Executor = "inline", workers: int | None = None, retries: int = 0,
            say: Callable[[str], None] = print, plan: Plan | None = None,
            progress_for: Callable[[str, int], ProgressFn | None] | None = None,
            on_cell: Callable[[str, int, str], None] | None = None) -> str:
        """Train every arm over every seed (finished runs reused, interrupted ones resumed) on
        `executor`; returns 'finished', 'failed' or 'interrupted'. Given the `plan` that was shown,
        it runs from that one instead of planning (and probing) again. `progress_for(arm, seed)` gives
        each run's (step, row) callback; `on_cell(arm, seed, status)` hears of each cell as it is done."""
        plan = plan or self.plan()
        return runner.run_study(self.lab, plan, progress_for, say=say, executor=executor, workers=workers,
                                retries=retries, on_cell=on_cell)

    def status(self) -> dict[tuple[str, int], Run | None]:
        """{(arm, seed): its run, or None where it has not run}."""
        return verdicts.status(self.lab, self.name)[1]

    def verdicts(self) -> list[verdicts.ArmResult]:
        """Per arm: the metric per seed, its summary, the paired comparison with the baseline and
        the verdict on the prediction (None for the baseline arm)."""
        return verdicts.analyze(self.lab, self.name)[1]

    def sheet(self) -> Path:
        """Regenerate the study's sheet (reports/studies/NAME.md) and return its path."""
        return sheets.write_sheet(self.lab, self.name)

    def conclude(self, interpretation: str = "", decision: str = "", follow_up: str = "",
                 override: str = "") -> Path:
        """Write the researcher's part of the sheet (kept when it is regenerated); the sheet's path. A
        decision adopting an arm whose verdict is not `supported` is refused without an `override`
        reason, which is then recorded with it."""
        conclusion.conclude(self.lab, self.name, {"interpretation": interpretation, "decision": decision,
                                                  "follow_up": follow_up}, override=override)
        return self.sheet()


@dataclass
class BaselineHandle:
    """A dated baseline of a lab (NAME@DATE, or NAME for its current one)."""
    lab: Path
    baseline: baselines.Baseline

    @property
    def ref(self) -> str:
        return self.baseline.ref

    @property
    def config(self) -> Config:
        return self.baseline.config

    @property
    def seeds(self) -> list[int]:
        return self.baseline.seeds

    def run(self, say: Callable[[str], None] = print, progress_for: Callable[[str, int], ProgressFn | None] | None = None,
            on_cell: Callable[[str, int, str], None] | None = None) -> dict[str, float]:
        """Train (or reuse) the baseline at each of its seeds; its seed-noise floor per final metric.
        `progress_for` and `on_cell` as for Study.run (the arm is the baseline's NAME@DATE)."""
        return runner.run_baseline(self.lab, self.ref, progress_for, say=say, on_cell=on_cell)


@dataclass
class LadderOutcome:
    state: str  # finished | failed | interrupted; fits only when finished
    fits: dict = field(default_factory=dict)  # kind -> fit
    reasons: dict = field(default_factory=dict)  # kind -> why it was not fitted
    figures: list[Path] = field(default_factory=list)


class Lab:
    """A lab folder (with ablab.toml): its runs, baselines, studies and reports."""

    def __init__(self, path: str | Path | None = None):
        """`path` is the lab's folder; without it, the nearest folder with ablab.toml at or above
        the current one (else the current one)."""
        self.path = Path(path).resolve() if path is not None else find_lab()

    @classmethod
    def init(cls, folder: str | Path, examples: bool = True) -> "Lab":
        """Create a lab (ablab.toml, config.toml, baselines/, studies/, reports/) and open it;
        `examples` adds the example baselines and studies. An existing lab is left as it is."""
        folder = Path(folder)
        init_lab(folder)
        config_file = folder / "config.toml"
        if not config_file.exists():
            config_file.write_text(config_mod.save_toml(config_mod.load("quickstart")), encoding="utf-8")
        if examples:
            baselines.install_examples(folder)
        return cls(folder)

    def __repr__(self) -> str:
        return f"Lab({str(self.path)!r})"

    # -- runs -----------------------------------------------------------------------------------------
    def config(self, config: str | Path | Config | None = None, *overrides: str, **settings: Any) -> Config:
        """A checked config: a preset name, a TOML file or a Config, with `section.key=value`
        overrides and keyword settings (`seed=1`, `train={"max_steps": 200}`)."""
        if isinstance(config, Config):
            cfg = config_mod.replace(config, dict(config_mod.parse_override(item) for item in overrides))
        else:
            cfg = config_mod.load(config, overrides)
        return config_mod.replace(cfg, _dotted(settings)) if settings else cfg

    def run(self, config: str | Path | Config | None = None, *overrides: str, force: bool = False,
            progress: ProgressFn | None = None, log_to: Sequence[str] = (), **settings: Any) -> Outcome:
        """Train one run (or return the finished run with the same content key unless `force`)."""
        cfg = self.config(config, *overrides, **settings)
        return launch.start_run(cfg, self.path, progress, force=force, log_to=mirror_names(self.path, ",".join(log_to)))

    def resume(self, run_id: str, progress: ProgressFn | None = None, log_to: Sequence[str] = ()) -> Outcome:
        """Continue an interrupted run from its newest intact checkpoint."""
        return launch.resume_run(self.path, run_id, progress, log_to=mirror_names(self.path, ",".join(log_to)))

    def runs(self, where: dict[str, Any] | Sequence[str] = (), status: str | None = None, name: str | None = None,
             tag: str | None = None, sort: str | None = None, desc: bool = False, limit: int | None = None) -> Runs:
        """Runs filtered and sorted as `ablab runs` does; `where` is {"model.d_model": 128} or
        ["model.d_model=128"]."""
        items = [f"{k}={_toml_value(v)}" for k, v in where.items()] if isinstance(where, dict) else list(where)
        table = runs_mod.list_runs(self.path, status, name, tag, items, sort, desc, limit)
        if not table.rows:
            return Runs()
        with Ledger(self.path) as ledger:
            by_id = {run.id: run for run in ledger.runs(ids=[row["id"] for row in table.rows])}
        return Runs(by_id[row["id"]] for row in table.rows)

    def get(self, ref: str) -> Run:
        """One run by id (a unique prefix is enough)."""
        with runs_mod.open_ledger(self.path) as ledger:
            return ledger.run(ref)

    def metrics(self, ref: str) -> list[dict]:
        """A run's logged rows, one per step (train loss, val loss, tokens/s, ...)."""
        with runs_mod.open_ledger(self.path) as ledger:
            return ledger.metrics(ledger.resolve(ref))

    def evaluate(self, ref: str, tasks: str | Sequence[str], limit: int | None = None,
                 num_fewshot: int = 0) -> EvalReport:
        """Score a run's newest checkpoint on benchmark tasks (names, suites or task files) and store it."""
        names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
        return evaluate_run(self.path, self.get(ref).id, names, limit, num_fewshot)

    def note(self, ref: str, text: str) -> str:
        return runs_mod.add_note(self.path, ref, text)

    def tag(self, ref: str, tag: str) -> str:
        return runs_mod.add_tag(self.path, ref, tag)

    # -- baselines, studies, reports -------------------------------------------------------------------
    def baseline(self, ref: str) -> BaselineHandle:
        """A baseline by NAME@DATE (or NAME: its current one)."""
        return BaselineHandle(self.path, baselines.load(self.path, ref))

    def baselines(self) -> list[dict]:
        """Every baseline: ref, seeds, current flag, parent, justified_by, noise floor."""
        return baselines.listing(self.path)

    def study(self, file_or_name: str | Path) -> Study:
        """A study by its file (a .toml path, absolute or relative to here or to the lab) or, once
        it has run, by its name."""
        path = Path(file_or_name)
        if path.suffix != ".toml":
            return Study(self.path, study_name=str(file_or_name))
        in_lab = self.path / path
        return Study(self.path, in_lab if not path.exists() and in_lab.exists() else path)

    def promote(self, study: str, arm: str, date: str | None = None) -> BaselineHandle:
        """The next dated baseline: the study's baseline plus `arm`'s changes (now current)."""
        return BaselineHandle(self.path, baselines.promote_arm(self.path, study, arm, date)[1])

    def ladder_plan(self, ref: str, sizes: Sequence[tuple[int, int]], flops: Sequence[float] | None = None,
                    tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None) -> Ladder:
        """A scaling ladder of baseline `ref`: (d_model, n_layers) sizes x FLOP or token budgets."""
        return plan_ladder(self.path, ref, list(sizes), list(flops) if flops else None,
                           list(tokens) if tokens else None, list(seeds) if seeds else None)

    def ladder(self, plan: Ladder, executor: str | Executor = "inline", convention: str = "6ND",
               say: Callable[[str], None] = print, progress_for: Callable[[str, int], ProgressFn | None] | None = None,
               on_cell: Callable[[str, int, str], None] | None = None) -> LadderOutcome:
        """Train a scaling ladder's rungs like a study's cells (`progress_for` and `on_cell` as for
        Study.run), then fit L(C), L(N), L(N, D) and the IsoFLOP minima to them, store the fits as
        the baseline's law and draw them."""
        state = run_ladder(self.path, plan, progress_for, say=say, executor=executor, on_cell=on_cell)
        if state != "finished":
            return LadderOutcome(state)
        points = ledger_points(self.path, study=plan.study, convention=convention)
        fits, reasons = fit_points(points)
        save_fits(self.path, f"ladder:{plan.baseline.ref}", fits, points, baseline=plan.baseline.ref)
        figures = plot_fits(points, fits, self.path / "reports" / "scaling", f"ladder-{plan.baseline.ref}")
        return LadderOutcome(state, fits, reasons, figures)

    def report(self, plots: bool = True) -> Path:
        """Write reports/index.html and reports/research_report.md; the HTML page's path."""
        page = build_report(self.path, plots=plots)
        write_research_report(self.path, plots=plots)
        return page


def _dotted(settings: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"max_steps": 200}, "seed": 1} -> {"train.max_steps": 200, "seed": 1}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= {f"{key}.{inner}": v for inner, v in value.items()}
        else:
            flat[key] = value
    return flat


def _toml_value(value: Any) -> str:
    """A Python value as the text of a `key=value` filter (coerced to the config field's type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
