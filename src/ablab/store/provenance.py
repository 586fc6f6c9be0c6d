"""Where a run came from: code (git), command line, software versions, machine.

Everything is captured without failing: what cannot be known (not a git checkout, no GPU, no git
binary) is recorded as such. The code version that enters a run's content key is the commit of the
checkout holding ablab's source plus a hash of its uncommitted diff, or, for an installed ablab, the
package version plus a hash of its source files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import ablab

ABLAB_SOURCE = Path(ablab.__file__).resolve().parent
KEY_PACKAGES = ("torch", "numpy", "tokenizers", "safetensors", "typer", "rich")


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(folder: Path) -> tuple[dict, str]:
    """({available, root, commit, branch, dirty, diff_sha256}, diff text) of the checkout holding `folder`."""
    root = _git(folder, "rev-parse", "--show-toplevel")
    if root is None:
        return {"available": False, "reason": f"{folder} is not in a git checkout (or git is missing)"}, ""
    root = root.strip()
    commit = (_git(folder, "rev-parse", "HEAD") or "").strip() or None
    branch = (_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    status = _git(folder, "status", "--porcelain", "--untracked-files=no") or ""
    diff = (_git(folder, "diff", "HEAD", "--binary") if commit else _git(folder, "diff", "--binary")) or ""
    info = {"available": True, "root": root, "commit": commit, "branch": branch, "dirty": bool(status.strip()),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}
    return info, diff


def uncommitted_files(folder: Path) -> tuple[Path, list[str]] | None:
    """(the root of the git checkout holding `folder`, its tracked files with uncommitted changes,
    relative to that root); None when `folder` is not in a git checkout (or git is missing)."""
    root = _git(folder, "rev-parse", "--show-toplevel")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no") if root is not None else None
    if status is None:
        return None
    return Path(root.strip()), [line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line.strip()]


def commits_between(root: str, old: str, new: str) -> list[str] | None:
    """'<short hash> <subject>' of each commit reachable from `new` and not from `old` in the checkout
    at `root`, newest first; None when either commit is not in that checkout (or git is missing)."""
    for commit in (old, new):
        if _git(Path(root), "cat-file", "-e", f"{commit}^{{commit}}") is None:
            return None
    log = _git(Path(root), "log", "--format=%h %s", f"{old}..{new}")
    return None if log is None else [line for line in log.splitlines() if line.strip()]


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(ABLAB_SOURCE.rglob("*.py")):
        digest.update(path.relative_to(ABLAB_SOURCE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(ablab_git: dict) -> str:
    if ablab_git.get("available") and ablab_git.get("commit"):
        diff = ablab_git.get("diff_sha256")
        return f"git:{ablab_git['commit'][:12]}" + (f"+{diff[:12]}" if diff else "")
    return f"ablab-{ablab.__version__}+src:{_source_hash()[:12]}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpus() -> dict:
    # Read from the torch that the training process has already loaded: the store never imports
    # torch itself, so that reports and analysis stay free of it (tests/test_layers.py).
    torch = sys.modules.get("torch")
    if torch is None:
        return {"count": 0, "models": [], "note": "torch not loaded in this process"}
    if not torch.cuda.is_available():
        return {"count": 0, "models": [], "note": "no CUDA device visible"}
    count = torch.cuda.device_count()
    return {"count": count, "models": [torch.cuda.get_device_name(i) for i in range(count)],
            "cuda": torch.version.cuda}


def installed_packages() -> list[str]:
    """`pip freeze`-style lines of every installed distribution, sorted."""
    lines = {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions() if d.metadata["Name"]}
    return sorted(lines, key=str.lower)


def versions() -> dict:
    found = {"python": platform.python_version(), "ablab": ablab.__version__}
    for name in KEY_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def host_info() -> dict:
    """The machine this process trains on."""
    return {"name": socket.gethostname(), "os": platform.platform(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "gpu": gpus()}


def collect(lab: Path, argv: list[str] | None = None, world_size: int = 1) -> tuple[dict, dict[str, str]]:
    """(provenance, files to save beside the run: name -> text). `world_size` is how many processes
    train the run together (train.nproc), kept here because it does not enter the config hash."""
    lab_git, lab_diff = git_state(lab)
    ablab_git, ablab_diff = git_state(ABLAB_SOURCE)
    same_checkout = lab_git.get("root") is not None and lab_git.get("root") == ablab_git.get("root")
    provenance = {
        "git": lab_git,
        "ablab_git": "same as git" if same_checkout else ablab_git,
        "code_version": code_version(ablab_git),
        "command": argv if argv is not None else sys.argv,
        "world_size": world_size,
        "cwd": os.getcwd(),
        "versions": versions(),
        "host": host_info(),
    }
    files = {"pip-freeze.txt": "\n".join(installed_packages()) + "\n"}
    if lab_diff:
        files["code.diff"] = lab_diff
    if ablab_diff and not same_checkout:
        files["ablab.diff"] = ablab_diff
    return provenance, files
