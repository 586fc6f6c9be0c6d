"""What a config may hold and what would mislead: the range of every numeric setting (RANGES, the one
table that validate() checks and `ablab config keys` lists), the checks that relate two settings, the
seed rule, the spelling of data.corpus (a name or a weighted mixture) and data.tokenizer, the step
budget, and the warnings a plan or a run prints about a schedule that would not show what it should
or a run that reads its training data too many times (epoch_warning).

ablab.config builds every Config through validate() and names these in its own namespace
(config.RANGES, config.validate, ...). Knows nothing of torch, nor of ablab.config's loading.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablab.errors import ConfigError

if TYPE_CHECKING:
    from ablab.config import Config


SEED_LIMIT = 2**32  # seeds are NumPy and torch generator seeds: [0, 2**32)
TOKENIZERS = ("char", "byte", "bpe", "hf:PATH_OR_ID")  # data.tokenizer: the three kinds, or a pretrained file or id
MIN_MIXTURE = 2  # a mixture of one corpus is that corpus: give its name instead

def seeds_problem(seeds: typing.Sequence[Any]) -> str | None:
    """Why `seeds` cannot be the seeds of a study or baseline, or None: each must be a whole number
    in [0, 2**32) (as `seed` is), and none may repeat (a repeated seed is one run counted twice)."""
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
            return f"seed {seed!r} is not a whole number in [0, 2**32)"
    if len(set(seeds)) < len(seeds):
        return "it repeats a seed (give each seed once)"
    return None


@dataclass(frozen=True)
class Range:
    """The values one numeric setting may take: from `low` to `high`, each end included unless
    marked open. A `cap` is a high end that is a sanity limit, not a meaning: far above any model
    ablab is for, so that a slip (an extra digit, 2**40) is refused in one sentence before a run
    record exists, not as an out-of-memory error half way. `when` = (key, value): checked only
    while that other setting has that value."""
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    cap: bool = False
    when: tuple[str, Any] | None = None

    def words(self) -> str:
        """The range as the error messages say it: 'positive', 'above 0', 'in [0, 1)'."""
        if self.high is None or self.cap:
            if not self.low_open and self.low in (0, 1):
                return "zero or positive" if self.low == 0 else "positive"
            return f"{'above' if self.low_open else 'at least'} {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")

    def text(self) -> str:
        """The range as `ablab config keys` lists it: '[1, 65,536]', '> 0', '[0, 1)'."""
        if self.high is None:
            shown = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            shown = (f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                     f"{')' if self.high_open else ']'}")
        return shown + (f" when {self.when[0]} = {self.when[1]!r}" if self.when else "")

    def check(self, key: str, value: float) -> None:
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            if self.cap:
                raise ConfigError(f"{key} = {value:,} is above ablab's limit of {self.high:,}; "
                                  "check it for a slip (an extra digit).")
            self._refuse(key, value)
        if value < self.low or (self.low_open and value == self.low):
            self._refuse(key, value)

    def _refuse(self, key: str, value: float) -> None:
        when = f" when {self.when[0]} is {self.when[1]!r}" if self.when else ""
        raise ConfigError(f"{key} must be {self.words()}{when}, not {value}.")


def _number(value: float) -> str:
    if isinstance(value, int) and value >= 2**20 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


POSITIVE, ABOVE_ZERO, NON_NEGATIVE, FRACTION = Range(1), Range(0, low_open=True), Range(0), Range(0, 1, high_open=True)

# The range of every numeric setting: the one table that validate() checks and `ablab config keys`
# lists. Every float must also be finite; checks that relate two settings are code in validate().
RANGES: dict[str, Range] = {
    "seed": Range(0, SEED_LIMIT, high_open=True),
    "model.d_model": Range(1, 1 << 16, cap=True), "model.n_layers": Range(1, 1024, cap=True),
    "model.n_heads": Range(1, 1024, cap=True), "model.d_ff": Range(1, 1 << 20, cap=True),
    "model.rope_base": ABOVE_ZERO, "model.init_std": ABOVE_ZERO, "model.dropout": FRACTION,
    "model.prores_steps": NON_NEGATIVE,
    "optim.lr": ABOVE_ZERO, "optim.adamw_lr": ABOVE_ZERO, "optim.momentum": FRACTION, "optim.beta1": FRACTION,
    "optim.beta2": FRACTION, "optim.eps": ABOVE_ZERO, "optim.ns_steps": Range(1, 100, cap=True),
    "optim.weight_decay": NON_NEGATIVE, "optim.grad_clip": NON_NEGATIVE,
    "schedule.warmup_steps": NON_NEGATIVE, "schedule.min_lr_ratio": Range(0, 1),
    "schedule.decay_fraction": Range(0, 1, low_open=True),
    "data.vocab_size": Range(257, 1_000_000, when=("data.tokenizer", "bpe")),
    "data.val_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.max_documents": NON_NEGATIVE, "data.max_train_tokens": NON_NEGATIVE,
    "data.shards": Range(0, 1 << 16, cap=True),
    "data.seq_len": Range(1, 1 << 20, cap=True), "data.batch_size": Range(1, 1 << 16, cap=True),
    "train.max_steps": NON_NEGATIVE, "train.max_tokens": NON_NEGATIVE, "train.max_seconds": NON_NEGATIVE,
    "train.grad_accum": Range(1, 1 << 16, cap=True), "train.global_batch_tokens": Range(0, 1 << 40, cap=True),
    "train.memory_budget_mb": NON_NEGATIVE, "train.memory_fraction": Range(0, 1, low_open=True),
    "train.spike_factor": Range(1, low_open=True),
    "train.peak_flops": NON_NEGATIVE, "train.threads": NON_NEGATIVE, "train.nproc": Range(1, 1024, cap=True),
    "train.log_every": POSITIVE, "train.checkpoint_every": POSITIVE, "train.keep_checkpoints": POSITIVE,
    "eval.every": NON_NEGATIVE, "eval.points": Range(1, 1 << 20, cap=True), "eval.tokens": Range(1, 1 << 32, cap=True),
    "eval.tasks_every": NON_NEGATIVE, "eval.tasks_limit": NON_NEGATIVE, "eval.tasks_fewshot": NON_NEGATIVE,
    "eval.prompt_tokens": Range(1, 1 << 16, cap=True),
}
MAXIMA = {key: allowed.high for key, allowed in RANGES.items() if allowed.cap}  # the size caps alone


def _check_finite(cfg: Config) -> None:
    """Every float setting is a finite number: NaN or infinity would train to a diverged run, or
    run forever, instead of failing here."""
    for part in dataclasses.fields(cfg):
        section, values = part.name, getattr(cfg, part.name)
        if not dataclasses.is_dataclass(values):
            continue
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{f.name} must be a finite number, not {value}; "
                                  f"the default is {f.default}.")


def _value(cfg: Config, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def validate(cfg: Config) -> None:
    """Reject values outside their RANGES and combinations that cannot train, each with a sentence
    naming the fix."""
    m, d, t = cfg.model, cfg.data, cfg.train
    _check_finite(cfg)
    _check_tokenizer(d.tokenizer)
    _check_prompt_suite(cfg.eval.prompts)
    d.corpus = canonical_corpus(d.corpus)  # a DataConfig changed after it was built is checked again here
    t.diagnostics = canonical_diagnostics(t.diagnostics)
    for key, allowed in RANGES.items():
        if _value(cfg, key) == "auto":  # data.batch_size, train.grad_accum: checked in _check_auto_batch
            continue
        if allowed.when is None or _value(cfg, allowed.when[0]) == allowed.when[1]:
            allowed.check(key, _value(cfg, key))
    if m.d_model % m.n_heads:
        raise ConfigError(
            f"model.d_model ({m.d_model}) is not divisible by model.n_heads ({m.n_heads}); "
            f"pick n_heads that divides d_model, e.g. {_divisor_near(m.d_model, m.n_heads)}."
        )
    if m.positions == "rope" and (m.d_model // m.n_heads) % 2:
        raise ConfigError(
            f"Rotary positions need an even head size, but d_model/n_heads = {m.d_model // m.n_heads}; "
            "change model.n_heads or model.d_model."
        )
    if m.layernorm_scaling and m.norm == "none":
        raise ConfigError("model.layernorm_scaling scales a norm's output, so it needs model.norm other than 'none'.")
    if d.batch_size != "auto" and d.batch_size % t.nproc:
        raise ConfigError(f"data.batch_size ({d.batch_size}) does not divide by train.nproc ({t.nproc}); "
                          "each process takes an equal share, so pick a multiple of train.nproc.")
    _check_auto_batch(cfg)
    if t.max_steps == 0 and t.max_tokens == 0 and t.max_seconds == 0:
        raise ConfigError("No stopping rule: set train.max_steps, train.max_tokens or train.max_seconds above 0.")


def _check_auto_batch(cfg: Config) -> None:
    """train.global_batch_tokens and "auto" go together as ablab.train.autobatch.resolve reads them:
    grad_accum = "auto" holds the global batch, so it needs one whole number of sequences per process."""
    d, t = cfg.data, cfg.train
    if t.grad_accum == "auto" and not t.global_batch_tokens:
        raise ConfigError('train.grad_accum = "auto" holds train.global_batch_tokens, which is not set; '
                          "set it, e.g. train.global_batch_tokens=65536.")
    if d.batch_size == "auto" and t.grad_accum != "auto" and t.max_tokens:
        raise ConfigError('train.max_tokens needs the tokens per step before the run starts, which data.batch_size = '
                          '"auto" alone leaves open; set train.global_batch_tokens with train.grad_accum = "auto", '
                          "or budget the run in train.max_steps.")
    if not t.global_batch_tokens:
        return
    sequences, left = divmod(t.global_batch_tokens, d.seq_len)
    if left or sequences % t.nproc:
        raise ConfigError(f"train.global_batch_tokens ({t.global_batch_tokens:,}) is not a whole number of "
                          f"data.seq_len={d.seq_len} sequences for each of train.nproc={t.nproc} processes; pick a "
                          f"multiple of {d.seq_len * t.nproc:,}.")
    if t.grad_accum != "auto" and d.batch_size != "auto" and d.batch_size * t.grad_accum != sequences:
        raise ConfigError(f"train.global_batch_tokens ({t.global_batch_tokens:,}) is not data.batch_size x "
                          f"train.grad_accum x data.seq_len ({d.batch_size * t.grad_accum * d.seq_len:,}); set "
                          'train.grad_accum = "auto" to hold it, or leave it at 0.')
    if t.grad_accum == "auto" and d.batch_size != "auto" and sequences % d.batch_size:
        raise ConfigError(f"train.global_batch_tokens ({t.global_batch_tokens:,}) is not a whole number of "
                          f"micro-batches of data.batch_size={d.batch_size} x {d.seq_len} tokens; pick a multiple of "
                          f"{d.batch_size * d.seq_len:,}, or set data.batch_size = \"auto\".")


def canonical_corpus(corpus: Any, key: str = "data.corpus") -> str | dict[str, float]:
    """`corpus` as a config holds it: a name or path unchanged, a mixture as {name: weight} with names
    sorted and weights as floats (one spelling per mixture, so its hash and diff are stable). A
    mixture needs at least two corpora, each with a positive, finite weight."""
    if isinstance(corpus, str):
        if not corpus.strip():
            raise ConfigError(f"{key} is empty; give a corpus name, a path, or a mixture such as "
                              f"{{tinystories=0.7,gutenberg=0.3}}.")
        return corpus
    if not isinstance(corpus, dict):
        raise ConfigError(f"{key} must be a corpus name or path, or a table of corpus weights such as "
                          f"{{tinystories=0.7,gutenberg=0.3}}, not {corpus!r}.")
    if len(corpus) < MIN_MIXTURE:
        raise ConfigError(f"{key} as a mixture needs at least {MIN_MIXTURE} corpora, not {len(corpus)}; "
                          "for a single corpus give its name as a string.")
    weights = {}
    for name, weight in corpus.items():
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{key} names a corpus {name!r}; give each mixture component a corpus name or path.")
        if not number or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(f"{key}: the weight of '{name}' must be a positive number, not {weight!r}; "
                              f"write it as e.g. {{{name}=0.5, ...}}.")
        weights[name] = float(weight)
    return dict(sorted(weights.items()))


# train.diagnostics: what ablab.train.diagnostics can measure at each evaluation, in the order rows list them.
DIAGNOSTICS = ("grad_norms", "gain_grad_norms", "activation_rms", "attention_entropy", "update_ratio")


def canonical_diagnostics(value: Any, key: str = "train.diagnostics") -> bool | list[str]:
    """`value` as train.diagnostics holds it: true (every diagnostic), false, or the names chosen, each
    once in DIAGNOSTICS order (one spelling per choice). Accepts a bool, a list of names, or the
    command line's text: true/false or names separated by commas."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1", "all"):
            return True
        if text in ("false", "no", "off", "0", ""):
            return False
        value = [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, bool):
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{key} must be true, false or a list of names from {', '.join(DIAGNOSTICS)}, not "
                          f"{value!r}; write it as e.g. {key} = [\"grad_norms\", \"attention_entropy\"].")
    for name in value:
        if name not in DIAGNOSTICS:
            import difflib

            match = difflib.get_close_matches(name, DIAGNOSTICS, n=1, cutoff=0.5)
            hint = f" Did you mean '{match[0]}'?" if match else ""
            raise ConfigError(f"{key} names an unknown diagnostic {name!r}; choose from {', '.join(DIAGNOSTICS)}, "
                              f"or set it to true for all of them.{hint}")
    return [name for name in DIAGNOSTICS if name in value] or False


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer in TOKENIZERS[:3] or (tokenizer.startswith("hf:") and tokenizer[3:].strip()):
        return
    import difflib

    match = difflib.get_close_matches(tokenizer, TOKENIZERS[:3], n=1, cutoff=0.5)
    hint = f" Did you mean '{match[0]}'?" if match else ""
    raise ConfigError(f"data.tokenizer must be 'char', 'byte', 'bpe' or 'hf:PATH_OR_ID' (a tokenizer.json or a "
                      f"Hub model id), not {tokenizer!r}.{hint}")


