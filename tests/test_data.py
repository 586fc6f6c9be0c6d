"""Data pipeline: corpora, splits, tokenizers, cached tokens, sampling, downloads and bad input."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import trainers

from ablab.config import DataConfig
from ablab.data import BatchSampler, cache_dir, load_corpus, load_tokenizer, prepare_data
from ablab.data import tokens as tokens_module
from ablab.data import val_batches
from ablab.data.corpora import BUNDLED_DIR, strip_gutenberg
from ablab.data.registry import CORPORA, CorpusSpec, RemoteFile
from ablab.data.split import FEW_DOCUMENTS, split_corpus
from ablab.data.tokenizer import BpeTokenizer, ByteTokenizer, CharTokenizer, train_bpe
from ablab.errors import DataError

SHAKESPEARE = BUNDLED_DIR / "tiny_shakespeare.txt"
SHAKESPEARE_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets an empty cache, no mirror and no proxy; ABLAB_DATA is kept for `shared_data`."""
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    for name in ("ABLAB_MIRROR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_shared_data(monkeypatch):
    monkeypatch.delenv("ABLAB_DATA", raising=False)


def shakespeare(n_chars: int, start: int = 0) -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")[start : start + n_chars]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- tokenizers -------------------------------------------------------------------------------------


def test_char_round_trip_and_vocabulary():
    text = shakespeare(200_000)
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text)) and tok.chars == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text
    with pytest.raises(DataError, match="not in this char tokenizer's vocabulary"):
        tok.encode("snowman ☃")


def test_byte_round_trip_any_utf8():
    tok = ByteTokenizer()
    for text in (shakespeare(5_000), "naïve café 😀 \x00\t\r\n 𝄞 مرحبا", ""):
        ids = tok.encode(text)
        assert max(ids, default=0) < 256 and tok.decode(ids) == text
    assert tok.decode([0xE2, 0x98]) == "\ufffd"  # a cut multi-byte character decodes, it does not raise


def test_bpe_round_trip_and_chunked_encoding_equals_whole():
    # Whitespace runs around newlines (trailing spaces, blank lines, indentation) are where a careless
    # cut into pieces would change the tokens, so half the text is indented, with trailing spaces.
    def indented(text: str) -> str:
        return "".join(f"    {line}{' ' * (i % 2)}\n" for i, line in enumerate(text.split("\n")))

    tok = train_bpe(shakespeare(100_000) + indented(shakespeare(50_000, start=100_000)), vocab_size=400)
    assert tok.vocab_size == 400
    held_out = shakespeare(20_000, start=900_000) + indented(shakespeare(10_000, start=950_000))
    held_out += "\n\n\n  naïve 😀 never seen\r\n\t"
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out
    # Corpora are encoded in parallel pieces; that must give exactly the ids of the whole text, also
    # with a tokenizer trained elsewhere, on uncut text, whose merges span any careless cut.
    assert tok.encode_array(held_out).tolist() == ids
    elsewhere = BpeTokenizer(HFTokenizer.from_str(tok.serialize()))
    elsewhere.hf.train_from_iterator([held_out], trainers.BpeTrainer(vocab_size=400, show_progress=False))
    assert elsewhere.encode_array(held_out).tolist() == elsewhere.encode(held_out)


# --- corpora ----------------------------------------------------------------------------------------


