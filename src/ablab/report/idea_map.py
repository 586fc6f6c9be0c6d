"""The map of ideas drawn as inline SVG for the HTML report: studies and ideas as boxes in columns by
depth (a follow-up sits right of what it follows), edges as arrows, each box coloured by its
outcome, so a study whose prediction failed visibly points at the study that followed it up.

Laid out here, with no JavaScript and nothing fetched: the page stays one self-contained file.
Every text is escaped; a box's full question or idea is its <title> (shown on hover).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Sequence

from ablab.analysis.idea_map import IdeaMap, Node, build_map, outcomes_of, study_outcome
from ablab.store.ledger import Ledger

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 48, 70, 22, 16
TOP = MARGIN + 24 + 40  # below the legend, with room for an arrow that arcs over the columns it skips
LABEL_CHARS = 26  # of the name and of the text line inside a box; the whole text is the box's title
# Fill and stroke per outcome (ablab.analysis.idea_map.OUTCOMES); an untested idea is a dashed outline.
COLOURS = {"supported": ("#d7f0dc", "#1b7f3b"), "not supported": ("#f9d9d9", "#b42318"),
           "inconclusive": ("#fbeccb", "#a15c00"), "not run": ("#ececec", "#6b6b6b"),
           "untested idea": ("#ffffff", "#3559b7")}
EDGE_WORDS = {"follows": "followed up by", "suggests": "suggested", "tests": "tested by"}
# A follow-up is the edge the map is for: dark and thick; an idea's origin is dashed.
EDGE_STYLES = {"follows": 'stroke="#222" stroke-width="2.2"', "suggests": 'stroke="#777" stroke-width="1.3"'
               ' stroke-dasharray="4 3"', "tests": 'stroke="#555" stroke-width="1.5"'}


def map_section(lab: Path, views: Sequence[Any] = ()) -> str:
    """The report section's HTML: the lab's map of studies and ideas, or a line saying there is
    nothing yet. `views`: the report's StudyViews (record and arms), whose verdicts are not read twice."""
    outcomes = {view.record["name"]: study_outcome(view.arms) for view in views}
    with Ledger(lab) as ledger:
        studies, ideas = ledger.studies(), ledger.ideas()
        missing = [s["name"] for s in studies if s["name"] not in outcomes]
        outcomes = {**outcomes_of(lab, missing, ledger), **outcomes}
    graph = build_map(studies, ideas, outcomes)
    if not graph.nodes:
        return '<p class=muted>No studies or ideas yet; `ablab idea add "TEXT"` starts the backlog.</p>'
    return draw(graph)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _positions(graph: IdeaMap) -> dict[str, tuple[int, int]]:
    """Each node's top-left corner: its depth's column, stacked in the order the map lists them."""
    rows: dict[int, int] = {}
    found = {}
    for node in graph.nodes:
        row = rows.get(node.depth, 0)
        rows[node.depth] = row + 1
        found[node.key] = (MARGIN + node.depth * (BOX_W + GAP_X), TOP + row * (BOX_H + GAP_Y))
    return found


def _box(node: Node, x: int, y: int) -> str:
    fill, stroke = COLOURS[node.outcome]
    dash = ' stroke-dasharray="5 3"' if node.outcome == "untested idea" else ""
    title = f"{node.label} ({node.outcome}): {node.text}" if node.text else f"{node.label} ({node.outcome})"
    kind = f"{node.kind} outcome-{node.outcome.replace(' ', '-')}"  # not the page's verdict classes
    return (f'<g class="node {kind}" data-node="{escape(node.key)}" data-outcome="{escape(node.outcome)}">'
            f"<title>{escape(title)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="{stroke}"'
            f' stroke-width="1.5"{dash}/>'
            f'<text x="{x + 8}" y="{y + 19}" font-weight="600">{escape(_short(node.label))}</text>'
            f'<text x="{x + 8}" y="{y + 37}" font-size="11" fill="#444">'
            f"{escape(_short(node.text or node.outcome))}</text></g>")


def _arrow(edge, start: tuple[int, int], end: tuple[int, int]) -> str:
    """A curve from the source box's right side to the target's left; one that skips columns arcs
    above the boxes between (so it is never hidden behind them); one within a column or backwards
    goes round the left side."""
    (sx, sy), (tx, ty) = start, end
    if tx > sx + BOX_W + GAP_X:
        x1, y1, x2, y2 = sx + BOX_W, sy + BOX_H // 2, tx, ty + BOX_H // 2
        over = min(sy, ty) - 48  # the curve's peak is about 30 px above the higher box
        path = f"M{x1},{y1} C{x1 + GAP_X},{over} {x2 - GAP_X},{over} {x2},{y2}"
    elif tx > sx:
        x1, y1, x2, y2 = sx + BOX_W, sy + BOX_H // 2, tx, ty + BOX_H // 2
        bend = (x2 - x1) // 2
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    else:  # same column or backwards (a cycle a hand-edited spec made): around the left side
        x1, y1, x2, y2 = sx, sy + BOX_H // 2, tx, ty + BOX_H // 2
        path = f"M{x1},{y1} C{x1 - 40},{y1} {x2 - 40},{y2} {x2},{y2}"
    words = f"{edge.source} {EDGE_WORDS[edge.kind]} {edge.target}"
    return (f'<path class="edge {edge.kind}" data-source="{escape(edge.source)}" data-target="{escape(edge.target)}"'
            f' d="{path}" fill="none" {EDGE_STYLES[edge.kind]} marker-end="url(#ablab-arrow)">'
            f"<title>{escape(words)}</title></path>")


def draw(graph: IdeaMap) -> str:
    """The map as one <svg> element, with a legend of the colours above the columns."""
    at = _positions(graph)
    width = max(x for x, _ in at.values()) + BOX_W + MARGIN
    height = max(max(y for _, y in at.values()) + BOX_H + MARGIN, 60)
    legend, x = [], MARGIN
    for outcome, (fill, stroke) in COLOURS.items():
        legend.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{fill}" stroke="{stroke}"/>'
                      f'<text x="{x + 16}" y="14" font-size="11">{escape(outcome)}</text>')
        x += 30 + 7 * len(outcome)
    width = max(width, x)
    edges = [_arrow(e, at[e.source], at[e.target]) for e in graph.edges]
    boxes = [_box(n, *at[n.key]) for n in graph.nodes]
    return (f'<svg id="idea-map" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
            f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13" role="img"'
            ' aria-label="Map of studies and ideas: arrows lead from a study to its follow-ups and ideas">'
            '<defs><marker id="ablab-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7"'
            ' orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
            + "".join(legend) + "".join(edges) + "".join(boxes) + "</svg>")
