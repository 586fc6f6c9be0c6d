"""A study: one question, a falsifiable hypothesis, a dated baseline, named variables, frozen rest.

The spec is a TOML file with the experiment sheet's sections (meta, objective, hypothesis, design,
expected). `arms()` expands the design into configs; `check()` refuses designs that break
themselves (a variable that is not a config key, a frozen key that differs between arms, unequal
tokens under the equal-tokens axis, no seeds) with one sentence each.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.analysis.verdicts import BASELINE_ARM
from ablab.config import Config, seeds_problem
from ablab.errors import ConfigError, UserError
from ablab.lab import check_name, read_user_text
from ablab.study.baselines import Baseline, parse_ref

CATEGORIES = ("hyperparameter", "optimizer", "memory", "architecture", "training recipe", "data")
AXES = {"tokens": "train.max_tokens", "steps": "train.max_steps", "wall_clock": "train.max_seconds"}
DIRECTIONS = ("decrease", "increase")
METRICS = ("val_loss", "val_bpb", "val_ppl", "train_loss", "tokens_per_s", "peak_memory_mb", "mfu")

# The file `ablab study new` writes: template_text fills in the name, date and baseline.
TEMPLATE = """\

[meta]
name = ""
category = "hyperparameter"   # hyperparameter | optimizer | memory | architecture | training recipe | data
date = ""
# follows = "other-study"     # the study this one follows up: the report's map of ideas draws the edge
# motivated_by = "idea 3"     # why it is run; "idea N" marks backlog idea N (`ablab idea list`) as tested

[objective]
# One question, e.g. "Does a Muon learning rate of 0.04 beat 0.02 at equal tokens?"
question = ""

[hypothesis]
# Yours to write (planning refuses a text still starting with [to write]): the process you claim is
# happening, what the metric will show (direction, size), what you would see if you are wrong.
mechanism = ""
prediction = ""
falsification = ""
metric = "val_loss"           # val_loss | val_bpb | val_ppl | train_loss | tokens_per_s | peak_memory_mb | mfu
# Data studies (corpus, tokenizer, data size): val_bpb, bits per validation byte, is the metric that
# compares across tokenizers and corpora; a loss per token does not (a token is not the same unit).
direction = "decrease"        # decrease | increase
min_effect = 0.01             # the smallest change that would matter to you
read_at = "final"             # final | best (val_loss only) | tokens:N (first evaluation at N tokens or more)

[design]
baseline = ""
axis = "tokens"               # tokens | steps | wall_clock: what every run gets equally
budget = 409_600              # tokens, steps or seconds per run, on that axis
seeds = [0, 1, 2]             # every arm runs every seed; the baseline's runs are reused
variables = {}                # key = [values]; arms are their grid (mode = "zip" pairs them)
# Or name each arm instead of variables:
# [design.arms.no-norm]
# "model.norm" = "none"
frozen = []                   # keys you assert stay fixed; every key not varied is frozen anyway