def test_registered_checksums_match_shared_data(shared_data):
    for spec in CORPORA.values():
        for file in spec.files:
            if file.sha256 is None:  # a Hub file: checked against the Hub's own sha256 when downloaded
                continue
            if not (shared_data / spec.folder / file.name).exists() and file.repo is not None:
                continue  # a full-size Hub corpus the shared folder does not hold
            data = (shared_data / spec.folder / file.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file.sha256, f"{spec.folder}/{file.name}"


def test_names_resolve_through_ablab_data(shared_data):
    stories = load_corpus("tinystories-sample")
    assert stories.source == "ABLAB_DATA" and stories.val_documents
    assert stories.documents[0].startswith("One day, a little girl named Lily found a needle")
    wiki = load_corpus("wikitext-2-sample")
    assert wiki.val_documents and "wikitext-2-raw-v1 test split" in wiki.split_note
    books = load_corpus("gutenberg")
    assert len(books.documents) == 22
    for book in books.documents:
        assert not book.startswith("\ufeff") and "*** START OF" not in book and "*** END OF" not in book.upper()


def test_tiny_shakespeare_falls_back_to_the_bundled_copy(no_shared_data):
    corpus = load_corpus("tiny-shakespeare")
    assert corpus.source == "bundled"
    assert hashlib.sha256(corpus.documents[0].encode()).hexdigest() == SHAKESPEARE_SHA


def test_gutenberg_markers_are_stripped():
    book = "\ufeffThe Project Gutenberg EBook\n***START OF THE PROJECT GUTENBERG EBOOK X ***\n\nCall me Ishmael.\n" \
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence text"
    assert strip_gutenberg(book) == "Call me Ishmael."
    assert strip_gutenberg("No markers at all.\n") == "No markers at all."


def test_corpus_by_path_txt_folder_and_jsonl(tmp_path):
    text_file = write(tmp_path / "one.txt", "\ufeff" + shakespeare(3_000))
    corpus = load_corpus(str(text_file))
    assert corpus.source == "path" and corpus.corpus == str(text_file.resolve())
    assert corpus.documents == [shakespeare(3_000)]  # the byte-order mark is dropped

    folder = tmp_path / "books"
    write(folder / "b.txt", "second")
    write(folder / "a.txt", "first")
    write(folder / "nested" / "c.txt", "third")
    write(folder / "blank.txt", "  \n")
    write(folder / "notes.md", "not a txt file")
    assert load_corpus(str(folder)).documents == ["first", "second", "third"]

    rows = [{"text": f"story {i}", "id": i} for i in range(3)]
    jsonl = write(tmp_path / "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_corpus(str(jsonl)).documents == ["story 0", "story 1", "story 2"]
    body = write(tmp_path / "body.jsonl", json.dumps({"body": "x"}))
    assert load_corpus(str(body), text_field="body").documents == ["x"]


# --- splits -----------------------------------------------------------------------------------------


def test_single_text_holds_out_the_last_fraction(tmp_path):
    text = shakespeare(10_001)
    split = split_corpus(load_corpus(str(write(tmp_path / "t.txt", text))), 0.1)
    cut = int(len(text) * 0.9)  # nanoGPT's convention
    assert (split.train, split.val) == (text[:cut], text[cut:])
    assert "last 10%" in split.description


def test_char_vocabulary_covers_characters_seen_only_in_validation(tmp_path):
    text = shakespeare(5_000) + " ☃ ünïcödé"
    prepared = prepare_data(DataConfig(corpus=str(write(tmp_path / "t.txt", text)), tokenizer="char"))
    assert prepared.tokenizer.decode(prepared.val.tolist()) == text[int(len(text) * 0.9) :]
    assert prepared.meta["val_bytes"] == len(text[int(len(text) * 0.9) :].encode())


def test_document_split_is_by_content_and_stable_when_documents_are_added(tmp_path):
    docs = [f"document number {i}: " + shakespeare(200, start=i * 500) for i in range(60)]

    def split_of(documents, val_fraction=0.2):
        path = write(tmp_path / f"{len(documents)}.jsonl", "\n".join(json.dumps({"text": d}) for d in documents))
        split = split_corpus(load_corpus(str(path)), val_fraction)
        return {d for d in documents if d in split.val.split("\n\n")}, split

    held, split = split_of(docs)
    assert 0 < len(held) < len(docs) and split.train and split.val
    held_more, _ = split_of(list(reversed(docs)) + [f"a new document {i}" for i in range(20)])
    assert held_more & set(docs) == held  # adding and reordering moved no old document
    # No document hashes below 0.0001, or none above 0.9999: either way both splits stay non-empty.
    for val_fraction, held_out in ((0.0001, "1 of 20"), (0.9999, "19 of 20")):
        _, edge = split_of([f"document {i}" for i in range(FEW_DOCUMENTS)], val_fraction)
        assert edge.train and edge.val and held_out in edge.description


def test_few_documents_hold_out_the_tail_of_each(tmp_path):
    # Three books of very different lengths: whole-document hold-out missed 10% by a whole book.
    books = {f"book{i}.txt": shakespeare(n, start=i * 60_000) for i, n in enumerate((4_000, 9_000, 40_000))}
    for name, text in books.items():
        write(tmp_path / "books" / name, text)
    split = split_corpus(load_corpus(str(tmp_path / "books")), 0.1)
    tails = [text[int(len(text) * 0.9):] for text in books.values()]
    assert split.val == "\n\n".join(tails)  # ... from every book
    assert split.train == "\n\n".join(text[:int(len(text) * 0.9)] for text in books.values())
    val_chars = sum(map(len, tails))
    assert val_chars / sum(map(len, books.values())) == pytest.approx(0.1, abs=1e-3)
    assert split.rule == "tails:0.1"
    assert f"the last 10% of each of 3 documents ({val_chars:,} of 53,000 characters" in split.description


def test_prepare_records_what_went_where(tmp_path):
    folder = tmp_path / "notes"
    for i in range(FEW_DOCUMENTS + 5):
        write(folder / f"note{i:02}.txt", f"note {i}: " + shakespeare(300, start=i * 400))
    prepared = prepare_data(DataConfig(corpus=str(folder)))
    held = [f"note{i:02}.txt" for i in range(FEW_DOCUMENTS + 5)
            if f"note {i}: " in prepared.tokenizer.decode(prepared.val.tolist())]
    assert held and prepared.meta["split_rule"] == "documents:0.1"
    assert prepared.meta["split"].startswith(f"validation: {len(held)} of {FEW_DOCUMENTS + 5} whole documents")
    assert ", ".join(held[:5]) in prepared.meta["split"]  # the held-out documents, by name


def test_tiny_shakespeare_keeps_its_split_and_fingerprint(no_shared_data):
    # One document: the last 10% of the text, as nanoGPT holds it out; the data identity of every
    # run on it so far (its fingerprint) must not move.
    prepared = prepare_data(DataConfig(corpus="tiny-shakespeare", tokenizer="char"))
    assert prepared.meta["split_rule"] == "tail:0.1" and prepared.meta["n_val_tokens"] == 111_540
    assert prepared.fingerprint == "38571293550e383460eeddd5b42ecd58d7f5a0b0873fb5b5f9a24e875c656fff"


# --- prepared tokens and fingerprints -----------------------------------------------------------------


def test_prepare_reuses_the_cache_and_fingerprint_is_stable(no_shared_data, tmp_path, monkeypatch):
    cfg = DataConfig(corpus="tiny-shakespeare", tokenizer="char")
    first = prepare_data(cfg)
    assert first.train.dtype == np.uint16 and not first.train.flags.writeable
    assert first.meta["n_train_tokens"] == len(first.train) == 1_003_854
    assert first.meta["val_bytes"] == 111_540 and first.meta["text_sha256"] == SHAKESPEARE_SHA
    assert first.dir.parent == cache_dir() / "tokens"
    assert first.tokenizer.decode(first.val[:50].tolist()) == shakespeare(50, start=1_003_854)
    stamp = (first.dir / "train.bin").stat().st_mtime_ns
    again = prepare_data(cfg)
    assert again.fingerprint == first.fingerprint and (again.dir / "train.bin").stat().st_mtime_ns == stamp
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "fresh"))
    fresh = prepare_data(cfg)
    assert fresh.dir != first.dir and fresh.fingerprint == first.fingerprint
    assert prepare_data(DataConfig(corpus="tiny-shakespeare", tokenizer="byte")).fingerprint != first.fingerprint


