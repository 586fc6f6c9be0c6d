"""Downloads from a Hub-like server on 127.0.0.1 (tests/hubserver.py): resume, checks, the mirror
override, a parquet corpus end to end, and `ablab data list`. Nothing leaves 127.0.0.1."""

import concurrent.futures
import hashlib
import json
import os
import socket
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants as hf_constants
from typer.testing import CliRunner

from ablab.data import registry
from ablab.data.corpora import open_corpus
from ablab.data.download import hub_file, hub_target, provenance_path
from ablab.data.registry import CORPORA, CorpusSpec, RemoteFile
from ablab.data.sources import locate
from ablab.errors import DataError

import hubserver
from hubserver import COMMIT, hub_fixture, no_network_fixture  # noqa: F401 (the fixtures hub, no_network)

REPO = "ablab-test/stories"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_full_download_lands_in_the_cache_with_its_provenance(hub):
    data = b"Once upon a time there was a test.\n" * 1000
    hub.add("datasets", REPO, "data/train.txt", data)
    path, record = hub_file(REPO, "data/train.txt", "main")
    assert path == hub_target(REPO, "data/train.txt", "main") and path.read_bytes() == data
    assert record == {"name": "data/train.txt", "repo": REPO, "revision": COMMIT, "sha256": sha(data),
                      "size": len(data), "url": f"{hub.url}/datasets/{REPO}/resolve/{COMMIT}/data/train.txt"}
    assert json.loads(provenance_path(path).read_text()) == record
    assert not path.with_name("train.txt.part").exists()
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the umask's, not mkstemp's 0600
    before = len(hub.requests)
    assert hub_file(REPO, "data/train.txt", "main") == (path, record)  # the cache answers: no request
    assert len(hub.requests) == before


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_download_cut_half_way_resumes_with_a_range_request(hub, monkeypatch):
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # chunks land before the cut
    data = os.urandom(2_000_000)
    hub.add("datasets", REPO, "big.bin", data)
    hub.cut_after["big.bin"] = 1_000_000  # the first GET stops after 1 MB, the connection closed
    path, record = hub_file(REPO, "big.bin", "main")
    ranges = hub.gets("/big.bin")
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= 1_000_000
    assert path.read_bytes() == data and record["sha256"] == sha(data)


def test_a_part_file_left_by_an_earlier_run_is_resumed(hub):
    data = os.urandom(300_000)
    hub.add("datasets", REPO, "shard.bin", data)
    part = hub_target(REPO, "shard.bin", "main").with_name("shard.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:120_000])  # as a killed process leaves it
    path, record = hub_file(REPO, "shard.bin", "main")
    assert hub.gets("/shard.bin") == ["bytes=120000-"]
    assert path.read_bytes() == data and record["sha256"] == sha(data) and not part.exists()


def test_a_part_file_longer_than_the_file_is_started_again(hub):
    data = b"short file"
    hub.add("datasets", REPO, "small.txt", data)
    part = hub_target(REPO, "small.txt", "main").with_name("small.txt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not a prefix of anything, and longer")
    path, _ = hub_file(REPO, "small.txt", "main")
    assert path.read_bytes() == data and hub.gets("/small.txt") == [None]


def test_parallel_downloads_of_one_file_fetch_it_once(hub):
    data = os.urandom(500_000)
    hub.add("datasets", REPO, "shared.bin", data)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: hub_file(REPO, "shared.bin", "main"), range(4)))
    assert all(path.read_bytes() == data and record["sha256"] == sha(data) for path, record in results)
    assert len(hub.gets("/shared.bin")) == 1  # the others waited for the lock and found it in the cache


def test_a_corrupt_download_is_refused_in_one_sentence_and_deleted(hub):
    data = b"the real bytes " * 500
    hub.add("datasets", REPO, "train.txt", data)
    hub.corrupt.add("train.txt")
    with pytest.raises(DataError) as err:
        hub_file(REPO, "train.txt", "main")
    message = str(err.value)
    assert f"failed its sha256 check (expected {sha(data)}, got " in message and "was deleted" in message
    assert message.count(". ") == 0 and "ABLAB_DATA" in message
    target = hub_target(REPO, "train.txt", "main")
    assert not target.exists() and not target.with_name("train.txt.part").exists()
    assert not provenance_path(target).exists()


