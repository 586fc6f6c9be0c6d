"""The idea backlog, studies that follow others, and the map of ideas in the HTML report.

The map's studies are written through the store's API with the final losses a verdict needs (no
training); the plan and linking tests train one tiny study."""

import json
import re
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablab import config as C
from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run
from ablab.study import baselines

from conftest import TINY
from test_study import write_study

BASE = "tiny@2026-11-01"
BASELINE_LOSS = [2.50, 2.52, 2.49]


def cli(lab: Path, *args: str):
    from ablab.cli.main import app
    return CliRunner().invoke(app, [*args, "--lab", str(lab)])


def refusal(result) -> str:
    """The sentence of a UserError the command raised (CliRunner does not run main's handler)."""
    assert isinstance(result.exception, UserError), result.output
    return str(result.exception)


def recorded_study(lab: Path, name: str, shift: float, follows: str = "", motivated_by: str = "") -> None:
    """A finished 2-arm x 3-seed study whose arm changes the val loss by `shift` on every seed: a
    clear refutation when positive (the prediction is a decrease), support when negative."""
    with Ledger(lab) as ledger:
        ledger.save_study(name, BASE, {
            "name": name, "question": f"Does {name} lower val_loss?", "metric": "val_loss", "direction": "decrease",
            "min_effect": 0.01, "read_at": "final", "seeds": [0, 1, 2], "prediction": "lower",
            "arms": {"baseline": {}, "arm": {"model.d_ff": 192}}, "follows": follows, "motivated_by": motivated_by})
        for arm, delta in (("baseline", 0.0), ("arm", shift)):
            for seed, loss in enumerate(BASELINE_LOSS):
                run_id = f"{zlib.crc32(f'{name}/{arm}'.encode()):08x}{seed:08x}"
                ledger.record_run(Run(id=run_id, name=f"{name}/{arm}", status="finished", created_at="2026-11-21T00:00:00",
                                      finished_at="2026-11-21T00:01:00", config_hash=f"{name}{arm}", seed=seed,
                                      data_fingerprint=None, code_version=None, content_key=None, config={},
                                      provenance={}, result={"final": {"val_loss": loss + delta + 0.001 * seed}}))
                ledger.link_study_run(name, arm, seed, run_id)


def test_ideas_are_added_listed_and_refused_in_one_sentence(tmp_path):
    recorded_study(tmp_path, "norm-scale", 0.1)
    assert "idea 1 added" in cli(tmp_path, "idea", "add", "ProRes instead of LayerNorm scaling",
                                 "--from", "norm-scale").output
    assert "idea 2 added" in cli(tmp_path, "idea", "add", "a  wider   MLP").output
    listed = json.loads(cli(tmp_path, "idea", "list", "--json").output)
    assert [(i["id"], i["text"], i["origin"], i["status"]) for i in listed] == [
        (1, "ProRes instead of LayerNorm scaling", "norm-scale", "untested idea"),
        (2, "a wider MLP", None, "untested idea")]
    assert all(i["created_at"].startswith("20") and i["tested_by"] is None for i in listed)
    table = cli(tmp_path, "idea", "list").output
    assert "ProRes instead of LayerNorm scaling" in table and "norm-scale" in table
    assert "Did you mean 'norm-scale'?" in refusal(cli(tmp_path, "idea", "add", "x", "--from", "norm-scal"))
    assert "The idea is empty" in refusal(cli(tmp_path, "idea", "add", "  "))
    assert len(json.loads(cli(tmp_path, "idea", "list", "--json").output)) == 2  # nothing half-added


def test_study_new_from_an_idea_links_it_and_writes_motivated_by(tmp_path):
    (tmp_path / "ablab.toml").write_text('[lab]\nname = "ideas"\n')
    cli(tmp_path, "idea", "add", "ProRes instead of LayerNorm scaling")
    result = cli(tmp_path, "study", "new", "prores", "--idea", "1")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "studies" / "prores.toml").read_text()
    assert 'motivated_by = "idea 1: ProRes instead of LayerNorm scaling"' in text
    assert "# follows = " in text  # the template documents the key
    (idea,) = json.loads(cli(tmp_path, "idea", "list", "--json").output)
    assert idea["tested_by"] == "prores" and idea["status"] == "not run"
    assert "no idea 7" in refusal(cli(tmp_path, "study", "new", "other", "--idea", "7"))
    assert not (tmp_path / "studies" / "other.toml").exists()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    lab = tmp_path_factory.mktemp("ideas-lab")
    cfg = C.load(None, [*TINY, "train.max_steps=10", "eval.every=5"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0]))
    return lab


def follow_up(lab: Path, name: str, follows: str, motivated_by: str = "") -> Path:
    path = write_study(lab, name, 'variables = { "model.d_ff" = [192] }', seeds="[0]", budget=10240)
    meta = f'follows = "{follows}"\n' + (f'motivated_by = "{motivated_by}"\n' if motivated_by else "")
    path.write_text(path.read_text().replace('date = "2026-11-21"\n', 'date = "2026-11-21"\n' + meta))
    return path


def test_follows_must_name_a_known_study_at_plan_time(lab):
    from ablab.study.runner import make_plan
    write_study(lab, "first-try", 'variables = { "model.d_ff" = [192] }', seeds="[0]", budget=10240)
    with pytest.raises(UserError, match=r"meta.follows = 'frist-try' names no study of this lab; Did you mean "
                                        r"'first-try'\?"):
        make_plan(lab, follow_up(lab, "second-try", "frist-try"), probe=False)
    with pytest.raises(UserError, match="names the study itself"):
        make_plan(lab, follow_up(lab, "second-try", "second-try"), probe=False)
    with pytest.raises(UserError, match="names idea 9, which the backlog does not have"):
        make_plan(lab, follow_up(lab, "second-try", "first-try", "idea 9"), probe=False)
    plan = make_plan(lab, follow_up(lab, "second-try", "first-try"), probe=False)  # a planned file is known
    assert plan.spec.follows == "first-try"