def test_bpe_fingerprint_depends_on_vocab_size_and_corpus_only(tmp_path, monkeypatch):
    corpus = write(tmp_path / "a.txt", shakespeare(60_000))
    other = write(tmp_path / "b.txt", shakespeare(60_000, start=300_000))
    def bpe(path: Path, vocab_size: int):
        return prepare_data(DataConfig(corpus=str(path), tokenizer="bpe", vocab_size=vocab_size))

    small = bpe(corpus, 300)
    assert small.meta["vocab_size"] == 300 and small.meta["tokenizer"] == "bpe"
    assert bpe(corpus, 350).fingerprint != small.fingerprint
    assert bpe(other, 300).fingerprint != small.fingerprint
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "fresh"))  # retrains the BPE: training is deterministic
    assert bpe(corpus, 300).fingerprint == small.fingerprint


def test_load_tokenizer_from_folder_meta_and_file(tmp_path):
    corpus = write(tmp_path / "a.txt", shakespeare(40_000))
    for kind in ("char", "byte", "bpe"):
        prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer=kind, vocab_size=300))
        for source in (prepared.dir, str(prepared.dir), prepared.meta, prepared.tokenizer_file):
            tok = load_tokenizer(source)
            assert (tok.kind, tok.fingerprint) == (kind, prepared.tokenizer.fingerprint)
        decoded = tok.decode(prepared.train[:200].tolist())
        assert decoded and shakespeare(40_000).startswith(decoded)
    prepared.tokenizer_file.write_text(json.dumps({"kind": "char", "chars": ["a"]}))
    with pytest.raises(DataError, match="does not match its meta.json"):
        load_tokenizer(prepared.dir)


