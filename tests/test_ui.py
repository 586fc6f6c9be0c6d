"""`ablab ui`: the dashboard's JSON API on a real lab (tiny finished runs, a study with its verdict, a
promoted baseline), a run training in a subprocess gaining rows through the `since` endpoint, the
loopback rule, and the page itself in headless Chromium."""

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ablab import config as C
from ablab.errors import UserError
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.reader import ReadOnlyLedger
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study
from ablab.train.launch import start_run

from conftest import ABLAB, TINY, run_cli
from test_study import write_study

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from ablab.ui.server import bind, build_app, is_loopback  # noqa: E402

SHORT = [*TINY, "train.max_steps=20", "eval.every=10"]
PROMPTED = [*SHORT, "eval.prompts=tiny-shakespeare", "eval.prompt_tokens=8"]  # the study's runs continue a suite
BASE = "tiny@2026-11-01"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_cache):
    """Two tiny finished runs and a diverged one, a two-arm study over seeds 0 and 1 against a dated baseline whose runs
    continue the bundled prompt suite (its verdict computed), and the arm promoted into the next baseline."""
    folder = tmp_path_factory.mktemp("ui-lab")
    (folder / "ablab.toml").write_text('[lab]\nname = "ui-lab"\n')
    ids = {"base": start_run(C.load(None, [*SHORT, "seed=0", "name=base"]), folder).run_id,
           "wide": start_run(C.load(None, [*SHORT, "seed=1", "model.d_model=32", "name=wide"]), folder).run_id,
           "blowup": start_run(C.load(None, [*SHORT, "name=blowup", "optim.lr=1e8", "optim.adamw_lr=1e8",
                                             "optim.grad_clip=0", "schedule.warmup_steps=0"]), folder).run_id}
    baselines.create(folder, baselines.Baseline("tiny", "2026-11-01", C.load(None, PROMPTED), [0, 1]))
    path = write_study(folder, "lr-up", 'variables = { "optim.lr" = [0.01] }', seeds="[0, 1]")
    assert run_study(folder, make_plan(folder, path, probe=False), say=lambda s: None) == "finished"
    with Ledger(folder) as ledger:
        arm = next(a for a in ledger.study("lr-up")["spec"]["arms"] if a != "baseline")
    baselines.promote_arm(folder, "lr-up", arm, date="2026-11-02")
    return folder, ids, arm


@pytest.fixture(scope="module")
def client(lab):
    return TestClient(build_app(lab[0]))


def ledger_digest(folder: Path) -> str:
    return hashlib.sha256(ledger_path(folder).read_bytes()).hexdigest()


def test_runs_endpoint_filters_sorts_and_adds_config_columns(lab, client):
    folder, ids, _ = lab
    everything = client.get("/api/runs").json()
    listed = [row["id"] for row in everything["rows"]]
    assert ids["base"] in listed and ids["wide"] in listed and len(listed) >= 4  # the study's runs too
    assert "model.d_model" in everything["config_keys"]
    named = client.get("/api/runs", params={"name": "wide"}).json()
    assert [row["id"] for row in named["rows"]] == [ids["wide"]]
    wide = client.get("/api/runs", params=[("where", "model.d_model=32"), ("columns", "model.d_model"),
                                           ("columns", "optim.lr")]).json()
    assert [row["id"] for row in wide["rows"]] == [ids["wide"]]
    assert wide["columns"][-2:] == ["model.d_model", "optim.lr"] and wide["rows"][0]["model.d_model"] == 32
    ordered = client.get("/api/runs", params={"sort": "-val_loss", "status": "finished"}).json()["rows"]
    losses = [row["val_loss"] for row in ordered if row["val_loss"] is not None]
    assert losses == sorted(losses, reverse=True) and len(losses) == len(ordered) == len(listed) - 1
    assert all(row["status"] == "finished" for row in ordered)
    diverged = client.get("/api/runs", params={"status": "diverged"}).json()["rows"]
    assert [(row["id"], row["status"]) for row in diverged] == [(ids["blowup"], "diverged")]


def test_bad_filters_and_unknown_names_answer_one_sentence(client):
    bad = client.get("/api/runs", params={"columns": "model.d_modl"})
    assert bad.status_code == 400 and "did you mean" in bad.json()["error"].lower()
    assert client.get("/api/runs", params={"status": "asleep"}).status_code == 400
    assert client.get("/api/runs/ffffffff").status_code == 404
    assert client.get("/api/studies/nope").status_code == 404
    assert client.get("/api/runs/x/metrics", params={"since": "ten"}).status_code == 400