[expected]
outcomes = "Write what you expect before running it."
"""


UNWRITTEN = "[to write]"  # how the template's unwritten texts begin; planning refuses them
EXAMPLE_VARIABLES = {"optim.lr": [0.04]}  # what a template without --variable varies


def template_text(name: str, date: str, baseline: str, path: Path, question: str = "",
                  variables: dict[str, list[Any]] | None = None, motivated_by: str = "") -> str:
    """A new study file: the commented TEMPLATE with its name, date, baseline, question and
    variables set, and a hypothesis skeleton naming the variables for the researcher to replace.
    A study that varies data.* keys is of category "data" and measured in val_bpb (bits per byte,
    the metric that compares across tokenizers and corpora)."""
    variables = variables or EXAMPLE_VARIABLES
    varied = " and ".join(variables)
    settings = "; ".join(f"{key} = {', '.join(map(str, values))}" for key, values in variables.items())
    header = ("A study: one question, a falsifiable hypothesis, one dated baseline, named variables.\n"
              f"Check it with `ablab study plan {path}` (every arm's diff, the frozen rest, time and memory),\n"
              f"then `ablab study run {path}`.")
    data_study = any(key.startswith("data.") for key in variables)
    values = {
        "meta": {"name": name, "date": date, **({"category": "data"} if data_study else {}),
                 **({"motivated_by": motivated_by} if motivated_by else {})},
        "objective": {"question": question or f"{UNWRITTEN} the one question this study answers about {varied}."},
        "hypothesis": {
            "mechanism": f"{UNWRITTEN} the process by which changing {varied} would move the metric.",
            "prediction": f"{UNWRITTEN} what the metric will do at {settings}: its direction and size.",
            "falsification": f"{UNWRITTEN} what you would see at {settings} if that process is not at work.",
            **({"metric": "val_bpb"} if data_study else {})},
        "design": {"baseline": baseline, "variables": variables}}
    return config_mod.dump_toml(values, TEMPLATE, header)


def parse_variable(item: str) -> tuple[str, list[Any]]:
    """'optim.lr=0.01,0.04' -> ('optim.lr', [0.01, 0.04]): a `study new --variable`, each value
    read as an override of that key is (numbers, true/false, names)."""
    key, text = config_mod.parse_override(item)
    values = [value.strip() for value in text.split(",") if value.strip()]
    if not values:
        raise UserError(f"--variable {item!r} gives no values; write KEY=V1,V2, e.g. --variable optim.lr=0.01,0.04.")
    section, _, field_name = key.rpartition(".")
    kind = typing.get_type_hints(config_mod.SECTION_TYPES[section] if section else Config)[field_name]
    return key, [config_mod.coerce(key, value, kind) for value in values]


@dataclass
class Prediction:
    metric: str = "val_loss"
    direction: str = "decrease"
    min_effect: float = 0.0
    read_at: str = "final"  # final | best | tokens:N


@dataclass
class StudySpec:
    name: str
    category: str
    date: str
    question: str
    mechanism: str
    prediction_text: str
    falsification: str
    prediction: Prediction
    baseline: str
    variables: dict[str, list[Any]]
    mode: str  # grid | zip | arms
    explicit_arms: dict[str, dict[str, Any]]  # name -> changes, when the design lists arms
    frozen: list[str]  # keys named frozen; every key not varied is frozen too
    axis: str
    budget: float
    seeds: list[int]
    metrics: list[str]
    benchmarks: list[str]
    benchmark_limit: int  # examples per benchmark task (a seeded subset); 0 = all
    expected: str
    path: Path | None = None
    sizes: list[str] = field(default_factory=list)  # of a family baseline: the sizes to run at ([] = all of them)
    follows: str = ""  # the study this one follows up (the map of ideas draws the edge; checked at plan time)
    motivated_by: str = ""  # why it was run; "idea N" in it links backlog idea N (ablab.study.ideas)


@dataclass
class Arm:
    name: str
    changes: dict[str, Any]  # dotted key -> value, as the study sets them
    config: Config = field(repr=False, default=None)


# Every key a study file may hold, by section: its TOML type and a line showing a valid value. A
# key not listed is refused with a did-you-mean; ranges are checked in _check_values.
SCHEMA: dict[str, dict[str, tuple[Any, str]]] = {
    "meta": {"name": (str, 'name = "muon-lr"'), "category": (str, 'category = "optimizer"'),
             "date": ((str, datetime.date), 'date = "2026-11-21"'), "follows": (str, 'follows = "muon-lr"'),
             "motivated_by": (str, 'motivated_by = "idea 3: ProRes instead of LayerNorm scaling"')},
    "objective": {"question": (str, 'question = "Does a Muon lr of 0.04 beat 0.02?"')},
    "hypothesis": {"mechanism": (str, 'mechanism = "..."'), "prediction": (str, 'prediction = "..."'),
                   "falsification": (str, 'falsification = "..."'), "metric": (str, 'metric = "val_loss"'),
                   "direction": (str, 'direction = "decrease"'), "min_effect": (float, "min_effect = 0.01"),
                   "read_at": (str, 'read_at = "final"')},
    "design": {"baseline": (str, 'baseline = "main@2026-11-21"'), "axis": (str, 'axis = "tokens"'),
               "budget": (float, "budget = 409_600"), "seeds": (list, "seeds = [0, 1, 2]"),
               "variables": (dict, 'variables = { "optim.lr" = [0.04] }'),
               "arms": (dict, '[design.arms.no-norm] with "model.norm" = "none"'), "mode": (str, 'mode = "grid"'),
               "frozen": (list, 'frozen = ["optim.lr"]'), "metrics": (list, 'metrics = ["val_loss"]'),
               "benchmarks": (list, 'benchmarks = ["piqa"]'), "benchmark_limit": (int, "benchmark_limit = 200"),
               "sizes": (list, 'sizes = ["small", "medium"]')},
    "expected": {"outcomes": (str, 'outcomes = "..."')},
}
_TYPE_NAMES = {str: "a quoted string", int: "a whole number", float: "a number", list: "a list", dict: "a table"}


def _check_schema(raw: dict, where: str) -> None:
    """Every section and key known (else a did-you-mean), every value of its TOML type."""
    for section, table in raw.items():
        if section not in SCHEMA:
            raise UserError(f"In {where}, unknown section [{section}];{config_mod.did_you_mean(section, SCHEMA)} "
                            "The sections are meta, objective, hypothesis, design and expected.")
        if not isinstance(table, dict):
            raise UserError(f"In {where}, [{section}] must be a table; see `ablab study new` for the template.")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise UserError(f"In {where}, [{section}] has no key '{key}';"
                                f"{config_mod.did_you_mean(key, SCHEMA[section])} Its keys are: "
                                f"{', '.join(SCHEMA[section])}.")
            kind, example = SCHEMA[section][key]
            accepted = (int, float) if kind is float else kind
            if not isinstance(value, accepted) or isinstance(value, bool):
                name = _TYPE_NAMES[kind[0] if isinstance(kind, tuple) else kind]
                raise UserError(f"In {where}, {section}.{key} must be {name}, not {value!r}; e.g. {example}.")


def _check_values(raw: dict, where: str) -> None:
    """The ranges the types alone do not say: a safe name, finite sizes, seeds, lists of names."""
    meta, hyp, design = (raw.get(s, {}) for s in ("meta", "hypothesis", "design"))
    if meta.get("name", "") != "":
        check_name(meta["name"], f"In {where}, meta.name", '"muon-lr"')
    budget, min_effect = design.get("budget", 1), hyp.get("min_effect", 0)
    if not (math.isfinite(budget) and budget > 0):
        raise UserError(f"In {where}, design.budget must be a finite number above 0, not {budget}; "
                        "e.g. budget = 409_600.")
    if not (math.isfinite(min_effect) and min_effect >= 0):
        raise UserError(f"In {where}, hypothesis.min_effect is a size, so a finite number of 0 or more, not "
                        f"{min_effect}; e.g. min_effect = 0.01.")
    seeds = design.get("seeds", [])
    problem = seeds_problem(seeds)
    if problem:
        raise UserError(f"In {where}, design.seeds {seeds!r} cannot be used: {problem}; e.g. seeds = [0, 1, 2].")
    if design.get("benchmark_limit", 0) < 0:
        raise UserError(f"In {where}, design.benchmark_limit must be 0 (every example) or more, not "
                        f"{design['benchmark_limit']}.")
    for key in ("frozen", "metrics", "benchmarks"):
        if not all(isinstance(item, str) for item in design.get(key, [])):
            raise UserError(f"In {where}, design.{key} must be a list of quoted names, not {design[key]!r}; "
                            f"e.g. {SCHEMA['design'][key][1]}.")
    for metric in design.get("metrics", []):
        if metric not in METRICS:
            raise UserError(f"In {where}, design.metrics has '{metric}', which is not a metric;"
                            f"{config_mod.did_you_mean(metric, METRICS)} The metrics are: {', '.join(METRICS)}.")
    for arm, changes in design.get("arms", {}).items():
        if not isinstance(changes, dict):
            raise UserError(f"In {where}, design.arms.{arm} must be a table of config changes, not {changes!r}; "
                            f"e.g. {SCHEMA['design']['arms'][1]}.")


def _check_written(raw: dict, where: str) -> None:
    """The question and the hypothesis are the researcher's: a text still holding the template's
    unwritten text is refused, since a verdict on an unwritten prediction means nothing."""
    for section, key in (("objective", "question"), ("hypothesis", "mechanism"), ("hypothesis", "prediction"),
                         ("hypothesis", "falsification")):
        text = raw.get(section, {}).get(key, "")
        if isinstance(text, str) and text.lstrip().startswith(UNWRITTEN):
            raise UserError(f"In {where}, {section}.{key} still holds the template's unwritten text ({text!r}); "
                            f"replace it with your own {key} before planning the study.")


def _section(raw: dict, name: str, where: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"In {where}, [{name}] must be a table; see `ablab study new` for the template.")
    return value


def _require(table: dict, key: str, section: str, where: str) -> Any:
    if key not in table or table[key] in ("", None):
        raise UserError(f"In {where}, [{section}] needs '{key}'; see `ablab study new` for the template.")
    return table[key]


def parse(path: Path) -> StudySpec:
    """Read and check the shape of a study file (not yet against its baseline)."""
    where = str(path)
    if not path.exists():
        raise UserError(f"Study file {path} does not exist; create one with `ablab study new NAME`.")
    try:
        raw = tomllib.loads(read_user_text(path, "study file"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML ({err}); fix the line it names.") from None
    _check_schema(raw, where)
    _check_values(raw, where)
    _check_written(raw, where)
    meta, hyp, design = (_section(raw, s, where) for s in ("meta", "hypothesis", "design"))
    category = _require(meta, "category", "meta", where)
    if category not in CATEGORIES:
        raise UserError(f"In {where}, meta.category must be one of {', '.join(CATEGORIES)}, not {category!r}.")
    prediction = Prediction(metric=hyp.get("metric", "val_loss"), direction=hyp.get("direction", "decrease"),
                            min_effect=float(hyp.get("min_effect", 0.0)), read_at=hyp.get("read_at", "final"))
    _check_prediction(prediction, where)
    variables, explicit, mode = _design_variables(design, where)
    axis = design.get("axis", "tokens")
    if axis not in AXES:
        raise UserError(f"In {where}, design.axis must be one of {', '.join(AXES)}, not {axis!r}.")
    seeds = design.get("seeds", [])
    if not seeds:
        raise UserError(f"In {where}, design.seeds is empty; a study needs seeds, e.g. seeds = [0, 1, 2].")
    return StudySpec(
        name=_require(meta, "name", "meta", where), category=category, date=str(meta.get("date", "")),
        question=_require(_section(raw, "objective", where), "question", "objective", where),
        mechanism=_require(hyp, "mechanism", "hypothesis", where),
        prediction_text=_require(hyp, "prediction", "hypothesis", where),
        falsification=_require(hyp, "falsification", "hypothesis", where), prediction=prediction,
        baseline=_require(design, "baseline", "design", where), variables=variables, mode=mode,
        explicit_arms=explicit, frozen=list(design.get("frozen", [])), axis=axis,
        budget=float(_require(design, "budget", "design", where)), seeds=[int(s) for s in seeds],
        metrics=list(design.get("metrics", ["val_loss", "tokens_per_s", "peak_memory_mb"])),
        benchmarks=[_task_path(str(b), path) for b in design.get("benchmarks", [])], benchmark_limit=int(design.get("benchmark_limit", 200)),
        expected=str(_section(raw, "expected", where).get("outcomes", "")),
        path=path, sizes=[str(size) for size in design.get("sizes", [])],
        follows=str(meta.get("follows", "")), motivated_by=str(meta.get("motivated_by", "")))


def _task_path(task: str, study_file: Path) -> str:
    """A benchmark is a task name, or a .toml task file relative to the study file's folder."""
    if task.endswith(".toml") and not Path(task).is_absolute():
        return str((study_file.parent / task).resolve())
    return task