def test_a_killed_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    corpus = write(tmp_path / "a.txt", shakespeare(20_000))
    cfg = DataConfig(corpus=str(corpus), tokenizer="char")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(tokens_module.Tokenizer, "save", killed)  # dies half-way through writing
        patch.setattr(tokens_module.shutil, "rmtree", lambda *a, **k: None)  # as after SIGKILL: no cleanup
        with pytest.raises(KeyboardInterrupt):
            prepare_data(cfg)
    left = list((cache_dir() / "tokens").iterdir())
    assert left and all(p.name.startswith(".tmp-") for p in left)
    prepared = prepare_data(cfg)
    assert prepared.dir.parent == cache_dir() / "tokens" and not prepared.dir.name.startswith(".")
    folder, fingerprint, train = prepared.dir, prepared.fingerprint, np.array(prepared.train)
    del prepared  # its memmap would fault once the file under it is truncated
    # A damaged folder is noticed and rebuilt, with the same result.
    for damage in (b"\x00\x00", bytes(len(train) * 2)):  # truncated; same size, other bytes
        (folder / "train.bin").write_bytes(damage)
        rebuilt = prepare_data(cfg)
        assert rebuilt.fingerprint == fingerprint and np.array_equal(np.array(rebuilt.train), train)
        del rebuilt


# --- sampling ---------------------------------------------------------------------------------------


def test_batches_are_a_function_of_seed_step_and_micro():
    tokens = np.arange(10_000, dtype=np.uint16)
    sampler = BatchSampler(tokens, seq_len=16, batch_size=8, seed=3)
    x, y = sampler.batch(5, micro=1)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (8, 16)
    assert torch.equal(y, x + 1)  # on arange, "next token" is +1
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, y2 = BatchSampler(tokens, 16, 8, seed=3).batch(5, micro=1)  # a fresh sampler, as after a resume
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sampler.batch(6, micro=1)[0])
    assert not torch.equal(x, sampler.batch(5, micro=0)[0])
    assert not torch.equal(x, BatchSampler(tokens, 16, 8, seed=4).batch(5, micro=1)[0])
    assert int(x.max()) + 1 <= len(tokens) - 1  # every target is inside the array


def test_val_batches_are_fixed_evenly_spaced_and_non_overlapping():
    tokens = np.arange(5_000, dtype=np.uint16)
    batches = list(val_batches(tokens, seq_len=32, n_tokens=640, batch_size=8))
    again = list(val_batches(tokens, seq_len=32, n_tokens=640, batch_size=8))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert [len(b[0]) for b in batches] == [8, 8, 4] and torch.equal(y, x + 1)
    starts = x[:, 0].tolist()
    assert starts[0] == 0 and y[-1, -1] == len(tokens) - 1
    assert all(b - a >= 33 for a, b in zip(starts, starts[1:]))
    assert len(list(val_batches(tokens, 32, n_tokens=1, batch_size=8))) == 1
    many = torch.cat([b[0] for b in val_batches(tokens, 32, n_tokens=10**9, batch_size=64)])
    assert len(many) == len(tokens) // 33


def test_seq_len_larger_than_a_split_names_data_seq_len():
    tokens = np.arange(100, dtype=np.uint16)
    with pytest.raises(DataError, match=r"lower data\.seq_len to at most 99"):
        BatchSampler(tokens, seq_len=100, batch_size=2, seed=0)
    with pytest.raises(DataError, match=r"validation split.*data\.seq_len"):
        val_batches(tokens, seq_len=128, n_tokens=1000, batch_size=2)
    BatchSampler(tokens, seq_len=99, batch_size=2, seed=0).batch(0)  # exactly fits


# --- downloads --------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 that serves `folder`."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_through_a_mirror_lands_verified_in_the_cache(shared_data, serve, monkeypatch):
    monkeypatch.setenv("ABLAB_MIRROR", serve(shared_data) + "/")
    monkeypatch.delenv("ABLAB_DATA")
    corpus = load_corpus("tinystories-sample")
    assert corpus.source == "download"
    folder = cache_dir() / "corpora" / "tinystories-sample"
    assert sorted(p.name for p in folder.iterdir()) == ["TinyStories-train-first2MiB.txt", "tinystories_val_slice.txt"]
    monkeypatch.setenv("ABLAB_MIRROR", "http://127.0.0.1:9")  # the cache is used; nothing is fetched again
    assert load_corpus("tinystories-sample").source == "cache"


