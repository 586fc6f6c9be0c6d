"""Train on part of a corpus: `data.max_documents` and `data.max_train_tokens` (the data-size ablation).

The rule is the same for every arm and needs no seed: the first N documents, or the first N tokens, of
the training split in corpus order. So a 1,000-document arm trains on a prefix of the 3,000-document
arm's data, and the arms differ in how much data they see, not in which.

- `max_documents` keeps whole documents; `max_train_tokens` cuts at that token exactly, inside a
  document if need be (a token budget of data is then what it says). With both, the smaller cut wins.
  `meta["subset"]["cut"]` says which: "document" or "token".
- The training array becomes a view on the parent's first tokens (nothing is copied or loaded);
  validation is unchanged, so arms of a data-size study are scored on the same held-out text.
- `train_bytes` (for bits per byte of the training text) is exact at a document end; where a token
  cut falls inside a document, that document's bytes are counted pro rata to its tokens kept
  (`meta["subset"]["train_bytes_exact"]` is then false).
- The fingerprint is the sha256 of the parent's fingerprint and the number of tokens kept: the kept
  tokens are the parent's first K, so this names them exactly without reading them, two limits
  that keep the same tokens share one data identity, and different subsets never do.
- A limit above what the split holds is refused (DataError naming the split's size): an arm of
  10,000 documents on a 2,316-document corpus would otherwise silently equal the full-data arm.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from ablab.config import DataConfig
from ablab.data.tokens import PreparedData
from ablab.errors import DataError


def limit(prepared: PreparedData, cfg: DataConfig) -> PreparedData:
    """`prepared` restricted to the first `cfg.max_documents` documents and/or `cfg.max_train_tokens`
    tokens of its training split; the same object when neither limit is set."""
    if not cfg.max_documents and not cfg.max_train_tokens:
        return prepared
    docs = np.asarray(prepared.train_docs, dtype=np.int64).reshape(-1, 2)
    n_tokens, n_docs = len(prepared.train), len(docs)
    name = _corpus_name(prepared.meta, cfg)
    keep, cut = n_tokens, "document"
    if cfg.max_documents:
        if cfg.max_documents > n_docs:
            raise DataError(f"data.max_documents={cfg.max_documents:,} is more than the {n_docs:,} documents in "
                            f"the training split of {name}; set it to at most {n_docs:,} (or 0 for all of them).")
        keep = int(docs[cfg.max_documents - 1, 0])
    if cfg.max_train_tokens:
        if cfg.max_train_tokens > n_tokens:
            raise DataError(f"data.max_train_tokens={cfg.max_train_tokens:,} is more than the {n_tokens:,} tokens "
                            f"in the training split of {name}; set it to at most {n_tokens:,} (or 0 for all of them).")
        if cfg.max_train_tokens < keep:
            keep, cut = cfg.max_train_tokens, "token"
    kept_docs, exact = _docs_up_to(docs, keep)
    meta = _subset_meta(prepared, cfg, keep, kept_docs, cut, exact, n_docs)
    return dataclasses.replace(prepared, train=prepared.train[:keep], train_docs=kept_docs,
                               fingerprint=meta["fingerprint"], meta=meta)


def subset_fingerprint(parent: str, n_tokens: int) -> str:
    """The data identity of the first `n_tokens` training tokens of the data `parent` names."""
    return hashlib.sha256(f"{parent}:train[:{n_tokens}]".encode()).hexdigest()


def _docs_up_to(docs: np.ndarray, keep: int) -> tuple[np.ndarray, bool]:
    """The document table of the first `keep` tokens: the whole documents that end by then, and the
    one cut by it (ending at `keep`, its bytes pro rata); and whether the byte count is exact."""
    whole = int(np.searchsorted(docs[:, 0], keep, side="right"))
    kept = docs[:whole].copy()
    if whole < len(docs) and (whole == 0 or kept[-1, 0] < keep):
        start_tok, start_byte = (int(kept[-1, 0]), int(kept[-1, 1])) if whole else (0, 0)
        end_tok, end_byte = int(docs[whole, 0]), int(docs[whole, 1])
        share = (keep - start_tok) / max(end_tok - start_tok, 1)
        partial = np.array([[keep, start_byte + round(share * (end_byte - start_byte))]], dtype=np.int64)
        return np.concatenate([kept, partial]), False
    return kept, True


def _subset_meta(prepared: PreparedData, cfg: DataConfig, keep: int, kept_docs: np.ndarray, cut: str,
                 exact: bool, n_docs: int) -> dict[str, Any]:
    meta = dict(prepared.meta)
    full = {"n_train_tokens": len(prepared.train), "n_train_documents": n_docs,
            "train_bytes": meta.get("train_bytes"), "fingerprint": prepared.fingerprint}
    fingerprint = prepared.fingerprint if keep == len(prepared.train) else subset_fingerprint(prepared.fingerprint, keep)
    meta.update(n_train_tokens=keep, n_train_documents=len(kept_docs),
                train_bytes=int(kept_docs[-1, 1]) if len(kept_docs) else 0, fingerprint=fingerprint)
    meta["subset"] = {"max_documents": cfg.max_documents, "max_train_tokens": cfg.max_train_tokens, "cut": cut,
                      "rule": "the first documents or tokens of the training split, in corpus order",
                      "train_bytes_exact": exact, "full": full}
    return meta


def _corpus_name(meta: dict[str, Any], cfg: DataConfig) -> str:
    corpus = meta.get("corpus", cfg.corpus)
    if isinstance(corpus, dict):
        return "the mixture " + ", ".join(f"{name} {weight:g}" for name, weight in corpus.items())
    return f"'{corpus}'"