def _check_prediction(p: Prediction, where: str) -> None:
    if p.metric not in METRICS:
        raise UserError(f"In {where}, hypothesis.metric must be one of {', '.join(METRICS)}, not {p.metric!r}.")
    if p.direction not in DIRECTIONS:
        raise UserError(f"In {where}, hypothesis.direction must be 'decrease' or 'increase', not {p.direction!r}.")
    if p.read_at not in ("final", "best") and not re.fullmatch(r"tokens:\d+", p.read_at.replace("_", "")):
        raise UserError(f"In {where}, hypothesis.read_at must be 'final', 'best' or 'tokens:N' (e.g. tokens:500000), "
                        f"not {p.read_at!r}.")


def _design_variables(design: dict, where: str) -> tuple[dict[str, list], dict[str, dict], str]:
    """(variables, explicit arms, mode): a grid or zip of variables, or a table of named arms."""
    known = set(config_mod.flat_keys())
    explicit = design.get("arms", {})
    variables = design.get("variables", {})
    if bool(explicit) == bool(variables):
        raise UserError(f"In {where}, give either design.variables (key = [values]) or [design.arms.NAME] tables.")
    if explicit:
        variables = {}
        for arm, changes in explicit.items():
            for key, value in changes.items():
                variables.setdefault(key, []).append(value)
    for key, values in variables.items():
        if key not in known:
            raise UserError(f"In {where}, variable '{key}' is not a config key.{config_mod.did_you_mean(key, known)}")
        if not isinstance(values, list) or not values:
            raise UserError(f"In {where}, variable '{key}' needs a non-empty list of values.")
    mode = "arms" if explicit else design.get("mode", "grid")
    if mode not in ("grid", "zip", "arms"):
        raise UserError(f"In {where}, design.mode must be 'grid' or 'zip', not {mode!r}.")
    if mode == "zip" and len({len(v) for v in variables.values()}) > 1:
        raise UserError(f"In {where}, zipped variables need lists of equal length.")
    return variables, explicit, mode


