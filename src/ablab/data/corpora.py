"""Turn `data.corpus` (a registered name or a path) into a stream of documents, read strictly as UTF-8.

A name is looked up by `ablab.data.sources.locate` (ABLAB_DATA, the bundled copy, the cache, or a
download) and read by its registry entry: .txt files (one text, one document per file, or documents
between a separator), JSON Lines or parquet rows. Anything else is a path: a text file, a folder
(searched recursively, in sorted order, for .txt, .jsonl, .jsonl.gz, .jsonl.zst and .parquet files; a
.txt file is one document, a row one document), or one such file with one document per row in
`data.text_field`. Names win over paths, so a folder that happens to be called like a corpus is given
as `./gutenberg`.

`open_corpus` gives a `Corpus` that can be read twice, in bounded memory (tokens.py measures, then
tokenizes); `load_corpus` reads a small corpus into memory.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ablab.data import readers
from ablab.data.readers import Document, read_utf8
from ablab.data.registry import CORPORA, CorpusSpec
from ablab.data.sources import locate
from ablab.errors import DataError

__all__ = ["Corpus", "CorpusText", "load_corpus", "open_corpus", "read_utf8", "strip_gutenberg"]

BUNDLED_DIR = Path(__file__).parent / "corpora"
# From gutenberg/SOURCE.md; one file writes "***START" without the space.
_GUTENBERG_MARKER = re.compile(r"^\*\*\* ?(START|END) OF (THE|THIS) PROJECT GUTENBERG[^\n]*$", re.I | re.M)


@dataclass
class Corpus:
    """A corpus that streams: `train()` and `val()` start a fresh pass over its documents each call."""

    corpus: str  # the registered name, or the resolved path
    source: str  # where the text came from: ABLAB_DATA, bundled, cache, download or path
    label: str  # how messages name it
    train: Callable[[], Iterator[Document]] = field(repr=False)
    # With `single`, train() yields the pieces of ONE text (a big file is never whole in memory).
    single: bool = False
    single_bytes: int = 0  # UTF-8 bytes of that one text
    val: Callable[[], Iterator[Document]] | None = field(default=None, repr=False)  # own validation split
    split_note: str = ""  # how the own split was made
    files: list[dict[str, Any]] = field(default_factory=list)  # provenance of each file (registered corpora)
    identity: list[list[Any]] = field(default_factory=list)  # [path, size, mtime_ns] of every file read


@dataclass
class CorpusText:
    corpus: str  # the registered name, or the resolved path
    source: str  # where the text came from: ABLAB_DATA, bundled, cache, download or path
    documents: list[str]  # one text, or one entry per document (files of a folder, rows of a jsonl)
    val_documents: list[str] | None = None  # the corpus's own validation split, if it has one
    split_note: str = ""  # how the own split was made
    names: list[str] | None = None  # each document's name (a file, "line 3"), for saying what the split held out


def open_corpus(corpus: str, text_field: str = "text", shards: int = 0) -> Corpus:
    """The corpus `corpus` names, ready to stream, or DataError with a sentence saying how to fix it.
    `shards` (data.shards) takes a sharded corpus's first shards; 0 takes its default number."""
    spec = CORPORA.get(corpus)
    if spec is not None:
        return _registered(spec.with_shards(shards) if shards else spec)
    path = Path(corpus).expanduser()
    if shards and path.exists():
        raise DataError(f"data.shards applies to a sharded registered corpus, not to the path {path}; "
                        "set data.shards to 0.")
    if path.exists():
        return _path(path.resolve(), text_field)
    names = ", ".join(CORPORA)
    if _looks_like_path(corpus):
        raise DataError(f"Corpus path {path} does not exist; fix data.corpus, or use a corpus name ({names}).")
    match = difflib.get_close_matches(corpus, list(CORPORA), n=1, cutoff=0.5)
    hint = f" Did you mean '{match[0]}'?" if match else ""
    raise DataError(f"Unknown corpus '{corpus}': set data.corpus to one of {names}, or to an existing path.{hint}")


