"""The streaming pipeline: every reader, tokens equal to encoding each split whole, the document tables,
the index that skips re-reading, bounded BPE samples, hf: tokenizers, large-folder checks and kill -9."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ablab.config import DataConfig
from ablab.data import load_corpus, pipeline, prepare_data
from ablab.data import tokens as tokens_module
from ablab.data.corpora import BUNDLED_DIR
from ablab.data.split import DOCUMENT_SEPARATOR, split_corpus
from ablab.errors import DataError

TEXT = (BUNDLED_DIR / "tiny_shakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A token cache of this test's own, so that every prepare here really builds."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ABLAB_CACHE", str(folder))
    return folder


def passages(n: int, size: int = 300) -> list[str]:
    """`n` different passages of real text (Shakespeare), each about `size` characters."""
    return [f"[{i}] " + TEXT[(i * 977) % 900_000:(i * 977) % 900_000 + size].strip() for i in range(n)]


def in_memory(corpus: str, kind: str, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of each split as the old in-memory path made them: the split texts, encoded whole."""
    split = split_corpus(load_corpus(corpus), 0.1)
    return tokenizer.encode_array(split.train), tokenizer.encode_array(split.val)


def check_doc_table(prepared, texts: list[str]) -> None:
    """Each row of train_docs ends where that document (and the separator after it) ends."""
    table = np.asarray(prepared.train_docs)
    assert table[-1, 0] == len(prepared.train) and table[-1, 1] == prepared.meta["train_bytes"]
    start = 0
    for end, text in zip(table[:, 0], texts):
        assert prepared.tokenizer.decode(prepared.train[start:end].tolist()).startswith(text[:40])
        start = int(end)


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_streamed_tokens_equal_each_split_encoded_whole(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(pipeline, "CHUNK_CHARS", 5_000)  # many chunks, cut where the tokenizer allows
    rows = passages(400)
    corpus = tmp_path / "rows.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows), encoding="utf-8")
    prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer=kind, vocab_size=400))
    train, val = in_memory(str(corpus), kind, prepared.tokenizer)
    assert np.array_equal(prepared.train, train) and np.array_equal(prepared.val, val)
    split = split_corpus(load_corpus(str(corpus)), 0.1)
    assert prepared.meta["train_bytes"] == len(split.train.encode()) and prepared.meta["val_bytes"] == len(split.val.encode())
    kept = [t for t in rows if t in split.train]
    assert prepared.meta["n_train_documents"] == len(kept) and prepared.meta["n_val_documents"] == 400 - len(kept)
    check_doc_table(prepared, kept)


def test_jsonl_gz_and_zst_give_the_tokens_of_the_plain_jsonl(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    lines = "".join(json.dumps({"body": t}) + "\n" for t in passages(120)).encode()
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(lines)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    prints = {name: prepare_data(DataConfig(corpus=str(tmp_path / name), tokenizer="byte", text_field="body"))
              for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst")}
    assert len({p.fingerprint for p in prints.values()}) == 1
    assert prints["b.jsonl.gz"].meta["n_train_documents"] + prints["b.jsonl.gz"].meta["n_val_documents"] == 120


def test_a_folder_of_a_thousand_small_files(tmp_path):
    folder = tmp_path / "notes"
    texts = passages(1000, size=120)
    for i, text in enumerate(texts):
        (folder / f"{i // 100:02}").mkdir(parents=True, exist_ok=True)
        (folder / f"{i // 100:02}" / f"note{i:04}.txt").write_text(text, encoding="utf-8")
    prepared = prepare_data(DataConfig(corpus=str(folder), tokenizer="char"))
    assert prepared.meta["n_train_documents"] + prepared.meta["n_val_documents"] == 1000
    assert prepared.meta["split_rule"] == "documents:0.1" and 50 < prepared.meta["n_val_documents"] < 150
    train, val = in_memory(str(folder), "char", prepared.tokenizer)
    assert np.array_equal(prepared.train, train) and np.array_equal(prepared.val, val)


def test_a_parquet_file_with_a_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = passages(200)
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"id": list(range(200)), "content": rows}), path, row_group_size=32)
    prepared = prepare_data(DataConfig(corpus=str(path), tokenizer="byte", text_field="content"))
    assert prepared.meta["n_train_documents"] + prepared.meta["n_val_documents"] == 200
    decoded = prepared.tokenizer.decode(prepared.train[:2000].tolist())
    assert decoded.startswith(next(t for t in rows if decoded.startswith(t[:30]))[:30])
    with pytest.raises(DataError, match="content2"):
        prepare_data(DataConfig(corpus=str(path), tokenizer="byte", text_field="content2"))


def test_a_second_prepare_reads_no_text_until_a_file_changes(tmp_path, monkeypatch):
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT[:50_000], encoding="utf-8")
    cfg = DataConfig(corpus=str(corpus), tokenizer="byte")
    first = prepare_data(cfg)
    scans = []
    real_scan = tokens_module.scan
    monkeypatch.setattr(tokens_module, "scan", lambda *a, **k: scans.append(1) or real_scan(*a, **k))
    assert prepare_data(cfg).fingerprint == first.fingerprint and not scans  # found through the index
    corpus.write_text(TEXT[:50_000].replace("Citizen", "Burgher"), encoding="utf-8")
    changed = prepare_data(cfg)
    assert scans and changed.fingerprint != first.fingerprint