# eval.prompts names a file prompts/NAME.txt: a plain name, never a path that could reach outside the folder.
PROMPT_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_prompt_suite(name: str) -> None:
    if name and not PROMPT_SUITE_NAME.fullmatch(name):
        raise ConfigError(f"eval.prompts names a prompt suite (the file prompts/NAME.txt), so it is a plain name of "
                          f"letters, digits and . _ - such as 'tinystories', not {name!r}.")


def _divisor_near(n: int, target: int) -> int:
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    return min(divisors, key=lambda k: (abs(k - target), k))


def budget_steps(cfg: Config) -> int | None:
    """The optimizer steps the step and token limits allow: the loop stops at max_tokens after
    max_tokens // tokens_per_step steps. None when only max_seconds bounds the run."""
    t = cfg.train
    limits = ([t.max_steps] if t.max_steps else []) + ([t.max_tokens // cfg.tokens_per_step] if t.max_tokens else [])
    # (a token budget under an unchosen "auto" batch raises: ablab.train.autobatch.resolve comes first)
    return min(limits) if limits else None


WARMUP_SHARE_LIMIT = 0.25  # more warmup than this share of a run leaves little of it at the peak lr
MIN_EVAL_POINTS = 5  # fewer validation points than this make a loss curve that cannot be read


def eval_points(cfg: Config, steps: int) -> int:
    """How many validation evaluations a run of `steps` optimizer steps makes, step 0 and the end
    included (what the loop does: with eval.every, step 0, each multiple of it and the end)."""
    if cfg.eval.every:
        return 1 + math.ceil(steps / cfg.eval.every)
    return min(cfg.eval.points, steps + 1)


def schedule_warnings(cfg: Config, steps: int | None) -> list[str]:
    """One sentence per way a run of `steps` optimizer steps would mislead: a warmup over a quarter
    of it, or too few validation points to read a curve. [] when `steps` is unknown (a seconds budget)."""
    if not steps:
        return []
    found = []
    warmup = cfg.schedule.warmup_steps
    if warmup > WARMUP_SHARE_LIMIT * steps:
        reached = ("the run ends before the learning rate reaches optim.lr" if warmup > steps
                   else f"the learning rate peaks only at step {warmup:,}")
        found.append(f"schedule.warmup_steps = {warmup:,} is {warmup / steps:.0%} of the run's {steps:,} steps, so "
                     f"{reached}; keep it under a quarter, e.g. schedule.warmup_steps={max(steps // 10, 1)}.")
    points = eval_points(cfg, steps)
    if points < MIN_EVAL_POINTS <= steps + 1:
        setting = f"eval.every = {cfg.eval.every:,}" if cfg.eval.every else f"eval.points = {cfg.eval.points}"
        fix = ("set eval.every=0 to spread eval.points evaluations over the run" if cfg.eval.every
               else "set eval.points=10")
        found.append(f"{setting} gives only {points} validation points in {steps:,} steps, too few to read a "
                     f"loss curve; {fix}.")
    return found


EPOCH_LIMIT = 4  # a run that reads its training tokens more often than this measures memorisation as much as learning


def epoch_warning(cfg: Config, n_train_tokens: int) -> str | None:
    """One sentence when the run's planned training tokens (its step budget times tokens per step)
    read its `n_train_tokens` of training data more than EPOCH_LIMIT times; None otherwise, and
    when the budget is in seconds alone or the data size is unknown (0)."""
    steps = budget_steps(cfg)
    if not steps or n_train_tokens <= 0:
        return None
    epochs = steps * cfg.tokens_per_step / n_train_tokens
    if epochs <= EPOCH_LIMIT:
        return None
    return (f"This run reads its {n_train_tokens:,} training tokens about {epochs:,.0f} times ({epochs:,.0f} epochs); "
            "give it more data (data.corpus) or train less (train.max_tokens or train.max_steps).")
