"""Streaming document readers: a file (or folder) becomes an iterator of (name, text) documents.

Nothing here holds more than one document (or one record batch of a parquet file) in memory, so a
corpus of any size is read in bounded memory. Every reader decodes strictly as UTF-8 and names the
file and the line, row or byte offset of bad input.

- .txt: the whole file is one document (or, with a separator, each part between separators is one);
  `text_pieces` streams one big text in blocks instead.
- .jsonl, .jsonl.gz, .jsonl.zst: one document per non-blank line, the string in field `text_field`.
- .parquet: one document per row, the string in column `text_field`, read one record batch at a time.
- a folder: every file of those kinds inside it, recursively, in sorted order.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
from pathlib import Path
from typing import IO, Iterator

from ablab.errors import DataError

BLOCK = 4 << 20  # bytes read at a time from a text file
PARQUET_BATCH = 1024  # rows per parquet record batch
ROW_KINDS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
KINDS = (".txt",) + ROW_KINDS

Document = tuple[str, str]  # (name, text)


def kind_of(path: Path) -> str | None:
    """The reader a file needs (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"), or None."""
    name = path.name.lower()
    return next((kind for kind in sorted(KINDS, key=len, reverse=True) if name.endswith(kind)), None)


def folder_files(folder: Path) -> list[Path]:
    """The readable corpus files inside `folder`, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and kind_of(p) is not None)


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
        raise _not_utf8(path, data[err.start], err.start) from None
    return text.removeprefix("\ufeff")


def _not_utf8(path: Path, byte: int, offset: int) -> DataError:
    return DataError(
        f"{path} is not UTF-8 text (byte 0x{byte:02x} at byte offset {offset}); "
        "convert it to UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
    )


def text_pieces(path: Path, block: int = BLOCK) -> Iterator[str]:
    """The file's text in pieces of about `block` bytes (no byte-order mark), decoded strictly."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, first = 0, True
    try:
        handle = path.open("rb")
    except OSError as err:
        raise DataError(
            f"Cannot read corpus file {path} ({err.strerror}); check that it exists and is readable."
        ) from None
    with handle:
        while True:
            data = handle.read(block)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                raise _not_utf8(path, err.object[err.start], offset - pending + err.start) from None
            offset += len(data)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                yield text
            if not data:
                return


def utf8_size(path: Path) -> int:
    """The UTF-8 bytes of the file's text: its size less a byte-order mark."""
    with path.open("rb") as handle:
        bom = handle.read(3) == codecs.BOM_UTF8
    return path.stat().st_size - (3 if bom else 0)


def split_documents(pieces: Iterator[str], separator: str, label: str) -> Iterator[Document]:
    """The parts of a streamed text between `separator`s, stripped of surrounding whitespace."""
    buffer, number = "", 0
    for piece in pieces:
        buffer += piece
        *parts, buffer = buffer.split(separator)
        for part in parts:
            number += 1
            yield f"{label} document {number}", part.strip()
    number += 1
    yield f"{label} document {number}", buffer.strip()


def read_documents(path: Path, text_field: str = "text", label: str | None = None) -> Iterator[Document]:
    """The documents of one file, by its kind (a .txt file is one document)."""
    kind = kind_of(path)
    name = label or path.name
    if kind in (".jsonl", ".jsonl.gz", ".jsonl.zst"):
        yield from read_jsonl(path, text_field, name)
    elif kind == ".parquet":
        yield from read_parquet(path, text_field, name)
    else:
        yield name, read_utf8(path)


def read_folder(folder: Path, text_field: str = "text") -> Iterator[Document]:
    files = folder_files(folder)
    if not files:
        raise DataError(
            f"Folder {folder} has no .txt, .jsonl(.gz/.zst) or .parquet files; put the corpus in such files "
            "there or point data.corpus at a file."
        )
    for file in files:
        yield from read_documents(file, text_field, file.relative_to(folder).as_posix())


def _open_lines(path: Path) -> IO[str]:
    """A text stream over the (decompressed) file that splits lines on "\\n" only: str.splitlines would
    also split at U+2028, which JSON strings may hold raw."""
    kind = kind_of(path)
    raw: IO[bytes]
    if kind == ".jsonl.gz":
        raw = gzip.open(path, "rb")
    elif kind == ".jsonl.zst":
        import zstandard  # only corpora in .zst need it

        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)
    else:
        raw = path.open("rb")
    return io.TextIOWrapper(io.BufferedReader(raw) if kind == ".jsonl.zst" else raw, encoding="utf-8",
                            errors="strict", newline="\n")


def read_jsonl(path: Path, text_field: str, label: str | None = None) -> Iterator[Document]:
    """("<label> line N", the `text_field` of line N) for each non-blank line of a JSON Lines file."""
    name = label or path.name
    number = 0
    try:
        with _open_lines(path) as lines:
            for number, line in enumerate(lines, start=1):
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if line.strip():
                    yield f"{name} line {number}", _field(path, number, line, text_field)
    except UnicodeDecodeError:
        raise DataError(
            f"{path} line {number + 1} is not UTF-8 text; convert the file to UTF-8, e.g. with `iconv -t utf-8`."
        ) from None
    except (OSError, EOFError) as err:
        raise DataError(
            f"Cannot read corpus file {path} after line {number} ({err}); check that it is complete and readable."
        ) from None


def _field(path: Path, number: int, line: str, text_field: str) -> str:
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
    return row[text_field]


def read_parquet(path: Path, column: str, label: str | None = None) -> Iterator[Document]:
    """("<label> row N", the string in `column`) for each row, one record batch in memory at a time.
    A null value is an empty document (dropped like a blank one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = label or path.name
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path} is not a readable parquet file ({err}); check that it is complete.") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise DataError(
            f"{path} has no column '{column}' (it has: {', '.join(map(repr, schema.names))}); "
            "set data.text_field to the column that holds the text."
        )
    if not (pa.types.is_string(schema.field(column).type) or pa.types.is_large_string(schema.field(column).type)):
        raise DataError(
            f"{path}: column '{column}' holds {schema.field(column).type}, not strings; "
            "set data.text_field to the column that holds the text."
        )
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=[column]):
            for text in batch.column(0).to_pylist():
                row += 1
                yield f"{name} row {row}", text or ""
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"Cannot read {path} after row {row} ({err}); check that the file is complete.") from None