def arms(spec: StudySpec, baseline: Baseline) -> list[Arm]:
    """The baseline arm first, then one arm per setting of the variables, each with its config at
    the study's budget on its comparison axis."""
    if spec.mode == "arms":
        settings = [(name, dict(changes)) for name, changes in spec.explicit_arms.items()]
    else:
        keys = list(spec.variables)
        combos = zip(*spec.variables.values()) if spec.mode == "zip" else itertools.product(*spec.variables.values())
        settings = [(" ".join(f"{k}={v}" for k, v in zip(keys, combo)), dict(zip(keys, combo))) for combo in combos]
    budget = budget_changes(spec)
    result = [Arm(BASELINE_ARM, {}, _arm_config(spec, BASELINE_ARM, baseline.config, budget))]
    for name, changes in settings:
        result.append(Arm(name, changes, _arm_config(spec, name, baseline.config, {**changes, **budget})))
    return result


def _arm_config(spec: StudySpec, arm: str, base: Config, changes: dict[str, Any]) -> Config:
    """The baseline's config with an arm's changes, validated as any config is; a refusal names the
    study file and the arm."""
    try:
        return config_mod.replace(base, changes)
    except ConfigError as err:
        raise ConfigError(f"In {spec.path or spec.name}, arm '{arm}': {err}") from None