def test_run_endpoint_and_metrics_since_a_step(lab, client):
    folder, ids, _ = lab
    run = client.get(f"/api/runs/{ids['base'][:6]}").json()
    assert run["id"] == ids["base"] and run["config"]["model"]["d_model"] == 64
    assert run["provenance"]["config_hash"] and "versions.torch" in run["provenance"]
    assert isinstance(run["events"], list) and run["result"]["steps"] == 20
    every = client.get(f"/api/runs/{ids['base']}/metrics").json()
    steps = [row["step"] for row in every["rows"]]
    with Ledger(folder) as ledger:
        assert steps == [row["step"] for row in ledger.metrics(ids["base"])]
    assert every["status"] == "finished" and steps[-1] == 20
    later = client.get(f"/api/runs/{ids['base']}/metrics", params={"since": steps[1]}).json()
    assert [row["step"] for row in later["rows"]] == steps[2:]
    assert any("val_loss" in row for row in later["rows"]) and all("tokens" in row for row in later["rows"])


def test_study_endpoint_grid_verdict_diff_and_seed_bands(lab, client):
    folder, _, arm = lab
    listing = client.get("/api/studies").json()
    assert [(s["name"], s["cells"], s["finished"]) for s in listing] == [("lr-up", 4, 4)]
    study = client.get("/api/studies/lr-up").json()
    assert study["complete"] and {(c["arm"], c["seed"]) for c in study["grid"]} == \
        {("baseline", 0), ("baseline", 1), (arm, 0), (arm, 1)}
    assert all(c["status"] == "finished" and c["run"] for c in study["grid"])
    outcome = study["arms"][arm]["verdict"]["outcome"]
    assert outcome in ("supported", "refuted", "inconclusive") and study["arms"]["baseline"]["verdict"] is None
    assert study["diff"] == [{"arm": arm, "key": "optim.lr", "baseline": C.load(None, SHORT).optim.lr,
                              "arm_value": 0.01}]
    band = study["curves"][arm]["val_loss"]
    assert band["step"] and all(lo <= mean <= hi for lo, mean, hi in zip(band["low"], band["mean"], band["high"]))
    assert band["seeds"][-1] == 2 and any(lo < hi for lo, hi in zip(band["low"], band["high"]))  # two seeds differ


def test_samples_of_a_run_and_of_a_study_side_by_side(lab, client):
    folder, _, arm = lab
    study = client.get("/api/studies/lr-up").json()
    cell = next(c for c in study["grid"] if c["arm"] == arm and c["seed"] == 0)
    rows = client.get(f"/api/runs/{cell['run']}/samples").json()["rows"]
    with Ledger(folder) as ledger:
        assert rows == ledger.samples(cell["run"]) and rows
    assert {row["mode"] for row in rows} == {"greedy", "sampled"} and {row["step"] for row in rows} >= {10, 20}
    texts = study["samples"]
    assert texts["arms"] == ["baseline", arm] and texts["step"] == 20 and texts["seed"] == 0
    at_last = [row for row in rows if row["step"] == 20]
    assert len(texts["rows"]) == len(at_last)
    assert {(r["prompt"], r["mode"], r["texts"][arm]) for r in texts["rows"]} == \
        {(r["prompt"], r["mode"], r["text"]) for r in at_last}
    plain = client.get(f"/api/runs/{lab[1]['base']}/samples").json()
    assert plain["rows"] == []  # a run without eval.prompts


def test_baselines_endpoint_shows_lineage(client):
    found = {b["ref"]: b for b in client.get("/api/baselines").json()}
    assert found[BASE]["children"] == ["tiny@2026-11-02"] and found[BASE]["studies"] == ["lr-up"]
    assert found["tiny@2026-11-02"]["parent"] == BASE and found["tiny@2026-11-02"]["justified_by"] == ["lr-up"]
    assert found["tiny@2026-11-02"]["current"] and not found[BASE]["current"]


