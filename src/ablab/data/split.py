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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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


def split_corpus(corpus: CorpusText, val_fraction: float) -> Split:
    if corpus.val_documents is not None:
        return Split(
            DOCUMENT_SEPARATOR.join(corpus.documents),
            DOCUMENT_SEPARATOR.join(corpus.val_documents),
            "own",
            corpus.split_note or "own validation split",
        )
    if len(corpus.documents) == 1:
        return _split_tail(corpus.documents[0], val_fraction, corpus.corpus)
    if len(corpus.documents) < FEW_DOCUMENTS:
        return _split_tails(corpus.documents, val_fraction, corpus.corpus)
    return _split_documents(corpus.documents, corpus.names or [], val_fraction)


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


def _split_tail(text: str, val_fraction: float, label: str) -> Split:
    if len(text) < 2:
        raise DataError(f"Corpus {label} holds a single character; give it enough text for training and validation.")
    cut = _cut(text, val_fraction)
    return Split(
        text[:cut],
        text[cut:],
        f"tail:{val_fraction!r}",
        f"validation: the last {val_fraction * 100:g}% of the text ({len(text) - cut:,} of {len(text):,} characters; "
        f"val_fraction={val_fraction!r})",
    )


def _cut(text: str, val_fraction: float) -> int:
    """Where a text's tail of `val_fraction` of its characters begins; both parts keep a character."""
    return min(max(int(len(text) * (1 - val_fraction)), 1), len(text) - 1)


def _split_tails(documents: list[str], val_fraction: float, label: str) -> Split:
    cut_able = [d for d in documents if len(d) >= 2]
    if not cut_able:
        raise DataError(f"Corpus {label} holds only single-character documents; give it enough text for "
                        "training and validation.")
    cuts = [_cut(d, val_fraction) if len(d) >= 2 else len(d) for d in documents]
    val_chars, total = sum(len(d) - c for d, c in zip(documents, cuts)), sum(map(len, documents))
    return Split(
        DOCUMENT_SEPARATOR.join(d[:c] for d, c in zip(documents, cuts)),
        DOCUMENT_SEPARATOR.join(d[c:] for d, c in zip(documents, cuts) if c < len(d)),
        f"tails:{val_fraction!r}",
        f"validation: the last {val_fraction * 100:g}% of each of {len(cut_able)} documents "
        f"({val_chars:,} of {total:,} characters; val_fraction={val_fraction!r})",
    )


def document_score(text: str) -> float:
    """Where a document falls in [0, 1): its validation ticket, from its text alone."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def _split_documents(documents: list[str], names: list[str], val_fraction: float) -> Split:
    scores = [document_score(d) for d in documents]
    in_val = [s < val_fraction for s in scores]
    if not any(in_val):
        in_val[scores.index(min(scores))] = True
    if all(in_val):
        in_val[scores.index(max(scores))] = False
    val = [d for d, held in zip(documents, in_val) if held]
    train = [d for d, held in zip(documents, in_val) if not held]
    held_names = [name for name, held in zip(names, in_val) if held]
    shown = ", ".join(held_names[:NAMES_SHOWN]) + (f" and {len(held_names) - NAMES_SHOWN} more"
                                                   if len(held_names) > NAMES_SHOWN else "")
    share = sum(map(len, val)) / sum(map(len, documents))
    return Split(
        DOCUMENT_SEPARATOR.join(train),
        DOCUMENT_SEPARATOR.join(val),
        f"documents:{val_fraction!r}",
        f"validation: {len(val)} of {len(documents)} whole documents chosen by content hash"
        f"{f' ({shown})' if shown else ''}, {share:.1%} of the characters (val_fraction={val_fraction!r})",
    )
