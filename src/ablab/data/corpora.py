"""Turn `data.corpus` (a registered name or a path) into text, read strictly as UTF-8.

A name is looked up in this order, taking the first place that holds all of the corpus's files:
1. `$ABLAB_DATA/<folder>/` (a local copy of the shared data folder, as CI and tests use);
2. the copy bundled in the package (tiny-shakespeare only);
3. the cache, `cache_dir()/corpora/<name>/`;
4. a download into that cache, each file verified by its sha256 (`$ABLAB_MIRROR/<folder>/<file>` when
   ABLAB_MIRROR is set, else the origin pinned in the registry).
Anything else is a path: a text file, a folder of .txt files (searched recursively, in sorted order,
each file one document), or a .jsonl file with one document per line in `data.text_field`. Names win
over paths, so a folder that happens to be called like a corpus is given as `./gutenberg`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ablab.data.cache import cache_dir
from ablab.data.download import fetch
from ablab.data.registry import CORPORA, CorpusSpec, RemoteFile
from ablab.errors import DataError

BUNDLED_DIR = Path(__file__).parent / "corpora"
# From gutenberg/SOURCE.md; one file writes "***START" without the space.
_GUTENBERG_MARKER = re.compile(r"^\*\*\* ?(START|END) OF (THE|THIS) PROJECT GUTENBERG[^\n]*$", re.I | re.M)


@dataclass
class CorpusText:
    corpus: str  # the registered name, or the resolved path
    source: str  # where the text came from: ABLAB_DATA, bundled, cache, download or path
    documents: list[str]  # one text, or one entry per document (files of a folder, rows of a jsonl)
    val_documents: list[str] | None = None  # the corpus's own validation split, if it has one
    split_note: str = ""  # how the own split was made
    names: list[str] | None = None  # each document's name (a file, "line 3"), for saying what the split held out


def load_corpus(corpus: str, text_field: str = "text") -> CorpusText:
    """Read the corpus `corpus` names, or raise DataError with a sentence saying how to fix it."""
    spec = CORPORA.get(corpus)
    if spec is not None:
        paths, source = locate(spec)
        return _read_registered(spec, paths, source)
    path = Path(corpus).expanduser()
    if path.exists():
        return _read_path(path.resolve(), text_field)
    names = ", ".join(CORPORA)
    if _looks_like_path(corpus):
        raise DataError(f"Corpus path {path} does not exist; fix data.corpus, or use a corpus name ({names}).")
    match = difflib.get_close_matches(corpus, list(CORPORA), n=1, cutoff=0.5)
    hint = f" Did you mean '{match[0]}'?" if match else ""
    raise DataError(f"Unknown corpus '{corpus}': set data.corpus to one of {names}, or to an existing path.{hint}")


def locate(spec: CorpusSpec) -> tuple[dict[str, Path], str]:
    """The local path of each of the corpus's files, and where they were found (downloading if needed)."""
    data_root = os.environ.get("ABLAB_DATA", "").strip()
    if data_root:
        found = _all_present(Path(data_root).expanduser() / spec.folder, spec.files)
        if found:
            return found, "ABLAB_DATA"
    if spec.bundled:
        return {spec.files[0].name: BUNDLED_DIR / spec.bundled}, "bundled"
    cached = cache_dir() / "corpora" / spec.name
    found = _all_present(cached, spec.files)
    if found:
        return found, "cache"
    for file in spec.files:
        if not (cached / file.name).is_file():
            fetch(spec, file, cached)
    return {file.name: cached / file.name for file in spec.files}, "download"


def _all_present(folder: Path, files: tuple[RemoteFile, ...]) -> dict[str, Path] | None:
    paths = {file.name: folder / file.name for file in files}
    return paths if all(p.is_file() for p in paths.values()) else None


def _looks_like_path(corpus: str) -> bool:
    return any(sep in corpus for sep in ("/", "\\", os.sep)) or corpus.startswith((".", "~")) or "." in corpus


def _read_registered(spec: CorpusSpec, paths: dict[str, Path], source: str) -> CorpusText:
    def read(file: RemoteFile) -> str:
        text = read_utf8(paths[file.name])
        return strip_gutenberg(text) if spec.gutenberg else text

    train = [read(file) for file in spec.train]
    val = [read(file) for file in spec.val] or None
    names = [file.name for file in spec.train]
    if not spec.documents:
        train, names = ["".join(train)], [spec.name]
    corpus = CorpusText(spec.name, source, train, val, spec.split_note, names)
    return _checked(corpus, f"Corpus '{spec.name}' ({source})")


def _read_path(path: Path, text_field: str) -> CorpusText:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(
                f"Folder {path} has no .txt files; put the corpus in .txt files there or point data.corpus at a file."
            )
        corpus = CorpusText(str(path), "path", [read_utf8(f) for f in files],
                            names=[f.relative_to(path).as_posix() for f in files])
    elif path.suffix.lower() == ".jsonl":
        rows = read_jsonl(path, text_field)
        corpus = CorpusText(str(path), "path", list(rows.values()), names=[f"line {n}" for n in rows])
    else:
        corpus = CorpusText(str(path), "path", [read_utf8(path)], names=[path.name])
    return _checked(corpus, str(path))


def _checked(corpus: CorpusText, label: str) -> CorpusText:
    """Drop blank documents and refuse a corpus (or own validation split) with no text at all."""
    names = corpus.names or [f"document {n}" for n in range(1, len(corpus.documents) + 1)]
    kept = [(name, d) for name, d in zip(names, corpus.documents) if d.strip()]
    corpus.names, corpus.documents = [name for name, _ in kept], [d for _, d in kept]
    if not corpus.documents:
        raise DataError(
            f"{label} has no text (it is empty or only whitespace); point data.corpus at a corpus with text."
        )
    if corpus.val_documents is not None:
        corpus.val_documents = [d for d in corpus.val_documents if d.strip()]
        if not corpus.val_documents:
            raise DataError(f"The validation split of {label} is empty or only whitespace; restore its files.")
    return corpus


def read_utf8(path: Path) -> str:
    """The file's text, without a leading byte-order mark; DataError naming the first bad byte otherwise."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(
            f"Cannot read corpus file {path} ({err.strerror}); check that it exists and is readable."
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at byte offset {err.start}); "
            "convert it to UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
        ) from None
    return text.removeprefix("\ufeff")


def read_jsonl(path: Path, text_field: str) -> dict[int, str]:
    """Line number -> the `text_field` of that line, for each non-blank line of a JSON Lines file, in file order."""
    documents = {}
    # Split on "\n" only: str.splitlines would also split at U+2028, which JSON strings may hold raw.
    for number, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number} is not valid JSON ({err.msg}); fix or delete that line.") from None
        if not isinstance(row, dict) or text_field not in row:
            fields = ", ".join(map(repr, row)) if isinstance(row, dict) else "not an object"
            raise DataError(
                f"{path} line {number} has no '{text_field}' field (it has: {fields}); "
                "set data.text_field to the field that holds the text."
            )
        if not isinstance(row[text_field], str):
            raise DataError(
                f"{path} line {number}: field '{text_field}' is a {type(row[text_field]).__name__}, not a string; "
                "set data.text_field to the field that holds the text."
            )
        documents[number] = row[text_field]
    return documents


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
