"""Fetch one registered corpus file over HTTP into the cache, verified by sha256, written atomically."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from ablab.data.registry import CorpusSpec, RemoteFile
from ablab.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60


def source_url(spec: CorpusSpec, file: RemoteFile) -> str | None:
    """`$ABLAB_MIRROR/<folder>/<name>` when a mirror is set, else the pinned origin (None if it has none)."""
    mirror = os.environ.get("ABLAB_MIRROR", "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.folder}/{file.name}"
    return file.url


def fetch(spec: CorpusSpec, file: RemoteFile, folder: Path) -> Path:
    """Download `file` into `folder`; the file appears under its name only once its checksum matches."""
    where = f"{spec.folder}/{file.name}"
    url = source_url(spec, file)
    if url is None:
        raise DataError(
            f"Corpus '{spec.name}' has no public download for {file.name}; set ABLAB_DATA to a folder "
            f"holding {where} (or ABLAB_MIRROR to a server that has it)."
        )
    from_origin = url == file.url
    folder.mkdir(parents=True, exist_ok=True)
    # The temp file lives beside the target so the final rename is atomic (same filesystem).
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{file.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            got = _stream(url, out, where)
        expected = file.url_sha256 if from_origin and file.url_sha256 else file.sha256
        _check(url, expected, got)
        if from_origin and file.url_encoding:
            text = temp.read_bytes().decode(file.url_encoding)
            temp.write_bytes(text.encode("utf-8"))
            _check(url, file.sha256, hashlib.sha256(temp.read_bytes()).hexdigest())
        with open(temp, "rb") as done:
            os.fsync(done.fileno())
        target = folder / file.name
        os.replace(temp, target)
        return target
    finally:
        temp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, where: str) -> str:
    """Copy the response at `url` into `out`; its sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", None) or err
        raise DataError(
            f"Could not download {url} ({reason}); check the network or set ABLAB_DATA to a folder holding {where}."
        ) from None
    return digest.hexdigest()


def _check(url: str, expected: str, got: str) -> None:
    if got != expected:
        raise DataError(
            f"The file downloaded from {url} failed its sha256 checksum (expected {expected}, got {got}) "
            "and was deleted; check ABLAB_MIRROR or set ABLAB_DATA to a folder holding a verified copy."
        )
