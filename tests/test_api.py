"""docs/api.md's walk-through runs as written, and the API refuses what the command line refuses."""

import re
from pathlib import Path

import pytest

import ablab
from ablab.errors import UserError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_walk_through_in_docs_api_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the document is ours
    lab = namespace["lab"]
    assert (tmp_path / "walk" / "reports" / "studies" / "lr-up.md").exists()
    assert "Keep 0.02" in namespace["sheet"].read_text()
    assert set(namespace["frame"].columns) >= {"id", "model.d_model", "final.val_loss"}
    # the same records the command line reads
    assert [r.id for r in lab.runs(tag="api-walk")] == [namespace["run"].run_id]


def test_the_api_names_the_fix_for_bad_input(tmp_path):
    lab = ablab.Lab.init(tmp_path / "lab", examples=False)
    with pytest.raises(UserError, match="did you mean|Did you mean"):
        lab.config("quickstart", train={"max_stepz": 3})
    with pytest.raises(UserError, match="does not exist"):
        lab.study("studies/none.toml").plan()
    with pytest.raises(UserError, match="opened by name"):
        lab.study("never-ran").plan()
    assert lab.runs() == []
