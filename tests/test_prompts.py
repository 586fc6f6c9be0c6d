"""The fixed prompt suite (eval.prompts): continuations stored per run at each evaluation and the end,
generated through the KV cache (the same ids as without it), carried by export and import, refused
in one sentence when the suite does not exist, and shown side by side in a study sheet."""

import json
import sqlite3

import pytest
import torch

from ablab import config as C
from ablab.config import ModelConfig
from ablab.errors import ConfigError
from ablab.evals.prompts import BUNDLED_PROMPTS, bundled_suites, load_prompts
from ablab.model.gpt import GPT, KVCache
from ablab.report.sheets import write_sheet
from ablab.store.archive import export_lab, import_runs
from ablab.store.ledger import Ledger
from ablab.store.record import RunRecord
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study
from ablab.train.launch import resume_run, start_run

from conftest import TINY, run_cli

SUITE = "First Citizen:\n\nROMEO: I\n"  # two prompts; the blank line is no prompt


def run_samples(lab, run_id) -> list[dict]:
    """The run's samples as the ledger holds them, after checking that its samples.jsonl says the same."""
    with Ledger(lab) as ledger:
        rows = ledger.samples(run_id)
    assert rows == RunRecord.open(lab, run_id).samples()
    return rows


def tiny(*extra: str) -> C.Config:
    return C.load(None, [*TINY, "train.max_steps=10", "eval.every=5", "eval.prompt_tokens=12", *extra])


def own_suite(lab, name="mine"):
    (lab / "prompts").mkdir(exist_ok=True)
    (lab / "prompts" / f"{name}.txt").write_text(SUITE)
    return name


# -- the KV cache -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [{}, {"positions": "learned", "tie_embeddings": True},
                                   {"positions": "none", "norm_position": "post", "qk_norm": True, "mlp": "gelu"}])
def test_cached_generation_gives_the_ids_of_uncached_generation(model):
    torch.manual_seed(0)
    gpt = GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, **model), vocab_size=40, seq_len=16).eval()
    prompt = torch.randint(0, 40, (1, 5))
    for temperature in (0.0, 1.0):  # 5 + 20 tokens run past seq_len: the window slides uncached from there
        cached, uncached = (gpt.generate(prompt, 20, temperature, generator=torch.Generator().manual_seed(3),
                                         use_cache=use) for use in (True, False))
        assert torch.equal(cached, uncached), temperature


