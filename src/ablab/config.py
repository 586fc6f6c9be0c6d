"""Typed run configuration: sections, TOML loading, `section.key=value` overrides, hash and diff.
What a config may hold (RANGES, validate) and the schedule warnings are in ablab.config_checks.

This module knows nothing of torch. Every field has a comment saying what it means; validation runs
when a config is built, so an impossible config never reaches training.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit

# What ablab.config_checks defines is part of this module's API too (config.RANGES, config.validate, ...).
from ablab.config_checks import (MAXIMA, RANGES, SEED_LIMIT, Range, budget_steps, canonical_corpus,  # noqa: F401
                                 canonical_diagnostics, epoch_warning, eval_points, schedule_warnings, seeds_problem,
                                 validate)
from ablab.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"
AUTO = "auto"
# data.batch_size and train.grad_accum: a number, or "auto" (chosen by a measured probe when the run
# starts, ablab.train.autobatch; the run's stored config holds the number chosen).
AutoInt = typing.Union[int, Literal["auto"]]
# train.diagnostics: true (all), false, or the names of some (ablab.config_checks.DIAGNOSTICS).
DiagnosticsSetting = typing.Union[bool, list[str]]


def cosmetic(default: Any) -> Any:
    """A field that does not change what a run computes; it is left out of the config hash."""
    return field(default=default, metadata={"cosmetic": True})


@dataclass
class ModelConfig:
    d_model: int = 128  # residual stream width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads; d_model must divide evenly
    d_ff: int = 512  # hidden width of the MLP (per branch for SwiGLU)
    norm: Literal["rmsnorm", "layernorm", "none"] = "rmsnorm"  # the normalisation layer in each block
    norm_position: Literal["pre", "post"] = "pre"  # norm before each sublayer, or after the residual add
    positions: Literal["rope", "learned", "none"] = "rope"  # rotary, a learned table, or no position signal
    mlp: Literal["swiglu", "gelu", "relu2", "silu"] = "swiglu"  # silu: ungated, for the SwiGLU ablation
    qk_norm: bool = False  # RMS-normalise queries and keys per head before attention
    tie_embeddings: bool = False  # output head shares the token embedding matrix
    rope_base: float = 10000.0  # rotary frequency base
    dropout: float = 0.0  # dropout on attention and residual branches
    prores_steps: int = 0  # ProRes residual warmup T_w: branch l scaled by clip(t/(l*T_w),0,1); 0 = off
    layernorm_scaling: bool = False  # scale each sublayer's norm output by 1/sqrt(layer index)
    activation_checkpointing: bool = False  # recompute block activations in backward to save memory
    init_std: float = 0.02  # std of the normal init; output projections use init_std/sqrt(2*n_layers)


@dataclass
class OptimConfig:
    name: Literal["muon", "adamw"] = "muon"  # muon: Muon on hidden matrices + AdamW on the rest
    lr: float = 0.02  # hidden 2-D matrices (Muon's lr); with name="adamw", every parameter's lr
    adamw_lr: float = 0.006  # with Muon: the AdamW group (embeddings, output head, norm gains)
    momentum: float = 0.95  # Muon momentum
    nesterov: bool = True  # Nesterov momentum in Muon
    ns_steps: int = 5  # Newton-Schulz iterations that orthogonalise Muon's update
    beta1: float = 0.9  # AdamW's first-moment (mean) decay
    beta2: float = 0.95  # AdamW's second-moment (variance) decay
    eps: float = 1e-8  # AdamW's epsilon, added to the denominator
    weight_decay: float = 0.0  # decoupled weight decay on hidden matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = no clipping


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "linear", "wsd", "constant"] = "cosine"  # lr shape after warmup; wsd: warmup-stable-decay
    warmup_steps: int = 50  # linear warmup from 0 to the peak lr; the decay runs over the rest of the budget
    min_lr_ratio: float = 0.1  # final lr as a fraction of peak (cosine, linear, wsd)
    decay_fraction: float = 0.2  # wsd: fraction of training spent decaying at the end


CorpusSetting = str | dict[str, float]  # data.corpus: one corpus, or a mixture's {name: weight}


@dataclass
class DataConfig:
    corpus: CorpusSetting = "tiny-shakespeare"  # a corpus name or path; or a mixture {name = weight, ...}
    tokenizer: str = "char"  # char: a token per character; byte: per byte; bpe: trained; hf:PATH_OR_ID: pretrained
    vocab_size: int = 4096  # bpe only: vocabulary size to train
    max_documents: int = 0  # train on the first N documents of the training split (corpus order); 0 = all
    max_train_tokens: int = 0  # train on the first N tokens of the training split (cut mid-document); 0 = all
    shards: int = 0  # sharded corpora (fineweb-edu-10bt): how many shard files to train on; 0 = the corpus's default
    text_field: str = "text"  # jsonl only: the field holding each document's text
    val_fraction: float = 0.1  # held out for validation when the corpus has no validation split
    seq_len: int = 128  # tokens per training sequence
    batch_size: AutoInt = 32  # sequences per micro-batch; "auto": the largest that fits train.memory_budget_mb

    def __post_init__(self) -> None:
        # One spelling per mixture (names sorted, weights as floats), so hashes and diffs are stable.
        self.corpus = canonical_corpus(self.corpus)


@dataclass
class TrainConfig:
    max_steps: int = 550  # stop after this many optimizer steps; 0 = no step limit
    max_tokens: int = 0  # stop after this many training tokens; 0 = no token limit
    max_seconds: float = 0.0  # stop after this much training wall-clock; 0 = no time limit
    grad_accum: AutoInt = 1  # micro-batches per optimizer step; "auto": as many as train.global_batch_tokens needs
    global_batch_tokens: int = cosmetic(0)  # tokens per optimizer step grad_accum = "auto" holds; 0 = not set
    memory_budget_mb: float = cosmetic(0.0)  # data.batch_size = "auto" fills this; 0 = 90% of free CUDA memory, or memory_fraction of RAM
    memory_fraction: float = cosmetic(0.5)  # on a CPU with memory_budget_mb = 0: the share of total RAM auto batch fills
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available, else CPU
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    spike_factor: float = 3.0  # a train loss above this many times the running median is a spike event
    peak_flops: float = 0.0  # FLOP/s that MFU is measured against; 0 = measure this machine's matmul peak
    threads: int = cosmetic(0)  # torch CPU threads; 0 = torch's default
    nproc: int = cosmetic(1)  # data-parallel processes; cosmetic like threads: same global batch, same result
    log_every: int = cosmetic(10)  # steps between train-metric records
    checkpoint_every: int = cosmetic(275)  # steps between checkpoints; one is always written at the end
    keep_checkpoints: int = cosmetic(2)  # newest checkpoints kept on disk
    diagnostics: DiagnosticsSetting = cosmetic(False)  # at each evaluation: grad_norms, gain_grad_norms, activation_rms, attention_entropy, update_ratio; true = all; cosmetic: they only read the run


@dataclass
class EvalConfig:
    every: int = 0  # steps between validation evaluations; 0 = eval.points of them, spread evenly over the run
    points: int = 10  # with every = 0: validation evaluations per run, step 0 and the end included; 1 = the end only
    tokens: int = 32768  # validation tokens per evaluation, in fixed evenly spaced windows
    tasks: str = ""  # benchmarks evaluated while training, comma-separated names or suites; "" = none
    tasks_every: int = 0  # steps between benchmark evaluations (and at step 0); 0 = only at the end
    tasks_limit: int = 200  # examples per task per evaluation (a seeded subset); 0 = every example
    tasks_fewshot: int = 0  # few-shot examples in each benchmark prompt
    prompts: str = ""  # prompt suite continued at each evaluation and the end: the lab's prompts/NAME.txt, else a bundled one; "" = none
    prompt_tokens: int = 48  # tokens generated per prompt of eval.prompts, greedy and sampled (temperature 1)


@dataclass
class Config:
    name: str = cosmetic("")  # run name; cosmetic
    seed: int = 0  # seeds init, batches and dropout
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def auto_batch(self) -> bool:
        """Whether data.batch_size or train.grad_accum is still "auto" (not yet chosen by a probe)."""
        return AUTO in (self.data.batch_size, self.train.grad_accum)

    @property
    def tokens_per_step(self) -> int:
        """Training tokens per optimizer step; known before the probe only when train.global_batch_tokens
        holds it."""
        if self.train.global_batch_tokens and self.train.grad_accum == AUTO:
            return self.train.global_batch_tokens
        if self.auto_batch:
            raise ConfigError("The tokens per step of data.batch_size = \"auto\" are known only once it is chosen; "
                              "set train.global_batch_tokens with train.grad_accum = \"auto\" to fix them in advance.")
        return self.data.batch_size * self.data.seq_len * self.train.grad_accum


SECTION_TYPES = {
    "model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
    "data": DataConfig, "train": TrainConfig, "eval": EvalConfig,
}


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn `value` (a TOML value or a command-line string) into `typ`, or raise ConfigError."""
    if typ == AutoInt:
        if value == AUTO:
            return AUTO
        try:
            return coerce(key, value, int)
        except ConfigError:
            raise ConfigError(f"{key} must be an integer or \"auto\", not {value!r}; write it as e.g. 32 or "
                              f"\"auto\".") from None
    if typ == DiagnosticsSetting:
        return canonical_diagnostics(value, key)
    if typ == CorpusSetting:
        return canonical_corpus(_mixture_text(key, value) if isinstance(value, str) else value, key)
    if typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(
                f"{key} must be one of {', '.join(map(repr, choices))}, not {value!r}.{did_you_mean(str(value), choices)}"
            )
        return value
    from_text = isinstance(value, str)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if from_text and value.lower() in ("true", "yes", "1", "on"):
                return True
            if from_text and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value.replace("_", "")) if from_text else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value.replace("_", "") if from_text else value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (ValueError, TypeError):
        pass
    raise ConfigError(f"{key} must be {_type_name(typ)}, not {value!r}; write it as e.g. {_example(typ)}.")