def test_running_a_study_links_the_idea_it_names_and_records_follows(lab):
    from ablab.study.runner import make_plan, run_study
    with Ledger(lab) as ledger:
        idea = ledger.add_idea("wider MLP", None)
    path = follow_up(lab, "wider", "first-try", f"idea #{idea}, from the first try")
    assert run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None) == "finished"
    with Ledger(lab) as ledger:
        assert ledger.study("wider")["spec"]["follows"] == "first-try"
        (linked,) = [i for i in ledger.ideas() if i["id"] == idea]
    assert linked["tested_by"] == "wider" and linked["linked_at"]
    listed = {i["id"]: i["status"] for i in json.loads(cli(lab, "idea", "list", "--json").output)}
    assert listed[idea] == "inconclusive"  # one seed: runs, but no verdict


def map_lab(lab: Path) -> Path:
    """norm-scale refuted; prores follows it (from the idea norm-scale suggested) and is supported;
    one idea prores suggested is untested."""
    (lab / "ablab.toml").write_text('[lab]\nname = "map"\n')
    recorded_study(lab, "norm-scale", 0.1)
    with Ledger(lab) as ledger:
        first = ledger.add_idea("ProRes instead of LayerNorm scaling", "norm-scale")
    recorded_study(lab, "prores", -0.1, follows="norm-scale", motivated_by=f"idea {first}")
    with Ledger(lab) as ledger:
        ledger.link_idea(first, "prores")
        ledger.add_idea("ProRes <with> warmup & decay", "prores")  # markup in a text is escaped
    return lab


def test_the_map_has_every_node_coloured_and_the_failed_study_points_to_its_successor(tmp_path):
    from ablab.analysis.idea_map import build_map, outcomes_of
    from ablab.report.html import build_report

    lab = map_lab(tmp_path)
    with Ledger(lab) as ledger:
        studies, ideas = ledger.studies(), ledger.ideas()
        outcomes = outcomes_of(lab, ["norm-scale", "prores"], ledger)
    assert outcomes == {"norm-scale": "not supported", "prores": "supported"}
    graph = build_map(studies, ideas, outcomes)
    assert {(e.source, e.target, e.kind) for e in graph.edges} == {
        ("study:norm-scale", "study:prores", "follows"), ("study:norm-scale", "idea:1", "suggests"),
        ("idea:1", "study:prores", "tests"), ("study:prores", "idea:2", "suggests")}
    assert {n.key: n.depth for n in graph.nodes} == {"study:norm-scale": 0, "idea:1": 1, "study:prores": 2,
                                                     "idea:2": 3}
    page = build_report(lab, plots=False).read_text()
    svg = re.search(r"<svg id=\"idea-map\".*?</svg>", page, re.S).group(0)
    assert 'data-node="study:norm-scale" data-outcome="not supported"' in svg
    assert 'data-node="idea:2" data-outcome="untested idea"' in svg
    assert 'data-source="study:norm-scale" data-target="study:prores"' in svg
    assert "ProRes &lt;with&gt; warmup &amp; decay" in svg and "<with>" not in svg
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched


def test_the_map_in_headless_chromium(tmp_path):
    """The report page in a real browser: the SVG's boxes drawn with their colours, and the arrow
    from the refuted study starting at its box and ending at its successor's."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is absent; install Debian's chromium to check the map in a browser")
    playwright = pytest.importorskip("playwright.sync_api")
    from ablab.report.html import build_report

    page_path = build_report(map_lab(tmp_path), plots=False)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        nodes = page.eval_on_selector_all("#idea-map g.node", "gs => gs.map(g => [g.dataset.node, "
                                          "g.querySelector('rect').getAttribute('fill'), g.getBoundingClientRect().width])")
        assert {key for key, _, _ in nodes} == {"study:norm-scale", "study:prores", "idea:1", "idea:2"}
        assert all(width > 100 for _, _, width in nodes)  # drawn, not collapsed
        fills = {key: fill for key, fill, _ in nodes}
        assert fills["study:norm-scale"] != fills["study:prores"] != fills["idea:2"]
        box = {key: page.eval_on_selector(f'#idea-map g[data-node="{key}"] rect',
                                          "r => { const b = r.getBoundingClientRect(); "
                                          "return [b.left, b.right, b.top, b.bottom]; }")
               for key in ("study:norm-scale", "study:prores")}
        ends = page.eval_on_selector('#idea-map path[data-source="study:norm-scale"][data-target="study:prores"]',
                                     "p => { const n = p.getTotalLength(), a = p.getPointAtLength(0), "
                                     "b = p.getPointAtLength(n), m = p.getScreenCTM(); "
                                     "return [a.x * m.a + m.e, a.y * m.d + m.f, b.x * m.a + m.e, b.y * m.d + m.f]; }")
        page.screenshot(path=str(tmp_path / "idea-map.png"))
        browser.close()
    (ax, ay, bx, by), failed, successor = ends, box["study:norm-scale"], box["study:prores"]
    assert abs(ax - failed[1]) < 2 and failed[2] <= ay <= failed[3]  # leaves the failed study's right side
    assert abs(bx - successor[0]) < 2 and successor[2] <= by <= successor[3]  # arrives at its successor's left
    assert not errors
