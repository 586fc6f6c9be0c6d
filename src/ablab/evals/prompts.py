"""A fixed prompt suite, continued by a model: the same prompts at every evaluation of every run, so
that what a change does to generated text is read beside the baseline's at the same step.

    prompts = load_prompts(lab, "tinystories")   # the lab's prompts/tinystories.txt, else the bundled one
    rows = continue_prompts(model, tokenizer, prompts, new_tokens=48, seed=0, step=200)

Each prompt gets a greedy continuation and one sampled at temperature 1 from a generator seeded by the
run's seed and the prompt's index (the same draw at every step, so steps and runs differ only by
their weights). Generation uses the model's KV cache. The file lookup imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablab.config_checks import SEED_LIMIT
from ablab.errors import ConfigError, DataError
from ablab.lab import read_user_text

BUNDLED_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"  # a suite per bundled corpus
MODES = ("greedy", "sampled")


def bundled_suites() -> list[str]:
    return sorted(path.stem for path in BUNDLED_PROMPTS.glob("*.txt"))


def prompt_file(lab: Path, name: str) -> Path:
    """The file eval.prompts = `name` reads: the lab's prompts/NAME.txt, else the bundled suite of
    that name; a ConfigError naming the file looked for when neither exists."""
    own = Path(lab) / "prompts" / f"{name}.txt"
    if own.is_file():
        return own
    if (BUNDLED_PROMPTS / f"{name}.txt").is_file():
        return BUNDLED_PROMPTS / f"{name}.txt"
    raise ConfigError(f"eval.prompts = {name!r} names no prompt suite: {own} does not exist and no bundled suite "
                      f"has that name; write one prompt per line into that file, or use one of "
                      f"{', '.join(map(repr, bundled_suites()))}.")


def load_prompts(lab: Path, name: str) -> list[str]:
    """The prompts of suite `name`: one per non-blank line, trailing whitespace dropped (a prompt may
    end in a space only through its last word); [] when `name` is "" (no suite)."""
    if not name:
        return []
    path = prompt_file(lab, name)
    prompts = [line.rstrip() for line in read_user_text(path, "prompt file").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"The prompt suite {path} holds no prompt; write one prompt per line.")
    return prompts


def sample_seed(run_seed: int, index: int) -> int:
    """The seed of prompt `index`'s sampled continuation in a run seeded `run_seed`."""
    return (run_seed * 1_000_003 + index) % SEED_LIMIT


def continue_prompts(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, seed: int,
                     step: int) -> list[dict]:
    """Rows {step, prompt, mode, seed, text} for each prompt (greedy, then sampled): `text` is the
    continuation alone. The model is put in eval mode and back in the mode it was in. A prompt the
    tokenizer cannot encode (a character outside a char vocabulary) gets a row with an `error` instead."""
    import torch  # here, so that finding a suite's file (launch checks, plans) imports no torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for index, prompt in enumerate(prompts):
            try:
                ids = tokenizer.encode(prompt)
            except DataError as err:
                rows += [{"step": step, "prompt": prompt, "mode": mode, "seed": None, "text": "", "error": str(err)}
                         for mode in MODES]
                continue
            start = torch.tensor([ids], device=device)
            for mode in MODES:
                drawn = sample_seed(seed, index) if mode == "sampled" else None
                generator = torch.Generator(device=device).manual_seed(drawn) if drawn is not None else None
                out = model.generate(start, new_tokens, 0.0 if drawn is None else 1.0, generator=generator)
                rows.append({"step": step, "prompt": prompt, "mode": mode, "seed": drawn,
                             "text": tokenizer.decode(out[0, len(ids):].tolist())})
    finally:
        model.train(was_training)
    return rows
