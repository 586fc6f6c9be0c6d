"""Fetch corpus and tokenizer files into the cache, checked, written atomically, resumable from the Hub.

Two paths:
- `hub_file`: a file of a Hugging Face Hub repository at a revision, through `huggingface_hub`'s
  downloader (HTTP Range resume of a `.part` file, retries, a progress bar with bytes and ETA). The
  endpoint is `$ABLAB_MIRROR`, else `$HF_ENDPOINT`, else https://huggingface.co. What the Hub states
  for the file (X-Linked-Etag: the LFS sha256; X-Linked-Size) is checked, and the commit obtained
  (X-Repo-Commit) and the sha256 computed are its provenance, kept in a sidecar beside the file.
- `fetch`: a plain-URL file (a pinned GitHub origin, or `$ABLAB_MIRROR/<folder>/<name>`), checked
  against the registry's sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import json
import os
import re
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ablab.data.cache import cache_dir, fsync_dir, write_atomic
from ablab.data.registry import CorpusSpec, RemoteFile
from ablab.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60
HUB_ENDPOINT = "https://huggingface.co"
_LFS_SHA256 = re.compile(r"[0-9a-f]{64}")


def hub_endpoint() -> str:
    """Where Hub files come from: `$ABLAB_MIRROR`, else `$HF_ENDPOINT`, else https://huggingface.co."""
    for variable in ("ABLAB_MIRROR", "HF_ENDPOINT"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value.rstrip("/")
    return HUB_ENDPOINT


def hub_url(endpoint: str, repo_id: str, filename: str, revision: str, repo_type: str = "dataset") -> str:
    """The Hub's URL layout: `{endpoint}/datasets/{repo}/resolve/{revision}/{filename}` (models: no `datasets/`)."""
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{endpoint}/{prefix}{repo_id}/resolve/{revision}/{filename}"


def hub_target(repo_id: str, filename: str, revision: str, repo_type: str = "dataset") -> Path:
    """Where `hub_file` keeps the file: `cache_dir()/hub/<repo_type>s/<repo_id>/<revision>/<filename>`."""
    return cache_dir() / "hub" / f"{repo_type}s" / repo_id / revision / filename


def provenance_path(target: Path) -> Path:
    """The sidecar that records a downloaded file's provenance, so a cached file is never re-hashed."""
    return target.with_name(f".{target.name}.provenance.json")


def cached_hub_file(repo_id: str, filename: str, revision: str, repo_type: str = "dataset") -> tuple[Path, dict] | None:
    """The file and its provenance when a download of it finished before, else None (no network)."""
    target = hub_target(repo_id, filename, revision, repo_type)
    try:
        record = json.loads(provenance_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not target.is_file() or target.stat().st_size != record.get("size"):
        return None
    return target, record


def hub_file(repo_id: str, filename: str, revision: str, repo_type: str = "dataset", sha256: str | None = None,
             size: int | None = None, where: str | None = None) -> tuple[Path, dict]:
    """The file `filename` of the Hub repository `repo_id` at `revision`, downloaded into the cache unless
    it is there, checked, and its provenance: {"name", "repo", "revision" (the commit obtained), "sha256"
    (as computed), "size", "url"}. `sha256` and `size` are what the registry states, when it does;
    `where` is the path under ABLAB_DATA that messages suggest (default: the file's own name)."""
    cached = cached_hub_file(repo_id, filename, revision, repo_type)
    if cached is not None:
        return cached
    target = hub_target(repo_id, filename, revision, repo_type)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One download of a file at a time (runs prepared in parallel workers share the cache).
    with _exclusive(target.with_name(f".{target.name}.lock")):
        cached = cached_hub_file(repo_id, filename, revision, repo_type)  # done while this process waited
        if cached is not None:
            return cached
        hint = (f"check the network, or set ABLAB_DATA to a folder holding {where or filename} "
                "(or ABLAB_MIRROR / HF_ENDPOINT to a server that has it)")
        return _download_hub_file(target, repo_id, filename, revision, repo_type, sha256, size, hint)


def _download_hub_file(target: Path, repo_id: str, filename: str, revision: str, repo_type: str,
                       sha256: str | None, size: int | None, hint: str) -> tuple[Path, dict]:
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    endpoint = hub_endpoint()
    token = None if endpoint == os.environ.get("HF_ENDPOINT", HUB_ENDPOINT).rstrip("/") else False  # no token to a mirror
    url = hub_url(endpoint, repo_id, filename, revision, repo_type)
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    try:  # a name that does not resolve (no network) fails now, not after the downloader's retries
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise DataError(f"Could not download {url} (the host {host} cannot be found: no network?); {hint}.") from None
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, retry_on_errors=True)
    except _network_errors() as err:
        raise DataError(f"Could not download {url} ({_reason(err)}); {hint}.") from None
    commit = meta.commit_hash or revision
    stated_sha = (meta.etag or "").lower() if _LFS_SHA256.fullmatch((meta.etag or "").lower()) else None
    expected_sha = sha256 or stated_sha  # a small non-LFS file's ETag is a git sha1: then only its size is checked
    expected_size = size if size is not None else meta.size
    # Download from the commit the Hub answered with, so that a branch moving on mid-download cannot mix two versions.
    url = hub_url(endpoint, repo_id, filename, commit, repo_type)
    part = target.with_name(f"{target.name}.part")
    with open(part, "ab") as out:  # open() honours the umask, as cache.write_atomic does
        if expected_size is not None and out.tell() > expected_size:  # not a prefix of this file: start again
            out.truncate(0)
            out.seek(0)
        try:
            http_get(url, out, resume_size=out.tell(), headers=build_hf_headers(token=token),
                     expected_size=expected_size, displayed_filename=filename)
        except _network_errors() as err:
            raise DataError(f"The download of {url} stopped ({_reason(err)}); run again to resume it from "
                            f"{out.tell():,} bytes, or {hint}.") from None
        out.flush()
        os.fsync(out.fileno())
    got_size, got_sha = part.stat().st_size, _sha256(part)
    if expected_sha is not None and got_sha != expected_sha or expected_size is not None and got_size != expected_size:
        part.unlink(missing_ok=True)
        what = (f"sha256 check (expected {expected_sha}, got {got_sha})" if expected_sha is not None and
                got_sha != expected_sha else f"size check (expected {expected_size:,} bytes, got {got_size:,})")
        raise DataError(f"The file downloaded from {url} failed its {what} and was deleted; check ABLAB_MIRROR / "
                        "HF_ENDPOINT, or set ABLAB_DATA to a folder holding a verified copy.")
    record = {"name": filename, "repo": repo_id, "revision": commit, "sha256": got_sha, "size": got_size, "url": url}
    os.replace(part, target)
    _write_json(provenance_path(target), record)  # last: a file without its sidecar is downloaded again
    fsync_dir(target.parent)
    return target, record


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock` (a no-op where fcntl is missing, as on Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
    # The temp file lives beside the target so the final rename is atomic (same filesystem); it is
    # created as open() creates one (0666 less the umask), as cache.write_atomic does, not 0600.
    temp = folder / f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
            f"Could not download {url} ({reason}); check the network or set ABLAB_DATA to a folder holding {where} "
            "(or ABLAB_MIRROR to a server that has it)."
        ) from None
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=1).encode("utf-8"))


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (urllib, requests, HfHubHTTPError) and the HTTP client's own errors, whichever it is."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _reason(err: BaseException) -> str:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    text = str(err).strip().splitlines()
    return text[0].rstrip(".") if text else type(err).__name__


def _check(url: str, expected: str, got: str) -> None:
    if got != expected:
        raise DataError(
            f"The file downloaded from {url} failed its sha256 checksum (expected {expected}, got {got}) "
            "and was deleted; check ABLAB_MIRROR or set ABLAB_DATA to a folder holding a verified copy."
        )