def budget_changes(spec: StudySpec) -> dict[str, Any]:
    """Every arm stops on the study's axis at its budget, and on nothing else."""
    changes = {"train.max_steps": 0, "train.max_tokens": 0, "train.max_seconds": 0.0}
    value = spec.budget if spec.axis == "wall_clock" else int(spec.budget)
    return changes | {AXES[spec.axis]: value}


def check(spec: StudySpec, baseline: Baseline, study_arms: list[Arm]) -> None:
    """Refuse a design that breaks itself, with one sentence naming the problem."""
    parse_ref(spec.baseline)
    varied = set(spec.variables)
    known = set(config_mod.flat_keys())
    for key in spec.frozen:
        if key not in known:
            raise UserError(f"Frozen key '{key}' is not a config key.{config_mod.did_you_mean(key, known)}")
        values = {arm.name: config_mod.flatten(arm.config)[key] for arm in study_arms}
        if len(set(map(repr, values.values()))) > 1:
            shown = ", ".join(f"{name}: {value!r}" for name, value in values.items())
            raise UserError(f"Frozen key {key} differs between arms ({shown}); stop varying it or unfreeze it.")
    for arm in study_arms:
        differing = {k for k, _, _ in config_mod.diff(study_arms[0].config, arm.config)}
        stray = sorted(differing - varied)
        if stray:
            raise UserError(f"Arm '{arm.name}' changes frozen key {stray[0]}; declare it as a variable or leave it alone.")
    if spec.axis == "tokens":
        tokens = {arm.name: config_mod.budget_steps(arm.config) * arm.config.tokens_per_step for arm in study_arms}
        if len(set(tokens.values())) > 1:
            per_step = sorted({arm.config.tokens_per_step for arm in study_arms})
            raise UserError(
                f"Under the equal-tokens axis every arm must see the same tokens, but they would see "
                f"{', '.join(f'{n}: {t:,}' for n, t in tokens.items())}; choose a budget divisible by "
                f"every arm's tokens per step ({', '.join(map(str, per_step))}).")
    for arm in study_arms:
        if config_mod.budget_steps(arm.config) == 0:
            raise UserError(f"Arm '{arm.name}' would train 0 steps at this budget; raise design.budget.")
