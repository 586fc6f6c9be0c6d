"""Tokenizers: char (the corpus's characters), byte (raw UTF-8) and byte-level BPE (HF `tokenizers`).

Each serialises to one small file inside the prepared data folder; its fingerprint is the sha256 of
that file's text, so a run records exactly which tokenizer produced its tokens and a later process
(sampling from a run) rebuilds it with `load_tokenizer(prepared_dir)`.
"""

from __future__ import annotations

import abc
import bisect
import functools
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ablab.data.cache import cache_dir, write_atomic
from ablab.errors import DataError

REPLACEMENT = "\ufffd"
# Cut points where the byte-level pre-tokenizer splits anyway: after a newline that follows a
# non-space and precedes a non-space. Encoding the pieces separately (in parallel, with encode_batch)
# then gives exactly the ids of encoding the whole text; a cut inside a whitespace run would not.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


class Tokenizer(abc.ABC):
    """Text to token ids and back. Subclasses set `kind` and `file_name` and implement the rest."""

    kind: str = ""
    file_name: str = ""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids."""

    @abc.abstractmethod
    def encode_array(self, text: str) -> np.ndarray:
        """The ids of `text` as an int32 array (the fast path for whole corpora)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`."""

    @abc.abstractmethod
    def serialize(self) -> str:
        """The tokenizer as text: saved beside the tokens, and hashed into its fingerprint."""

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def safe_cut(self, text: str) -> int:
        """The largest position where `text` can be cut without changing its ids (0: none)."""
        return len(text)

    def encode_counting(self, text: str, positions: list[int]) -> tuple[np.ndarray, list[int]]:
        """The ids of `text`, and for each character position the number of tokens starting before it."""
        return self.encode_array(text), list(positions)

    @functools.cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.serialize().encode("utf-8")).hexdigest()

    def save(self, folder: Path) -> Path:
        path = folder / self.file_name
        write_atomic(path, self.serialize().encode("utf-8"))
        return path

    def __repr__(self) -> str:
        return f"<{self.kind} tokenizer, vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]}>"


class CharTokenizer(Tokenizer):
    """One id per distinct character of the corpus, in sorted order (ids outside decode to U+FFFD)."""

    kind, file_name = "char", "chars.json"

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # A dense code-point table with a -1 sentinel in its last slot: encoding is one gather.
        self._table = np.full(int(codes.max(initial=0)) + 2, -1, dtype=np.int32)
        self._table[codes] = np.arange(len(codes), dtype=np.int32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        ids = self._table[np.minimum(codes, len(self._table) - 1)]
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            char = chr(int(codes[unknown[0]]))
            raise DataError(
                f"The text contains {char!r}, which is not in this char tokenizer's vocabulary (the corpus's "
                "characters); remove it, or use data.tokenizer='byte' or 'bpe', which encode any text."
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self.chars)
        return "".join(self.chars[i] if 0 <= i < n else REPLACEMENT for i in map(int, ids))

    def serialize(self) -> str:
        return json.dumps({"kind": "char", "chars": self.chars})


class ByteTokenizer(Tokenizer):
    """The 256 byte values of UTF-8; decoding replaces invalid sequences (ids above 255 decode to U+FFFD)."""

    kind, file_name = "byte", "bytes.json"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def encode_counting(self, text: str, positions: list[int]) -> tuple[np.ndarray, list[int]]:
        return self.encode_array(text), [len(text[:p].encode("utf-8")) for p in positions]

    def decode(self, ids: Iterable[int]) -> str:
        data = b"".join(bytes((i,)) if 0 <= i < 256 else REPLACEMENT.encode() for i in map(int, ids))
        return data.decode("utf-8", errors="replace")

    def serialize(self) -> str:
        return json.dumps({"kind": "byte"})


class BpeTokenizer(Tokenizer):
    """Byte-level BPE: every string encodes (all 256 bytes are in the vocabulary) and decodes back exactly."""

    kind, file_name = "bpe", "tokenizer.json"

    def __init__(self, hf: HFTokenizer):
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        encodings = self.hf.encode_batch(safe_pieces(text), add_special_tokens=False)
        return np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32)

    def safe_cut(self, text: str) -> int:
        return last_safe_cut(text)

    def encode_counting(self, text: str, positions: list[int]) -> tuple[np.ndarray, list[int]]:
        pieces = safe_pieces(text)
        encodings = self.hf.encode_batch(pieces, add_special_tokens=False)
        starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
        before = list(itertools.accumulate((len(e.ids) for e in encodings), initial=0))
        counts = []
        for position in positions:
            k = bisect.bisect_right(starts, position) - 1  # the piece holding it (or the end)
            inside = 0
            if k < len(pieces) and position > starts[k]:
                inside = sum(1 for start, _ in encodings[k].offsets if start < position - starts[k])
            counts.append(before[min(k, len(pieces))] + inside)
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64)
        return ids, counts

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def serialize(self) -> str:
        return self.hf.to_str()


class HubTokenizer(BpeTokenizer):
    """A pretrained tokenizer.json (`data.tokenizer = "hf:..."`): its ids as they are, the file's own
    text as its serialisation, so its fingerprint is the sha256 of that file."""

    kind, file_name = "hf", "hf-tokenizer.json"

    def __init__(self, text: str, origin: str = ""):
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as err:  # tokenizers raises a bare Exception for a malformed file
            raise DataError(f"{origin or 'This file'} is not a tokenizer.json ({err}); point data.tokenizer "
                            "at a Hugging Face tokenizer.json.") from None
        super().__init__(hf)
        self.text, self.origin = text, origin
        probe = _CUT_PROBE
        if self.encode_array(probe).tolist() != self.hf.encode(probe, add_special_tokens=False).ids:
            raise DataError(
                f"The tokenizer {origin} gives other ids when a text is cut at line breaks, so it cannot "
                "tokenize a corpus in pieces; use one with a byte-level pre-tokenizer (GPT-2 style), or 'bpe'."
            )

    def serialize(self) -> str:
        return self.text


_CUT_PROBE = "The first line.\nAnd a second one, with 42 numbers.\n\n  indented\nend\nfin."


def hub_tokenizer(spec: str) -> HubTokenizer:
    """`hf:PATH` (a tokenizer.json, or a folder holding one) or `hf:ORG/NAME[@REVISION]` (from the Hub)."""
    target = spec.removeprefix("hf:").strip()
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", target):
            raise DataError(f"data.tokenizer='{spec}': {path} is not a tokenizer.json file, and '{target}' is "
                            "not a Hub model id (ORG/NAME[@REVISION]); fix the path or the id.")
        from ablab.data.download import hub_file  # only a Hub id needs the network

        repo, _, revision = target.partition("@")
        path, _ = hub_file(repo, "tokenizer.json", revision or "main", repo_type="model")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read the tokenizer {path} ({err}); point data.tokenizer at a readable "
                        "tokenizer.json.") from None
    return HubTokenizer(text, str(path))


def last_safe_cut(text: str) -> int:
    """The last position where _SAFE_CUT would cut `text`, found from the end (0: none)."""
    at = len(text) - 1
    while True:
        at = text.rfind("\n", 1, at)
        if at < 0:
            return 0
        if not text[at - 1].isspace() and at + 1 < len(text) and not text[at + 1].isspace():
            return at + 1


def safe_pieces(text: str) -> list[str]:
    """`text` cut where the byte-level pre-tokenizer cuts anyway (see _SAFE_CUT)."""
    return [piece for piece in _SAFE_CUT.split(text) if piece]


def train_bpe(text: str, vocab_size: int) -> BpeTokenizer:
    """Train a byte-level BPE with `vocab_size` entries (fewer if the text runs out of pairs to merge)."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    pieces = safe_pieces(text)
    hf.train_from_iterator(pieces, trainer=trainer, length=len(pieces))
    return BpeTokenizer(hf)


def cached_bpe(train_text: str, vocab_size: int) -> BpeTokenizer:
    """The BPE trained on this training text at this vocab size, trained once and kept in the cache."""
    text_sha = hashlib.sha256(train_text.encode("utf-8")).hexdigest()
    path = cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{text_sha[:24]}.json"
    if path.is_file():
        return BpeTokenizer(HFTokenizer.from_file(str(path)))
    tokenizer = train_bpe(train_text, vocab_size)
    write_atomic(path, tokenizer.serialize().encode("utf-8"))
    return tokenizer


def fit_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer of this kind for a corpus whose (training) text, or a bounded sample of it, is
    `text`. char: the characters of `text`, which must then cover every split; byte: fixed; bpe: merges
    learnt from `text` (cached); "hf:...": loaded, `text` unused."""
    if kind == "char":
        return CharTokenizer(set(text))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return cached_bpe(text, vocab_size)
    if kind.startswith("hf:"):
        return hub_tokenizer(kind)
    raise DataError(f"Unknown tokenizer '{kind}'; set data.tokenizer to 'char', 'byte', 'bpe' or 'hf:PATH_OR_ID'.")


def build_tokenizer(kind: str, train_text: str, val_text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer for a corpus held in memory. Char covers the whole corpus so validation has no
    unknown characters (nanoGPT's convention); BPE learns its merges from the training split only."""
    return fit_tokenizer(kind, train_text + val_text if kind == "char" else train_text, vocab_size)


def tokenizer_from_file(path: Path) -> Tokenizer:
    """Rebuild a tokenizer from the file `Tokenizer.save` wrote."""
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = json.loads(text)
    except (OSError, ValueError) as err:
        raise DataError(
            f"Cannot read the tokenizer file {path} ({err}); prepare the data again to rewrite it."
        ) from None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "char":
        return CharTokenizer(raw["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if path.name == HubTokenizer.file_name:
        return HubTokenizer(text, str(path))
    try:
        return BpeTokenizer(HFTokenizer.from_str(text))
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise DataError(f"{path} is not a tokenizer file ({err}); prepare the data again to rewrite it.") from None


def load_tokenizer(source: Path | str | dict) -> Tokenizer:
    """The tokenizer of prepared data, from its folder, its tokenizer file, or its meta dict (which
    holds the folder under "dir"). From a folder or meta, the fingerprint is checked against meta.json."""
    if isinstance(source, dict):
        if "dir" not in source:
            raise DataError("This meta has no 'dir'; pass the prepared data folder to load_tokenizer instead.")
        source = source["dir"]
    path = Path(source).expanduser()
    if not path.is_dir():
        return tokenizer_from_file(path)
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(
            f"{path} holds no readable meta.json; prepare the data again (same config) to rebuild it."
        ) from None
    tokenizer = tokenizer_from_file(path / meta["tokenizer_file"])
    if tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
        raise DataError(
            f"The tokenizer in {path} does not match its meta.json (fingerprint {tokenizer.fingerprint[:12]} "
            f"instead of {meta['tokenizer_fingerprint'][:12]}); delete the folder and prepare the data again."
        )
    return tokenizer