def _mixture_text(key: str, value: str) -> str | dict[str, Any]:
    """A command-line mixture, `{tinystories=0.7,gutenberg=0.3}`, read as the TOML inline table it is
    written as; any other text is a corpus name or path."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        return tomllib.loads(f"mixture = {value.strip()}")["mixture"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{key}={value} is not a TOML inline table of corpus weights; write it as e.g. "
                          f"{key}={{tinystories=0.7,gutenberg=0.3}} (quote a path: {{\"./my.txt\"=0.5,...}}).") from None


def _type_name(typ: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))


def _example(typ: Any) -> str:
    return {bool: "true", int: "1000", float: "0.02", str: "'text'"}.get(typ, "?")


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build a Config from nested dicts (as read from TOML or JSON), rejecting unknown keys."""
    kwargs: dict[str, Any] = {}
    top_types = _field_types(Config)
    for key, value in raw.items():
        if key in SECTION_TYPES:
            if not isinstance(value, dict):
                raise ConfigError(f"In {where}, [{key}] must be a table of settings, not {value!r}.")
            kwargs[key] = _section_from_dict(key, value, where)
        elif key in top_types:
            kwargs[key] = coerce(key, value, top_types[key])
        else:
            raise ConfigError(f"In {where}, '{key}' is not a config key.{did_you_mean(key, top_types)}")
    return Config(**kwargs)


