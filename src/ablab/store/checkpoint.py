"""Checkpoints: weights in safetensors plus optimizer, RNG and loop state, written atomically.

A checkpoint is a folder `step-<N>/` holding model.safetensors, state.pt and manifest.json (the
sha256 of each file, written last). It is assembled in a hidden temp folder, fsynced, then renamed
into place, so a kill leaves either the whole checkpoint or none. Loading verifies the manifest;
a truncated or corrupt checkpoint is skipped in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from ablab.errors import CheckpointError

FILES = ("model.safetensors", "state.pt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class LoopState:
    """Everything besides weights and optimizer that a resumed run needs to continue bitwise."""
    step: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    best_val_loss: float = float("inf")
    best_val_step: int = -1
    recent_losses: list[float] = field(default_factory=list)  # for the loss-spike median
    window: dict = field(default_factory=lambda: new_window())  # train metrics since the last log row


def new_window() -> dict:
    return {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}


def save(ckpt_dir: Path, model: torch.nn.Module, optimizer: Any, loop: LoopState, keep: int) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step-{loop.step:08d}"
    tmp = ckpt_dir / f".tmp-step-{loop.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng, "loop": loop.__dict__}, tmp / "state.pt")
    manifest = {"step": loop.step, "sha256": {name: _sha256(tmp / name) for name in FILES}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for name in (*FILES, "manifest.json"):
        _fsync(tmp / name)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(ckpt_dir)
    for old in checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())


def verify(path: Path) -> str | None:
    """None if the checkpoint is intact, else a short reason it is not."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return "manifest missing or unreadable"
    for name in FILES:
        if not (path / name).exists():
            return f"{name} missing"
        if _sha256(path / name) != manifest.get("sha256", {}).get(name):
            return f"{name} does not match its checksum (truncated or corrupt)"
    return None


def latest_valid(ckpt_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint, and the newer ones skipped with their reasons."""
    skipped = []
    for path in reversed(checkpoints(ckpt_dir)):
        reason = verify(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def load(path: Path, model: torch.nn.Module, optimizer: Any | None = None) -> LoopState:
    """Restore weights (and optimizer and RNG state when an optimizer is given) from `path`."""
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise several types for a damaged file
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({type(err).__name__}); delete it to fall back to an earlier one."
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint {path} does not fit this model (missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]}); resume it with the config it was written with."
        )
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return LoopState(**state["loop"])
