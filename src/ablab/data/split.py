"""The train/validation split: deterministic, and a function of the corpus text and val_fraction only.

- A corpus with its own validation split (tinystories, wikitext-2) uses it; val_fraction is ignored.
- A single text (tiny-shakespeare, one .txt file, or a folder or jsonl that holds one document) keeps
  its first characters for training and holds out the last `val_fraction` of them, nanoGPT's convention.
- A few documents (under FEW_DOCUMENTS: a folder of three books) are each cut the same way: the last
  `val_fraction` of every document is validation. Holding out whole documents there would miss
  val_fraction by a whole document's share (one book of three was 40% of the text).
- Many documents (gutenberg's 22 books, the rows of a jsonl) are never cut: a document goes to
  validation when the first 8 bytes of the sha256 of its text, read as a fraction of 2**64, fall below
  `val_fraction`. The rule looks at nothing but a document's own text, so renaming, reordering or
  adding documents never moves another document between the splits, and duplicated documents always
  land on the same side. When no document falls below the threshold, the one with the smallest hash
  goes to validation; when every one does, the one with the largest hash stays in training, so both
  splits are non-empty. The validation share is therefore about `val_fraction` of the documents, not
  exactly of the characters; the split's description says which documents and what share it took.
Documents inside one split are joined with a blank line, in corpus order.

`plan_split` decides all of this from each document's length and hash alone, so that a corpus too big
for memory is split by streaming it twice (once to measure, once to route); `split_corpus` applies
the same plan to documents held in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ablab.data.corpora import CorpusText
from ablab.errors import DataError

DOCUMENT_SEPARATOR = "\n\n"
FEW_DOCUMENTS = 20  # below this many documents, each one's tail is validation; from it on, whole documents
NAMES_SHOWN = 5  # held-out documents named in a split's description


@dataclass
class Split:
    train: str
    val: str
    rule: str  # what the split depends on besides the text, e.g. "tail:0.1"; part of the cache key
    description: str  # a sentence for the prepared data's meta


@dataclass
class SplitPlan:
    rule: str
    description: str
    # Per (non-blank) document of the corpus, in order: how many of its characters go to training (the
    # rest to validation). None for a corpus with its own validation split: all of it trains.
    cuts: np.ndarray | None = field(default=None, repr=False)


def plan_split(chars: np.ndarray, scores: np.ndarray, names: dict[int, str], val_fraction: float, label: str,
               own_split_note: str | None = None) -> SplitPlan:
    """The split of documents with these lengths (characters) and scores (document_score); `names`
    holds the names of at least the first few documents scoring below val_fraction and of those with
    the smallest and largest score (see held_name_candidates)."""
    if own_split_note is not None:
        return SplitPlan("own", own_split_note or "own validation split")
    chars = np.asarray(chars, dtype=np.int64)
    if len(chars) == 1:
        if chars[0] < 2:
            raise DataError(f"Corpus {label} holds a single character; give it enough text for training and validation.")
        cut = _cut(int(chars[0]), val_fraction)
        return SplitPlan(
            f"tail:{val_fraction!r}",
            f"validation: the last {val_fraction * 100:g}% of the text ({int(chars[0]) - cut:,} of {int(chars[0]):,} "
            f"characters; val_fraction={val_fraction!r})",
            np.array([cut], dtype=np.int64),
        )
    if len(chars) < FEW_DOCUMENTS:
        if not (chars >= 2).any():
            raise DataError(f"Corpus {label} holds only single-character documents; give it enough text for "
                            "training and validation.")
        cuts = np.array([_cut(int(n), val_fraction) if n >= 2 else int(n) for n in chars], dtype=np.int64)
        return SplitPlan(
            f"tails:{val_fraction!r}",
            f"validation: the last {val_fraction * 100:g}% of each of {int((chars >= 2).sum())} documents "
            f"({int((chars - cuts).sum()):,} of {int(chars.sum()):,} characters; val_fraction={val_fraction!r})",
            cuts,
        )
    scores = np.asarray(scores, dtype=np.float64)
    in_val = scores < val_fraction
    if not in_val.any():
        in_val[int(np.argmin(scores))] = True
    if in_val.all():
        in_val[int(np.argmax(scores))] = False
    held = np.flatnonzero(in_val)
    held_names = [names.get(int(i), f"document {int(i) + 1}") for i in held[:NAMES_SHOWN]]
    shown = ", ".join(held_names) + (f" and {len(held) - NAMES_SHOWN} more" if len(held) > NAMES_SHOWN else "")
    share = int(chars[in_val].sum()) / int(chars.sum())
    return SplitPlan(
        f"documents:{val_fraction!r}",
        f"validation: {len(held)} of {len(chars)} whole documents chosen by content hash"
        f"{f' ({shown})' if shown else ''}, {share:.1%} of the characters (val_fraction={val_fraction!r})",
        np.where(in_val, 0, chars),
    )


class HeldNames:
    """The document names plan_split may show, kept while streaming a corpus of any size: the first
    NAMES_SHOWN + 1 scoring below val_fraction, and those with the smallest and the largest score."""

    def __init__(self, val_fraction: float):
        self.val_fraction = val_fraction
        self.below: dict[int, str] = {}
        self.low: tuple[float, int, str] = (2.0, -1, "")
        self.high: tuple[float, int, str] = (-1.0, -1, "")

    def add(self, index: int, score: float, name: str) -> None:
        if score < self.val_fraction and len(self.below) <= NAMES_SHOWN:
            self.below[index] = name
        if score < self.low[0]:
            self.low = (score, index, name)
        if score > self.high[0]:
            self.high = (score, index, name)

    def names(self) -> dict[int, str]:
        return {**self.below, self.low[1]: self.low[2], self.high[1]: self.high[2]}


def split_corpus(corpus: CorpusText, val_fraction: float) -> Split:
    """The split of a corpus held in memory (plan_split applied to its documents)."""
    own = None if corpus.val_documents is None else corpus.split_note
    names = dict(enumerate(corpus.names or []))
    plan = plan_split(np.array([len(d) for d in corpus.documents]),
                      np.array([document_score(d) for d in corpus.documents]), names, val_fraction, corpus.corpus, own)
    if plan.cuts is None:
        return Split(DOCUMENT_SEPARATOR.join(corpus.documents), DOCUMENT_SEPARATOR.join(corpus.val_documents or []),
                     plan.rule, plan.description)
    cuts = plan.cuts.tolist()
    return Split(
        DOCUMENT_SEPARATOR.join(d[:c] for d, c in zip(corpus.documents, cuts) if c > 0),
        DOCUMENT_SEPARATOR.join(d[c:] for d, c in zip(corpus.documents, cuts) if c < len(d)),
        plan.rule, plan.description,
    )


def corpus_sha256(corpus: CorpusText) -> str:
    """The identity of the corpus text: a single text's plain sha256 (that of a BOM-free UTF-8 file),
    else a sha256 over every document with its length, so that moving text between documents counts."""
    parts = [("doc", d) for d in corpus.documents] + [("val", d) for d in corpus.val_documents or []]
    if len(parts) == 1:
        return hashlib.sha256(parts[0][1].encode("utf-8")).hexdigest()
    digest = hashlib.sha256()
    for tag, text in parts:
        data = text.encode("utf-8")
        digest.update(f"{tag}:{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def _cut(n_chars: int, val_fraction: float) -> int:
    """Where a text's tail of `val_fraction` of its characters begins; both parts keep a character."""
    return min(max(int(n_chars * (1 - val_fraction)), 1), n_chars - 1)


def document_score(text: str) -> float:
    """Where a document falls in [0, 1): its validation ticket, from its text alone."""
    return score_of_digest(hashlib.sha256(text.encode("utf-8")).digest())


def score_of_digest(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2**64