def _section_from_dict(section: str, raw: dict[str, Any], where: str) -> Any:
    cls = SECTION_TYPES[section]
    types = _field_types(cls)
    values = {}
    for key, value in raw.items():
        if key not in types:
            options = [f"{section}.{k}" for k in types]
            raise ConfigError(f"In {where}, '{section}.{key}' is not a config key.{did_you_mean(f'{section}.{key}', options)}")
        values[key] = coerce(f"{section}.{key}", value, types[key])
    return cls(**values)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a config from a TOML file or preset name (None = defaults), then apply overrides."""
    raw: dict[str, Any] = {}
    where = "the default config"
    if path is not None:
        file = resolve_config_path(path)
        where = str(file)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{file} is not valid TOML ({err}); fix the line it names.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file} is not UTF-8 text; save it as UTF-8 TOML.") from None
    for item in overrides:
        key, value = parse_override(item)
        _set_nested(raw, key, value)
    return from_dict(raw, where)


def resolve_config_path(path: str | Path) -> Path:
    file = Path(path)
    if file.is_file():
        return file
    preset = PRESETS_DIR / f"{path}.toml"
    if preset.is_file():
        return preset
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
    raise ConfigError(
        f"Config '{path}' is neither a file nor a preset; give a TOML path or one of: {', '.join(names)}."
    )


def parse_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override '{item}' is not of the form section.key=value, e.g. model.d_model=256.")
    key = key.strip()
    known = set(flat_keys())
    if key not in known:
        raise ConfigError(f"'{key}' is not a config key.{did_you_mean(key, known)}")
    return key, value.strip()


def _set_nested(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.rpartition(".")
    target = raw.setdefault(section, {}) if section else raw
    target[name] = value


def flat_keys() -> list[str]:
    return list(flatten(Config()).keys())


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted keys to values: {'model.d_model': 128, ..., 'seed': 0}."""
    flat: dict[str, Any] = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def cosmetic_keys() -> set[str]:
    keys = {f.name for f in dataclasses.fields(Config) if f.metadata.get("cosmetic")}
    for section, cls in SECTION_TYPES.items():
        keys |= {f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.metadata.get("cosmetic")}
    return keys


