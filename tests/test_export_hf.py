import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from ablab.config import ModelConfig  # noqa: E402
from ablab.data.tokenizer import ByteTokenizer, CharTokenizer, train_bpe  # noqa: E402
from ablab.errors import UserError  # noqa: E402
from ablab.model.gpt import GPT  # noqa: E402
from ablab.train.export_hf import export_hf, export_run, llama_incompatibility  # noqa: E402

from conftest import TINY, run_cli  # noqa: E402

SEQ_LEN = 32
# Spaces, a tab, runs of newlines, punctuation and multi-byte characters: the cases a tokenizer
# mapping gets wrong first.
SAMPLE = "First Citizen:\nBefore we proceed, hear me speak.\n\n  All:\tSpeak, speak! — naïve café, 日本?\n"
CORPUS = (SAMPLE + "The quick brown fox jumps over the lazy dog; 'tis true, is it not?\n") * 60


@pytest.fixture(scope="module")
def tokenizers():
    return {"char": CharTokenizer.from_text(CORPUS), "byte": ByteTokenizer(), "bpe": train_bpe(CORPUS, 300)}


def tiny_model(vocab_size: int, seed: int = 0, **options) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, **options), vocab_size, SEQ_LEN)
    with torch.no_grad():  # gains of one would hide a norm weight exported to the wrong place
        for module in model.modules():
            if isinstance(module, torch.nn.RMSNorm):
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


def assert_same_logits(model: GPT, folder, vocab_size: int) -> None:
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(0, vocab_size, (3, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(ids), hf(ids).logits
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_as_llama_with_the_same_logits_and_ids(tmp_path, tokenizers, kind, tied):
    tokenizer = tokenizers[kind]
    model = tiny_model(tokenizer.vocab_size, tie_embeddings=tied)
    paths = export_hf(model, tokenizer, tmp_path / "hf")
    assert {p.name for p in paths} == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is tied
    assert_same_logits(model, tmp_path / "hf", tokenizer.vocab_size)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = hf_tokenizer(SAMPLE)["input_ids"]
    assert ids == tokenizer.encode(SAMPLE)
    assert len(ids) > 20 and (kind == "bpe" or len(ids) >= len(SAMPLE))  # no ids dropped or merged away
    assert hf_tokenizer.decode(ids) == SAMPLE


def test_a_perturbed_weight_changes_the_exported_logits(tmp_path, tokenizers):
    # The logits test must be able to fail: a model whose exported weights differ does not match.
    tokenizer = tokenizers["byte"]
    model = tiny_model(tokenizer.vocab_size)
    export_hf(model, tokenizer, tmp_path / "hf")
    with torch.no_grad():
        model.blocks[1].norm2.weight.mul_(1.5)
    with pytest.raises(AssertionError):
        assert_same_logits(model, tmp_path / "hf", tokenizer.vocab_size)


@pytest.mark.parametrize("option, value", [
    ("mlp", "gelu"), ("norm", "layernorm"), ("norm_position", "post"), ("positions", "learned"),
    ("qk_norm", True), ("layernorm_scaling", True),
])
def test_each_option_llama_lacks_is_refused_by_name(tmp_path, option, value):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, **{option: value})
    sentence = llama_incompatibility(cfg)
    assert sentence is not None and f"model.{option} = {value!r}" in sentence
    with pytest.raises(UserError, match=re.escape(f"model.{option}")):
        export_hf(GPT(cfg, 256, SEQ_LEN), ByteTokenizer(), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_options_that_do_not_change_inference_are_compatible():
    assert llama_incompatibility(ModelConfig()) is None
    assert llama_incompatibility(ModelConfig(dropout=0.1, prores_steps=100, activation_checkpointing=True,
                                             tie_embeddings=True, init_std=0.05, rope_base=500.0)) is None


def test_refuses_a_folder_that_is_not_an_earlier_export(tmp_path, tokenizers):
    model, tokenizer = tiny_model(256), tokenizers["byte"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export_hf(model, tokenizer, tmp_path / "notes")
    export_hf(model, tokenizer, tmp_path / "hf")
    export_hf(tiny_model(256, seed=3), tokenizer, tmp_path / "hf")  # an earlier export is overwritten
    assert_same_logits(tiny_model(256, seed=3), tmp_path / "hf", 256)


def test_export_run_of_a_trained_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 2, encoding="utf-8")
    assert run_cli("init", "lab", cwd=tmp_path).returncode == 0
    lab = tmp_path / "lab"
    result = run_cli("run", *TINY, f"data.corpus={corpus}", "data.tokenizer=byte", "train.max_steps=10",
                     "model.d_model=32", "model.d_ff=64", "data.seq_len=32", cwd=lab)
    assert result.returncode == 0, result.stderr
    run_id = re.search(r"run (\w+) finished after 10 steps", result.stdout).group(1)

    paths = export_run(lab, run_id[:6], tmp_path / "hf")
    assert tmp_path / "hf" / "ablab_export.json" in paths
    provenance = json.loads((tmp_path / "hf" / "ablab_export.json").read_text())
    assert provenance["run_id"] == run_id and provenance["step"] == 10 and provenance["tokenizer"] == "byte"

    from ablab.train.sampling import load_run_model

    model, tokenizer, _ = load_run_model(lab, run_id)
    assert_same_logits(model, tmp_path / "hf", tokenizer.vocab_size)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(SAMPLE)["input_ids"] == tokenizer.encode(SAMPLE)