def test_bpe_on_a_corpus_larger_than_its_sample_bound_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(tokens_module, "TOKENIZER_SAMPLE_BYTES", 20_000)
    corpus = tmp_path / "big.txt"
    corpus.write_text(TEXT[:200_000], encoding="utf-8")
    prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer="bpe", vocab_size=400))
    sample = prepared.meta["tokenizer_sample"]
    assert not sample["whole"] and 15_000 < sample["bytes"] <= 20_000 and "first" in sample["rule"]
    assert prepared.tokenizer.decode(prepared.train.tolist()) == TEXT[:180_000]  # every token still encoded
    small = tmp_path / "small.txt"
    small.write_text(TEXT[:10_000], encoding="utf-8")
    assert prepare_data(DataConfig(corpus=str(small), tokenizer="bpe", vocab_size=300)).meta["tokenizer_sample"]["whole"]


def byte_level_tokenizer_json(folder: Path, vocab_size: int) -> Path:
    """A GPT-2-style tokenizer.json (byte-level BPE) trained here, standing in for a pretrained one."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator([TEXT[:200_000]], trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    hf.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def test_a_pretrained_tokenizer_json_by_path(tmp_path, monkeypatch):
    path = byte_level_tokenizer_json(tmp_path / "gpt2-like", 500)
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT[300_000:360_000], encoding="utf-8")
    cfg = DataConfig(corpus=str(corpus), tokenizer=f"hf:{path.parent}")
    prepared = prepare_data(cfg)
    hf = HFTokenizer.from_file(str(path))
    split = split_corpus(load_corpus(str(corpus)), 0.1)
    assert prepared.tokenizer.kind == "hf" and prepared.meta["vocab_size"] == hf.get_vocab_size()
    assert prepared.train.tolist() == hf.encode(split.train, add_special_tokens=False).ids
    assert prepared.tokenizer.fingerprint == tokens_module.hashlib.sha256(path.read_bytes()).hexdigest()
    assert prepared.dir.name.startswith("hf-")
    byte_level_tokenizer_json(tmp_path / "gpt2-like", 450)  # the file changes in place: new tokens
    assert prepare_data(cfg).fingerprint != prepared.fingerprint
    with pytest.raises(DataError, match="not a tokenizer.json file"):
        prepare_data(DataConfig(corpus=str(corpus), tokenizer=f"hf:{tmp_path / 'nothing-here.json'}"))


def test_a_vocabulary_over_65536_is_stored_as_uint32(tmp_path):
    corpus = tmp_path / "wide.txt"
    corpus.write_text("".join(chr(0x20000 + i) for i in range(70_000)), encoding="utf-8")
    prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer="char"))
    assert prepared.meta["dtype"] == "uint32" and prepared.train.dtype == np.dtype("<u4")
    assert prepared.tokenizer.decode(prepared.train[-3:].tolist()) == "".join(chr(0x20000 + i) for i in range(62_997, 63_000))


def test_a_large_folder_is_checked_by_a_sampled_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(tokens_module, "FULL_CHECK_TOKENS", 1_000)
    monkeypatch.setattr(tokens_module, "WINDOW_BYTES", 512)
    monkeypatch.setattr(tokens_module, "SAMPLE_WINDOWS", 4)
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT[:100_000], encoding="utf-8")
    cfg = DataConfig(corpus=str(corpus), tokenizer="byte")
    prepared = prepare_data(cfg)
    folder, fingerprint = prepared.dir, prepared.fingerprint
    assert prepared.meta["sampled_sha256"]
    del prepared

    def no_full_hash(*args):
        raise AssertionError("opening a large folder re-hashed every token")

    with monkeypatch.context() as patch:
        patch.setattr(tokens_module, "token_fingerprint", no_full_hash)
        assert tokens_module.open_if_valid(folder).fingerprint == fingerprint
    data = bytearray((folder / "train.bin").read_bytes())
    data[:10] = b"0123456789"  # inside the first sampled window
    (folder / "train.bin").write_bytes(bytes(data))
    assert tokens_module.open_if_valid(folder) is None
    assert prepare_data(cfg).fingerprint == fingerprint  # rebuilt


KILLED_PREPARE = """
import sys, time
from ablab.config import DataConfig
from ablab.data import pipeline, prepare_data

pipeline.CHUNK_CHARS = 2_000
real = pipeline.TokenWriter._flush
def slow(self, final):
    real(self, final)
    open(sys.argv[2], "w").close()  # tokens are being written
    time.sleep(0.2)
pipeline.TokenWriter._flush = slow
prepare_data(DataConfig(corpus=sys.argv[1], tokenizer="byte"))
"""


def test_kill_9_mid_prepare_leaves_no_cache_a_run_would_read(tmp_path, cache):
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT[:200_000], encoding="utf-8")
    started = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PREPARE, str(corpus), str(started)],
                             env={**os.environ, "ABLAB_CACHE": str(cache)})
    deadline = time.monotonic() + 60
    while not started.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the child never started writing tokens"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = list((cache / "tokens").iterdir())
    assert left and all(p.name.startswith(".tmp-") for p in left)  # half-written, and named so
    prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer="byte"))
    assert prepared.tokenizer.decode(np.concatenate([prepared.train, prepared.val]).tolist()) == TEXT[:200_000]
    names = [p.name for p in (cache / "tokens").iterdir()]
    assert not [n for n in names if n.startswith(".tmp-")], names  # the dead process's folder was swept
    assert sorted(names) == sorted([prepared.dir.name, "index"])


def test_documents_are_joined_with_the_separator_the_char_vocabulary_knows(tmp_path):
    corpus = tmp_path / "rows.jsonl"  # no document holds a newline: only the separator does
    corpus.write_text("".join(json.dumps({"text": f"row {i} without breaks"}) + "\n" for i in range(30)),
                      encoding="utf-8")
    prepared = prepare_data(DataConfig(corpus=str(corpus), tokenizer="char"))
    assert set(DOCUMENT_SEPARATOR) <= set(prepared.tokenizer.chars)
    assert DOCUMENT_SEPARATOR in prepared.tokenizer.decode(prepared.train.tolist())
