"""Export a trained ablab model as a Hugging Face transformers Llama checkpoint.

    export_run(lab, run_id, out_dir)   # config.json, model.safetensors, tokenizer files, provenance

ablab's default architecture (pre-norm RMSNorm, rotary positions, SwiGLU, no biases) is exactly
LlamaForCausalLM with as many key/value heads as query heads, so the export only renames and splits
weights; nothing is approximated. The rotary pairs already match Llama's rotate_half layout (first
half of each head with its second half), so q and k need no permutation. The files are written with
`tokenizers` and `safetensors` alone: transformers is needed to load the export, not to write it.

The tokenizer is written so that `AutoTokenizer.from_pretrained(out_dir)` encodes any text to the
ids ablab's tokenizer gives, with no special tokens added.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

import ablab
from ablab.config import ModelConfig
from ablab.data.cache import write_atomic
from ablab.data.tokenizer import BpeTokenizer, ByteTokenizer, CharTokenizer, Tokenizer
from ablab.errors import UserError
from ablab.model.gpt import GPT
from ablab.store.record import RunRecord
from ablab.train.sampling import load_run_model

# (field, the value Llama computes): every ModelConfig field that changes inference. dropout,
# prores_steps (alpha is 1 without a step), activation_checkpointing and init_std do not.
LLAMA_REQUIREMENTS = (
    ("norm", "rmsnorm"), ("norm_position", "pre"), ("positions", "rope"), ("mlp", "swiglu"),
    ("qk_norm", False), ("layernorm_scaling", False),
)
RMS_NORM_EPS = 1e-6  # what ablab.model.gpt.make_norm builds; Llama's rms_norm_eps must equal it


def llama_incompatibility(cfg: ModelConfig) -> str | None:
    """None when `cfg` maps exactly onto LlamaForCausalLM, else one sentence naming the option to change."""
    for name, needed in LLAMA_REQUIREMENTS:
        value = getattr(cfg, name)
        if value != needed:
            return (f"model.{name} = {value!r} has no Llama equivalent; "
                    f"export-hf needs model.{name} = {needed!r}.")
    return None


def llama_config(model: GPT) -> dict:
    """config.json of the LlamaForCausalLM that computes what `model` computes."""
    cfg = model.cfg
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": model.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": model.seq_len,
        # transformers 5 reads rope_parameters; 4.x reads the top-level rope_theta.
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
        "rope_theta": cfg.rope_base,
        "rms_norm_eps": RMS_NORM_EPS,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
        # transformers 5 reads dtype; 4.x reads torch_dtype.
        "dtype": "float32",
        "torch_dtype": "float32",
    }


def llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """`model`'s weights under Llama's names, as contiguous float32 CPU tensors."""
    d = model.cfg.d_model

    def plain(t: torch.Tensor) -> torch.Tensor:
        # clone: safetensors refuses tensors that share storage (the split qkv, a tied head)
        return t.detach().to("cpu", torch.float32).contiguous().clone()

    state = {"model.embed_tokens.weight": plain(model.wte.weight), "model.norm.weight": plain(model.norm_f.weight)}
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}"
        q, k, v = block.attn.qkv.weight.split(d, dim=0)  # rows: q, k, v, as Attention.forward splits
        state.update({
            f"{prefix}.self_attn.q_proj.weight": plain(q),
            f"{prefix}.self_attn.k_proj.weight": plain(k),
            f"{prefix}.self_attn.v_proj.weight": plain(v),
            f"{prefix}.self_attn.o_proj.weight": plain(block.attn.proj.weight),
            f"{prefix}.mlp.gate_proj.weight": plain(block.mlp.gate.weight),
            f"{prefix}.mlp.up_proj.weight": plain(block.mlp.up.weight),
            f"{prefix}.mlp.down_proj.weight": plain(block.mlp.down.weight),
            f"{prefix}.input_layernorm.weight": plain(block.norm1.weight),
            f"{prefix}.post_attention_layernorm.weight": plain(block.norm2.weight),
        })
    if not model.cfg.tie_embeddings:
        state["lm_head.weight"] = plain(model.head.weight)
    return state


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte: the alphabet of the ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """A `tokenizers` tokenizer that gives exactly `tokenizer`'s ids and adds no special tokens."""
    if isinstance(tokenizer, BpeTokenizer):
        return HFTokenizer.from_str(tokenizer.serialize())
    if isinstance(tokenizer, CharTokenizer):
        # A BPE with no merges and no pre-tokenizer splits the text into characters and looks each up,
        # so spaces and newlines are tokens like any other; Fuse joins them back without separators.
        hf = HFTokenizer(models.BPE({c: i for i, c in enumerate(tokenizer.chars)}, []))
        hf.decoder = decoders.Fuse()
        return hf
    if isinstance(tokenizer, ByteTokenizer):
        # Byte-level with no regex split and no merges: one token per UTF-8 byte, whose id is the byte.
        vocab = {char: byte for byte, char in bytes_to_unicode().items()}
        hf = HFTokenizer(models.BPE(vocab, []))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()
        return hf
    raise UserError(f"export-hf cannot write a {tokenizer.kind!r} tokenizer; train with data.tokenizer = "
                    "'char', 'byte' or 'bpe'.")


def tokenizer_config(model_max_length: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        # ablab's ids carry no bos/eos, and decoding must return the text unchanged.
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write into anything but a new or empty folder, or an earlier export (overwritten)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; give export-hf a folder to write the checkpoint into.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            earlier = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        if earlier.get("architectures") != ["LlamaForCausalLM"]:
            raise UserError(f"{out_dir} is not empty and holds no earlier Llama export; "
                            "give export-hf a new or empty folder.")


def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: Path) -> list[Path]:
    """Write `model` and `tokenizer` to `out_dir` as a LlamaForCausalLM checkpoint; the files written."""
    problem = llama_incompatibility(model.cfg)
    if problem:
        raise UserError(problem)
    if tokenizer.vocab_size > model.vocab_size:
        raise UserError(f"The tokenizer has {tokenizer.vocab_size} ids but the model only {model.vocab_size}; "
                        "export the tokenizer the model was trained with.")
    out_dir = Path(out_dir).expanduser()
    check_out_dir(out_dir)
    tensors = safetensors_bytes(llama_state_dict(model), metadata={"format": "pt"})
    contents = {
        "config.json": json_bytes(llama_config(model)),
        "model.safetensors": tensors,
        "tokenizer.json": hf_tokenizer(tokenizer).to_str().encode("utf-8"),
        "tokenizer_config.json": json_bytes(tokenizer_config(model.seq_len)),
    }
    for name, data in contents.items():
        write_atomic(out_dir / name, data)
    return [out_dir / name for name in contents]


def json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def export_run(lab: Path, run_id: str, out_dir: Path) -> list[Path]:
    """Export the newest intact checkpoint of run `run_id`, with an ablab_export.json saying where it came from."""
    full_id = RunRecord.open(lab, run_id).run_id
    model, tokenizer, step = load_run_model(lab, full_id)
    paths = export_hf(model, tokenizer, out_dir)
    provenance = {
        "run_id": full_id, "step": step, "tokenizer": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint, "ablab_version": ablab.__version__,
    }
    path = Path(out_dir).expanduser() / "ablab_export.json"
    write_atomic(path, json_bytes(provenance))
    return [*paths, path]
