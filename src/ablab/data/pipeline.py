"""Stream a corpus twice, in bounded memory: `scan` measures it (identity, split plan, characters), then
`route` sends each document's text, as the plan says, into a training and a validation sink.

A sink is a `TokenWriter` (tokens straight into a .bin file, a few MB of text at a time) or a
`TextSample` (the first bytes of the training text, which a BPE is fitted on). Documents inside one
split are joined with split.DOCUMENT_SEPARATOR, exactly as split_corpus joins them, so the tokens are
those of encoding each split's whole text at once.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from ablab.data.corpora import Corpus, no_text, no_val_text, open_corpus
from ablab.data.split import DOCUMENT_SEPARATOR, HeldNames, SplitPlan, plan_split, score_of_digest
from ablab.data.tokenizer import Tokenizer
from ablab.errors import DataError

CHUNK_CHARS = 4 << 20  # text encoded at a time: big enough for encode_batch to keep every core busy


@dataclass
class Scan:
    text_sha256: str  # split.corpus_sha256 of the corpus, computed while streaming
    plan: SplitPlan
    total_bytes: int  # UTF-8 bytes of all its text, both splits
    total_chars: int  # characters of all its text, both splits
    chars: set[str] | None  # every character of the corpus (when asked for: the char tokenizer)


def scan(corpus: Corpus, val_fraction: float, want_chars: bool = False) -> Scan:
    """One pass over the corpus: its identity, its split plan and (optionally) its characters."""
    chars: set[str] | None = set() if want_chars else None
    combined = hashlib.sha256()
    lengths, scores = array("q"), array("d")
    names = HeldNames(val_fraction)
    total, n_all, first_sha = 0, 0, ""
    if corpus.single:
        plain, n_chars, blank = hashlib.sha256(), 0, True
        combined.update(f"doc:{corpus.single_bytes}\n".encode())
        for _, piece in corpus.train():
            data = piece.encode("utf-8")
            plain.update(data)
            combined.update(data)
            n_chars, total, n_all = n_chars + len(piece), total + len(data), n_all + len(piece)
            blank = blank and not piece.strip()
            if chars is not None:
                chars.update(piece)
        if blank:
            raise_no_text(corpus)
        lengths.append(n_chars)
        first_sha = plain.hexdigest()
    else:
        for name, text in corpus.train():
            if not text.strip():
                continue
            data = text.encode("utf-8")
            digest = hashlib.sha256(data)
            if not lengths:
                first_sha = digest.hexdigest()
            score = score_of_digest(digest.digest())
            names.add(len(lengths), score, name)
            lengths.append(len(text))
            scores.append(score)
            combined.update(f"doc:{len(data)}\n".encode())
            combined.update(data)
            total, n_all = total + len(data), n_all + len(text)
            if chars is not None:
                chars.update(text)
        if not lengths:
            raise_no_text(corpus)
    n_val = 0
    for _, text in corpus.val() if corpus.val is not None else ():
        if text.strip():
            data = text.encode("utf-8")
            combined.update(f"val:{len(data)}\n".encode())
            combined.update(data)
            total, n_val, n_all = total + len(data), n_val + 1, n_all + len(text)
            if chars is not None:
                chars.update(text)
    if corpus.val is not None and not n_val:
        raise DataError(no_val_text(corpus.label))
    sha = first_sha if len(lengths) + n_val == 1 else combined.hexdigest()
    own = corpus.split_note if corpus.val is not None else None
    plan = plan_split(np.frombuffer(lengths, dtype=np.int64), np.frombuffer(scores, dtype=np.float64),
                      names.names(), val_fraction, corpus.corpus, own)
    return Scan(sha, plan, total, n_all, chars)


def raise_no_text(corpus: Corpus) -> None:
    raise DataError(no_text(corpus.label))


class Sink(Protocol):
    def begin_document(self) -> None: ...
    def write(self, text: str) -> None: ...


class SampleFull(Exception):
    """The training sample holds its bound: the pass stops early."""


class TextSample:
    """The first `max_bytes` of the training text (cut back to a line end when it overflows)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.size, self.parts, self.n_docs, self.full = max_bytes, 0, [], 0, False

    def begin_document(self) -> None:
        if self.n_docs:
            self.write(DOCUMENT_SEPARATOR)
        self.n_docs += 1

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if self.size + len(data) <= self.max_bytes:
            self.parts.append(text)
            self.size += len(data)
            return
        head = data[: self.max_bytes - self.size].decode("utf-8", errors="ignore")
        self.parts.append(head[: head.rfind("\n") + 1] if "\n" in head else head)
        self.full = True
        raise SampleFull

    def text(self) -> str:
        return "".join(self.parts)


class NullSink:
    def begin_document(self) -> None:
        pass

    def write(self, text: str) -> None:
        pass


