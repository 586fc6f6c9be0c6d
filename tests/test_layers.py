"""The floor plan holds: DESIGN.md's layers as import-linter contracts (pyproject.toml), no import
cycle between ablab's modules, and reports, analysis and the CLI's start-up free of torch."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True)


def test_import_linter_contracts_are_kept():
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_back_import_breaks_the_layers(tmp_path):
    """The contracts can fail: a scratch copy of the package where the store imports the trainer,
    and the analysis imports a study, is refused by both the layers and the forbidden contract."""
    scratch = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "ablab", scratch / "ablab", ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "ablab" / "store" / "ledger.py").open("a").write("\nfrom ablab.train import launch  # back-import\n")
    (scratch / "ablab" / "analysis" / "stats.py").open("a").write("\nfrom ablab.study import runner\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(scratch), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ablab.store.ledger -> ablab.train.launch" in result.stdout
    assert "layers point one way BROKEN" in result.stdout
    assert "reports, ui and analysis never reach training, executors, studies, torch BROKEN" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("ablab"):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module.startswith("ablab") and module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = grimp.build_graph("ablab", exclude_type_checking_imports=True)  # as import-linter reads it
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("ablab.a", "ablab.b", "ablab.c"):
        graph.add_module(module)
    graph.add_import(importer="ablab.a", imported="ablab.b")
    graph.add_import(importer="ablab.b", imported="ablab.a")
    graph.add_import(importer="ablab.c", imported="ablab.a")
    assert _cycles(graph) == [["ablab.a", "ablab.b"]]


@pytest.mark.parametrize("code", [
    "import ablab.report, ablab.report.html, ablab.report.sheets, ablab.report.figures",
    "import ablab.analysis.verdicts, ablab.analysis.runs, ablab.analysis.scaling_data, ablab.analysis.crossrun",
    "import ablab.ui.server, ablab.ui.views",  # the dashboard
    "from ablab.cli.main import app",  # what `ablab --help` loads
])
def test_reports_analysis_and_the_cli_start_up_import_no_torch(code):
    probe = f"import sys; {code}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
