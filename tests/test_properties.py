"""Property-based tests (hypothesis): any override of any config key, and any value of any study-spec
field, gives either a valid result or the user's error (ConfigError, UserError), never another
exception; a config that is accepted validates again and survives a round trip through TOML."""

from __future__ import annotations

import math
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablab import config as C
from ablab.errors import ConfigError, UserError
from ablab.study import spec as spec_mod

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like what people type for a value: numbers of every form, words, and odd text.
number_text = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.sampled_from(["nan", "inf", "-inf", "1e20", "1_000", "0x10", "", " ", "true", "none"]))
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any text UTF-8 can hold
value_text = st.one_of(number_text, text, st.sampled_from(["muon", "adamw", "bpe", "rope", "cosine"]))
overrides = st.lists(st.tuples(st.sampled_from(C.flat_keys()), value_text), min_size=1, max_size=4)


@FAST
@given(overrides)
def test_any_override_is_a_valid_config_or_a_config_error(items):
    try:
        cfg = C.load("quickstart", [f"{key}={value}" for key, value in items])
    except ConfigError:
        return
    C.validate(cfg)
    again = C.from_dict(tomllib.loads(C.save_toml(cfg)))
    assert C.config_hash(again) == C.config_hash(cfg) and C.flatten(again) == C.flatten(cfg)


# Any TOML value a study field could hold.
toml_scalar = st.one_of(st.integers(-2**64, 2**64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                        text, st.sampled_from(["final", "best", "tokens:100", "val_loss", "x@2026-01-01"]))
toml_value = st.one_of(toml_scalar, st.lists(toml_scalar, max_size=3),
                       st.dictionaries(st.sampled_from(["optim.lr", "a", "model.d_model"]),
                                       st.one_of(toml_scalar, st.lists(toml_scalar, max_size=2)), max_size=2))
FIELDS = [(section, key) for section, keys in spec_mod.SCHEMA.items() for key in keys] + [("design", "bogus")]
VALID = {
    "meta": {"name": "prop", "category": "optimizer", "date": "2026-11-21"},
    "objective": {"question": "q"},
    "hypothesis": {"mechanism": "m", "prediction": "p", "falsification": "f", "metric": "val_loss",
                   "direction": "decrease", "min_effect": 0.01, "read_at": "final"},
    "design": {"baseline": "tiny@2026-11-01", "axis": "steps", "budget": 4, "seeds": [0, 1],
               "variables": {"optim.lr": [0.03]}},
    "expected": {"outcomes": "o"},
}


@FAST
@given(st.lists(st.tuples(st.sampled_from(FIELDS), toml_value), min_size=1, max_size=3))
def test_any_study_field_value_is_a_spec_or_a_user_error(tmp_path_factory, changes):
    study = {section: dict(table) for section, table in VALID.items()}
    for (section, key), value in changes:
        study[section][key] = value
    path = tmp_path_factory.mktemp("spec") / "study.toml"
    path.write_text(C.dump_toml(study), encoding="utf-8")
    try:
        spec = spec_mod.parse(path)
    except UserError:
        return
    assert spec.seeds and all(0 <= s < 2**32 for s in spec.seeds) and len(set(spec.seeds)) == len(spec.seeds)
    assert math.isfinite(spec.budget) and spec.budget > 0
    assert math.isfinite(spec.prediction.min_effect) and spec.prediction.min_effect >= 0
    assert isinstance(spec.name, str) and "/" not in spec.name and not spec.name.startswith(".")
