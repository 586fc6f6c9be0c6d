import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from ablab import config as C
from ablab.analysis.verdicts import analyze
from ablab.cli.report import report_app
from ablab.errors import UserError
from ablab.report.html import build_report, lineage, write_research_report
from ablab.store.ledger import Ledger, Run
from ablab.store.record import now_iso
from ablab.study import baselines, runner
from ablab.study.runner import make_plan, run_study
from ablab.train.launch import start_run

from conftest import TINY

BASE = "tiny@2026-11-01"
STUDY = """[meta]
name = "lr"
category = "optimizer"
date = "2026-11-21"
[objective]
question = "Does a learning rate of 0.04 beat 0.02?"
[hypothesis]
mechanism = "bigger steps early"
prediction = "val_loss falls by at least 0.01"
falsification = "val_loss does not fall"
metric = "val_loss"
direction = "decrease"
min_effect = 0.01
read_at = "final"
[design]
baseline = "tiny@2026-11-01"
axis = "steps"
budget = 10
seeds = [0, 1]
variables = { "optim.lr" = [0.04] }
"""
# A resource the page would fetch: src=/href= (or CSS url()) pointing at http(s) or a protocol-relative //.
NETWORK = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)(?:https?:)?//""", re.I)
# Chromium (--enable-logging=stderr) prints every page console message, whatever its level, and every
# uncaught exception as an INFO:CONSOLE line; the report never writes to the console, so any such
# line is a fault.
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A baseline (2 seeds, noise floor measured) promoted once, a 2-arm x 2-seed study with the
    researcher's conclusion, a study with no runs, two plain runs, a failed run and a benchmark score."""
    lab = tmp_path_factory.mktemp("report-lab")
    (lab / "ablab.toml").write_text('[lab]\nname = "tiny <lab>"\n')
    cfg = C.load(None, [*TINY, "train.max_steps=10", "train.max_tokens=0", "train.max_seconds=0", "eval.every=5"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    runner.run_baseline(lab, BASE, say=lambda s: None)
    (lab / "studies").mkdir()
    (lab / "studies" / "lr.toml").write_text(STUDY)
    plan = make_plan(lab, lab / "studies" / "lr.toml", probe=False)
    assert run_study(lab, plan, say=lambda s: None) == "finished"
    baselines.promote(lab, baselines.load(lab, BASE), {"optim.lr": 0.04}, "lr", "2026-11-22")
    plain = [start_run(C.load(None, [*TINY, "train.max_steps=5", f"seed={s}", "name=plain"]), lab).run_id
             for s in (7, 8)]
    with Ledger(lab) as ledger:
        ledger.update_study_data("lr", {"conclusion": {"interpretation": "Both rates land within noise.",
                                                       "decision": "keep 0.02"}})
        spec = {**ledger.study("lr")["spec"], "name": "lost"}
        ledger.save_study("lost", BASE, spec)
        ledger.record_run(Run(id="f00dfa11", name="broken", status="failed", created_at=now_iso(), finished_at=None,
                              config_hash="x", seed=3, data_fingerprint=None, code_version=None, content_key=None,
                              config={}, provenance={}, result={}))
        ledger.record_evals([{"run_id": plain[0], "step": 5, "task": "toy", "task_version": 2, "num_fewshot": 0,
                              "example_limit": 0, "seed": 0, "created_at": now_iso(),
                              "data": {"n": 12, "skipped": 0, "metrics": {"acc": 0.625, "acc_stderr": 0.14,
                                                                          "centered": 0.25}}}])
    return lab


@pytest.fixture(scope="module")
def page(lab) -> Path:
    return build_report(lab, extra_sections=[("Scaling fits", "<p id=fits>fit goes here</p>")])


def run_ids(lab: Path) -> list[str]:
    with Ledger(lab) as ledger:
        return [s["id"] for s in ledger.summaries()]


def visible_text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_page_holds_every_run_baseline_and_verdict(lab, page):
    text = page.read_text(encoding="utf-8")
    assert page == lab / "reports" / "index.html"
    assert "tiny &lt;lab&gt;" in text and "<lab>" not in text  # the lab's name, escaped
    table = text.split('id="runs-table"', 1)[1]
    # At least 7: the study reuses the baseline's runs only while the code version holds, and a source
    # tree edited while this runs gives its later runs another one.
    ids = run_ids(lab)
    assert len(ids) >= 7 and all(f"<td>{run_id}</td>" in table for run_id in ids)
    assert f"{len(ids)} runs: {len(ids) - 1} finished, 1 failed" in text
    assert BASE in text and "tiny@2026-11-22" in text and f"{BASE} &rarr; tiny@2026-11-22" in text
    shown = visible_text(text)
    _, arms, _ = analyze(lab, "lr")
    assert arms[1].verdict is not None and arms[1].verdict.rule in shown
    assert "Both rates land within noise." in shown and "keep 0.02" in shown
    assert "lost" in shown and "Missing: baseline seed 0: no run yet" in shown
    assert "0.6250 ± 0.1400" in shown and "+0.2500" in shown  # the benchmark row
    assert text.index("Benchmarks") < text.index('<p id=fits>fit goes here</p>')
    assert not list(page.parent.glob(".index.html.*"))  # the temporary file was renamed, not left


def test_page_loads_nothing_from_the_network(page):
    text = page.read_text(encoding="utf-8")
    assert not NETWORK.findall(text)
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    # The lr study's figures: loss by step, tokens and time, val_loss per seed, and val_loss against lr (the
    # other study has no runs).
    assert len(images) == 5 and all(i.startswith("data:image/png;base64,iVBORw0KGgo") for i in images)
    assert re.findall(r"<script[^>]*>", text) == ["<script>"] and "<link" not in text  # inline script, no stylesheets
    assert NETWORK.search('<img src="https://example.com/a.png">')  # the detector itself can fail


def test_research_report_has_sections_runs_and_figures(lab, page):
    path = write_research_report(lab)
    text = path.read_text(encoding="utf-8")
    assert path == lab / "reports" / "research_report.md"
    for section in ("# Research report: tiny <lab>", "## Baselines and their lineage", "## Studies with verdicts",
                    "### lr", "### lost", "## Runs", "## Benchmarks"):
        assert f"\n{section}\n" in f"\n{text}", section
    assert all(f"| {run_id} |" in text for run_id in run_ids(lab))
    assert f"- {BASE} -> tiny@2026-11-22" in text and "**Decision.** keep 0.02" in text
    count = len(run_ids(lab))
    assert f"The {count} most recent of {count} runs" in text
    assert "not written yet; `ablab study conclude lost`" in text
    # The same figures the study's sheet embeds; the study without runs has none.
    assert "![lr-loss-steps](studies/lr-loss-steps.png)" in text and "lost-loss" not in text
    assert (lab / "reports" / "studies" / "lr-loss-steps.png").read_bytes()[:4] == b"\x89PNG"


def test_lineage_follows_promotions_into_branches():
    found = [{"ref": "a@1", "parent": None}, {"ref": "b@2", "parent": "a@1"}, {"ref": "c@3", "parent": "a@1"},
             {"ref": "d@4", "parent": "b@2"}, {"ref": "x@5", "parent": "elsewhere@0"}]
    assert lineage(found) == [["a@1", "b@2", "d@4"], ["a@1", "c@3"], ["x@5"]]


def test_a_folder_without_a_ledger_is_refused(tmp_path):
    with pytest.raises(UserError, match="has no ledger"):
        build_report(tmp_path)
    assert not (tmp_path / ".ablab").exists()


def test_command_writes_both_reports(lab, tmp_path):
    runner = CliRunner()
    assert re.search(r"Example: +ablab report", runner.invoke(report_app, ["--help"], terminal_width=120).output)
    result = runner.invoke(report_app, ["--lab", str(lab), "--out", str(tmp_path), "--no-plots"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"html: {tmp_path / 'index.html'}" in result.output and "research_report.md" in result.output
    assert "<img" not in (tmp_path / "index.html").read_text(encoding="utf-8")


# -- the page in a real browser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> str:
    """A headless Chromium; installed once with apt-get where this runs as root, else the test skips."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next(filter(None, map(shutil.which, names)), None)
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        try:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                           capture_output=True, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except subprocess.TimeoutExpired:
            pass
        found = next(filter(None, map(shutil.which, names)), None)
    if found is None:
        pytest.skip("no chromium on PATH and it could not be installed (needs root and apt-get); "
                    "install it with `apt-get install chromium` to check the page in a browser")
    return found


def chromium(browser: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Open `page` headless with its own profile (so concurrent browsers never share a lock)."""
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           f"--user-data-dir={tmp_path / 'profile'}", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def test_console_detector_catches_a_broken_page(browser, tmp_path):
    for script, expected in (('throw new Error("boom")', "Uncaught Error: boom"),
                             ('console.error("went wrong")', "went wrong"), ("function f( {", "Uncaught SyntaxError")):
        broken = tmp_path / "broken.html"
        broken.write_text(f"<!DOCTYPE html><html><body><p>page</p><script>{script}</script></body></html>")
        found = console_errors(chromium(browser, broken, tmp_path, "--dump-dom").stderr)
        assert len(found) == 1 and expected in found[0], found
    clean = tmp_path / "clean.html"
    clean.write_text("<!DOCTYPE html><html><body><p>page</p><script>document.title = 'x'</script></body></html>")
    assert console_errors(chromium(browser, clean, tmp_path, "--dump-dom").stderr) == []


def test_page_renders_without_console_errors(browser, lab, page, tmp_path):
    shot = tmp_path / "page.png"
    result = chromium(browser, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert console_errors(result.stderr) == [], result.stderr
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and a plot
    dom = chromium(browser, page, tmp_path, "--dump-dom")
    assert console_errors(dom.stderr) == [] and all(f"<td>{run_id}</td>" in dom.stdout for run_id in run_ids(lab))


def test_clicking_a_heading_sorts_numbers_with_blanks_last(browser, lab, page, tmp_path):
    probe = """<script>const th=[...document.querySelectorAll("#runs-table th")].find(t=>t.textContent==="final val_loss");
const order=()=>[...document.querySelectorAll("#runs-table tbody tr")].map(r=>r.cells[0].textContent).join(",");
th.click();document.body.dataset.asc=order();th.click();document.body.dataset.desc=order();</script></body>"""
    copy = tmp_path / "sorted.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    dom = chromium(browser, copy, tmp_path, "--dump-dom")
    assert console_errors(dom.stderr) == [], dom.stderr
    with Ledger(lab) as ledger:
        loss = {s["id"]: s["result"].get("final", {}).get("val_loss") for s in ledger.summaries()}
    for direction, reverse in (("asc", False), ("desc", True)):
        order = re.search(rf'data-{direction}="([^"]*)"', dom.stdout).group(1).split(",")
        assert sorted(order) == sorted(loss) and order[-1] == "f00dfa11"  # blank val_loss last both ways
        values = [loss[run_id] for run_id in order[:-1]]
        assert values == sorted(values, reverse=reverse)


def test_ablab_report_on_a_lab_never_imports_torch(lab, tmp_path):
    """The whole `ablab report` command (ledger, sheets' verdicts, figures, HTML) runs without torch."""
    probe = ("import sys\nfrom ablab.cli.main import main\n"
             f"sys.argv = ['ablab', 'report', '--lab', {str(lab)!r}, '--out', {str(tmp_path)!r}]\n"
             "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
             "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "index.html").exists()
    assert result.stdout.strip().splitlines()[-1] == "no torch"


def test_runs_table_has_the_seed_and_the_study_variables(lab, page):
    """Each run's seed and its value of every key a study varies (optim.lr here), in both forms."""
    text = page.read_text(encoding="utf-8")
    table = text.split('id="runs-table"', 1)[1].split("</table>", 1)[0]
    headings = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert headings[:4] == ["id", "name", "seed", "optim.lr"]
    with Ledger(lab) as ledger:
        runs = ledger.runs()
    for run in runs:
        if run.config:  # the hand-made failed run has no config, so blank cells
            seed, lr = run.config["seed"], run.config["optim"]["lr"]
            assert re.search(rf'<td>{run.id}</td><td>[^<]*</td><td class=num data-v="{seed}">{seed}</td>'
                             rf'<td class=num data-v="{lr!r}">{lr:.5g}</td>', table), run.id
    assert '<th data-type=num>optim.lr</th>' in table
    markdown = write_research_report(lab).read_text(encoding="utf-8")
    assert "| id | name | seed | optim.lr | status |" in markdown
