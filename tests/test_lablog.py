"""Scoped claims, `study conclude --override`, the complete lab log (CS336 format) and the researcher's
findings and recommendations, on a real tiny study (2 arms x 2 seeds, 10 steps) in a lab that is a git
checkout; a GPU-trained copy of its runs is written the way `ablab import` writes records."""

import dataclasses
import html
import json
import re
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ablab import config as C
from ablab.analysis import stats
from ablab.analysis.scope import scope_sentences
from ablab.analysis.verdicts import analyze, status
from ablab.api import Lab
from ablab.errors import UserError
from ablab.report.html import build_report
from ablab.report.lablog import write_log
from ablab.report.log_notes import add_note, read_notes
from ablab.report.sheets import write_sheet
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.conclusion import adopted_arms, conclude
from ablab.study.runner import make_plan, run_study

from conftest import TINY, run_cli
from test_study import write_study

H100 = "NVIDIA H100 80GB HBM3"


def _git(lab: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(lab), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    lab = tmp_path_factory.mktemp("lablog")
    cfg = C.load(None, [*TINY, "train.max_steps=10", "train.max_tokens=0", "train.max_seconds=0", "eval.every=5"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    # min_effect 1.0 cannot be reached in 10 steps: the arm's verdict is never "supported".
    write_study(lab, "wide", '[design.arms.fast]\n"optim.lr" = 0.04', seeds="[0, 1]", budget=10, axis="steps",
                baseline="tiny@2026-11-01", category="hyperparameter",
                question="Does a doubled learning rate lower the loss?", min_effect=1.0)
    _git(lab, "init", "-q")
    _git(lab, "add", "studies")
    _git(lab, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the study")
    assert run_study(lab, make_plan(lab, lab / "studies" / "wide.toml", probe=False), say=lambda s: None) == "finished"
    return lab


def _runs(lab: Path, name: str = "wide") -> dict:
    return status(lab, name)[1]


def _scopes(lab: Path, name: str) -> dict[str, str]:
    record, results, _ = analyze(lab, name)
    return scope_sentences(record["spec"], _runs(lab, name), results)


def _gpu_copy(lab: Path, name: str, seeds_on_gpu: tuple[int, ...]) -> None:
    """Study `name`: study wide's cells, the runs of `seeds_on_gpu` replaced by copies trained (so
    their records say) on an H100, imported under new ids as `ablab import` writes a record."""
    with Ledger(lab) as ledger:
        wide = ledger.study("wide")
        ledger.save_study(name, wide["baseline"], {**wide["spec"], "name": name})
        for (arm, seed), run in _runs(lab).items():
            if seed in seeds_on_gpu:
                host = {**run.provenance["host"], "gpu": {"count": 1, "models": [H100], "cuda": "12.4"}}
                hardware = {**run.result["hardware"], "device": "cuda", "gpu": H100}
                metrics = ledger.metrics(run.id)
                run = dataclasses.replace(run, id=f"{name}-{arm}-{seed}", provenance={**run.provenance, "host": host},
                                          result={**run.result, "hardware": hardware})
                assert ledger.import_run(run, metrics, [], [], [])
            ledger.link_study_run(name, arm, seed, run.id)


def test_scope_names_params_tokens_corpus_axis_seeds_cpu_and_effect(lab):
    runs = _runs(lab)
    fast = [runs[("fast", s)] for s in (0, 1)]
    params = fast[0].result["params"]
    _, results, _ = analyze(lab, "wide")
    c = next(r.comparison for r in results if r.arm == "fast")
    cpu = fast[0].provenance["host"]["cpu"]
    sentence = _scopes(lab, "wide")["fast"]
    verdict = next(r.verdict.outcome for r in results if r.arm == "fast")
    assert sentence.startswith(f"{verdict} at {params / 1e3:.3g}K params, ")
    assert f"{fast[0].result['tokens_seen']:,} tokens of tiny-shakespeare (char)" in sentence
    assert ", equal steps, 2 seeds, " in sentence and f"CPU ({cpu})" in sentence
    assert f"val loss (final) {c.mean_diff:+.3g} (95% CI {c.ci_low:+.3g} to {c.ci_high:+.3g})" in sentence
    assert "GPU" not in sentence
    out = run_cli("study", "status", "wide", "--lab", str(lab), cwd=lab)
    assert out.returncode == 0, out.stderr
    assert f"scope: {sentence}" in out.stdout
    doc = json.loads(run_cli("study", "status", "wide", "--json", "--lab", str(lab), cwd=lab).stdout)
    assert [(v["arm"], v["scope"]) for v in doc["verdicts"]] == [("fast", sentence)]


def test_scope_of_runs_recorded_on_a_gpu_names_the_gpu(lab):
    _gpu_copy(lab, "wide-gpu", seeds_on_gpu=(0, 1))
    sentence = _scopes(lab, "wide-gpu")["fast"]
    assert f"GPU ({H100})" in sentence and "CPU" not in sentence
    assert "tokens of tiny-shakespeare (char), equal steps, 2 seeds" in sentence
    _gpu_copy(lab, "wide-mixed", seeds_on_gpu=(1,))  # one seed on each: said, not hidden
    assert re.search(r"mixed: CPU \(.*\); GPU \(NVIDIA H100", _scopes(lab, "wide-mixed")["fast"])
    log = write_log(lab).read_text()
    assert re.search(rf"\| GPU \({H100}\) \| [^|]+ \| 12\.4 \| Linux", log)  # the environment appendix
    with Ledger(lab) as ledger:  # the other tests read a lab of study wide alone
        for name in ("wide-gpu", "wide-mixed"):
            ledger.conn.execute("DELETE FROM study_runs WHERE study=?", (name,))
            ledger.conn.execute("DELETE FROM studies WHERE name=?", (name,))
        ledger.conn.commit()


def test_adopted_arms_reads_the_decision():
    arms = ["baseline", "optim.lr=0.04", "optim.lr=0.045"]
    assert adopted_arms("adopt optim.lr=0.04.", arms) == ["optim.lr=0.04"]
    assert adopted_arms("Promote optim.lr=0.045 and optim.lr=0.04", arms) == ["optim.lr=0.04", "optim.lr=0.045"]
    assert adopted_arms("keep the baseline; do not adopt optim.lr=0.04", arms) == []
    assert adopted_arms("adopt the baseline", arms) == []
    assert adopted_arms("adopt it", ["baseline", "fast"]) == ["fast"]  # the only arm
    assert adopted_arms("adopt it", arms) == []  # which of two? none named


def test_conclude_refuses_adopting_an_unsupported_arm_without_override(lab):
    verdict = next(r.verdict.outcome for r in analyze(lab, "wide")[1] if r.arm == "fast")
    assert verdict != "supported"
    refused = run_cli("study", "conclude", "wide", "--decision", "adopt fast", "--lab", str(lab), cwd=lab)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"fast is {verdict}" in refused.stderr and "--override" in refused.stderr
    with Ledger(lab) as ledger:
        assert "decision" not in ledger.study("wide")["data"].get("conclusion", {})  # nothing stored
    reason = "the same change won at 21M params in study lr-21m"
    Lab(lab).study("wide").conclude(decision="adopt fast", override=reason)  # what the CLI calls; the sheet too
    with Ledger(lab) as ledger:
        override = ledger.study("wide")["data"]["conclusion"]["override"]
    assert override["reason"] == reason and override["arms"] == {"fast": verdict} and override["time"]
    sheet = (lab / "reports" / "studies" / "wide.md").read_text()
    decision = sheet.split("## 10. Decision")[1].split("## 11.")[0]
    assert "adopt fast" in decision and reason in decision and f"fast ({verdict})" in decision
    assert reason in (lab / "reports" / "LOG.md").read_text()
    page = html.unescape(build_report(lab, lab / "site", plots=False).read_text())
    assert reason in page and f"Claim for fast</dt><dd>{_scopes(lab, 'wide')['fast']}</dd>" in page
    conclude(lab, "wide", {"decision": "keep the baseline"})  # not adopting needs no reason; the old override goes
    with Ledger(lab) as ledger:
        assert "override" not in ledger.study("wide")["data"]["conclusion"]


def _pct(runs: dict, arm: str) -> float:
    mine, base = ([runs[(a, s)].result["final"]["val_loss"] for s in (0, 1)] for a in (arm, "baseline"))
    return 100 * (sum(mine) - sum(base)) / sum(base)


def test_log_holds_every_item_of_the_format(lab):
    runs = _runs(lab)
    for png in (lab / "reports" / "studies").glob("wide-loss-*.png"):
        png.unlink()  # the log draws the curves it links to when the sheet has not
    log = write_log(lab).read_text()
    entry = log.split("## Experiment 1: wide")[1].split("## Key findings")[0]
    assert "- **Date**: 2026-11-21" in entry and "`wide` (category: hyperparameter)" in entry
    assert "**Hypothesis/Motivation**: Does a doubled learning rate lower the loss?" in entry
    assert "against tiny@2026-11-01: fast: optim.lr=0.04" in entry
    fast = [runs[("fast", s)] for s in (0, 1)]
    best = stats.summarize([r.result["best"]["val_loss"] for r in fast])
    steps = {r.result["best"]["step"] for r in fast}
    assert len(steps) == 1 and f"{best.mean:.4f} ± {best.std:.4f} at step {steps.pop():,}" in entry
    assert f"| {_pct(runs, 'fast'):+.2f}% |" in entry
    rate = stats.summarize([r.result["tokens_seen"] / r.result["train_seconds"] for r in fast])
    seconds = stats.summarize([r.result["train_seconds"] for r in fast])
    assert f"| {rate.mean:.0f} ± {rate.std:.0f} | {seconds.mean:.1f} ± {seconds.std:.1f} s per run" in entry
    for label, png in (("By gradient steps", "wide-loss-steps.png"), ("By wall-clock time", "wide-loss-time.png")):
        assert f"{label}: ![" in entry and f"](studies/{png})" in entry
        assert (lab / "reports" / "studies" / png).read_bytes()[:4] == b"\x89PNG"
    commit = _git(lab, "rev-parse", "HEAD")[:12]
    assert f"`ablab study run studies/wide.toml` at commit {commit} (the lab's checkout)" in entry
    assert "fast: " in entry.split("**Scoped verdicts**")[1] and "equal steps, 2 seeds" in entry
    for item in ("**Observations**", "**Decision**", "**Next steps**"):
        assert item in entry
    assert "- Study wide, fast: " in log.split("## Key findings")[1].split("### Hyperparameter")[1]
    assert all(f"**{title}**" in log for title in ("Model architecture", "Hyperparameters", "Training procedure",
                                                   "Future work"))
    env = log.split("## Appendix: computing environment")[1]
    torch_version = fast[0].provenance["versions"]["torch"]
    assert f"| CPU ({fast[0].provenance['host']['cpu']}) | {torch_version} | none | Linux" in env


def test_hand_written_parts_survive_regeneration(lab):
    finding = 'lr 0.04 "helps" at 86K params\nbut only on CPU'
    done = run_cli("log", "findings", "--category", "learning rate", finding, "--study", "wide", "--lab", str(lab),
                   cwd=lab)
    assert done.returncode == 0, done.stderr
    add_note(lab, "recommendations", "procedure", "three seeds before any verdict")  # what `log recommend` calls
    add_note(lab, "recommendations", "future work", "repeat at 21M params")
    conclude(lab, "wide", {"interpretation": "noisy at 10 steps", "follow_up": "run longer"})
    notes = tomllib.loads((lab / "reports" / "log-notes.toml").read_text())
    assert notes["findings"][0]["text"] == finding and notes["findings"][0]["study"] == "wide"
    for regenerate in (lambda: write_sheet(lab, "wide"), lambda: run_cli("log", "write", "--lab", str(lab), cwd=lab)):
        regenerate()
        log = (lab / "reports" / "LOG.md").read_text()
        findings = log.split("### Learning rate")[1].split("##")[0]
        assert '- lr 0.04 "helps" at 86K params but only on CPU (study wide)\n' in findings  # one line each
        recommendations = log.split("## Recommendations")[1]
        assert "three seeds before any verdict" in recommendations.split("**Training procedure**")[1]
        assert "repeat at 21M params" in recommendations.split("**Future work**")[1]
        assert "- **Observations**: noisy at 10 steps" in log and "- **Next steps**: run longer" in log
        sheet = (lab / "reports" / "studies" / "wide.md").read_text()
        assert "noisy at 10 steps" in sheet.split("## 9. Interpretation")[1]
    wrong = run_cli("log", "findings", "--category", "vibes", "x", "--lab", str(lab), cwd=lab)
    assert wrong.returncode == 2 and "--category must be one of" in wrong.stderr and "Traceback" not in wrong.stderr
    assert len(tomllib.loads((lab / "reports" / "log-notes.toml").read_text())["findings"]) == 1


def test_the_sheet_interpretation_starts_from_the_scoped_claims(lab):
    sheet = write_sheet(lab, "wide").read_text()
    interpretation = sheet.split("## 9. Interpretation")[1].split("## 10.")[0]
    assert interpretation.strip().startswith("Claims, scoped to what was tested:")
    assert f"- fast: {_scopes(lab, 'wide')['fast']}." in interpretation


def test_notes_written_at_once_all_land_and_a_broken_file_is_one_sentence(tmp_path):
    texts = [f"finding {i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:  # each writer reads, appends and replaces the file under the lock
        list(pool.map(lambda text: add_note(tmp_path, "findings", "dynamics", text), texts))
    stored = tomllib.loads((tmp_path / "reports" / "log-notes.toml").read_text())["findings"]
    assert sorted(n["text"] for n in stored) == texts
    assert not list((tmp_path / "reports").glob("*.part"))  # no temporary file left behind
    (tmp_path / "reports" / "log-notes.toml").write_text("[[findings]\n")
    with pytest.raises(UserError, match=r"log-notes.toml is not valid TOML .*; fix the line it names\."):
        read_notes(tmp_path)
