"""A drawn DAG for the run browser: nodes in layers by their longest path from a source, left to
right, so a pipeline run or a lineage reads like the Kubeflow UI's graph. Pure Python; the page
template draws the result as inline SVG (every label escaped by the template)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 176, 46, 44, 16, 12


@dataclasses.dataclass
class Node:
    id: str
    label: str
    detail: str = ""
    kind: str = "step"        # step | artifact | file | decision | external
    state: str = ""           # ran, cached, failed, ... (colours the box)
    href: str = ""
    x: int = 0
    y: int = 0


@dataclasses.dataclass
class Edge:
    source: str
    target: str
    path: str = ""            # the SVG path, set by layout()


@dataclasses.dataclass
class Drawing:
    nodes: List[Node]
    edges: List[Edge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def layers(node_ids: Sequence[str], edges: Sequence[Tuple[str, str]]) -> Dict[str, int]:
    """Each node's layer: the length of the longest path reaching it (cycles are broken by order)."""
    incoming: Dict[str, List[str]] = {n: [] for n in node_ids}
    for a, b in edges:
        if a in incoming and b in incoming and a != b:
            incoming[b].append(a)
    layer: Dict[str, int] = {}
    visiting = set()

    def depth(n: str) -> int:
        if n in layer:
            return layer[n]
        if n in visiting:  # a cycle: MLMD graphs have none, but never loop forever
            return 0
        visiting.add(n)
        layer[n] = 1 + max((depth(p) for p in incoming[n]), default=-1)
        visiting.discard(n)
        return layer[n]

    for n in node_ids:
        depth(n)
    return layer


def layout(nodes: List[Node], edges: List[Edge]) -> Drawing:
    """Positions for every node and a curved path for every edge between two drawn nodes."""
    ids = [n.id for n in nodes]
    by_id = {n.id: n for n in nodes}
    edges = [e for e in edges if e.source in by_id and e.target in by_id and e.source != e.target]
    layer = layers(ids, [(e.source, e.target) for e in edges])
    columns: Dict[int, List[Node]] = {}
    for n in nodes:
        columns.setdefault(layer[n.id], []).append(n)
    for col, members in sorted(columns.items()):
        for row, n in enumerate(members):
            n.x = MARGIN + col * (NODE_W + GAP_X)
            n.y = MARGIN + row * (NODE_H + GAP_Y)
    for e in edges:
        a, b = by_id[e.source], by_id[e.target]
        x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H // 2, b.x, b.y + NODE_H // 2
        bend = max(20, (x2 - x1) // 2)
        e.path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = MARGIN * 2 + max((len(m) for m in columns.values()), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Drawing(nodes, edges, width, height)
