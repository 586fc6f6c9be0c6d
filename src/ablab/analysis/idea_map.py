"""The map of ideas as data: studies and backlog ideas as nodes, follow-ups as edges, each node with
the outcome it is coloured by, and a depth (its longest chain of predecessors) to lay it out by.

Edges: a study that `follows` another (the failed study points at its successor), a study that
suggested an idea (`ablab idea add --from STUDY`), and an idea to the study that tested it. The
report draws it (ablab.report.idea_map); `ablab idea list` reads the ideas' outcomes from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablab.analysis.verdicts import analyze
from ablab.store.ledger import Ledger

# What a node is coloured by: a study's verdicts taken together, or an idea not yet tested.
OUTCOMES = ("supported", "not supported", "inconclusive", "not run", "untested idea")


@dataclass
class Node:
    key: str  # "study:NAME" or "idea:N"
    kind: str  # study | idea
    label: str  # the study's name, or "idea N"
    text: str  # the study's question, or the idea itself
    outcome: str  # one of OUTCOMES
    depth: int = 0  # the longest chain of edges leading to it


@dataclass
class Edge:
    source: str
    target: str
    kind: str  # follows (study -> its follow-up) | suggests (study -> idea) | tests (idea -> its study)


@dataclass
class IdeaMap:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, key: str) -> Node | None:
        return next((n for n in self.nodes if n.key == key), None)


def study_outcome(arms: list) -> str:
    """A study's arms (verdicts.ArmResult) as one outcome: supported when an arm's prediction held,
    not supported when every judged arm's was refuted, inconclusive otherwise (runs but too few to
    judge included); not run while no arm has a finished run."""
    verdicts = [arm.verdict.outcome for arm in arms if arm.verdict is not None]
    if not verdicts:
        return "inconclusive" if any(arm.summary is not None for arm in arms) else "not run"
    if "supported" in verdicts:
        return "supported"
    return "not supported" if all(v == "refuted" for v in verdicts) else "inconclusive"


def idea_outcome(idea: dict, outcomes: dict[str, str]) -> str:
    """An idea's colour: its testing study's outcome, or untested."""
    return outcomes.get(idea["tested_by"], "not run") if idea["tested_by"] else "untested idea"


def build_map(studies: list[dict], ideas: list[dict], outcomes: dict[str, str]) -> IdeaMap:
    """The map of the ledger's `studies` (their specs' `follows`) and `ideas` (Ledger.ideas), coloured
    by `outcomes` (study name -> one of OUTCOMES; a study missing from it reads not run). A study
    named by `follows` that is not in the ledger yet (planned, not run) is still drawn."""
    graph = IdeaMap()

    def study_node(name: str, question: str = "") -> str:
        key = f"study:{name}"
        if graph.node(key) is None:
            graph.nodes.append(Node(key, "study", name, question, outcomes.get(name, "not run")))
        return key

    for study in studies:
        if study["spec"].get("kind") != "ladder":  # a ladder has no hypothesis, so no place among ideas
            study_node(study["name"], study["spec"].get("question", ""))
    for study in studies:
        followed = study["spec"].get("follows")
        if followed and study["spec"].get("kind") != "ladder":
            graph.edges.append(Edge(study_node(followed), f"study:{study['name']}", "follows"))
    for idea in ideas:
        key = f"idea:{idea['id']}"
        graph.nodes.append(Node(key, "idea", f"idea {idea['id']}", idea["text"], idea_outcome(idea, outcomes)))
        if idea["origin"]:
            graph.edges.append(Edge(study_node(idea["origin"]), key, "suggests"))
        if idea["tested_by"]:
            graph.edges.append(Edge(key, study_node(idea["tested_by"]), "tests"))
    _set_depths(graph)
    return graph


def _set_depths(graph: IdeaMap) -> None:
    """Each node's depth: the longest path of edges into it (relaxed at most once per node, so a
    cycle, which `follows` checks make unlikely but a hand-edited spec could hold, still ends)."""
    depth = {n.key: 0 for n in graph.nodes}
    for _ in range(len(graph.nodes)):
        changed = False
        for edge in graph.edges:
            if depth[edge.target] < depth[edge.source] + 1 and depth[edge.source] + 1 < len(graph.nodes):
                depth[edge.target] = depth[edge.source] + 1
                changed = True
        if not changed:
            break
    for node in graph.nodes:
        node.depth = depth[node.key]


def outcomes_of(lab: Path, names: list[str], ledger: Ledger) -> dict[str, str]:
    """Each named study's outcome (study_outcome of its arms' verdicts), read through the open
    `ledger`; ladders and studies the ledger does not hold are left out (they read not run)."""
    from_ledger = {s["name"]: s for s in ledger.studies()}
    found = {}
    for name in names:
        record = from_ledger.get(name)
        if record is None or record["spec"].get("kind") == "ladder":
            continue
        found[name] = study_outcome(analyze(lab, name, ledger)[1])
    return found
