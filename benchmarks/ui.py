"""The dashboard's numbers from DESIGN.md, measured on this machine: run by hand, prints a report.

For each size N (default 1,000 and 10,000) a temporary lab gets N synthetic finished runs written
through the Ledger write API the way training writes them (record_run, log_metrics, finish_run), with
full-size rows (a real config and provenance), and one run left `running` in this process. `ablab ui`
serves the lab in a child process and headless Chromium (Debian's /usr/bin/chromium) measures:
- first paint: from navigation to the runs table's rows on screen (the page's default view, the
  newest 500 runs; and every run, limit cleared), best of 3;
- update latency: from a new metric row committed to the ledger to the running run's chart showing
  it, as the page polls (median of 5).
Targets: first paint under 1 s at 10,000 runs; a new metric row visible under 2 s.

Run: .venv/bin/python benchmarks/ui.py [--runs 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from ablab import config as config_mod
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect
from ablab.store.record import content_key, now_iso

PAINT_TARGET_S, UPDATE_TARGET_S = 1.0, 2.0
CHROMIUM = "/usr/bin/chromium"


def row(step: int, scale: float) -> dict:
    return {"step": step, "tokens": step * 4096, "elapsed": step * 0.23, "train_loss": scale * 4.0 / (1 + step) ** 0.3,
            "val_loss": scale * 4.1 / (1 + step) ** 0.3, "tokens_per_s": 17_734.0}


def fill(ledger: Ledger, n_runs: int) -> str:
    """N finished runs of 5 logged points each, and one running run (this process, so it reads live)."""
    provenance, _ = collect(Path.cwd())
    cfg = config_mod.load("quickstart")
    config, chash = config_mod.to_dict(cfg), config_mod.config_hash(cfg)
    for i in range(n_runs + 1):
        run_id, running = f"{i:08x}", i == n_runs
        start = {"status": "running", "steps": 0, "params": 1_100_000}
        ledger.record_run(Run(id=run_id, name="live" if running else f"bench-{i % 50}", status="running",
                              created_at=now_iso(), finished_at=None, config_hash=chash, seed=i, data_fingerprint="f" * 64,
                              code_version=provenance["code_version"],
                              content_key=content_key(chash, i, "f" * 64, provenance["code_version"]),
                              config=config | {"seed": i}, provenance=provenance, result=start))
        rows = [row(step, 1 + (i % 97) / 200) for step in (100, 200, 300, 400, 500)]
        ledger.log_metrics(run_id, rows)
        if not running:
            final = {k: rows[-1][k] for k in ("val_loss", "train_loss", "tokens_per_s")}
            ledger.finish_run(run_id, "finished", start | {"status": "finished", "steps": 500, "final": final,
                                                          "tokens_seen": 500 * 4096, "best": {"val_loss": final["val_loss"]}},
                              now_iso())
    return f"{n_runs:08x}"


def serve(lab: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ablab", "ui", "--port", "0", "--lab", str(lab)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split()[2]


def first_paint(page, url: str, limit: str) -> float:
    """Seconds from navigation to the runs table's rows on screen, best of 3."""
    times = []
    for _ in range(3):
        page.goto("about:blank")
        start = time.perf_counter()
        page.goto(url)
        if limit != "500":  # the page's default; another limit is typed into its box
            page.wait_for_selector("#runs tbody tr")
            page.fill("#f-limit", limit)
            start = time.perf_counter()
            page.dispatch_event("#f-limit", "change")
            page.wait_for_function("document.querySelectorAll('#runs tbody tr').length > 500")
        else:
            page.wait_for_selector("#runs tbody tr")
        times.append(time.perf_counter() - start)
    return min(times)


def update_latency(page, url: str, ledger: Ledger, run_id: str) -> float:
    """Median seconds from a committed metric row to the chart holding one more point."""
    page.goto(f"{url}#/run/{run_id}")
    page.wait_for_function("window.ablab.points() > 0")
    step, times = 500, []
    for _ in range(5):
        before = page.evaluate("window.ablab.points()")
        step += 100
        start = time.perf_counter()
        ledger.log_metrics(run_id, [row(step, 1.0)])
        page.wait_for_function(f"window.ablab.points() > {before}", polling=20)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is absent; install Debian's chromium to measure the page.")
    print(f"{'runs':>7} {'first paint (500 rows)':>23} {'first paint (all)':>18} {'new row visible':>16}")
    for n in args.runs:
        with tempfile.TemporaryDirectory() as folder:
            lab = Path(folder)
            (lab / "ablab.toml").write_text('[lab]\nname = "bench"\n')
            with Ledger(lab) as ledger:
                run_id = fill(ledger, n)
                server, url = serve(lab)
                try:
                    with sync_playwright() as p:
                        browser = p.chromium.launch(executable_path=CHROMIUM)
                        page = browser.new_page(viewport={"width": 1280, "height": 900})
                        paint, paint_all = first_paint(page, url, "500"), first_paint(page, url, "")
                        latency = update_latency(page, url, ledger, run_id)
                        browser.close()
                finally:
                    server.kill()
                    server.wait()
        print(f"{n:>7,} {paint:>21.3f} s {paint_all:>16.3f} s {latency:>14.3f} s")
    print(f"targets: first paint under {PAINT_TARGET_S:.0f} s at 10,000 runs; a new metric row visible under "
          f"{UPDATE_TARGET_S:.0f} s (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
