"""A weighted mixture of corpora, `data.corpus = {tinystories = 0.7, gutenberg = 0.3}`, prepared once.

1. One tokenizer for all components, so their ids mean the same: a BPE is fitted on samples of each
   component's training text, the sample bound split by weight; a char vocabulary covers every
   character of every component (both splits); byte and hf: tokenizers need no text.
2. Each component is prepared with it (tokens.prepare_corpus, its own cache folder and fingerprint).
3. The training array is the largest one that respects the weights without repeating a token of any
   component: N = min over components of (its tokens / its weight); each component gives its first
   whole documents up to weight x N tokens (the scarcest one gives all of them). They are laid out
   in blocks of BLOCK_TOKENS: each block holds about weight x BLOCK_TOKENS tokens of every component,
   as whole consecutive documents (to within one document; a document longer than its share of a
   block fills the share of the blocks after it), in a seeded order inside the block. The seed comes
   from the mixture's canonical form, so the same mixture always gives the same array.
4. Validation is built the same way from each component's OWN validation split (weights respected),
   never from the training text of another.

Stored with tokens.store in cache_dir()/tokens/mix-<key>/, keyed by the mixture, the tokenizer and the
components' fingerprints; meta["components"] says what each component gave. A small index
(tokens/index/mix-*.json, keyed by the data config and the identity of the source files) finds the
folder again without reading any corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterator, Sequence

import numpy as np

from ablab.config import DataConfig
from ablab.data import tokens
from ablab.data.cache import cache_dir, write_atomic
from ablab.data.pipeline import training_sample
from ablab.data.registry import CORPORA
from ablab.data.split import DOCUMENT_SEPARATOR
from ablab.data.tokenizer import Tokenizer, fit_tokenizer
from ablab.errors import DataError

SCHEMA = 1  # bump when the layout rule (blocks, order, quotas) changes
BLOCK_TOKENS = 1 << 16  # tokens per interleaving block: the scale at which the weights hold


@dataclasses.dataclass(frozen=True)
class Segment:
    """Documents [first, stop) of component `component`, laid out next."""
    component: int
    first: int
    stop: int


def prepare_mixture(cfg: DataConfig) -> tokens.PreparedData:
    """The mixture `cfg.corpus` names ({corpus: weight}), prepared (or found in the cache)."""
    mixture = dict(cfg.corpus)
    names, weights = list(mixture), normalised(list(mixture.values()))
    configs = [dataclasses.replace(cfg, corpus=name, max_documents=0, max_train_tokens=0,
                                   shards=cfg.shards if _sharded(name) else 0) for name in names]
    index = _index_path(cfg, configs)
    if index is not None:
        found = _from_index(index)
        if found is not None:
            return found
    tokenizer = shared_tokenizer(cfg, configs, weights)
    parts = [tokens.prepare_corpus(name, part, tokenizer) for name, part in zip(names, configs)]
    key = _key(mixture, tokenizer, parts)
    folder = cache_dir() / "tokens" / f"mix-{key}"
    prepared = tokens.open_if_valid(folder)
    if prepared is None:
        prepared = _build(folder, mixture, weights, tokenizer, parts)
    if index is not None:
        write_atomic(index, json.dumps({"folder": folder.name}).encode())
    return prepared


def _sharded(name: str) -> bool:
    """Whether data.shards applies to this component (a sharded registered corpus)."""
    spec = CORPORA.get(name)
    return spec is not None and bool(spec.shards)


def normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    return [w / total for w in weights]


def mixture_seed(mixture: dict[str, float]) -> int:
    """The layout seed of a mixture: from its canonical form (sorted names, float weights)."""
    canonical = json.dumps(dict(sorted(mixture.items())), sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(canonical.encode()).hexdigest()[:16], 16)


def shared_tokenizer(cfg: DataConfig, configs: list[DataConfig], weights: list[float]) -> Tokenizer:
    """One tokenizer for every component (see the module docstring, step 1)."""
    if cfg.tokenizer == "char":
        from ablab.data.corpora import open_corpus
        from ablab.data.pipeline import scan

        chars: set[str] = set()
        for part in configs:
            opened = open_corpus(part.corpus, part.text_field, part.shards)
            chars |= scan(opened, part.val_fraction, want_chars=True).chars or set()
        return fit_tokenizer("char", "".join(sorted(chars | set(DOCUMENT_SEPARATOR))), cfg.vocab_size)
    if cfg.tokenizer == "bpe":
        budget = tokens.TOKENIZER_SAMPLE_BYTES
        samples = [training_sample(part.corpus, part, max(int(budget * w), 1)) for part, w in zip(configs, weights)]
        return fit_tokenizer("bpe", "\n\n".join(samples), cfg.vocab_size)
    return fit_tokenizer(cfg.tokenizer, "", cfg.vocab_size)


def interleave(ends: Sequence[np.ndarray], weights: Sequence[float], seed: int | Sequence[int],
               block_tokens: int = BLOCK_TOKENS, names: Sequence[str] = ()) -> list[Segment]:
    """The layout of a mixture: segments of whole documents, given each component's cumulative
    document token ends and normalised `weights` (see the module docstring, step 3)."""
    totals = [int(e[-1]) if len(e) else 0 for e in ends]
    size = min(total / w for total, w in zip(totals, weights))
    quotas = [w * size * (1 + 1e-12) for w in weights]
    last = [int(np.searchsorted(e, q, side="right")) for e, q in zip(ends, quotas)]
    for i, count in enumerate(last):
        if count == 0:
            label = names[i] if names else f"component {i}"
            raise DataError(f"Mixture component '{label}' gets no whole document at weight {weights[i]:.3g} (its "
                            f"share is {quotas[i]:,.0f} tokens); raise its weight or add data to the scarcer corpora.")
    rng = np.random.default_rng(seed)
    taken = [0] * len(ends)
    segments: list[Segment] = []
    block = 0
    while taken != last:
        block += 1
        stops = [min(int(np.searchsorted(e, min(w * block_tokens * block, q), side="right")), k)
                 for e, w, q, k in zip(ends, weights, quotas, last)]
        for i in rng.permutation(len(ends)):
            if stops[i] > taken[i]:
                segments.append(Segment(int(i), taken[i], stops[i]))
                taken[i] = stops[i]
    return segments


def materialise(arrays: Sequence[np.ndarray], docs: Sequence[np.ndarray],
                segments: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """The token array and its document table ([token_end, byte_end] per document) of a layout."""
    parts, table = pieces(arrays, docs, segments)
    chunks = list(parts)
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=arrays[0].dtype if arrays else np.uint16)), table


def pieces(arrays: Sequence[np.ndarray], docs: Sequence[np.ndarray],
           segments: list[Segment]) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """A layout as the slices of the components' (memory-mapped) arrays to write one after another,
    so a mixture is written to disk without holding its tokens in memory, and its document table."""
    tables = [np.asarray(d, dtype=np.int64).reshape(-1, 2) for d in docs]
    spans, rows, at, at_byte = [], [], 0, 0
    for segment in segments:
        table = tables[segment.component]
        start_tok, start_byte = _start(table, segment.first)
        size = _span(table, segment.first, segment.stop)[0]
        spans.append((segment.component, start_tok, size))
        part = table[segment.first:segment.stop] - np.array([start_tok, start_byte]) + np.array([at, at_byte])
        rows.append(part)
        at, at_byte = int(part[-1, 0]), int(part[-1, 1])
    table = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)
    return (arrays[c][start:start + size] for c, start, size in spans), table


def _start(table: np.ndarray, first: int) -> tuple[int, int]:
    return (int(table[first - 1, 0]), int(table[first - 1, 1])) if first else (0, 0)


def _span(table: np.ndarray, first: int, stop: int) -> tuple[int, int]:
    start_tok, start_byte = _start(table, first)
    return int(table[stop - 1, 0]) - start_tok, int(table[stop - 1, 1]) - start_byte


def _build(folder, mixture: dict[str, float], weights: list[float], tokenizer: Tokenizer,
           parts: list[tokens.PreparedData]) -> tokens.PreparedData:
    names, seed = list(mixture), mixture_seed(mixture)
    layouts = {}
    for split, stream in (("train", 0), ("val", 1)):
        docs = [getattr(p, f"{split}_docs") for p in parts]
        segments = interleave([np.asarray(d)[:, 0] for d in docs], weights, [seed, stream], names=names)
        layouts[split] = (segments, *pieces([getattr(p, split) for p in parts], docs, segments))
    components = []
    for i, (name, part) in enumerate(zip(names, parts)):
        used = {}
        for split in ("train", "val"):
            mine = [s for s in layouts[split][0] if s.component == i]
            table = np.asarray(getattr(part, f"{split}_docs"), dtype=np.int64).reshape(-1, 2)
            used[f"n_{split}_tokens"] = sum(_span(table, s.first, s.stop)[0] for s in mine)
            used[f"n_{split}_documents"] = sum(s.stop - s.first for s in mine)
        components.append({"corpus": name, "weight": mixture[name], "fingerprint": part.fingerprint, **used,
                           "n_train_tokens_available": len(part.train)})
    (_, train, train_docs), (_, val, val_docs) = layouts["train"], layouts["val"]
    meta: dict[str, Any] = {
        "corpus": mixture, "source": "mixture", "components": components,
        "split": "each component's own validation split, mixed by the same weights",
        "mixture": {"schema": SCHEMA, "block_tokens": BLOCK_TOKENS, "seed": seed, "rule": (
            "the largest mixture that keeps the weights without repeating tokens; whole documents, in "
            "seeded blocks")},
        "train_bytes": int(train_docs[-1, 1]), "val_bytes": int(val_docs[-1, 1]),
        "n_train_documents": len(train_docs), "n_val_documents": len(val_docs),
    }
    return tokens.store(folder, train, val, train_docs, val_docs, tokenizer, meta)


def _key(mixture: dict[str, float], tokenizer: Tokenizer, parts: list[tokens.PreparedData]) -> str:
    inputs = {"schema": SCHEMA, "block": BLOCK_TOKENS, "mixture": sorted(mixture.items()),
              "tokenizer": tokenizer.fingerprint, "components": [p.fingerprint for p in parts]}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _index_path(cfg: DataConfig, configs: list[DataConfig]):
    """Where the index entry of this mixture lives: keyed by the data settings that shape the tokens
    and by every source file's identity (path, size, mtime). None when a component's files are not
    known without reading it (then the mixture is rebuilt from its components' caches)."""
    from ablab.data.corpora import open_corpus

    if cfg.tokenizer.startswith("hf:"):  # a tokenizer file can change in place: always check its fingerprint
        return None
    identities = []
    for part in configs:
        identity = open_corpus(part.corpus, part.text_field, part.shards).identity
        if not identity:
            return None
        identities.append(identity)
    settings = {"schema": SCHEMA, "block": BLOCK_TOKENS, "corpus": sorted(dict(cfg.corpus).items()),
                "tokenizer": cfg.tokenizer, "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None,
                "text_field": cfg.text_field, "val_fraction": cfg.val_fraction, "shards": cfg.shards,
                "files": identities}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "tokens" / "index" / f"mix-{key}.json"


def _from_index(index) -> tokens.PreparedData | None:
    try:
        name = json.loads(index.read_text(encoding="utf-8"))["folder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tokens.open_if_valid(cache_dir() / "tokens" / str(name))
