"""Where downloads, trained tokenizers and token arrays are kept, and how files get there safely."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def cache_dir() -> Path:
    """`$ABLAB_CACHE` if set, else `~/.cache/ablab`. Nothing is created until something is written."""
    configured = os.environ.get("ABLAB_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ablab"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file, or all of the new one. The
    file is created as open() creates one (0666 less the umask), so the group reads it where the umask
    lets it (tempfile.mkstemp would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened, as on Windows)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
