import os
import subprocess
import sys

import pytest

from ablab import config as C
from ablab.errors import ConfigError


def test_overrides_are_coerced_to_field_types():
    cfg = C.load(None, ["model.d_model=256", "model.n_heads=8", "optim.lr=1e-3", "train.compile=true",
                        "model.norm=layernorm", "seed=7", "train.max_tokens=1_000_000", "train.max_steps=2e3"])
    assert cfg.model.d_model == 256 and isinstance(cfg.model.d_model, int)
    assert cfg.optim.lr == 1e-3 and cfg.train.compile is True
    assert cfg.model.norm == "layernorm" and cfg.seed == 7
    assert cfg.train.max_tokens == 1_000_000 and cfg.train.max_steps == 2000


@pytest.mark.parametrize("override, words", [
    ("model.d_modle=3", ["model.d_modle", "Did you mean 'model.d_model'"]),
    ("optim.lr=fast", ["optim.lr must be a number", "'fast'"]),
    ("model.n_layers=2.5", ["model.n_layers must be an integer"]),
    ("train.compile=maybe", ["true or false"]),
    ("model.norm=rms", ["must be one of", "Did you mean 'rmsnorm'"]),
    ("model.d_model", ["section.key=value"]),
    ("model.n_heads=3", ["not divisible by model.n_heads", "pick n_heads"]),
    ("train.max_steps=0", ["No stopping rule"]),
    ("data.batch_size=-1", ["data.batch_size must be positive"]),
])
def test_bad_overrides_fail_with_a_sentence_naming_the_fix(override, words):
    with pytest.raises(ConfigError) as err:
        C.load(None, [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_key_in_a_toml_file_is_rejected(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nn_layer = 4\n")
    with pytest.raises(ConfigError, match=r"model.n_layer.*Did you mean 'model.n_layers'"):
        C.load(path)
    path.write_text("[modle]\nn_layers = 4\n")
    with pytest.raises(ConfigError, match="Did you mean 'model'"):
        C.load(path)
    path.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        C.load(path)


def test_hash_ignores_cosmetic_fields_and_tracks_the_rest():
    base = C.Config()
    assert C.config_hash(base) == C.config_hash(C.Config())
    cosmetic = C.load(None, ["name=other", "train.log_every=7", "train.checkpoint_every=3"])
    assert C.config_hash(cosmetic) == C.config_hash(base)
    for change in ["seed=1", "model.d_ff=256", "optim.lr=0.01", "data.corpus=x.txt", "eval.every=100"]:
        assert C.config_hash(C.load(None, [change])) != C.config_hash(base), change


def test_hash_is_stable_across_processes():
    code = "from ablab import config as C; print(C.config_hash(C.load('quickstart')))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outputs == {C.config_hash(C.load("quickstart"))}


def test_diff_lists_exactly_the_changed_keys():
    a = C.Config()
    b = C.load(None, ["model.d_model=192", "model.n_heads=6", "seed=3"])
    assert C.diff(a, b) == [("seed", 0, 3), ("model.d_model", 128, 192), ("model.n_heads", 4, 6)]
    assert C.diff(a, a) == []


def test_canonical_json_and_toml_round_trip():
    cfg = C.load(None, ["model.mlp=gelu", "train.max_seconds=12.5", "name=x y"])
    assert C.canonical_json(cfg) == C.canonical_json(C.from_dict(C.to_dict(cfg)))
    path_text = C.save_toml(cfg)
    import tomllib
    assert C.from_dict(tomllib.loads(path_text)) == cfg


def test_every_shipped_preset_loads_and_validates():
    names = sorted(p.stem for p in C.PRESETS_DIR.glob("*.toml"))
    assert {"quickstart", "small", "medium", "large", "xlarge"} <= set(names)
    for name in names:
        cfg = C.load(name)
        assert cfg.name == name
    medium = C.load("medium")
    assert (medium.model.d_model, medium.model.n_layers, medium.model.n_heads, medium.model.d_ff) == (384, 6, 8, 1536)


def test_unknown_config_file_names_the_presets():
    with pytest.raises(ConfigError, match="quickstart"):
        C.load("no-such-config")
