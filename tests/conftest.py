import os
import subprocess
import sys
from pathlib import Path

import pytest

ABLAB = [sys.executable, "-m", "ablab"]


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """One token cache for the whole session, never the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("ablab-cache")
    old = os.environ.get("ABLAB_CACHE")
    os.environ["ABLAB_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("ABLAB_CACHE", None)
    else:
        os.environ["ABLAB_CACHE"] = old


@pytest.fixture
def shared_data() -> Path:
    """The shared real datasets (ABLAB_DATA); tests that need them skip, with the reason, without."""
    root = os.environ.get("ABLAB_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip(f"ABLAB_DATA ({root or 'unset'}) is not a folder; make test points it at ../shared/data")
    return Path(root)


@pytest.fixture
def one_thread():
    """train.threads=1 sets this process's torch threads; give the rest of the session its own back."""
    import torch  # here: conftest itself imports no torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `ablab` command line in a child process."""
    return subprocess.run([*ABLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


# A model small enough that a test trains it in seconds on 2 CPU cores.
TINY = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128",
        "data.seq_len=64", "data.batch_size=16", "eval.tokens=4096", "train.log_every=5"]
