"""Start-up cost of the command line and the report layer, this tree against an earlier commit.

    .venv/bin/python benchmarks/startup.py                 # against f333e07, the flat layout
    .venv/bin/python benchmarks/startup.py --before HEAD~3 --repeat 15

For each tree (this one, and `--before` unpacked with `git archive` into a temporary folder) it
times, in fresh interpreters with that tree first on PYTHONPATH: `ablab --help`, `import
ablab.report` (and the report module itself), and notes whether each pulled in torch. Medians of
`--repeat` runs, taken alternately so that machine load hits both trees alike; ratios are
before / after (above 1: this tree starts faster).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (label, code run by `python -c` in the tree, which module names the report layer in it)
PROBES = {
    "ablab --help": "import sys; sys.argv = ['ablab', '--help']\nfrom {cli} import main\ntry:\n    main()\n"
                    "except SystemExit:\n    pass",
    "import ablab.report": "import {report}",
}
LAYOUTS = {"packages": {"cli": "ablab.cli.main", "report": "ablab.report.html"},
           "flat": {"cli": "ablab.cli", "report": "ablab.report"}}


def layout(src: Path) -> dict[str, str]:
    return LAYOUTS["packages" if (src / "ablab" / "report" / "__init__.py").exists() else "flat"]


def once(src: Path, code: str) -> tuple[float, bool]:
    probe = code + "\nimport sys as _s; print('TORCH' if 'torch' in _s.modules else 'NO-TORCH')"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "COLUMNS": "100"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"probe failed in {src}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout.strip().endswith("\nTORCH") or done.stdout.strip() == "TORCH"


def unpack(rev: str, into: Path) -> Path:
    archive = into / "before.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, "src"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f333e07", help="the commit to compare with (default: the flat layout)")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": unpack(args.before, Path(tmp)), "after": ROOT / "src"}
        times: dict[tuple[str, str], list[float]] = {}
        torch: dict[tuple[str, str], bool] = {}
        for name, src in trees.items():  # warm the bytecode caches once, untimed
            for label, code in PROBES.items():
                once(src, code.format(**layout(src)))
        for _ in range(args.repeat):
            for label, code in PROBES.items():
                for name, src in trees.items():
                    seconds, loaded = once(src, code.format(**layout(src)))
                    times.setdefault((label, name), []).append(seconds)
                    torch[(label, name)] = loaded
    print(f"median of {args.repeat} fresh interpreters; before = {args.before}, after = this tree")
    print(f"{'probe':<22}{'before s':>10}{'after s':>10}{'ratio':>8}   torch imported (before / after)")
    for label in PROBES:
        before, after = (statistics.median(times[(label, n)]) for n in ("before", "after"))
        flags = " / ".join("yes" if torch[(label, n)] else "no" for n in ("before", "after"))
        print(f"{label:<22}{before:>10.3f}{after:>10.3f}{before / after:>7.2f}x   {flags}")


if __name__ == "__main__":
    main()
