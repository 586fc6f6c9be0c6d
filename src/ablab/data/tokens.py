"""Prepare a corpus once: tokenize both splits into memory-mapped arrays kept in the cache.

`cache_dir()/tokens/<kind>-<key>/` holds train.bin and val.bin (raw little-endian token ids), the
tokenizer file and meta.json. The key hashes what the tokens depend on: the corpus text's sha256, the
split rule (with val_fraction where it applies), the tokenizer kind and, for BPE, the vocab size. The
folder is written under a temporary name and renamed into place, so a kill mid-prepare never leaves a
folder that looks complete, and a second prepare with the same inputs only reads and checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ablab.config import DataConfig
from ablab.data.cache import cache_dir, fsync_dir, write_atomic
from ablab.data.corpora import load_corpus
from ablab.data.split import Split, corpus_sha256, split_corpus
from ablab.data.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_file
from ablab.errors import DataError

SCHEMA = 1  # bump when the folder layout or the meaning of a key input changes
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


@dataclass(frozen=True, eq=False)
class PreparedData:
    train: np.ndarray = field(repr=False)  # read-only memmap of training token ids
    val: np.ndarray = field(repr=False)  # read-only memmap of validation token ids
    tokenizer: Tokenizer
    fingerprint: str  # sha256 of the token arrays: the data identity of a run
    meta: dict[str, Any] = field(repr=False)  # JSON-able description (see prepare_data)
    dir: Path  # the cache folder holding train.bin, val.bin, the tokenizer file and meta.json

    @property
    def tokenizer_file(self) -> Path:
        return self.dir / self.meta["tokenizer_file"]


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Tokenize `cfg.corpus` (or reuse the cached tokens) and memory-map both splits.

    `meta` holds: corpus and source (as found by this call), text_sha256, split (a sentence) and
    split_rule, tokenizer, vocab_size (the real size; BPE may stop short of the requested one),
    tokenizer_fingerprint, tokenizer_file, dtype, n_train_tokens, n_val_tokens, train_bytes and
    val_bytes (UTF-8 bytes of each split's text, for bits per byte), fingerprint, dir and schema.
    """
    corpus = load_corpus(cfg.corpus, cfg.text_field)
    split = split_corpus(corpus, cfg.val_fraction)
    text_sha = corpus_sha256(corpus)
    key = tokens_key(text_sha, split.rule, cfg.tokenizer, cfg.vocab_size)
    folder = cache_dir() / "tokens" / f"{cfg.tokenizer}-{key}"
    prepared = _open_if_valid(folder)
    if prepared is None:
        _build(folder, split, cfg, {"corpus": corpus.corpus, "source": corpus.source, "text_sha256": text_sha})
        prepared = _open_if_valid(folder)
        if prepared is None:
            raise DataError(
                f"The prepared data in {folder} could not be read back; check that the cache disk is healthy."
            )
    # The folder is shared by every copy of the same text; report where this call found it, and with
    # which documents' names (the split's description names them; renaming moves nothing).
    prepared.meta.update(corpus=corpus.corpus, source=corpus.source, split=split.description)
    return prepared


def tokens_key(text_sha256: str, split_rule: str, tokenizer: str, vocab_size: int) -> str:
    inputs = {
        "schema": SCHEMA, "text_sha256": text_sha256, "split": split_rule, "tokenizer": tokenizer,
        "vocab_size": vocab_size if tokenizer == "bpe" else None,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def token_fingerprint(train: np.ndarray, val: np.ndarray) -> str:
    """sha256 over the dtype, both lengths, then the train and val bytes (lengths mark the boundary)."""
    digest = hashlib.sha256(f"{train.dtype.name}:{len(train)}:{len(val)}\n".encode())
    digest.update(memoryview(np.ascontiguousarray(train)).cast("B"))
    digest.update(memoryview(np.ascontiguousarray(val)).cast("B"))
    return digest.hexdigest()


def _build(folder: Path, split: Split, cfg: DataConfig, about: dict[str, Any]) -> None:
    tokenizer = build_tokenizer(cfg.tokenizer, split.train, split.val, cfg.vocab_size)
    dtype_name = "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"
    train = tokenizer.encode_array(split.train).astype(DTYPES[dtype_name])
    val = tokenizer.encode_array(split.val).astype(DTYPES[dtype_name])
    meta = {
        "schema": SCHEMA, **about, "split": split.description, "split_rule": split.rule,
        "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
        "tokenizer_fingerprint": tokenizer.fingerprint, "tokenizer_file": tokenizer.file_name,
        "dtype": dtype_name, "n_train_tokens": len(train), "n_val_tokens": len(val),
        "train_bytes": len(split.train.encode("utf-8")), "val_bytes": len(split.val.encode("utf-8")),
        "fingerprint": token_fingerprint(train, val),
    }
    if cfg.tokenizer == "bpe":
        meta["requested_vocab_size"] = cfg.vocab_size
    temp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{secrets.token_hex(4)}"
    temp.mkdir(parents=True)
    try:
        write_atomic(temp / "train.bin", train.tobytes())
        write_atomic(temp / "val.bin", val.tobytes())
        tokenizer.save(temp)
        write_atomic(temp / "meta.json", json.dumps(meta, indent=2).encode())  # last: marks the folder complete
        fsync_dir(temp)
        if folder.exists() and _open_if_valid(folder) is None:
            shutil.rmtree(folder)  # damaged by hand or by a disk error; the rename needs the name free
        try:
            os.rename(temp, folder)
        except OSError:
            if _open_if_valid(folder) is None:  # not just another process that finished first
                raise
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _open_if_valid(folder: Path) -> PreparedData | None:
    """The prepared data in `folder`, or None if it is missing, incomplete or does not match its meta."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("schema") != SCHEMA:
            return None
        dtype = DTYPES[meta["dtype"]]
        train = _memmap(folder / "train.bin", dtype, meta["n_train_tokens"])
        val = _memmap(folder / "val.bin", dtype, meta["n_val_tokens"])
        tokenizer = tokenizer_from_file(folder / meta["tokenizer_file"])
    except (OSError, ValueError, KeyError, DataError):
        return None
    if tokenizer.fingerprint != meta["tokenizer_fingerprint"] or token_fingerprint(train, val) != meta["fingerprint"]:
        return None
    meta["dir"] = str(folder)
    return PreparedData(train, val, tokenizer, meta["fingerprint"], meta, folder)


def _memmap(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
    if path.stat().st_size != length * dtype.itemsize:
        raise ValueError(f"{path} has the wrong size")
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))
