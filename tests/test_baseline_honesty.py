"""Baselines that stay honest: retrain and drift, the stale / dirty / code-version warnings, and
two-size baseline families."""

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from ablab import config as C
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.study import baselines, honesty
from ablab.study.retrain import retrain
from ablab.study.runner import make_plan

from conftest import TINY, run_cli
from test_study import write_study

TINY_BASE = [*TINY, "train.max_steps=12", "eval.every=0", "eval.points=2"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout


def git_lab(tmp_path: Path) -> Path:
    """A lab that is its own git checkout, everything committed."""
    lab = tmp_path / "lab"
    lab.mkdir()
    assert run_cli("init", str(lab), "--no-examples", cwd=tmp_path).returncode == 0
    (lab / ".gitignore").write_text(".ablab/\n")
    git(lab, "init", "-q")
    git(lab, "add", "-A")
    git(lab, "commit", "-q", "-m", "the lab")
    return lab


def make_baseline(lab: Path, name: str, date: str, seeds: list[int], overrides: list[str] = TINY_BASE) -> None:
    cfg = C.load(None, overrides)
    baselines.create(lab, baselines.Baseline(name, date, cfg, seeds, set_keys=baselines.set_keys_of(None, overrides)))


def test_retrain_of_unchanged_code_reports_no_drift_and_trains_afresh(tmp_path):
    make_baseline(tmp_path, "same", "2026-11-01", [0, 1])
    assert run_cli("baseline", "run", "same@2026-11-01", "--quiet", "--lab", str(tmp_path), cwd=tmp_path).returncode == 0
    done = run_cli("baseline", "retrain", "same", "--date", "2026-11-02", "--quiet", "--lab", str(tmp_path),
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "val_loss: " in done.stdout and "+0): no drift" in done.stdout
    assert done.stdout.strip().endswith("no drift")
    with Ledger(tmp_path) as ledger:
        runs = ledger.runs()
        new = next(b for b in ledger.baselines() if b["ref"] == "same@2026-11-02")
    assert len(runs) == 4  # fresh runs, although the content key of the older ones matched
    assert new["current"] and new["drift"]["same@2026-11-02"]["metrics"]["val_loss"]["outcome"] == "no drift"
    retrained = baselines.load(tmp_path, "same@2026-11-02")
    assert retrained.parent == "same@2026-11-01" and retrained.justified_by == ["retrain"]
    # the same retrain again (as after an interruption) continues it: nothing left to train, same comparison
    [again] = retrain(tmp_path, "same", "2026-11-02", say=lambda s: None)
    with Ledger(tmp_path) as ledger:
        assert len(ledger.runs()) == 4
    assert again.previous == "same@2026-11-01" and [m.outcome for m in again.metrics][:3] == ["no drift"] * 3


def test_retrain_detects_a_changed_default_as_drift_with_the_commits_between(tmp_path, monkeypatch):
    lab = git_lab(tmp_path)
    make_baseline(lab, "main", "2026-11-01", [0, 1])
    git(lab, "add", "-A")
    git(lab, "commit", "-q", "-m", "baseline main@2026-11-01")
    old = git(lab, "rev-parse", "HEAD").strip()
    from ablab.study.runner import run_baseline

    run_baseline(lab, "main@2026-11-01", say=lambda s: None)
    (lab / "NOTES.md").write_text("lower the default learning rate\n")
    git(lab, "add", "NOTES.md")
    git(lab, "commit", "-q", "-m", "optim: a lower default lr")
    # The code's default changes (as an edit of config.py would change it); the baseline did not set
    # optim.lr, so the retrained one takes the new default.
    lower = dataclasses.make_dataclass("OptimConfig", [("lr", float, dataclasses.field(default=0.0005))],
                                       bases=(C.OptimConfig,))
    monkeypatch.setitem(C.SECTION_TYPES, "optim", lower)
    [report] = retrain(lab, "main", "2026-11-02", say=lambda s: None)
    assert report.config_changes == [("optim.lr", 0.02, 0.0005)]
    val = next(m for m in report.metrics if m.metric == "val_loss")
    assert val.outcome == "regression" and val.difference > val.floor > 0
    text = "\n".join(report.lines())
    assert "val_loss" in text and "drift: regression of" in text and "above the noise floor" in text
    assert "config: optim.lr: 0.02 -> 0.0005" in text
    lab_root = str(lab.resolve())
    assert report.commit_pair[lab_root][0] == old
    assert report.commits[lab_root] == [f"{git(lab, 'rev-parse', '--short', 'HEAD').strip()} optim: a lower default lr"]
    assert f"between {old[:12]}" in text and "optim: a lower default lr" in text
    with Ledger(lab) as ledger:
        stored = next(b for b in ledger.baselines() if b["ref"] == "main@2026-11-02")["drift"]["main@2026-11-02"]
    assert stored["metrics"]["val_loss"]["outcome"] == "regression"


def test_a_set_key_keeps_its_value_when_the_default_changes(monkeypatch):
    base = baselines.Baseline("k", "2026-11-01", C.load(None, ["optim.lr=0.02"]), [0], set_keys=["optim.lr"])
    lower = dataclasses.make_dataclass("OptimConfig", [("lr", float, dataclasses.field(default=0.0005)),
                                                       ("momentum", float, dataclasses.field(default=0.9))],
                                       bases=(C.OptimConfig,))
    monkeypatch.setitem(C.SECTION_TYPES, "optim", lower)
    assert C.diff(base.config, baselines.current_config(base)) == [("optim.momentum", 0.95, 0.9)]
    unknown = dataclasses.replace(base, set_keys=None)  # an older baseline: every key counts as set
    assert baselines.current_config(unknown) == base.config


def test_dirty_lab_is_refused_unless_allowed_and_then_recorded(tmp_path):
    lab = git_lab(tmp_path)
    make_baseline(lab, "main", "2026-11-01", [0])
    study = write_study(lab, "dirty", 'variables = { "optim.lr" = [0.01] }', seeds="[0]", budget=8192,
                        baseline="main@2026-11-01")
    git(lab, "add", "-A")
    git(lab, "commit", "-q", "-m", "a study")
    (lab / "reports").mkdir(exist_ok=True)
    study.write_text(study.read_text().replace('question = "Does it matter?"', 'question = "Does lr matter?"'))
    planned = run_cli("study", "plan", str(study), "--no-probe", "--lab", str(lab), cwd=lab)
    assert planned.returncode == 0, planned.stderr
    assert "warning: The lab's checkout has uncommitted changes (studies/dirty.toml)" in planned.stdout
    refused = run_cli("study", "run", str(study), "--yes", "--quiet", "--lab", str(lab), cwd=lab)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "uncommitted changes (studies/dirty.toml)" in refused.stderr and "--allow-dirty" in refused.stderr
    with Ledger(lab) as ledger:
        assert ledger.runs() == [] and ledger.study("dirty") is None
    allowed = run_cli("study", "run", str(study), "--yes", "--quiet", "--allow-dirty", "--lab", str(lab), cwd=lab)
    assert allowed.returncode == 0, allowed.stderr
    with Ledger(lab) as ledger:
        record = ledger.study("dirty")["data"]["allowed_dirty"]
        runs = ledger.runs()
    [entry] = record.values()
    assert entry["files"] == ["studies/dirty.toml"] and entry["commit"] == git(lab, "rev-parse", "HEAD").strip()
    assert runs and all(r.provenance["git"]["dirty"] for r in runs)
    assert all((lab / ".ablab" / "runs" / r.id / "code.diff").is_file() for r in runs)


def test_generated_reports_do_not_make_a_lab_dirty(tmp_path):
    lab = git_lab(tmp_path)
    (lab / "reports" / "LOG.md").parent.mkdir(exist_ok=True)
    (lab / "reports" / "LOG.md").write_text("one\n")
    git(lab, "add", "-A")
    git(lab, "commit", "-q", "-m", "reports")
    (lab / "reports" / "LOG.md").write_text("two\n")
    assert honesty.lab_changes(lab) == [] and honesty.refuse_dirty(lab, False) == []
    (lab / "ablab.toml").write_text((lab / "ablab.toml").read_text() + "\n")
    assert honesty.lab_changes(lab) == ["ablab.toml"]
    outside = tmp_path / "not-in-git"
    outside.mkdir()
    assert honesty.lab_changes(outside) is None and honesty.dirty_warning(outside) is None


def test_stale_baseline_warning_names_the_newer_one_and_its_diff(tmp_path):
    make_baseline(tmp_path, "main", "2026-11-01", [0])
    make_baseline(tmp_path, "main", "2026-11-20", [0], [*TINY_BASE, "optim.lr=0.04"])
    study = write_study(tmp_path, "old-base", 'variables = { "optim.lr" = [0.01] }', seeds="[0]", budget=8192,
                        baseline="main@2026-11-01")
    planned = run_cli("study", "plan", str(study), "--no-probe", "--lab", str(tmp_path), cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert ("warning: Baseline main@2026-11-01 is not the current 'main' baseline: main@2026-11-20 is (its changes: "
            "optim.lr: 0.02 -> 0.04)") in planned.stdout
    assert honesty.stale_warning(tmp_path, "main@2026-11-20") is None


def test_runs_of_another_code_version_are_said_to_be_retrained(tmp_path, monkeypatch):
    make_baseline(tmp_path, "main", "2026-11-01", [0, 1])
    study = write_study(tmp_path, "versions", 'variables = { "optim.lr" = [0.01] }', seeds="[0, 1]", budget=12288,
                        baseline="main@2026-11-01")
    from ablab.store import provenance
    from ablab.study.runner import run_baseline

    with monkeypatch.context() as patch:  # trained as if at an older commit of ablab
        patch.setattr(provenance, "code_version", lambda git: "git:0123456789ab")
        run_baseline(tmp_path, "main@2026-11-01", say=lambda s: None)
    plan = make_plan(tmp_path, study, probe=False)
    warning = honesty.code_version_warning(tmp_path, plan)
    assert plan.rows[0].reused == 0 and plan.rows[0].to_train == 2
    assert warning.startswith("The baseline main@2026-11-01's finished runs were trained at code version "
                              "git:0123456789ab, not this checkout's ")
    assert "seeds 0, 1 will be retrained (a run is reused only at the same code version)" in warning
    run_baseline(tmp_path, "main@2026-11-01", say=lambda s: None)  # now at this code version
    assert honesty.code_version_warning(tmp_path, make_plan(tmp_path, study, probe=False)) is None


def ledger_params(lab: Path, name: str) -> int:
    with Ledger(lab) as ledger:
        return {r.result["params"] for r in ledger.runs(name=name)}.pop()


def test_a_two_size_family_runs_a_study_at_both_sizes_side_by_side(tmp_path):
    (tmp_path / "ablab.toml").write_text('[lab]\nname = "fam"\n[sizes.narrow]\n"model.d_model" = 32\n'
                                         '"model.d_ff" = 64\n[sizes.wide.model]\nd_model = 64\nd_ff = 128\n')
    (tmp_path / "tiny.toml").write_text(C.save_toml(C.load(None, TINY_BASE)))
    made = run_cli("baseline", "new", "fam", "-c", "tiny.toml", "--sizes", "narrow,wide", "--seeds", "0,1",
                   "--date", "2026-11-01", "--lab", str(tmp_path), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "fam@2026-11-01/narrow: model.d_model=32, model.d_ff=64" in made.stdout
    listed = run_cli("baseline", "list", "--json", "--lab", str(tmp_path), cwd=tmp_path)
    assert [b["ref"] for b in json.loads(listed.stdout)] == ["fam@2026-11-01/narrow", "fam@2026-11-01/wide"]
    assert baselines.load(tmp_path, "fam@2026-11-01/wide").config.model.d_model == 64
    study = write_study(tmp_path, "fam-lr", 'variables = { "optim.lr" = [0.005] }', seeds="[0, 1]", budget=12288,
                        baseline="fam@2026-11-01")
    ran = run_cli("study", "run", str(study), "--yes", "--quiet", "--lab", str(tmp_path), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    from ablab.analysis.verdicts import analyze

    with Ledger(tmp_path) as ledger:
        recorded = {s["name"]: s["baseline"] for s in ledger.studies()}
        widths = {(r.name, r.config["model"]["d_model"]) for r in ledger.runs()}
    assert recorded == {"fam-lr.narrow": "fam@2026-11-01/narrow", "fam-lr.wide": "fam@2026-11-01/wide"}
    assert widths == {("fam-lr.narrow/baseline", 32), ("fam-lr.narrow/optim.lr=0.005", 32),
                      ("fam-lr.wide/baseline", 64), ("fam-lr.wide/optim.lr=0.005", 64)}
    sheet = (tmp_path / "reports" / "studies" / "fam-lr.narrow.md").read_text()
    section = sheet.split("### Effect at each size", 1)[1].split("## 9.", 1)[0].splitlines()
    header = next(line for line in section if line.startswith("| arm |"))
    params = {size: ledger_params(tmp_path, f"fam-lr.{size}/baseline") for size in ("narrow", "wide")}
    assert params["narrow"] < params["wide"]
    assert header.startswith(f"| arm | narrow ({params['narrow']:,} params): val_loss change (95% CI) | "
                             f"wide ({params['wide']:,} params): val_loss change (95% CI) |")
    row = next(line for line in section if line.startswith("| optim.lr=0.005 |"))
    for size in ("narrow", "wide"):
        change = next(r for r in analyze(tmp_path, f"fam-lr.{size}")[1] if r.arm == "optim.lr=0.005").comparison
        assert f"{change.mean_diff:+.4f} ({change.ci_low:+.4f}, {change.ci_high:+.4f})" in row
    # the family retrains size by size, each against its own size of the previous date
    reports = retrain(tmp_path, "fam", "2026-11-02", say=lambda s: None)
    assert [(r.previous, r.current) for r in reports] == [("fam@2026-11-01/narrow", "fam@2026-11-02/narrow"),
                                                          ("fam@2026-11-01/wide", "fam@2026-11-02/wide")]
    assert all(not r.missing and not r.drifted for r in reports)
    with pytest.raises(UserError, match="is a family of sizes"):  # a plan of a family is one per size
        make_plan(tmp_path, study)
    # one size only, by design.sizes; a size the family lacks is refused in one sentence
    from ablab.study.sizes import size_specs
    from ablab.study.spec import parse

    spec = dataclasses.replace(parse(study), sizes=["wide"])
    assert [(s.name, s.baseline) for s in size_specs(tmp_path, spec)] == [("fam-lr.wide", "fam@2026-11-01/wide")]
    study.write_text(study.read_text().replace("seeds = [0, 1]", 'seeds = [0, 1]\nsizes = ["huge"]'))
    refused = run_cli("study", "plan", str(study), "--no-probe", "--lab", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == 2 and "design.sizes names 'huge'" in refused.stderr and "narrow, wide" in refused.stderr


def test_a_size_of_an_older_family_is_warned_with_the_same_size_of_the_current_one(tmp_path):
    (tmp_path / "ablab.toml").write_text('[lab]\nname = "f"\n[sizes.narrow]\n"model.d_model" = 32\n"model.d_ff" = 64\n')
    for date, lr in (("2026-11-01", "0.02"), ("2026-11-20", "0.04")):
        cfg = C.load(None, [*TINY_BASE, f"optim.lr={lr}"])
        baselines.create(tmp_path, baselines.Baseline("f", date, cfg, [0], sizes=baselines.resolve_sizes(tmp_path, ["narrow"])))
    warning = honesty.stale_warning(tmp_path, "f@2026-11-01/narrow")
    assert warning.startswith("Baseline f@2026-11-01/narrow is not the current 'f' baseline: f@2026-11-20/narrow is "
                              "(its changes: optim.lr: 0.02 -> 0.04)")
    assert honesty.stale_warning(tmp_path, "f@2026-11-20/narrow") is None


def test_retrain_of_a_baseline_never_run_says_there_is_nothing_to_compare(tmp_path):
    make_baseline(tmp_path, "fresh", "2026-11-01", [0])
    [report] = retrain(tmp_path, "fresh", "2026-11-02", say=lambda s: None)
    assert report.metrics == [] and "fresh@2026-11-01 has no finished run at the seeds 0" in report.missing
    assert report.lines()[-1] == report.missing