class TokenWriter:
    """Tokens of one split into `path`, CHUNK_CHARS of text at a time, cut only where the tokenizer's
    ids do not depend on the cut (Tokenizer.safe_cut); records where each document ends."""

    def __init__(self, path: Path, tokenizer: Tokenizer, dtype: np.dtype, progress: Progress | None = None):
        self.file: BinaryIO = path.open("wb")
        self.tokenizer, self.dtype, self.progress = tokenizer, dtype, progress
        self.buffer: list[str] = []
        self.buffered = 0  # characters in buffer
        self.marks: list[tuple[int, int]] = []  # (character position in buffer, byte_end) of document starts
        self.rows = array("q")  # token_end, byte_end of each finished document, flat (16 bytes a document)
        self.n_tokens = self.n_bytes = self.n_docs = 0

    def begin_document(self) -> None:
        if self.n_docs:
            self.write(DOCUMENT_SEPARATOR)
            self.marks.append((self.buffered, self.n_bytes))  # the previous document ends here
        self.n_docs += 1

    def write(self, text: str) -> None:
        if not text:
            return
        self.buffer.append(text)
        self.buffered += len(text)
        self.n_bytes += len(text.encode("utf-8"))
        if self.buffered >= CHUNK_CHARS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        text = "".join(self.buffer)
        cut = len(text) if final else self.tokenizer.safe_cut(text)
        if cut <= 0:
            self.buffer, self.buffered = [text], len(text)  # no safe cut yet: keep reading
            return
        done = [m for m in self.marks if m[0] <= cut]
        ids, counts = self.tokenizer.encode_counting(text[:cut], [m[0] for m in done])
        for count, (_, byte_end) in zip(counts, done):
            self.rows.extend((self.n_tokens + count, byte_end))
        self.marks = [(p - cut, b) for p, b in self.marks if p > cut]
        self.file.write(np.asarray(ids).astype(self.dtype, copy=False).tobytes())
        self.n_tokens += len(ids)
        rest = text[cut:]
        self.buffer, self.buffered = ([rest] if rest else []), len(rest)
        if self.progress is not None:
            self.progress.advance(len(text[:cut].encode("utf-8")), len(done) + (1 if final and self.n_docs else 0))

    def close(self) -> np.ndarray:
        """Flush, close the file and return the document table: int64 (n_docs, 2) of cumulative
        [token_end, byte_end], a document's row ending where the next document begins."""
        self._flush(final=True)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.n_docs:
            self.rows.extend((self.n_tokens, self.n_bytes))
        return np.frombuffer(self.rows, dtype=np.int64).reshape(-1, 2).copy()


def route(corpus: Corpus, plan: SplitPlan, train: Sink, val: Sink | None) -> None:
    """Stream the corpus once more, writing each document's training part into `train` and its
    validation part into `val` (None: stop after the training stream, as a sample needs)."""
    val = val if val is not None else NullSink()
    try:
        if corpus.single:
            cut = int(plan.cuts[0]) if plan.cuts is not None else None
            seen, in_val = 0, False
            train.begin_document()
            for _, piece in corpus.train():
                if cut is None or seen + len(piece) <= cut:
                    train.write(piece)
                else:
                    head = max(cut - seen, 0)
                    train.write(piece[:head])
                    if not in_val:
                        val.begin_document()
                        in_val = True
                    val.write(piece[head:])
                seen += len(piece)
        else:
            cuts = plan.cuts
            index = 0
            for _, text in corpus.train():
                if not text.strip():
                    continue
                keep = len(text) if cuts is None else int(cuts[index])
                index += 1
                if keep > 0:
                    train.begin_document()
                    train.write(text[:keep])
                if keep < len(text):
                    val.begin_document()
                    val.write(text[keep:])
        if corpus.val is not None and not isinstance(val, NullSink):
            for _, text in corpus.val():
                if text.strip():
                    val.begin_document()
                    val.write(text)
    except SampleFull:
        pass


def training_text_sample(corpus: Corpus, plan: SplitPlan, max_bytes: int) -> tuple[str, bool]:
    """The first `max_bytes` of the training split's text, and whether that is all of it."""
    sample = TextSample(max_bytes)
    route(corpus, plan, sample, None)
    return sample.text(), not sample.full


def training_sample(corpus: str, cfg: Any, max_bytes: int) -> str:
    """The bounded text a BPE (or a char vocabulary) for `corpus` is fitted on: the first `max_bytes`
    of its training split (all of it when shorter), as tokens.prepare_corpus fits one (for a mixture's shared tokenizer)."""
    opened = open_corpus(corpus, cfg.text_field, getattr(cfg, "shards", 0))
    return training_text_sample(opened, scan(opened, cfg.val_fraction).plan, max_bytes)[0]


PrepareProgress = Callable[[str, int, int, int], None]  # (label, bytes done, bytes in all, documents done)
# Who watches tokenizing: set by a command for its duration (cli.progress.watching_preparation), so that
# a corpus prepared deep inside a run or a study reports without every caller passing a callback down.
watcher: ContextVar[PrepareProgress | None] = ContextVar("ablab_prepare_progress", default=None)


@contextmanager
def watching(callback: PrepareProgress | None) -> Iterator[None]:
    """Report tokenizing to `callback` while the block runs."""
    token = watcher.set(callback)
    try:
        yield
    finally:
        watcher.reset(token)


class Progress:
    """Tokenizing of `total_bytes` of text, reported to the watcher set now (none: silent) as bytes
    done and documents done, after each chunk of CHUNK_CHARS characters."""

    def __init__(self, total_bytes: int, label: str):
        self.report, self.total, self.label = watcher.get(), total_bytes, label
        self.done = self.documents = 0
        if self.report is not None:  # at once: the watcher's clock starts with the work
            self.report(label, 0, total_bytes, 0)

    def advance(self, n_bytes: int, documents: int) -> None:
        if self.report is not None:
            self.done, self.documents = self.done + n_bytes, self.documents + documents
            self.report(self.label, min(self.done, self.total), self.total, self.documents)

    def close(self) -> None:
        if self.report is not None and self.done < self.total:  # the last line says all of it
            self.report(self.label, self.total, self.total, self.documents)