def test_a_ladder_not_yet_run_shows_its_grid_and_no_verdict(tmp_path):
    """A scaling ladder's record (no hypothesis) with no run yet: every cell not started, its rungs'
    changes against the baseline, and no verdict asked of it."""
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-11-01", C.load(None, SHORT), [0]))
    with Ledger(tmp_path) as ledger:
        ledger.save_study("sizes", BASE, {"kind": "ladder", "name": "sizes", "seeds": [0], "metric": "val_loss",
                                          "read_at": "final", "arms": {"d32": {"model.d_model": 32}}, "skipped": []})
    study = TestClient(build_app(tmp_path)).get("/api/studies/sizes").json()
    assert study["grid"] == [{"arm": "d32", "seed": 0, "run": None, "status": "not started"}]
    assert study["arms"] == {} and not study["complete"] and study["samples"] is None
    assert study["diff"] == [{"arm": "d32", "key": "model.d_model", "baseline": 64, "arm_value": 32}]
    assert study["curves"]["d32"]["val_loss"]["step"] == []


def test_the_dashboard_never_writes_the_ledger(lab, client):
    folder = lab[0]
    before = ledger_digest(folder)
    for path in ("/api/runs", "/api/studies", "/api/studies/lr-up", "/api/baselines", "/"):
        assert client.get(path).status_code == 200
    assert ledger_digest(folder) == before
    with ReadOnlyLedger(folder) as ledger, pytest.raises(RuntimeError, match="never writes"):
        ledger.add_tag(ledger.runs()[0].id, "x")


def test_a_folder_without_a_ledger_is_refused_and_left_alone(tmp_path):
    with pytest.raises(UserError, match="has no ledger"):
        build_app(tmp_path)
    assert not (tmp_path / ".ablab").exists()


def test_a_ledger_of_another_schema_version_is_refused_unchanged(tmp_path):
    """The reader never migrates: an older ledger is refused naming the command that upgrades it."""
    ledger_path(tmp_path).parent.mkdir(parents=True)
    with sqlite3.connect(ledger_path(tmp_path)) as conn:
        conn.execute("CREATE TABLE runs (id TEXT)")
        conn.execute("PRAGMA user_version=1")
    before = ledger_digest(tmp_path)
    with pytest.raises(UserError, match="older than this ablab's .* run any ablab command"):
        ReadOnlyLedger(tmp_path)
    assert ledger_digest(tmp_path) == before


def test_the_ui_command_serves_the_api_on_loopback(lab):
    server, url = start_ui(lab[0])
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}api/studies", timeout=10) as answer:
            assert [s["name"] for s in json.load(answer)] == ["lr-up"]
    finally:
        server.kill()
        server.wait()


def test_a_named_non_loopback_host_is_served_with_a_warning(lab):
    server, url = start_ui(lab[0], "--host", "0.0.0.0")
    try:
        assert url.startswith("http://0.0.0.0:")
        port = url.rsplit(":", 1)[1].strip("/")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/baselines", timeout=10) as answer:
            assert len(json.load(answer)) == 2
    finally:
        server.kill()
        server.wait()
    warning = server.stderr.read()
    assert warning.startswith("warning: Serving on 0.0.0.0, which other machines can reach"), warning


def test_the_page_and_its_vendored_chart_library_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "vendor/uPlot.iife.min.js" in page.text and "http" not in page.text.lower()
    assert client.get("/vendor/uPlot.iife.min.js").text.startswith("/*")
    assert client.get("/app.js").status_code == 200


