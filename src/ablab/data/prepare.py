"""What a run's data is: `prepare_data(cfg.data)` for a name, a path or a weighted mixture, limited by
data.max_documents and data.max_train_tokens; `data_size` for its size without any download.

tokens.py prepares one corpus (streamed into a cached folder), mixture.py mixes prepared corpora,
subset.py takes the first documents or tokens of a prepared training split.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablab.config import DataConfig
from ablab.data import subset
from ablab.data.mixture import prepare_mixture
from ablab.data.registry import CORPORA
from ablab.data.sources import where_local
from ablab.data.tokens import PreparedData, prepare_corpus

__all__ = ["DataSize", "PreparedData", "data_size", "prepare_data"]


@dataclass(frozen=True)
class DataSize:
    """How much a data config trains on, after data.max_documents and data.max_train_tokens."""
    n_train_tokens: int
    n_train_documents: int
    n_val_tokens: int


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Tokenize `cfg.corpus` (a name, a path or a weighted mixture), or reuse the cached tokens, and
    memory-map both splits, limited by data.max_documents and data.max_train_tokens.

    `meta` holds: corpus, source and files (where this call found the text, with each registered
    file's revision and sha256), text_sha256, split (a sentence) and split_rule, tokenizer, vocab_size
    (the real size; BPE may stop short of the requested one), tokenizer_fingerprint, tokenizer_file,
    tokenizer_sample (what a BPE was fitted on), dtype, n_train_tokens, n_val_tokens,
    n_train_documents, n_val_documents, train_bytes and val_bytes (UTF-8 bytes of each split's text, for
    bits per byte), fingerprint, sampled_sha256 (large data), dir and schema; `subset` for a limit.
    """
    if isinstance(cfg.corpus, dict):
        prepared = prepare_mixture(cfg)
    else:
        prepared = prepare_corpus(cfg.corpus, cfg)
    return subset.limit(prepared, cfg)


def data_size(cfg: DataConfig) -> DataSize | None:
    """The size of the data `cfg` trains on, or None when a registered corpus it names is not on this
    machine (nothing is downloaded); a local corpus is prepared (once: later calls find the cache)."""
    for name in (list(cfg.corpus) if isinstance(cfg.corpus, dict) else [cfg.corpus]):
        spec = CORPORA.get(name)
        if spec is not None:
            if cfg.shards and spec.shards:
                spec = spec.with_shards(cfg.shards)
            if where_local(spec) is None:
                return None
    prepared = prepare_data(cfg)
    return DataSize(len(prepared.train), len(prepared.train_docs), len(prepared.val))
