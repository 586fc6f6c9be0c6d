"""Prepare a corpus once: tokenize both splits into memory-mapped arrays kept in the cache.

`cache_dir()/tokens/<kind>-<key>/` holds train.bin and val.bin (raw little-endian token ids),
train_docs.npy and val_docs.npy (where each document ends), the tokenizer file and meta.json. The key
hashes what the tokens depend on: the corpus text's sha256, the split rule (with val_fraction where it
applies), the tokenizer kind and, for BPE, the vocab size (and the sample bound, for corpora larger
than it). The folder is written under a temporary name and renamed into place, so a kill mid-prepare
never leaves a folder that looks complete; the next prepare removes a dead process's temporary folder.

The corpus is streamed twice (pipeline.py: measure, then tokenize a few MB at a time), so memory stays
bounded whatever its size. `tokens/index/` maps the identity of the source files (path, size,
mtime) and the config to the folder, so a second run on the same files neither reads nor hashes the
corpus again; and opening a large folder checks sizes, meta and a sampled hash instead of every token.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ablab.config import DataConfig
from ablab.data.cache import cache_dir, fsync_dir, write_atomic
from ablab.data.corpora import Corpus, open_corpus
from ablab.data.pipeline import Progress, Scan, TokenWriter, route, scan, training_text_sample
from ablab.data.split import DOCUMENT_SEPARATOR
from ablab.data.tokenizer import CharTokenizer, Tokenizer, fit_tokenizer, hub_tokenizer, tokenizer_from_file
from ablab.errors import DataError

SCHEMA = 2  # bump when the folder layout or the meaning of a key input changes (2: document tables)
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
TOKENIZER_SAMPLE_BYTES = 100 << 20  # a BPE is fitted on at most the first 100 MiB of the training split
FULL_CHECK_TOKENS = 64 << 20  # below this many tokens, opening re-hashes them all; above, a sample
SAMPLE_WINDOWS, WINDOW_BYTES = 64, 1 << 20  # the sampled hash: 64 windows of 1 MiB spread over each file


@dataclass(frozen=True, eq=False)
class PreparedData:
    train: np.ndarray = field(repr=False)  # read-only memmap of training token ids
    val: np.ndarray = field(repr=False)  # read-only memmap of validation token ids
    tokenizer: Tokenizer
    fingerprint: str  # sha256 of the token arrays: the data identity of a run
    meta: dict[str, Any] = field(repr=False)  # JSON-able description (see prepare_data)
    dir: Path  # the cache folder holding train.bin, val.bin, the tokenizer file and meta.json
    # int64 (n_documents, 2): cumulative [token_end, byte_end] of each document of a split
    train_docs: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    val_docs: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def tokenizer_file(self) -> Path:
        return self.dir / self.meta["tokenizer_file"]


def prepare_corpus(corpus: str, cfg: DataConfig, tokenizer: Tokenizer | None = None) -> PreparedData:
    """The tokens of one corpus (whole: no data.max_*), with its own tokenizer fitted as cfg says, or
    with `tokenizer` (a mixture's shared one)."""
    opened = open_corpus(corpus, cfg.text_field, cfg.shards)
    if tokenizer is None and cfg.tokenizer.startswith("hf:"):
        tokenizer = hub_tokenizer(cfg.tokenizer)  # loaded first: its fingerprint is part of every key
    index = _index_path(opened, cfg, tokenizer)
    entry = _read_index(index)
    if entry is not None:
        found = open_if_valid(cache_dir() / "tokens" / entry["folder"])
        if found is not None:
            return _as_found(found, opened, entry["split"])
    scanned = scan(opened, cfg.val_fraction, want_chars=tokenizer is None and cfg.tokenizer == "char")
    key = tokens_key(scanned.text_sha256, scanned.plan.rule, cfg.tokenizer, cfg.vocab_size,
                     sample_bytes=TOKENIZER_SAMPLE_BYTES if scanned.total_bytes > TOKENIZER_SAMPLE_BYTES else None,
                     tokenizer_fingerprint=tokenizer.fingerprint if tokenizer is not None else None)
    prefix = "hf" if cfg.tokenizer.startswith("hf:") else cfg.tokenizer
    folder = cache_dir() / "tokens" / f"{prefix}-{key}"
    prepared = open_if_valid(folder)
    if prepared is None:
        prepared = _build(folder, opened, scanned, cfg, tokenizer)
    if index is not None:
        record = {"folder": folder.name, "split": scanned.plan.description, "text_sha256": scanned.text_sha256}
        write_atomic(index, json.dumps(record).encode())
    return _as_found(prepared, opened, scanned.plan.description)


def tokens_key(text_sha256: str, split_rule: str, tokenizer: str, vocab_size: int, sample_bytes: int | None = None,
               tokenizer_fingerprint: str | None = None) -> str:
    """The cache key of a corpus's tokens: what they depend on (see the module docstring)."""
    inputs = {
        "schema": SCHEMA, "text_sha256": text_sha256, "split": split_rule, "tokenizer": tokenizer,
        "vocab_size": vocab_size if tokenizer == "bpe" else None,
        "sample_bytes": sample_bytes if tokenizer == "bpe" and tokenizer_fingerprint is None else None,
        "given": tokenizer_fingerprint,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def token_fingerprint(train: np.ndarray, val: np.ndarray) -> str:
    """sha256 over the dtype, both lengths, then the train and val bytes (lengths mark the boundary)."""
    digest = hashlib.sha256(f"{train.dtype.name}:{len(train)}:{len(val)}\n".encode())
    for array in (train, val):
        flat = np.ascontiguousarray(array).reshape(-1)
        step = 1 << 24  # a memmap is hashed 16M tokens at a time, never copied whole
        for start in range(0, len(flat), step):
            digest.update(memoryview(flat[start:start + step]).cast("B"))
    return digest.hexdigest()


def sampled_sha256(folder: Path) -> str:
    """sha256 over SAMPLE_WINDOWS windows of WINDOW_BYTES spread evenly over train.bin and val.bin,
    with their sizes: what opening a large folder checks instead of every token."""
    digest = hashlib.sha256()
    for name in ("train.bin", "val.bin"):
        path = folder / name
        size = path.stat().st_size
        digest.update(f"{name}:{size}\n".encode())
        with path.open("rb") as handle:
            if size <= SAMPLE_WINDOWS * WINDOW_BYTES:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
                continue
            for k in range(SAMPLE_WINDOWS):
                handle.seek((size - WINDOW_BYTES) * k // (SAMPLE_WINDOWS - 1))
                digest.update(handle.read(WINDOW_BYTES))
    return digest.hexdigest()


def store(folder: Path, train: np.ndarray | Iterable[np.ndarray], val: np.ndarray | Iterable[np.ndarray],
          train_docs: np.ndarray, val_docs: np.ndarray, tokenizer: Tokenizer, meta: dict[str, Any]) -> PreparedData:
    """Write token arrays (a mixture's: an array, or the pieces to write one after another) as a
    prepared folder, and open it."""
    dtype = _dtype_name(tokenizer)
    temp = _temp_folder(folder)
    try:
        for name, array in (("train.bin", train), ("val.bin", val)):
            with (temp / name).open("wb") as out:
                for piece in ([array] if isinstance(array, np.ndarray) else array):
                    out.write(np.asarray(piece).astype(DTYPES[dtype], copy=False).tobytes())
                out.flush()
                os.fsync(out.fileno())
        return _finish(temp, folder, tokenizer, dtype, train_docs, val_docs, meta)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def open_if_valid(folder: Path) -> PreparedData | None:
    """The prepared data in `folder`, or None if it is missing, incomplete or does not match its meta.
    Up to FULL_CHECK_TOKENS tokens every token is re-hashed; above, sizes and a sampled hash."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("schema") != SCHEMA:
            return None
        dtype = DTYPES[meta["dtype"]]
        train = _memmap(folder / "train.bin", dtype, meta["n_train_tokens"])
        val = _memmap(folder / "val.bin", dtype, meta["n_val_tokens"])
        docs = [np.load(folder / f"{split}_docs.npy", mmap_mode="r", allow_pickle=False) for split in ("train", "val")]
        tokenizer = tokenizer_from_file(folder / meta["tokenizer_file"])
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None
    for table, tokens in zip(docs, (train, val)):
        if table.ndim != 2 or table.shape[1] != 2 or (len(table) and int(table[-1, 0]) != len(tokens)):
            return None
    if tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
        return None
    if len(train) + len(val) <= FULL_CHECK_TOKENS:
        if token_fingerprint(train, val) != meta["fingerprint"]:
            return None
    elif sampled_sha256(folder) != meta.get("sampled_sha256"):
        return None
    meta["dir"] = str(folder)
    return PreparedData(train, val, tokenizer, meta["fingerprint"], meta, folder, docs[0], docs[1])


def _build(folder: Path, corpus: Corpus, scanned: Scan, cfg: DataConfig, tokenizer: Tokenizer | None) -> PreparedData:
    meta: dict[str, Any] = {"corpus": corpus.corpus, "source": corpus.source, "files": corpus.files,
                            "text_sha256": scanned.text_sha256, "split": scanned.plan.description,
                            "split_rule": scanned.plan.rule}
    if tokenizer is None:
        tokenizer = _fit(corpus, scanned, cfg, meta)
    dtype = _dtype_name(tokenizer)
    temp = _temp_folder(folder)
    progress = Progress(scanned.total_bytes, corpus.label)
    try:
        train = TokenWriter(temp / "train.bin", tokenizer, DTYPES[dtype], progress)
        val = TokenWriter(temp / "val.bin", tokenizer, DTYPES[dtype], progress)
        try:
            route(corpus, scanned.plan, train, val)
            train_docs, val_docs = train.close(), val.close()
        finally:
            progress.close()
        meta.update(train_bytes=train.n_bytes, val_bytes=val.n_bytes)
        return _finish(temp, folder, tokenizer, dtype, train_docs, val_docs, meta)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _fit(corpus: Corpus, scanned: Scan, cfg: DataConfig, meta: dict[str, Any]) -> Tokenizer:
    """The corpus's own tokenizer: char over every character of both splits (and the separator that
    joins documents), byte, or a BPE fitted on at most TOKENIZER_SAMPLE_BYTES of the training split."""
    if cfg.tokenizer == "char":
        return CharTokenizer((scanned.chars or set()) | (set() if corpus.single else set(DOCUMENT_SEPARATOR)))
    if cfg.tokenizer == "bpe":
        text, whole = training_text_sample(corpus, scanned.plan, TOKENIZER_SAMPLE_BYTES)
        size = len(text.encode("utf-8"))
        meta["tokenizer_sample"] = {
            "bytes": size, "whole": whole, "bound": TOKENIZER_SAMPLE_BYTES,
            "rule": "all of the training split" if whole else
            f"the first {size:,} bytes of the training split, cut at a line end (the bound is {TOKENIZER_SAMPLE_BYTES:,})",
        }
        meta["requested_vocab_size"] = cfg.vocab_size
        return fit_tokenizer("bpe", text, cfg.vocab_size)
    return fit_tokenizer(cfg.tokenizer, "", cfg.vocab_size)


def _finish(temp: Path, folder: Path, tokenizer: Tokenizer, dtype: str, train_docs: np.ndarray,
            val_docs: np.ndarray, meta: dict[str, Any]) -> PreparedData:
    """Complete the folder being written in `temp` (token files in place) and rename it to `folder`."""
    n_train = (temp / "train.bin").stat().st_size // DTYPES[dtype].itemsize
    n_val = (temp / "val.bin").stat().st_size // DTYPES[dtype].itemsize
    train, val = _memmap(temp / "train.bin", DTYPES[dtype], n_train), _memmap(temp / "val.bin", DTYPES[dtype], n_val)
    for split, table in (("train", train_docs), ("val", val_docs)):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(table, dtype=np.int64).reshape(-1, 2), allow_pickle=False)
        write_atomic(temp / f"{split}_docs.npy", buffer.getvalue())
    meta = {
        "schema": SCHEMA, **meta, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
        "tokenizer_fingerprint": tokenizer.fingerprint, "tokenizer_file": tokenizer.file_name, "dtype": dtype,
        "n_train_tokens": n_train, "n_val_tokens": n_val,
        "n_train_documents": len(train_docs), "n_val_documents": len(val_docs),
        "fingerprint": token_fingerprint(train, val),
    }
    del train, val  # the memmaps close before the rename
    if meta["n_train_tokens"] + meta["n_val_tokens"] > FULL_CHECK_TOKENS:
        meta["sampled_sha256"] = sampled_sha256(temp)
    if getattr(tokenizer, "origin", ""):
        meta["tokenizer_origin"] = tokenizer.origin
    tokenizer.save(temp)
    write_atomic(temp / "meta.json", json.dumps(meta, indent=2, default=str).encode())  # last: marks it complete
    fsync_dir(temp)
    if folder.exists() and open_if_valid(folder) is None:
        shutil.rmtree(folder)  # damaged by hand or by a disk error; the rename needs the name free
    try:
        os.rename(temp, folder)
    except OSError:
        if open_if_valid(folder) is None:  # not just another process that finished first
            raise
    fsync_dir(folder.parent)
    prepared = open_if_valid(folder)
    if prepared is None:
        raise DataError(f"The prepared data in {folder} could not be read back; check that the cache disk is healthy.")
    return prepared


def _as_found(prepared: PreparedData, corpus: Corpus, split: str) -> PreparedData:
    """The folder is shared by every copy of the same text: say where this call found it, and with
    which documents' names (the split's description names them; renaming moves nothing)."""
    prepared.meta.update(corpus=corpus.corpus, source=corpus.source, files=corpus.files, split=split)
    return prepared


def _dtype_name(tokenizer: Tokenizer) -> str:
    return "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"


def _index_path(corpus: Corpus, cfg: DataConfig, tokenizer: Tokenizer | None) -> Path | None:
    """The index entry that finds this corpus's folder without reading it: keyed by every source
    file's identity (path, size, mtime) and the settings that shape the tokens."""
    if not corpus.identity:
        return None
    settings = {"schema": SCHEMA, "files": corpus.identity, "text_field": cfg.text_field,
                "val_fraction": cfg.val_fraction, "tokenizer": cfg.tokenizer,
                "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None,
                "given": tokenizer.fingerprint if tokenizer is not None else None}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "tokens" / "index" / f"{key}.json"


def _read_index(index: Path | None) -> dict[str, str] | None:
    if index is None:
        return None
    try:
        entry = json.loads(index.read_text(encoding="utf-8"))
        return {"folder": str(entry["folder"]), "split": str(entry["split"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _temp_folder(folder: Path) -> Path:
    """A fresh folder beside `folder` to write it in, named with this host and pid so that a later
    prepare on this host removes it once its process is dead (a kill -9 mid-prepare)."""
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("~", "-")
    for old in parent.glob(".tmp-*~*~*~*"):
        _, pid, _, owner = old.name.rsplit("~", 3)
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    temp = parent / f".tmp-{folder.name}~{os.getpid()}~{secrets.token_hex(4)}~{host}"
    temp.mkdir()
    return temp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _memmap(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
    if path.stat().st_size != length * dtype.itemsize:
        raise ValueError(f"{path} has the wrong size")
    if length == 0:
        return np.zeros(0, dtype=dtype)  # mmap cannot map an empty file
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))