def canonical_json(cfg: Config) -> str:
    """The config as JSON with sorted keys and no whitespace: equal configs give equal text."""
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))


def _hashed(kept: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """A stable 16-hex-digit hash of everything that changes what a run computes. The budget enters
    as its resolved step count, spelled as max_steps (so such configs keep the hash they always had):
    max_steps=100 and max_tokens of exactly 100 steps train identically, so they are one run.
    max_seconds stays as given: how many steps it allows depends on the machine and its load."""
    kept = {k: v for k, v in flatten(cfg).items() if k not in cosmetic_keys()}
    steps = budget_steps(cfg)
    if steps:
        kept |= {"train.max_steps": steps, "train.max_tokens": 0}
    return _hashed(kept)


# What changes the values a step computes but not how long it takes: runs that differ only in these
# (or in sections named here with a trailing dot) train at the same pace, so a plan times one by another.
PACE_FREE = ("seed", "name", "schedule.", "eval.", "optim.lr", "optim.adamw_lr", "optim.momentum", "optim.nesterov",
             "optim.beta1", "optim.beta2", "optim.eps", "optim.weight_decay", "optim.grad_clip", "model.init_std",
             "model.rope_base", "data.val_fraction", "train.max_steps", "train.max_tokens", "train.max_seconds",
             "train.spike_factor", "train.peak_flops", "train.log_every", "train.checkpoint_every",
             "train.keep_checkpoints", "train.diagnostics")


def shape_hash(config: Config | dict[str, Any]) -> str:
    """A hash of what sets the cost of one optimizer step: the model, the batch, the optimizer's kind,
    the device and precision, threads and processes (everything but PACE_FREE). `config` is a Config
    or the nested dict a run's record stores, read as it is (a key it lacks makes another shape)."""
    nested = to_dict(config) if isinstance(config, Config) else config
    flat = {f"{section}.{key}": value for section, values in nested.items() if isinstance(values, dict)
            for key, value in values.items()}
    return _hashed({k: v for k, v in flat.items() if not k.startswith(PACE_FREE)})


def diff(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """The keys whose values differ, as (dotted key, value in a, value in b), in key order."""
    fa, fb = flatten(a), flatten(b)
    return [(k, fa[k], fb[k]) for k in fa if fa[k] != fb[k]]


def replace(cfg: Config, changes: dict[str, Any]) -> Config:
    """A copy of `cfg` with dotted keys set (values coerced and validated like overrides)."""
    raw = to_dict(cfg)
    for key, value in changes.items():
        if key not in raw and key.partition(".")[0] not in SECTION_TYPES:
            raise ConfigError(f"'{key}' is not a config key.{did_you_mean(key, flat_keys())}")
        _set_nested(raw, key, value)
    return from_dict(raw)


def save_toml(cfg: Config) -> str:
    """The config as TOML text, one table per section (for `ablab init` and baselines)."""
    return dump_toml(to_dict(cfg))


def dump_toml(values: dict[str, Any], template: str = "", header: str = "") -> str:
    """Nested `values` as TOML text, set into `template` (TOML text whose comments and layout are
    kept) below `header` (comment lines). The one TOML writer: tomlkit quotes every value, so a
    name holding quotes or backslashes still gives valid TOML, as hand-formatted text did not."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    doc = tomlkit.parse(comment + template)
    _set_tables(doc, values)
    return tomlkit.dumps(doc)


def inline(values: dict[str, Any]) -> Any:
    """`values` as a TOML inline table: a mixture reads `corpus = {gutenberg = 0.3, tinystories = 0.7}`."""
    table = tomlkit.inline_table()
    table.update(values)
    return table


def _set_tables(table: Any, values: dict[str, Any], depth: int = 0) -> None:
    # Into a table the template already has, so its comments survive; a new one is appended. A table
    # of settings inside a section (a mixture's weights) is written inline, on its key's line.
    for key, value in values.items():
        if isinstance(value, dict) and key in table and isinstance(table[key], dict):
            _set_tables(table[key], value, depth + 1)
        elif isinstance(value, dict) and depth >= 1:
            table[key] = inline(value)
        elif isinstance(value, dict):
            table[key] = tomlkit.table()
            _set_tables(table[key], value, depth + 1)
        else:
            table[key] = value
