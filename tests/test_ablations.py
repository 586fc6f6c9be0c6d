"""Data ablations: mixtures and tokenizers in the config, the first N documents or tokens of a
training split (subset.limit), a weighted mixture of corpora (mixture.py), the epochs warning, and a
data-size study whose plan shows each arm's data tokens."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ablab import config as C
from ablab import config_keys as K
from ablab.cli.main import app
from ablab.data import mixture, subset, tokens
from ablab.data.prepare import prepare_data
from ablab.data.tokenizer import ByteTokenizer
from ablab.errors import ConfigError, DataError
from ablab.study import baselines
from ablab.study.runner import make_plan

from conftest import TINY, run_cli
from test_study import write_study

# --- the config ---------------------------------------------------------------------------------

def test_a_mixture_from_toml_and_from_the_command_line_is_one_config(tmp_path):
    path = tmp_path / "mix.toml"
    path.write_text('[data]\ncorpus = { tinystories = 0.7, gutenberg = 0.3 }\n', encoding="utf-8")
    from_toml = C.load(path)
    from_cli = C.load(None, ["data.corpus={gutenberg=0.3,tinystories=0.7}"])
    assert from_toml.data.corpus == from_cli.data.corpus == {"gutenberg": 0.3, "tinystories": 0.7}
    assert list(from_toml.data.corpus) == ["gutenberg", "tinystories"]  # one spelling: names sorted
    assert C.config_hash(from_toml) == C.config_hash(from_cli)
    integers = C.load(None, ["data.corpus={tinystories=7,gutenberg=3}"])
    assert integers.data.corpus == {"gutenberg": 3.0, "tinystories": 7.0}
    assert C.config_hash(integers) != C.config_hash(from_cli)  # other weights, another run
    assert C.diff(C.Config(), from_cli) == [("data.corpus", "tiny-shakespeare", from_cli.data.corpus)]


def test_a_mixture_round_trips_through_save_toml_and_config_show(tmp_path):
    cfg = C.load("quickstart", ["data.corpus={tinystories=0.7,gutenberg=0.3}", "data.max_documents=1000"])
    saved = tmp_path / "saved.toml"
    saved.write_text(C.save_toml(cfg), encoding="utf-8")
    assert "corpus = {gutenberg = 0.3, tinystories = 0.7}" in saved.read_text()
    assert C.load(saved) == cfg and C.config_hash(C.load(saved)) == C.config_hash(cfg)
    shown = tmp_path / "shown.toml"
    shown.write_text(K.commented_toml(cfg), encoding="utf-8")
    assert C.config_hash(C.load(shown)) == C.config_hash(cfg)
    assert C.flatten(cfg)["data.corpus"] == {"gutenberg": 0.3, "tinystories": 0.7}


@pytest.mark.parametrize("value, words", [
    ("{tinystories=1}", "needs at least 2 corpora, not 1"),
    ("{tinystories=0.7,gutenberg=-0.3}", "the weight of 'gutenberg' must be a positive number, not -0.3"),
    ("{tinystories=0.7,gutenberg=0}", "the weight of 'gutenberg' must be a positive number, not 0"),
    ("{tinystories=0.7,gutenberg=true}", "the weight of 'gutenberg' must be a positive number, not True"),
    ("{tinystories=0.7,gutenberg='x'}", "the weight of 'gutenberg' must be a positive number"),
    ("{tinystories=0.7,gutenberg=inf}", "the weight of 'gutenberg' must be a positive number"),
    ("{tinystories=0.7", "is not a TOML inline table of corpus weights"),
    ("{}", "needs at least 2 corpora, not 0"),
])
def test_bad_mixtures_are_refused_in_one_sentence(value, words):
    with pytest.raises(ConfigError) as err:
        C.load(None, [f"data.corpus={value}"])
    assert words in str(err.value) and "data.corpus" in str(err.value)
    assert str(err.value).replace("e.g. ", "").count(". ") == 0, str(err.value)  # one sentence


def test_a_mixture_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "list.toml"
    path.write_text('[data]\ncorpus = ["tinystories", "gutenberg"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a corpus name or path, or a table of corpus weights"):
        C.load(path)


def test_tokenizers_hf_accepted_junk_refused(tmp_path):
    assert C.load(None, ["data.tokenizer=hf:gpt2"]).data.tokenizer == "hf:gpt2"
    assert C.load(None, ["data.tokenizer=hf:./my/tokenizer.json"]).data.tokenizer == "hf:./my/tokenizer.json"
    for kind in ("char", "byte", "bpe"):
        assert C.load(None, [f"data.tokenizer={kind}"]).data.tokenizer == kind
    with pytest.raises(ConfigError, match=r"data.tokenizer must be 'char', 'byte', 'bpe' or 'hf:PATH_OR_ID'.*"
                                          r"not 'bpee'\. Did you mean 'bpe'\?"):
        C.load(None, ["data.tokenizer=bpee"])
    with pytest.raises(ConfigError, match="not 'hf:'"):
        C.load(None, ["data.tokenizer=hf:"])
    result = run_cli("run", "-c", "quickstart", "data.tokenizer=wordpiece", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if "data.tokenizer must be" in line]


def test_the_new_keys_are_listed_and_ranged():
    rows = {row["key"]: row for row in K.describe_keys()}
    assert rows["data.corpus"]["type"] == "str or table"
    assert rows["data.tokenizer"]["choices"] == ["char", "byte", "bpe", "hf:PATH_OR_ID"]
    for key in ("data.max_documents", "data.max_train_tokens", "data.shards"):
        assert rows[key]["comment"] and rows[key]["default"] == 0 and key in C.RANGES
        with pytest.raises(ConfigError, match=key):
            C.load(None, [f"{key}=-1"])


# --- the epochs warning -------------------------------------------------------------------------

def test_the_epoch_warning_fires_above_four_epochs_and_not_below():
    cfg = C.load(None, ["train.max_steps=100", "data.batch_size=32", "data.seq_len=128"])  # 409,600 tokens
    assert C.epoch_warning(cfg, 409_600 // 4) is None  # exactly 4 epochs
    assert C.epoch_warning(cfg, 409_600) is None
    warning = C.epoch_warning(cfg, 5_000)
    assert warning == ("This run reads its 5,000 training tokens about 82 times (82 epochs); give it more data "
                       "(data.corpus) or train less (train.max_tokens or train.max_steps).")
    by_tokens = C.replace(cfg, {"train.max_steps": 0, "train.max_tokens": 4096 * 50})  # 50 steps
    assert "about 41 times" in C.epoch_warning(by_tokens, 5_000)
    seconds_only = C.replace(cfg, {"train.max_steps": 0, "train.max_seconds": 60.0})
    assert C.epoch_warning(seconds_only, 5_000) is None  # no step budget: nothing to say
    assert C.epoch_warning(cfg, 0) is None


# --- subset.limit on hand-built data ------------------------------------------------------------

DOC_ENDS = [[10, 20], [25, 50], [40, 80], [70, 140], [100, 200]]  # [token_end, byte_end] of 5 documents


def hand_built(tmp_path: Path) -> tokens.PreparedData:
    train, val = np.arange(100, dtype=np.uint16), np.arange(30, dtype=np.uint16)[::-1].copy()
    meta = {"corpus": "hand-built", "n_train_tokens": 100, "n_val_tokens": 30, "train_bytes": 200, "val_bytes": 60,
            "n_train_documents": 5, "n_val_documents": 2, "fingerprint": "f" * 64}
    return tokens.PreparedData(train=train, val=val, tokenizer=ByteTokenizer(), fingerprint="f" * 64, meta=meta,
                               dir=tmp_path, train_docs=np.array(DOC_ENDS, dtype=np.int64),
                               val_docs=np.array([[12, 24], [30, 60]], dtype=np.int64))


def limited(prepared, **limits):
    return subset.limit(prepared, C.load(None, [f"data.{k}={v}" for k, v in limits.items()]).data)


def test_no_limit_is_the_same_data(tmp_path):
    prepared = hand_built(tmp_path)
    assert subset.limit(prepared, C.DataConfig()) is prepared


def test_the_first_documents_exactly(tmp_path):
    prepared = hand_built(tmp_path)
    two = limited(prepared, max_documents=2)
    assert two.train.tolist() == list(range(25)) and two.train_docs.tolist() == DOC_ENDS[:2]
    assert two.val is prepared.val and two.val_docs is prepared.val_docs  # validation unchanged
    assert (two.meta["n_train_tokens"], two.meta["n_train_documents"], two.meta["train_bytes"]) == (25, 2, 50)
    assert two.meta["n_val_tokens"] == 30 and prepared.meta["n_train_tokens"] == 100  # the parent's meta untouched
    assert two.meta["subset"]["cut"] == "document" and two.meta["subset"]["train_bytes_exact"] is True
    assert two.meta["subset"]["full"] == {"n_train_tokens": 100, "n_train_documents": 5, "train_bytes": 200,
                                          "fingerprint": "f" * 64}
    assert two.fingerprint == two.meta["fingerprint"] == subset.subset_fingerprint("f" * 64, 25) != prepared.fingerprint
    assert limited(prepared, max_documents=3).fingerprint not in (two.fingerprint, prepared.fingerprint)
    assert limited(prepared, max_documents=5).fingerprint == prepared.fingerprint  # all of it: the same tokens


def test_the_first_tokens_exactly(tmp_path):
    prepared = hand_built(tmp_path)
    cut = limited(prepared, max_train_tokens=30)
    assert cut.train.tolist() == list(range(30)) and len(cut.train) == cut.meta["n_train_tokens"] == 30
    # Documents 1-2 whole, the third cut after 5 of its 15 tokens: its bytes counted pro rata (10 of 30).
    assert cut.train_docs.tolist() == [[10, 20], [25, 50], [30, 60]]
    assert cut.meta["train_bytes"] == 60 and cut.meta["n_train_documents"] == 3
    assert cut.meta["subset"]["cut"] == "token" and cut.meta["subset"]["train_bytes_exact"] is False
    assert cut.val is prepared.val
    # Two limits that keep the same tokens are the same data; both limits: the smaller cut wins.
    assert limited(prepared, max_train_tokens=25).fingerprint == limited(prepared, max_documents=2).fingerprint
    both = limited(prepared, max_documents=3, max_train_tokens=30)
    assert len(both.train) == 30 and both.fingerprint == cut.fingerprint
    assert len(limited(prepared, max_documents=1, max_train_tokens=30).train) == 10
    assert limited(prepared, max_train_tokens=5).train_docs.tolist() == [[5, 10]]  # inside the first document


def test_a_limit_larger_than_the_split_is_refused(tmp_path):
    prepared = hand_built(tmp_path)
    with pytest.raises(DataError, match=r"data.max_documents=10 is more than the 5 documents in the training split "
                                        r"of 'hand-built'; set it to at most 5"):
        limited(prepared, max_documents=10)
    with pytest.raises(DataError, match=r"data.max_train_tokens=101 is more than the 100 tokens"):
        limited(prepared, max_train_tokens=101)


# --- the mixture's layout -----------------------------------------------------------------------

def test_the_layout_keeps_the_weights_within_every_block_and_repeats_nothing():
    rng = np.random.default_rng(0)
    lengths = [rng.integers(5, 30, size=2000), rng.integers(10, 50, size=300)]
    docs = [np.stack([np.cumsum(n), 2 * np.cumsum(n)], axis=1) for n in lengths]
    arrays = [np.full(int(d[-1, 0]), i, dtype=np.uint16) for i, d in enumerate(docs)]
    weights = mixture.normalised([0.7, 0.3])
    segments = mixture.interleave([d[:, 0] for d in docs], weights, seed=5, block_tokens=1000)
    out, table = mixture.materialise(arrays, docs, segments)
    assert int((out == 1).sum()) == int(docs[1][-1, 0])  # the scarce component gives all its tokens, once
    assert abs((out == 0).mean() - 0.7) < 0.01
    for start in range(0, len(out) - 1000, 1000):  # within one document (< 50 tokens) in every block
        assert abs((out[start:start + 1000] == 0).mean() - 0.7) < 0.08
    for component in (0, 1):  # every document at most once, in corpus order
        mine = [(s.first, s.stop) for s in segments if s.component == component]
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:])) and mine[0][0] == 0
    assert table[-1].tolist() == [len(out), 2 * len(out)] and np.all(np.diff(table[:, 0]) > 0)
    again = mixture.interleave([d[:, 0] for d in docs], weights, seed=5, block_tokens=1000)
    assert again == segments  # deterministic
    assert mixture.interleave([d[:, 0] for d in docs], weights, seed=6, block_tokens=1000) != segments


def test_a_component_too_light_for_one_document_is_refused():
    ends = [np.array([1000, 2000]), np.array([10, 20, 30])]
    with pytest.raises(DataError, match="Mixture component 'b' gets no whole document"):
        mixture.interleave(ends, mixture.normalised([0.999, 0.001]), seed=0, names=["a", "b"])


# --- with the pipeline: a mixture prepared, and a data-size study planned -------------------------

def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def test_a_two_corpus_mixture_prepares_with_weights_and_each_one_s_own_validation(tmp_path):
    words_a, words_b = ["apple", "banana", "cedar"], ["xylo", "yurt", "zonk"]
    a = write_jsonl(tmp_path / "a.jsonl", [" ".join(words_a[(i + k) % 3] for k in range(3 + i % 5)) + f" {i}"
                                           for i in range(600)])
    b = write_jsonl(tmp_path / "b.jsonl", [" ".join(words_b[(i + k) % 3] for k in range(4 + i % 3)) + f" {i}"
                                           for i in range(300)])
    cfg = C.load(None, [f'data.corpus={{"{a}"=0.7,"{b}"=0.3}}', "data.tokenizer=byte"]).data
    mixed = prepare_data(cfg)
    parts = [prepare_data(C.replace(C.Config(), {"data.corpus": str(p), "data.tokenizer": "byte"}).data)
             for p in (a, b)]
    used = {Path(c["corpus"]).name: c for c in mixed.meta["components"]}
    assert used["a.jsonl"]["weight"] == 0.7 and used["a.jsonl"]["fingerprint"] == parts[0].fingerprint
    share = used["a.jsonl"]["n_train_tokens"] / len(mixed.train)
    assert abs(share - 0.7) < 0.02 and len(mixed.train) == sum(c["n_train_tokens"] for c in used.values())
    assert max(c["n_train_tokens"] / c["n_train_tokens_available"] for c in used.values()) == 1.0  # the scarce one whole
    letters_a, letters_b = set("".join(words_a).encode()), set("".join(words_b).encode())
    for split in ("train", "val"):  # the letters only one corpus writes tell its tokens apart
        for own, letters in zip(parts, (letters_a - letters_b, letters_b - letters_a)):
            ids = np.isin(getattr(mixed, split), list(letters))
            mine = np.isin(getattr(own, split), list(letters))
            # The component's letters in the mixture are those of its own split's first documents.
            assert np.asarray(getattr(mixed, split))[ids].tolist() == \
                np.asarray(getattr(own, split))[mine][:int(ids.sum())].tolist()
    assert prepare_data(cfg).fingerprint == mixed.fingerprint  # found again, the same
    other = C.load(None, [f'data.corpus={{"{a}"=0.5,"{b}"=0.5}}', "data.tokenizer=byte"]).data
    assert prepare_data(other).fingerprint != mixed.fingerprint


def test_a_data_size_study_plans_three_arms_with_their_data_tokens(tmp_path):
    corpus = write_jsonl(tmp_path / "stories.jsonl", [f"Story {i}: the cat sat on mat number {i % 97}."
                                                       for i in range(13_000)])
    lab = tmp_path / "lab"
    cfg = C.load(None, [*TINY, "train.max_steps=20", f"data.corpus={corpus}", "data.tokenizer=byte",
                        "data.max_documents=3000"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0]))
    path = write_study(lab, "data-size", 'variables = { "data.max_documents" = [1000, 10000] }', seeds="[0]",
                       budget=20 * 16 * 64)
    plan = make_plan(lab, path, probe=False)
    counts = [row.data_tokens for row in plan.rows]
    expected = [len(prepare_data(C.replace(cfg, {"data.max_documents": n}).data).train)
                for n in (3000, 1000, 10000)]
    assert counts == expected and len(set(counts)) == 3 and counts[1] < counts[0] < counts[2]
    result = CliRunner().invoke(app, ["study", "plan", str(path), "--no-probe", "--lab", str(lab)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "data tokens" in result.output and "epochs" in result.output
    for row, count in zip(plan.rows, counts):
        line = next(line for line in result.output.splitlines()
                    if "│" in line and re.search(rf"│ {re.escape(row.arm.name)} ", line))
        assert f"{count:,}" in line and f"{row.tokens / count:,.2f}" in line


def test_the_shipped_data_size_studies_plan_and_the_gpu_one_downloads_nothing(tmp_path, shared_data):
    baselines.install_examples(tmp_path)
    cpu = make_plan(tmp_path, tmp_path / "studies" / "data-size-cpu.toml", probe=False)
    counts = [row.data_tokens for row in cpu.rows]  # all 2,316 stories, then the first 200, 600, 2,000
    assert counts[1] < counts[2] < counts[3] < counts[0]
    assert cpu.rows[1].epochs > 1 > cpu.rows[3].epochs
    gpu = tmp_path / "studies" / "data-size.toml"  # TinyStories V2 is not on this machine: nothing is fetched
    plan = make_plan(tmp_path, gpu, probe=False)
    assert all(row.data_tokens is None and row.epochs is None and row.to_train == 3 for row in plan.rows)
    assert all(row.params > 0 for row in plan.rows)  # from the BPE's requested vocabulary
    shown = CliRunner().invoke(app, ["study", "plan", str(gpu), "--no-probe", "--lab", str(tmp_path)],
                               terminal_width=200)
    assert shown.exit_code == 0, shown.output
    baseline_line = next(line for line in shown.output.splitlines() if line.startswith("│ baseline "))
    assert baseline_line.rstrip("│ ").endswith("?")  # data tokens and epochs unknown