def load_corpus(corpus: str, text_field: str = "text") -> CorpusText:
    """Read the whole corpus into memory (for small corpora, tests and inspection)."""
    opened = open_corpus(corpus, text_field)
    if opened.single:
        names, documents = [Path(opened.corpus).name], ["".join(text for _, text in opened.train())]
    else:
        pairs = list(opened.train())
        names, documents = [name for name, _ in pairs], [text for _, text in pairs]
    val = [text for _, text in opened.val()] if opened.val is not None else None
    text = CorpusText(opened.corpus, opened.source, documents, val, opened.split_note, names)
    return _checked(text, opened.label)


def _identity(paths: list[Path]) -> list[list[Any]]:
    out = []
    for path in paths:
        stat = path.stat()
        out.append([str(path), stat.st_size, stat.st_mtime_ns])
    return out


def _registered(spec: CorpusSpec) -> Corpus:
    located = locate(spec)
    paths, source = located.paths, located.source
    fmt, separator, column = spec.fmt, spec.document_separator, spec.text_column
    label = f"Corpus '{spec.name}' ({source})"

    def documents(files) -> Callable[[], Iterator[Document]]:
        def read() -> Iterator[Document]:
            for file in files:
                path = paths[file.name]
                if fmt in ("jsonl", "parquet"):
                    yield from readers.read_documents(path, column, file.name)
                elif separator:
                    yield from readers.split_documents(readers.text_pieces(path), separator, file.name)
                else:
                    text = read_utf8(path)
                    yield file.name, strip_gutenberg(text) if spec.gutenberg else text
        return read

    def pieces() -> Iterator[Document]:
        for file in spec.train:
            for piece in readers.text_pieces(paths[file.name]):
                yield file.name, piece

    single = fmt == "txt" and not separator and not spec.documents and not spec.gutenberg
    return Corpus(
        spec.name, source, label, pieces if single else documents(spec.train), single=single,
        single_bytes=sum(readers.utf8_size(paths[f.name]) for f in spec.train) if single else 0,
        val=documents(spec.val) if spec.val else None, split_note=spec.split_note,
        files=list(located.files), identity=_identity(list(paths.values())),
    )


def _path(path: Path, text_field: str) -> Corpus:
    if path.is_dir():
        files = readers.folder_files(path)
        return Corpus(str(path), "path", str(path), lambda: readers.read_folder(path, text_field),
                      identity=_identity(files))
    if readers.kind_of(path) in readers.ROW_KINDS:
        return Corpus(str(path), "path", str(path), lambda: readers.read_documents(path, text_field),
                      identity=_identity([path]))
    try:
        size = readers.utf8_size(path)
    except OSError as err:
        raise DataError(
            f"Cannot read corpus file {path} ({err.strerror}); check that it exists and is readable."
        ) from None
    return Corpus(str(path), "path", str(path), lambda: ((path.name, p) for p in readers.text_pieces(path)),
                  single=True, single_bytes=size, identity=_identity([path]))


def _looks_like_path(corpus: str) -> bool:
    return any(sep in corpus for sep in ("/", "\\", os.sep)) or corpus.startswith((".", "~")) or "." in corpus


def _checked(corpus: CorpusText, label: str) -> CorpusText:
    """Drop blank documents and refuse a corpus (or own validation split) with no text at all."""
    names = corpus.names or [f"document {n}" for n in range(1, len(corpus.documents) + 1)]
    kept = [(name, d) for name, d in zip(names, corpus.documents) if d.strip()]
    corpus.names, corpus.documents = [name for name, _ in kept], [d for _, d in kept]
    if not corpus.documents:
        raise DataError(no_text(label))
    if corpus.val_documents is not None:
        corpus.val_documents = [d for d in corpus.val_documents if d.strip()]
        if not corpus.val_documents:
            raise DataError(no_val_text(label))
    return corpus


def no_text(label: str) -> str:
    return f"{label} has no text (it is empty or only whitespace); point data.corpus at a corpus with text."


def no_val_text(label: str) -> str:
    return f"The validation split of {label} is empty or only whitespace; restore its files."


def strip_gutenberg(text: str) -> str:
    """The book between the Project Gutenberg START and END marker lines (all of it if one is missing)."""
    start, end = 0, len(text)
    for marker in _GUTENBERG_MARKER.finditer(text):
        if marker.group(1).upper() == "START" and start == 0:
            start = marker.end()
        elif marker.group(1).upper() == "END" and marker.start() > start:
            end = marker.start()
            break
    return text[start:end].strip()