def test_only_loopback_is_bound_unless_the_host_is_named(lab):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    with pytest.raises(UserError, match="Refusing to serve on 0.0.0.0.*--host 0.0.0.0"):
        bind("0.0.0.0", 0)
    sock, warning = bind("127.0.0.1", 0)
    assert warning is None and sock.getsockname()[0] == "127.0.0.1"
    sock.close()
    sock, warning = bind("0.0.0.0", 0, explicit=True)
    assert "other machines can reach" in warning
    sock.close()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(UserError, match="pick another --port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_ui_cli_refuses_a_bad_host_in_one_sentence(lab):
    result = run_cli("ui", "--host", "no-such-host.invalid", "--lab", str(lab[0]), cwd=lab[0], timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "--host" in result.stderr


def test_without_the_ui_extra_the_command_says_how_to_install_it(lab):
    """Starlette made unimportable in a child process: `ablab ui` exits 2 with the pip command."""
    code = ("import sys; sys.modules['starlette'] = None; from ablab.cli.main import main; "
            f"sys.argv = ['ablab', 'ui', '--lab', {str(lab[0])!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == "error: `ablab ui` needs the ui extra; install it with `pip install 'ablab[ui]'`."


def start_ui(folder: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`ablab ui --port 0` in a child process and the address it printed."""
    proc = subprocess.Popen([*ABLAB, "ui", "--port", "0", "--lab", str(folder), *options], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    line = proc.stdout.readline()
    assert "ablab ui: http://" in line, (line, proc.poll() and proc.stderr.read())
    return proc, line.split()[2]


def start_training(folder: Path, steps: int = 400) -> subprocess.Popen:
    """A tiny run that keeps logging for a while, in its own process (as a run on any executor does)."""
    overrides = [*TINY, f"train.max_steps={steps}", "eval.every=20", "eval.prompts=tiny-shakespeare",
                 "eval.prompt_tokens=8", "name=live", "seed=7", "train.threads=1"]
    return subprocess.Popen([*ABLAB, "run", "--lab", str(folder), *overrides], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(check, seconds: float, every: float = 0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    return None


def live_run_id(folder: Path) -> str | None:
    if not ledger_path(folder).exists():
        return None
    with ReadOnlyLedger(folder) as ledger:
        return next((r["id"] for r in ledger.summaries(name="live") if r["status"] == "running"), None)


def test_a_run_training_in_a_subprocess_gains_rows_through_since(tmp_path, shared_cache):
    (tmp_path / "ablab.toml").write_text('[lab]\nname = "live"\n')
    training = start_training(tmp_path)
    try:
        run_id = wait_for(lambda: live_run_id(tmp_path), 120)
        assert run_id, training.stderr.read() if training.poll() is not None else "no running run appeared"
        client = TestClient(build_app(tmp_path))
        first = wait_for(lambda: client.get(f"/api/runs/{run_id}/metrics").json()["rows"], 60)
        assert first and client.get(f"/api/runs/{run_id}/metrics").json()["status"] == "running"
        last = first[-1]["step"]
        newer = wait_for(lambda: client.get(f"/api/runs/{run_id}/metrics", params={"since": last}).json()["rows"], 60)
        assert newer and all(row["step"] > last for row in newer)
    finally:
        training.kill()
        training.wait()


def test_the_page_in_headless_chromium(lab, tmp_path, shared_cache):
    """The dashboard in a real browser: no console errors, a training run's chart gaining points,
    the study page's verdict, and screenshots that are not blank (kept in docs/ when ABLAB_SCREENSHOTS
    names a folder)."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is absent; install Debian's chromium to run the page in a browser")
    playwright = pytest.importorskip("playwright.sync_api")
    folder = lab[0]
    training = start_training(folder, steps=600)
    server, url = start_ui(folder)
    shots = Path(os.environ.get("ABLAB_SCREENSHOTS") or tmp_path)
    try:
        run_id = wait_for(lambda: live_run_id(folder), 120)
        assert run_id, "the training subprocess never showed a running run"
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector(f"#runs tr[data-id='{run_id}']", timeout=10_000)
            page.goto(f"{url}#/run/{run_id}")
            page.wait_for_function("window.ablab && window.ablab.points() > 0", timeout=15_000)
            before = page.evaluate("window.ablab.points()")
            page.wait_for_function(f"window.ablab.points() > {before}", timeout=10_000)  # live: no reload
            page.screenshot(path=str(shots / "ui-run.png"))
            page.goto(f"{url}#/run/{lab[1]['base']},{lab[1]['wide']}")  # two finished runs overlaid
            page.wait_for_function("window.ablab.points() > 0", timeout=10_000)
            legend = page.inner_text("#charts")
            assert lab[1]["base"] in legend and lab[1]["wide"] in legend
            page.goto(f"{url}#/run/{lab[1]['blowup']}")  # its divergence marked on the chart
            page.wait_for_function("window.ablab.marks() === 1", timeout=10_000)
            page.goto(f"{url}#/study/lr-up")
            page.wait_for_selector(".verdict", timeout=10_000)
            page.wait_for_selector("table.samples td", timeout=10_000)  # the suite, arms side by side
            verdict = page.inner_text(".verdict")
            assert any(word in verdict for word in ("supported", "refuted", "inconclusive")), verdict
            page.screenshot(path=str(shots / "ui-study.png"), full_page=True)
            browser.close()
        assert errors == []
        for name in ("ui-run.png", "ui-study.png"):
            assert not_blank(shots / name), name
    finally:
        training.kill()
        training.wait()
        server.kill()
        server.wait()


def not_blank(png: Path) -> bool:
    """More than a handful of distinct colours: a page that drew text and a chart, not an empty one."""
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    return colours is not None and len(colours) > 50