def test_download_with_a_wrong_checksum_raises_and_keeps_nothing(no_shared_data, serve, tmp_path, monkeypatch):
    write(tmp_path / "mirror" / "tinystories" / "TinyStories-train-first2MiB.txt", "not the real stories")
    monkeypatch.setenv("ABLAB_MIRROR", serve(tmp_path / "mirror"))
    with pytest.raises(DataError, match=r"sha256 checksum \(expected 5352b299.*, got ") as err:
        load_corpus("tinystories-sample")
    assert "ABLAB_DATA" in str(err.value)
    assert list((cache_dir() / "corpora" / "tinystories-sample").iterdir()) == []


def test_download_failures_suggest_ablab_data(no_shared_data, serve, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("ABLAB_MIRROR", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(DataError, match="Could not download .*set ABLAB_DATA"):
        load_corpus("tinystories-sample")
    monkeypatch.setenv("ABLAB_MIRROR", serve(tmp_path / "empty"))  # 404
    with pytest.raises(DataError, match="Could not download .*set ABLAB_DATA"):
        load_corpus("tinystories-sample")
    monkeypatch.delenv("ABLAB_MIRROR")  # wikitext-2's files were edited, so they have no origin to fetch
    with pytest.raises(DataError, match=r"no public download.*set ABLAB_DATA to a folder holding wikitext-2/"):
        load_corpus("wikitext-2-sample")


def test_origin_download_re_encodes_and_checks_both_checksums(no_shared_data, serve, tmp_path, monkeypatch):
    text = "“Tom!” No answer. – Aunt Polly\n"
    origin = write(tmp_path / "origin" / "74-0.txt", "")
    origin.write_bytes(text.encode("cp1252"))
    base = serve(tmp_path / "origin")
    spec = CorpusSpec(
        name="test-book", folder="test_book",
        train=(RemoteFile(
            "book.txt", hashlib.sha256(text.encode()).hexdigest(), f"{base}/74-0.txt",
            url_sha256=hashlib.sha256(text.encode("cp1252")).hexdigest(), url_encoding="cp1252",
        ),),
    )
    monkeypatch.setitem(CORPORA, "test-book", spec)
    assert load_corpus("test-book").documents == [text]
    assert (cache_dir() / "corpora" / "test-book" / "book.txt").read_text(encoding="utf-8") == text


# --- bad input --------------------------------------------------------------------------------------


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="does not exist; fix data.corpus"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="Did you mean 'tinystories'"):
        load_corpus("tinystory")
    with pytest.raises(DataError, match="Unknown corpus 'zzz'.*tiny-shakespeare"):
        load_corpus("zzz")


@pytest.mark.parametrize("content", ["", "  \n\t\r\n  "], ids=["empty", "whitespace"])
def test_empty_corpus(tmp_path, content):
    with pytest.raises(DataError, match="has no text"):
        prepare_data(DataConfig(corpus=str(write(tmp_path / "c.txt", content))))


def test_non_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Café au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8 text \(byte 0xe9 at byte offset 3\)"):
        load_corpus(str(path))


def test_bad_jsonl_lines_name_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 3 is not valid JSON"):
        load_corpus(str(bad))
    missing = write(tmp_path / "missing.jsonl", '{"text": "fine"}\n{"body": "x"}\n')
    message = r"missing\.jsonl line 2 has no 'text' field \(it has: 'body'\).*data\.text_field"
    with pytest.raises(DataError, match=message):
        load_corpus(str(missing))


def test_folder_without_txt_files(tmp_path):
    write(tmp_path / "d" / "notes.md", "text")
    with pytest.raises(DataError, match=r"has no \.txt, \.jsonl\(\.gz/\.zst\) or \.parquet files"):
        load_corpus(str(tmp_path / "d"))


def test_copy_of_bundled_corpus_shares_tokens(no_shared_data, tmp_path):
    copy = tmp_path / "copy.txt"
    shutil.copyfile(SHAKESPEARE, copy)
    by_name = prepare_data(DataConfig(corpus="tiny-shakespeare"))
    by_path = prepare_data(DataConfig(corpus=str(copy)))
    assert by_path.dir == by_name.dir and by_path.meta["source"] == "path" and by_name.meta["source"] == "bundled"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_cached_files_honour_the_umask_and_leave_no_temporary_behind(tmp_path, umask, mode):
    from ablab.data.cache import write_atomic

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "cache" / "meta.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "cache" / "meta.json").stat().st_mode & 0o777 == mode
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["meta.json"]