def test_a_registry_sha256_that_differs_is_refused(hub):
    hub.add("models", "ablab-test/tok", "tokenizer.json", b"{}")
    with pytest.raises(DataError, match=r"failed its sha256 check \(expected 0{64}, got "):
        hub_file("ablab-test/tok", "tokenizer.json", "main", repo_type="model", sha256="0" * 64)
    path, record = hub_file("ablab-test/tok", "tokenizer.json", "main", repo_type="model")  # the model layout
    assert path.read_bytes() == b"{}" and record["url"].startswith(f"{hub.url}/ablab-test/tok/resolve/")


def test_a_hub_tokenizer_id_comes_through_the_same_download_path(hub):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ablab.data.tokenizer import hub_tokenizer

    vocab = {"[UNK]": 0, "once": 1, "upon": 2, "a": 3, "time": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hub.add("models", "ablab-test/words", "tokenizer.json", tok.to_str().encode())
    loaded = hub_tokenizer(f"hf:ablab-test/words@{COMMIT}")
    assert loaded.encode("once upon a time") == [1, 2, 3, 4]
    assert hub.gets("/tokenizer.json") == [None] and f"/ablab-test/words/resolve/{COMMIT}/" in hub.requests[-1][1]


def test_ablab_mirror_beats_hf_endpoint(hub, tmp_path, monkeypatch):
    hub.add("datasets", REPO, "train.txt", b"mirrored")
    other, server = hubserver.start(tmp_path / "other-hub")
    try:
        other.add("datasets", REPO, "train.txt", b"from HF_ENDPOINT")
        monkeypatch.setenv("HF_ENDPOINT", other.url)
        path, record = hub_file(REPO, "train.txt", "main")
        assert record["url"].startswith(hub.url) and path.read_bytes() == b"mirrored" and other.requests == []
        monkeypatch.delenv("ABLAB_MIRROR")  # now HF_ENDPOINT is the endpoint
        path, record = hub_file(REPO, "train.txt", COMMIT)
        assert record["url"].startswith(other.url) and path.read_bytes() == b"from HF_ENDPOINT"
        with pytest.raises(DataError, match=r"Could not download http://127\.0\.0\.1:\d+/datasets/\S+ \(HTTP 404\); "
                                            r"check the network, or set ABLAB_DATA .*ABLAB_MIRROR / HF_ENDPOINT"):
            hub_file(REPO, "missing.txt", "main")
    finally:
        server.shutdown()
        server.server_close()


def test_the_socket_guard_refuses_the_outside_world(no_network):
    with pytest.raises(AssertionError, match="outside 127.0.0.1"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def _parquet(texts: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), sink)
    return sink.getvalue().to_pybytes()


def test_a_hub_parquet_corpus_is_located_downloaded_and_read(hub, monkeypatch):
    train, val = [f"Article {n}: words of Wikipedia." for n in range(50)], ["A held-out article.", "And one more."]
    hub.add("datasets", "ablab-test/wiki", "raw/train-00000-of-00001.parquet", _parquet(train))
    hub.add("datasets", "ablab-test/wiki", "raw/validation-00000-of-00001.parquet", _parquet(val))
    spec = CorpusSpec(
        name="test-wiki", folder="test-wiki", fmt="parquet", license="CC BY-SA",
        train=(RemoteFile("raw/train-00000-of-00001.parquet", None, repo="ablab-test/wiki", revision=COMMIT),),
        val=(RemoteFile("raw/validation-00000-of-00001.parquet", None, repo="ablab-test/wiki", revision=COMMIT),))
    monkeypatch.setitem(CORPORA, spec.name, spec)
    located = locate(spec)
    assert located.source == "download" and set(located.paths) == {f.name for f in spec.files}
    assert [f["source"] for f in located.files] == ["download", "download"]
    assert located.files[0]["revision"] == COMMIT and located.files[0]["repo"] == "ablab-test/wiki"
    corpus = open_corpus("test-wiki")
    assert [text for _, text in corpus.train()] == train and [text for _, text in corpus.val()] == val
    assert locate(spec).source == "cache" and locate(spec).files[0]["sha256"] == located.files[0]["sha256"]


def test_tinystories_downloads_at_its_pinned_revision_and_splits_into_stories(hub):
    spec = CORPORA["tinystories"]
    hub.commit = spec.train[0].revision  # the look-alike answers for the registry's pinned commit
    hub.add("datasets", "roneneldan/TinyStories", "TinyStoriesV2-GPT4-train.txt",
            b"Once upon a time, a cat.\n<|endoftext|>\nOne day, a dog.\n<|endoftext|>\nThe end.\n")
    hub.add("datasets", "roneneldan/TinyStories", "TinyStoriesV2-GPT4-valid.txt", b"A held-out story.\n")
    corpus = open_corpus("tinystories")
    assert corpus.source == "download"
    stories = [text.strip() for _, text in corpus.train()]
    assert stories == ["Once upon a time, a cat.", "One day, a dog.", "The end."]
    assert [f["revision"] for f in corpus.files] == [hub.commit, hub.commit]
    assert all(f"/resolve/{hub.commit}/" in f["url"] for f in corpus.files)


def test_a_local_copy_in_ablab_data_comes_first(hub, tmp_path, monkeypatch):
    spec = registry.TINYSTORIES
    for file in spec.files:
        (tmp_path / "data" / spec.folder / file.name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / spec.folder / file.name).write_text("A story.\n<|endoftext|>\nAnother.\n")
    monkeypatch.setenv("ABLAB_DATA", str(tmp_path / "data"))
    located = locate(spec)
    assert located.source == "ABLAB_DATA" and hub.requests == []
    assert located.files[0]["repo"] == "roneneldan/TinyStories" and located.files[0]["source"] == "ABLAB_DATA"


def test_shards_are_taken_from_the_front_and_checked():
    fineweb = CORPORA["fineweb-edu-10bt"]
    assert fineweb.shards == 14 and len(fineweb.train) == fineweb.default_shards == 1
    assert [f.name for f in fineweb.with_shards(2).train] == ["sample/10BT/000_00000.parquet",
                                                            "sample/10BT/001_00000.parquet"]
    with pytest.raises(DataError, match=r"data\.shards=15 is out of range .* from 1 to 14\."):
        fineweb.with_shards(15)
    with pytest.raises(DataError, match="is not sharded"):
        CORPORA["tinystories"].with_shards(1)


def test_no_hub_file_has_an_invented_checksum():
    for spec in CORPORA.values():
        for file in spec.files + spec.shard_files:
            if file.repo is not None:
                assert file.sha256 is None and file.size is None, f"{spec.name}: {file.name}"
                assert file.url is None and (file.revision == "main" or len(file.revision) == 40)


def test_data_list_names_every_corpus_with_its_license(hub, monkeypatch):
    from ablab.cli.main import app

    # Not a terminal (a pipe, a CI log): the table keeps its natural width, whatever COLUMNS says.
    result = CliRunner().invoke(app, ["data", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and max(len(line) for line in result.output.splitlines()) > 80
    for spec in CORPORA.values():
        assert spec.name in result.output and spec.license in result.output
    assert "bundled" in result.output and "download" in result.output


def test_with_no_network_a_hub_corpus_fails_at_once_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ABLAB_DATA", raising=False)
    monkeypatch.setenv("ABLAB_MIRROR", "http://ablab-no-such-host.invalid")  # .invalid never resolves (RFC 2606)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot be found: no network\?\); check the network, or set ABLAB_DATA "
                                        r"to a folder holding tinystories/TinyStoriesV2-GPT4-train.txt"):
        open_corpus("tinystories")
    assert time.monotonic() - start < 5  # not the downloader's retries with backoff
    assert not list((tmp_path / "cache").rglob("*.txt"))
