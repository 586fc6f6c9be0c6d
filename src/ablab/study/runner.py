"""Plan, run and judge a study: the verification view, every arm over the same seeds, a verdict.

Runs go through ablab.train.launch, so a finished run with the same content key is reused (the baseline's
own runs included) and an interrupted one is resumed; re-running a study trains only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ablab import config as config_mod
from ablab.config import Config
from ablab.data.prepare import data_size, prepare_data
from ablab.data.tokens import PreparedData
from ablab.errors import UserError
from ablab.evals.runner import TrainingBenchmarks
from ablab.executors import base as executors
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect as collect_provenance
from ablab.study import baselines, estimates, ideas
from ablab.study.benchmarks import score_run
from ablab.study.spec import Arm, StudySpec, arms, check, parse
from ablab.study.systems import profile_arms
from ablab.train import autobatch, launch


@dataclass
class PlanRow:
    """One arm of a plan: its diff against the baseline, its budget, what running the study does
    with its cells, and what that costs."""
    arm: Arm
    diff: list[tuple[str, Any, Any]]  # (key, baseline value, arm value)
    steps: int | None
    tokens: int | None
    runs: int
    reused: int = 0  # cells whose finished run exists (or that share another cell's run)
    to_train: int = 0
    to_resume: int = 0
    steps_to_run: int = 0  # the optimizer steps still to train over its cells (resumed runs: what is left)
    pace: estimates.Pace | None = None  # seconds per step, measured (None: not measured)
    params: int = 0
    flops_per_token: int = 0
    warnings: list[str] = field(default_factory=list)  # schedule and epoch warnings of its config
    data_tokens: int | None = None  # training tokens of its data, after data.max_*; None: not on this machine
    auto: str = ""  # what data.batch_size / train.grad_accum = "auto" chose for it on this machine
    trained_as: Config | None = None  # its config with "auto" chosen (what a run of it trains), when known

    @property
    def epochs(self) -> float | None:
        """How many times a run reads its training tokens; None when either count is unknown."""
        return self.tokens / self.data_tokens if self.tokens and self.data_tokens else None

    @property
    def flops_per_run(self) -> float | None:
        return self.flops_per_token * self.tokens if self.tokens else None

    @property
    def est_seconds(self) -> tuple[float, float, float] | None:
        """(low, middle, high) training seconds of what is left to train; None when unmeasured."""
        left = self.to_train + self.to_resume
        if not left:
            return (0.0, 0.0, 0.0)
        if self.steps is None:  # bound by wall-clock alone: each run takes its max_seconds
            seconds = self.arm.config.train.max_seconds * left
            return (seconds, seconds, seconds)
        if self.pace is None:
            return None
        return tuple(per_step * self.steps_to_run for per_step in (self.pace.low, self.pace.mid, self.pace.high))


@dataclass
class Plan:
    spec: StudySpec
    baseline: baselines.Baseline
    rows: list[PlanRow]
    frozen: dict[str, Any] = field(default_factory=dict)

    @property
    def total_runs(self) -> int:
        return sum(r.runs for r in self.rows)

    @property
    def est_seconds(self) -> tuple[float, float, float] | None:
        parts = [r.est_seconds for r in self.rows]
        return None if any(p is None for p in parts) else tuple(map(sum, zip(*parts)))


def make_plan(lab: Path, spec_path: Path, probe: bool = True, spec: StudySpec | None = None) -> Plan:
    """Load the study and its baseline, expand and check the arms, and count per arm what running it
    would reuse, train and resume (decided as `run_study` decides it). Time comes from the finished
    runs of each arm's shape on this host, else (with `probe`) from timed real steps, one probe per
    shape with anything left to train (ablab.study.estimates). `spec`: the study already parsed (one
    size of a family's study, ablab.study.sizes)."""
    spec = spec or parse(spec_path)
    baseline = baselines.load(lab, spec.baseline)
    if baseline.sizes and baseline.size is None:
        raise UserError(f"{spec.baseline} is a family of sizes ({', '.join(baseline.sizes)}); plan it with "
                        "ablab.study.sizes.make_plans (as `ablab study plan` does), or name one size NAME@DATE/SIZE.")
    study_arms = arms(spec, baseline)
    check(spec, baseline, study_arms)
    ideas.check_links(lab, spec)  # a follows naming no study, an idea the backlog lacks: refused before any run
    if spec.benchmarks:  # an unknown task or missing benchmark data fails before any run trains
        TrainingBenchmarks(",".join(spec.benchmarks), limit=1, num_fewshot=0)
    rows, prepared = [], {}
    for arm in study_arms:
        steps = config_mod.budget_steps(arm.config)
        row = PlanRow(arm, config_mod.diff(study_arms[0].config, arm.config), steps, None, len(spec.seeds),
                      warnings=config_mod.schedule_warnings(arm.config, steps))
        rows.append(row)
        data = _prepared_if_local(prepared, arm.config)
        _choose_batch(lab, row, data)
        per_step = row.trained_as.tokens_per_step if row.trained_as else None
        row.tokens = steps * per_step if steps is not None and per_step else None
        vocab = data.tokenizer.vocab_size if data is not None else _vocab_without_data(arm.config)
        if vocab:
            row.params, row.flops_per_token = estimates.model_size(arm.config, vocab)
        if data is not None:
            row.data_tokens = len(data.train)
            warning = config_mod.epoch_warning(arm.config, row.data_tokens)
            row.warnings += [warning] if warning else []
    with Ledger(lab) as ledger:
        _count_cells(rows, decide_cells(lab, ledger, spec.name, spec.seeds, study_arms, prepared))
        paces = estimates.finished_paces(ledger)
    for row in rows:
        shape = config_mod.shape_hash(row.arm.config)
        local = prepared.get(repr(row.arm.config.data)) is not None
        if shape not in paces and probe and local and row.trained_as and (row.to_train or row.to_resume):
            paces[shape] = estimates.remembered_probe(lab, shape)
            if paces[shape] is None:
                paces[shape] = estimates.probe(row.trained_as, _prepared(prepared, row.arm.config), row.steps)
                estimates.remember_probe(lab, shape, paces[shape])
        row.pace = paces.get(shape)
    cosmetic = config_mod.cosmetic_keys() | set(spec.variables) | {"seed", "train.max_steps", "train.max_tokens",
                                                                   "train.max_seconds"}
    frozen = {k: v for k, v in config_mod.flatten(study_arms[0].config).items() if k not in cosmetic}
    return Plan(spec, baseline, rows, frozen)


def _choose_batch(lab: Path, row: PlanRow, data: PreparedData | None) -> None:
    """What a run of the row's arm trains as: its config, or with "auto" chosen by the probe a run
    makes (cached in the lab, so the run finds the same) when its data is on this machine. A plan on
    another machine than the runs' says so: the choice is this machine's."""
    cfg = row.arm.config
    if not cfg.auto_batch:
        row.trained_as = cfg
        return
    if cfg.train.grad_accum != "auto" or not cfg.train.global_batch_tokens:
        row.warnings.append('data.batch_size = "auto" without train.global_batch_tokens: each arm\'s global batch '
                            "is what fits it, so arms of different sizes differ in batch too; hold it with "
                            'train.global_batch_tokens and train.grad_accum = "auto".')
    if data is None:
        row.auto = "chosen when each run starts (its data is not on this machine)"
        return
    row.trained_as, choice = autobatch.resolve(cfg, data.tokenizer.vocab_size, lab, cfg.train.nproc)
    row.auto = choice.sentence(cfg) + " (on this machine; a run on another device chooses again)"


def _prepared(cache: dict[str, PreparedData | None], cfg: Config) -> PreparedData | None:
    """The tokens of `cfg`'s data, prepared once per data config (a corpus error stops here); None
    when a plan found them not on this machine (see _prepared_if_local)."""
    if repr(cfg.data) not in cache:
        cache[repr(cfg.data)] = prepare_data(cfg.data)
    return cache[repr(cfg.data)]


def _prepared_if_local(cache: dict[str, PreparedData | None], cfg: Config) -> PreparedData | None:
    """For a plan: the tokens of `cfg`'s data when its corpus is on this machine, else None, so that
    planning a GPU study on a laptop downloads nothing (its cells are then all to train, its size,
    time and epochs '?')."""
    if repr(cfg.data) not in cache and data_size(cfg.data) is None:
        cache[repr(cfg.data)] = None
    return _prepared(cache, cfg)


def _vocab_without_data(cfg: Config) -> int | None:
    """The vocabulary size a run will have, as far as its config says without the data: BPE's
    requested size (an upper bound), 256 for bytes; None for char and hf: (known only from the data)."""
    return {"bpe": cfg.data.vocab_size, "byte": 256}.get(cfg.data.tokenizer)


def _count_cells(rows: list[PlanRow], cells: list[Cell]) -> None:
    by_arm = {row.arm.name: row for row in rows}
    for cell in cells:
        row = by_arm[cell.arm]
        if cell.action in ("done", "reuse", "share"):
            row.reused += 1
        elif cell.action == "resume":
            row.to_resume += 1
            row.steps_to_run += max((row.steps or 0) - cell.run.result.get("steps", 0), 0)
        else:
            row.to_train += 1
            row.steps_to_run += row.steps or 0


def with_seed(cfg: Config, seed: int, name: str) -> Config:
    return config_mod.replace(cfg, {"seed": seed, "name": name})


OnCell = Callable[[str, int, str], None]  # (arm, seed, 'reused' or the status its run ended with): a cell is done


def run_study(lab: Path, plan: Plan, progress_for: Callable[[str, int], Any] | None = None,
              say: Callable[[str], None] = print, executor: str | executors.Executor = "inline",
              workers: int | None = None, retries: int = 0, on_cell: OnCell | None = None) -> str:
    """Train every (seed, arm) that is not finished yet on `executor` (ablab.executors.base), dispatched
    seeds outermost so that an interrupted study already holds complete pairs. Reuse and resume are
    decided here, on the driver, before anything is dispatched. `executor` is a name (with `workers`
    and `retries`) or an Executor already set up (ablab.executors.base.get). `progress_for(arm, seed)` gives
    a run's (step, row) callback and `on_cell` hears of each cell as it is done. Returns 'finished', 'failed' (some
    run raised; the others went on, and running the study again retries it) or 'interrupted'."""
    spec = plan.spec
    runner = executor if isinstance(executor, executors.Executor) else \
        executors.get(executor, workers, executors.Retry(retries), lab)
    with Ledger(lab) as ledger:
        ledger.save_study(spec.name, spec.baseline, _spec_record(plan))
        ideas.link_tested_ideas(ledger, spec)
        states = train_cells(lab, ledger, spec.name, spec.seeds, [row.arm for row in plan.rows], runner,
                             progress_for, say, on_cell)
    _store_noise_floor(lab, plan.baseline)  # the baseline arm's runs are the baseline's own when its seeds are
    if "interrupted" in states:
        return "interrupted"
    if spec.benchmarks:
        for seed in spec.seeds:
            for row in plan.rows:
                _score_benchmarks(lab, spec, row.arm.name, seed, say)
    if spec.category == "memory" and "failed" not in states:  # the sheet's memory / systems addendum
        profile_arms(lab, spec.name, {row.arm.name: row.arm.config for row in plan.rows})
    return "failed" if "failed" in states else "finished"


def train_cells(lab: Path, ledger: Ledger, study: str, seeds: list[int], study_arms: list[Arm],
                runner: executors.Executor, progress_for: Callable[[str, int], Any] | None,
                say: Callable[[str], None], on_cell: OnCell | None = None) -> set[str]:
    """Train every (seed, arm) cell of `study` that is not finished on `runner`, linking each run to
    its cells as soon as its record exists (so that a study killed mid-run resumes it when run again);
    the statuses the runs ended with (studies and ladders alike). `on_cell` hears of every cell once:
    the finished ones now, as 'reused', the others when their run ends."""
    cells = decide_cells(lab, ledger, study, seeds, study_arms)
    tasks, keys = _dispatch(ledger, study, cells, say)
    for cell in cells:
        if on_cell is not None and cell.action in ("done", "reuse"):
            on_cell(cell.arm, cell.seed, "reused")

    def link(task: executors.Task, run_id: str) -> None:
        for arm, seed in keys[task.key]:  # cells with the same content key share the run
            ledger.link_study_run(study, arm, seed, run_id)

    states = set()
    for result in runner.run(tasks, ledger, progress_for, on_run=link):
        task = result.task
        failure = f": {result.error}" if result.status == "failed" else ""
        say(f"{task.arm} seed {task.seed}: run {result.run_id or '(none)'} {result.status}{failure}")
        states.add(result.status)
        for arm, seed in keys[task.key] if on_cell is not None else ():
            on_cell(arm, seed, result.status)
    return states


@dataclass
class Cell:
    """What running a study does with one (arm, seed): 'done' (its linked run ended), 'reuse' (a
    finished run with its content key), 'share' (the task of cell `shares` trains the same
    computation), 'resume' (its interrupted run) or 'train'."""
    arm: str
    seed: int
    action: str
    run: Run | None = None  # the run reused or resumed
    request: launch.Request | None = None  # what to dispatch, for resume and train
    shares: int | None = None  # for 'share': the index of the cell whose task it joins
    link: bool = False  # the run must be linked to the cell first (a reused run, an unlinked interrupted one)


def decide_cells(lab: Path, ledger: Ledger, study: str, seeds: list[int], study_arms: list[Arm],
                 prepared: dict[str, PreparedData] | None = None) -> list[Cell]:
    """Every cell, seeds outermost, with what a run of the study does with it; reads the ledger and
    writes nothing, so that a plan counts exactly what the run will do. A cell whose linked run has
    the cell's config is done when that run ended and resumed when it is interrupted (a link is
    written when a run is created, so a killed study's runs are linked); a run of the cell that was
    created but not yet linked when the study was killed is resumed too. Otherwise a finished run
    with the cell's content key anywhere in the lab is reused, and cells that share a content key
    share one task, so that two workers never train the same computation. A linked run that is
    still training elsewhere stops the study here. In a plan (`prepared` from make_plan), an arm
    whose data is not on this machine has every cell to train."""
    provenance = collect_provenance(lab)
    prepared = {} if prepared is None else prepared
    cells: list[Cell] = []
    by_content: dict[str, int] = {}  # content key -> the cell whose task trains it
    links = ledger.study_runs(study)
    unlinked = _unlinked_runs(ledger, study, links)

    def add(cell: Cell, content: str | None) -> None:
        if content is not None:
            by_content[content] = len(cells)
        cells.append(cell)

    for seed in seeds:
        for arm in study_arms:
            cfg = with_seed(arm.config, seed, f"{study}/{arm.name}")
            run = _linked_run(ledger, links.get((arm.name, seed)), cfg)
            if run is not None and run.status in ("finished", "diverged"):
                cells.append(Cell(arm.name, seed, "done", run))
                continue
            if run is not None and run.status == "running":
                raise UserError(f"Run {run.id} of {arm.name} seed {seed} is still training (pid {run.pid} on "
                                f"{run.host}); wait for it to end or stop it, then run the study again.")
            if run is not None and run.status == "interrupted":
                add(Cell(arm.name, seed, "resume", run, launch.Request(lab, run_id=run.id)), run.content_key)
                continue
            data = _prepared(prepared, cfg)
            if data is None:  # a plan of data not on this machine: no run here can have trained on it
                cells.append(Cell(arm.name, seed, "train"))
                continue
            decision = launch.decide(lab, cfg, ledger, provenance, launch.identify(data))
            orphan = unlinked.pop((cfg.name, decision.key), None)
            if decision.reused is not None:
                cells.append(Cell(arm.name, seed, "reuse", decision.reused, link=True))
            elif decision.key in by_content:
                cells.append(Cell(arm.name, seed, "share", shares=by_content[decision.key]))
            elif orphan is not None:
                add(Cell(arm.name, seed, "resume", orphan, launch.Request(lab, run_id=orphan.id), link=True),
                    decision.key)
            else:
                add(Cell(arm.name, seed, "train", request=decision.request), decision.key)
    return cells


def _dispatch(ledger: Ledger, study: str, cells: list[Cell],
              say: Callable[[str], None]) -> tuple[list[executors.Task], dict[int, list[tuple[str, int]]]]:
    """(the tasks to dispatch, in cell order; {task key: the (arm, seed) cells its run serves}),
    linking reused runs, and resumed runs to every cell they serve, now."""
    tasks: list[executors.Task] = []
    keys: dict[int, list[tuple[str, int]]] = {}
    task_of: dict[int, int] = {}  # cell index -> its task's key
    for index, cell in enumerate(cells):
        if cell.link:
            ledger.link_study_run(study, cell.arm, cell.seed, cell.run.id)
        if cell.action == "reuse":
            say(f"{cell.arm} seed {cell.seed}: run {cell.run.id} reused")
        elif cell.action == "share":
            task = tasks[task_of[cell.shares]]
            keys[task.key].append((cell.arm, cell.seed))
            if task.run_id is not None:  # a resumed run is linked now, as a new one is when created
                ledger.link_study_run(study, cell.arm, cell.seed, task.run_id)
        elif cell.action in ("resume", "train"):
            task_of[index] = len(tasks)
            keys[len(tasks)] = [(cell.arm, cell.seed)]
            tasks.append(executors.Task(len(tasks), cell.arm, cell.seed, cell.request))
    return tasks, keys


def _linked_run(ledger: Ledger, run_id: str | None, cfg: Config) -> Run | None:
    """The run linked to a cell, unless it is gone or has another config (the design changed since)."""
    if run_id is None or not ledger.has_run(run_id):
        return None
    run = ledger.runs(ids=[run_id])[0]
    return run if run.config_hash == config_mod.config_hash(cfg) else None


def _unlinked_runs(ledger: Ledger, study: str, links: dict) -> dict[tuple[str, str], Run]:
    """(name, content key) -> an interrupted run of this study that no cell links: one that was
    created, then killed before its link was written (or whose row was rebuilt from its directory)."""
    linked = set(links.values())
    return {(run.name, run.content_key): run for run in ledger.runs(status="interrupted")
            if run.id not in linked and run.name.startswith(f"{study}/")}


def _score_benchmarks(lab: Path, spec: StudySpec, arm: str, seed: int, say: Callable[[str], None]) -> None:
    with Ledger(lab) as ledger:
        run_id = ledger.study_runs(spec.name).get((arm, seed))
        finished = run_id is not None and ledger.runs(ids=[run_id])[0].status == "finished"
    if finished:
        scored = score_run(lab, spec.benchmarks, spec.benchmark_limit, run_id)
        if scored:
            say(f"{arm} seed {seed}: scored {', '.join(scored)}")


def _spec_record(plan: Plan) -> dict:
    spec = plan.spec
    return {"name": spec.name, "category": spec.category, "date": spec.date, "question": spec.question,
            "mechanism": spec.mechanism, "prediction": spec.prediction_text, "falsification": spec.falsification,
            "metric": spec.prediction.metric, "direction": spec.prediction.direction,
            "min_effect": spec.prediction.min_effect, "read_at": spec.prediction.read_at,
            "variables": spec.variables, "axis": spec.axis, "budget": spec.budget, "seeds": spec.seeds,
            "expected": spec.expected, "benchmarks": spec.benchmarks, "benchmark_limit": spec.benchmark_limit,
            "arms": {r.arm.name: r.arm.changes for r in plan.rows},
            "auto_batch": {r.arm.name: r.auto for r in plan.rows if r.auto},
            "frozen": plan.frozen, "follows": spec.follows, "motivated_by": spec.motivated_by,
            "path": str(spec.path) if spec.path else None}


def run_baseline(lab: Path, ref: str, progress_for=None, say=print, on_cell: OnCell | None = None) -> dict[str, float]:
    """Train (or reuse: a study's runs of the same config and seed count) the baseline at each of its
    seeds, then measure and store its seed-noise floor: the standard deviation over seeds of each
    final metric. `progress_for(ref, seed)` and `on_cell` as for run_study."""
    baseline = baselines.load(lab, ref)
    for seed in baseline.seeds:
        cfg = config_mod.replace(baseline.config, {"seed": seed, "name": f"{ref}/seed{seed}"})
        outcome = launch.start_run(cfg, lab, progress_for(ref, seed) if progress_for else None)
        say(f"{ref} seed {seed}: run {outcome.run_id} {'reused' if outcome.reused else outcome.status}")
        if on_cell is not None:
            on_cell(ref, seed, "reused" if outcome.reused else outcome.status)
        if outcome.status == "interrupted":
            raise UserError(f"Baseline {ref} was interrupted at seed {seed}; run `ablab baseline run {ref}` again to finish it.")
    return _store_noise_floor(lab, baseline)


def _store_noise_floor(lab: Path, baseline: baselines.Baseline) -> dict[str, float]:
    """Measure the baseline's noise floor from the finished runs of its seeds now in the ledger and
    keep it with the baseline (for readers of the ledger, such as the HTML report)."""
    with Ledger(lab) as ledger:
        measured = baselines.noise_floor(ledger, baseline.config, baseline.seeds)
        ledger.update_baseline_data(baseline.name, baseline.date,  # one size of a family: its own floor
                                    {"size_floors": {baseline.size: measured}} if baseline.size else measured)
    return measured["noise_floor"]