def test_each_cached_position_gives_the_logits_of_a_full_forward_pass():
    torch.manual_seed(1)
    gpt = GPT(ModelConfig(d_model=32, n_layers=3, n_heads=4, d_ff=64), vocab_size=40, seq_len=16).eval()
    ids = torch.randint(0, 40, (2, 12))
    full = gpt(ids)
    cache = KVCache(3)
    with torch.no_grad():
        prefill = gpt.head(gpt.hidden_states(ids[:, :4], cache=cache))
        steps = [gpt.head(gpt.hidden_states(ids[:, t:t + 1], cache=cache)) for t in range(4, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


# -- samples in a run ---------------------------------------------------------------------------------
def test_a_run_stores_greedy_and_sampled_continuations_at_each_evaluation_and_the_end(tmp_path):
    outcome = start_run(tiny(f"eval.prompts={own_suite(tmp_path)}", "seed=7"), tmp_path)
    rows = run_samples(tmp_path, outcome.run_id)
    assert sorted({row["step"] for row in rows}) == [0, 5, 10]
    assert [(r["prompt"], r["mode"]) for r in rows if r["step"] == 10] == [
        ("First Citizen:", "greedy"), ("First Citizen:", "sampled"), ("ROMEO: I", "greedy"), ("ROMEO: I", "sampled")]
    for row in rows:
        assert len(row["text"]) == 12  # char-level: one character per token
        assert row["seed"] is None if row["mode"] == "greedy" else isinstance(row["seed"], int)
    sampled = [r["seed"] for r in rows if r["mode"] == "sampled" and r["step"] == 0]
    assert len(set(sampled)) == 2  # each prompt draws from its own seed
    lines = (tmp_path / ".ablab" / "runs" / outcome.run_id / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows  # whole lines, one row each


def test_sampling_the_suite_changes_nothing_the_run_computes(tmp_path):
    plain = start_run(tiny(), tmp_path / "a")
    sampled = start_run(tiny("eval.prompts=tiny-shakespeare"), tmp_path / "b")
    assert sampled.result["final"]["val_loss"] == plain.result["final"]["val_loss"]
    assert sampled.result["final"]["train_loss"] == plain.result["final"]["train_loss"]
    assert run_samples(tmp_path / "a", plain.run_id) == []


def test_the_bundled_suites_load_and_the_labs_own_file_comes_first(tmp_path):
    assert {"tiny-shakespeare", "tinystories"} <= set(bundled_suites())
    for name in bundled_suites():
        assert load_prompts(tmp_path, name) == [line for line in
                                                (BUNDLED_PROMPTS / f"{name}.txt").read_text().splitlines() if line]
    own_suite(tmp_path, "tinystories")
    assert load_prompts(tmp_path, "tinystories") == ["First Citizen:", "ROMEO: I"]
    assert load_prompts(tmp_path, "") == []


def ledger_never_hears_the_end(monkeypatch):
    """As a kill before the ledger's row of a finished run is written leaves it: still `running` (a
    settled row cannot be set back, so the kill is simulated before the row settles, not after)."""
    finish_run = Ledger.finish_run
    monkeypatch.setattr(Ledger, "finish_run", lambda self, run_id, status, *rest:
                        None if status == "finished" else finish_run(self, run_id, status, *rest))


def test_a_resumed_run_keeps_no_samples_past_its_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(f"eval.prompts={own_suite(tmp_path)}", "train.checkpoint_every=5")
    with monkeypatch.context() as patch:
        ledger_never_hears_the_end(patch)
        outcome = start_run(cfg, tmp_path)
    record = RunRecord.open(tmp_path, outcome.run_id)
    before = record.samples()
    # As if killed after step 10's samples but before its checkpoint: the newest checkpoint is step 5.
    (record.checkpoints_dir / "step-00000010").rename(record.checkpoints_dir / ".gone")
    result = json.loads((record.dir / "result.json").read_text()) | {"status": "interrupted"}
    (record.dir / "result.json").write_text(json.dumps(result))
    resume_run(tmp_path, outcome.run_id)
    after = run_samples(tmp_path, outcome.run_id)  # the ledger dropped them too, then took step 10's again
    assert [r["step"] for r in after] == [r["step"] for r in before]
    assert after == before  # the same weights at each step give the same continuations


def test_samples_a_kill_kept_out_of_the_ledger_come_back_from_the_file(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        ledger_never_hears_the_end(patch)
        outcome = start_run(tiny(f"eval.prompts={own_suite(tmp_path)}"), tmp_path)
    written = run_samples(tmp_path, outcome.run_id)
    # As if killed after samples.jsonl and result.json were written but before the ledger heard of either.
    conn = sqlite3.connect(tmp_path / ".ablab" / "ledger.sqlite")
    with conn:
        conn.execute("DELETE FROM samples")
        conn.execute("UPDATE runs SET host='elsewhere', heartbeat=0 WHERE id=?", (outcome.run_id,))  # its process gone
    conn.close()
    assert run_samples(tmp_path, outcome.run_id) == written  # opening the ledger reconciled the run


# -- refusals -------------------------------------------------------------------------------------------
def test_an_unknown_suite_is_refused_in_one_sentence_before_any_record(tmp_path):
    with pytest.raises(ConfigError, match=r"prompts/nosuch\.txt does not exist"):
        load_prompts(tmp_path, "nosuch")
    result = run_cli("run", *TINY, "train.max_steps=2", "eval.prompts=nosuch", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(tmp_path / "prompts" / "nosuch.txt") in lines[0], result.stderr
    assert not (tmp_path / ".ablab" / "runs").exists() or not any((tmp_path / ".ablab" / "runs").iterdir())


@pytest.mark.parametrize("name", ["../secrets", "a/b", "my suite"])
def test_a_suite_name_that_is_a_path_is_refused(name):
    with pytest.raises(ConfigError, match="plain name"):
        C.load(None, [f"eval.prompts={name}"])


def test_an_empty_suite_is_refused(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "blank.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no prompt"):
        load_prompts(tmp_path, "blank")


# -- export and import ------------------------------------------------------------------------------
def test_export_then_import_keeps_the_samples(tmp_path):
    lab, other = tmp_path / "lab", tmp_path / "other"
    lab.mkdir()
    other.mkdir()
    outcome = start_run(tiny(f"eval.prompts={own_suite(lab)}", "train.max_steps=5"), lab)
    archive = tmp_path / "runs.tar.gz"
    export_lab(lab, archive, [outcome.run_id])
    assert import_runs(other, [archive]).imported == [outcome.run_id]
    assert run_samples(other, outcome.run_id) == run_samples(lab, outcome.run_id) != []
    with Ledger(other) as ledger:
        assert ledger.delete_run(outcome.run_id)["samples"] == len(run_samples(lab, outcome.run_id))
        assert ledger.samples(outcome.run_id) == []


# -- the study sheet -------------------------------------------------------------------------------------
STUDY = """[meta]
name = "wide"
category = "architecture"
date = "2026-12-03"
[objective]
question = "Does a wider MLP change what the model writes?"
[hypothesis]
mechanism = "more capacity"
prediction = "val_loss falls by at least 0.01"
falsification = "val_loss does not fall"
metric = "val_loss"
direction = "decrease"
min_effect = 0.01
read_at = "final"
[design]
baseline = "tiny@2026-12-03"
axis = "steps"
budget = 6
seeds = [0]
[design.arms.wide]
"model.d_ff" = 256
"""


@pytest.mark.parametrize("executor", ["inline", "local"])  # local: workers send their samples through the driver
def test_a_study_sheet_shows_each_prompt_with_the_baseline_and_each_arm_side_by_side(tmp_path, executor):
    cfg = C.load(None, [*TINY, "train.max_steps=6", "eval.every=3", "eval.prompt_tokens=10",
                        f"eval.prompts={own_suite(tmp_path)}"])
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-12-03", cfg, [0]))
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "wide.toml").write_text(STUDY)
    plan = make_plan(tmp_path, tmp_path / "studies" / "wide.toml", probe=False)
    assert run_study(tmp_path, plan, say=lambda s: None, executor=executor,
                     workers=2 if executor == "local" else None) == "finished"
    text = write_sheet(tmp_path, "wide").read_text()
    section = text.split("### Samples", 1)[1].split("###", 1)[0]
    assert "at step 6" in section
    header = next(line for line in section.splitlines() if line.startswith("| prompt"))
    assert header == "| prompt | mode | baseline | wide |"
    with Ledger(tmp_path) as ledger:
        ids = {arm: ledger.study_runs("wide")[(arm, 0)] for arm in ("baseline", "wide")}
    for arm, run_id in ids.items():
        for row in (r for r in run_samples(tmp_path, run_id) if r["step"] == 6):
            assert row["text"].replace("\n", "↵").replace("|", "\\|") in section, (arm, row)
    rows = [line for line in section.splitlines() if line.startswith("| First Citizen:")]
    assert [line.split(" | ")[1] for line in rows] == ["greedy", "sampled"]
