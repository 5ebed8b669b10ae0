"""
The client page's drawing of the mesh: L{meshSVG} turns the C{mesh} of a
client's status (L{mnigs.client.meshview.meshView}) into inline SVG.

Pure and deterministic: the same data gives the same bytes.  Columns are
roughly hops from the client (the client, then its next hops, then each
candidate at its distance in babel units of 96 a hop); within a column
nodes go nearest first, then by label.  The path to the current gateway
is drawn thick (class C{path}).
"""

from __future__ import annotations

import math

from mnigs.protocol import printable
from mnigs.routing.candidates import HOP_METRIC
from mnigs.web.html import text

COLUMN = 180
ROW = 46
MARGIN = 24
MAX_COLUMNS = 8
LABEL = 24  # characters of a label shown
#: A white outline under the letters keeps a label readable across lines.
HALO = 'paint-order="stroke" stroke="#fcfcfc" stroke-width="3"'

_SHAPES = {
    "self": '<circle cx="{x}" cy="{y}" r="10" fill="#3366cc" stroke="#123"/>',
    "hop": '<circle cx="{x}" cy="{y}" r="6" fill="#999" stroke="#555"/>',
    "node": '<circle cx="{x}" cy="{y}" r="5" fill="#ddd" stroke="#888"/>',
    "gateway": '<rect x="{left}" y="{top}" width="16" height="16" fill="{fill}" '
               'stroke="{stroke}" stroke-width="{width}"/>',
}


def _short(label) -> str:
    shown = printable(str(label))
    return shown if len(shown) <= LABEL else shown[:LABEL - 1] + "\u2026"


def _column(node, parentColumn) -> int:
    distance = node.get("distance")
    if node["kind"] == "self":
        return 0
    if node["kind"] == "hop" or not isinstance(distance, (int, float)) or math.isinf(distance):
        return min(parentColumn + 1, MAX_COLUMNS - 1)
    return min(max(parentColumn + 1, round(distance / HOP_METRIC)), MAX_COLUMNS - 1)


def _layout(nodes, edges):
    parents = {}
    for edge in edges:  # one parent each, whatever order the edges come in
        known = parents.get(edge["to"])
        if known is None or edge["from"] < known:
            parents[edge["to"]] = edge["from"]
    columns = {}

    def column(nodeId, seen=()):
        if nodeId not in columns:
            parent = parents.get(nodeId)
            parentColumn = (column(parent, seen + (nodeId,))
                            if parent in nodes and parent not in seen else 0)
            columns[nodeId] = _column(nodes[nodeId], parentColumn)
        return columns[nodeId]

    for nodeId in nodes:
        column(nodeId)
    byColumn = {}
    for nodeId, node in nodes.items():
        byColumn.setdefault(columns[nodeId], []).append(node)
    places = {}
    for col, members in byColumn.items():
        members.sort(key=lambda n: (n.get("distance") if isinstance(n.get("distance"), (int, float))
                                    else math.inf, str(n.get("label")), str(n["id"])))
        for row, node in enumerate(members):
            places[node["id"]] = (MARGIN + 12 + col * COLUMN, MARGIN + 12 + row * ROW)
    rows = max((len(m) for m in byColumn.values()), default=1)
    width = MARGIN * 2 + (max(byColumn, default=0) + 1) * COLUMN
    height = MARGIN * 2 + rows * ROW
    return places, parents, width, height


def _pathTo(nodeId, parents):
    path = set()
    while nodeId in parents and nodeId not in path:
        path.add(nodeId)
        nodeId = parents[nodeId]
    path.add(nodeId)
    return path


def meshSVG(mesh) -> str:
    """
    C{mesh} (C{{"nodes": [...], "edges": [...]}}) as an C{<svg>} element;
    an empty drawing that says so when there is nothing to draw.
    """
    nodes = {str(n["id"]): dict(n, id=str(n["id"]), kind=n.get("kind", "node"))
             for n in (mesh or {}).get("nodes", [])}
    edges = [dict(e, **{"from": str(e["from"]), "to": str(e["to"])})
             for e in (mesh or {}).get("edges", []) if str(e["from"]) in nodes and str(e["to"]) in nodes]
    gateways = [n for n in nodes.values() if n["kind"] == "gateway"]
    title = f"The mesh as this client saw it in its last scan: {len(gateways)} gateway(s)"
    if not nodes:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="360" height="40" '
                f'viewBox="0 0 360 40"><title>{title}</title>'
                f'<text x="12" y="24" font-size="13">no scan yet</text></svg>')
    places, parents, width, height = _layout(nodes, edges)
    current = next((n["id"] for n in gateways if n.get("current")), None)
    onPath = _pathTo(current, parents) if current is not None else set()
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f"<title>{text(title)}</title>"]
    for edge in edges:
        (x1, y1), (x2, y2) = places[edge["from"]], places[edge["to"]]
        path = edge["from"] in onPath and edge["to"] in onPath
        style = ('stroke="#2a8a2a" stroke-width="3"' if path
                 else 'stroke="#aaa" stroke-width="1"')
        label = edge.get("interface") or ""
        out.append(f'<line class="{"path" if path else "edge"}" data-from="{text(edge["from"])}" '
                   f'data-to="{text(edge["to"])}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style}/>')
        if label:
            out.append(f'<text x="{(x1 + x2) // 2}" y="{(y1 + y2) // 2 + 14}" fill="#777" '
                       f'text-anchor="middle" {HALO}>{text(_short(label))}</text>')
    for nodeId, node in nodes.items():
        x, y = places[nodeId]
        kind = node["kind"]
        if kind == "gateway":
            fill = "#4caf50" if node.get("usable") else "#f0a030"
            shape = _SHAPES[kind].format(left=x - 8, top=y - 8, fill=fill,
                                         stroke="#063" if node.get("current") else "#444",
                                         width=3 if node.get("current") else 1)
        else:
            shape = _SHAPES.get(kind, _SHAPES["node"]).format(x=x, y=y)
        distance = node.get("distance")
        detail = [kind + (" (current)" if node.get("current") else "")]
        if isinstance(distance, (int, float)) and kind != "self":
            detail.append("distance " + ("\u221e" if math.isinf(distance) else f"{distance:g}"))
        if node.get("gateway"):
            detail.append(str(node["gateway"]))
        hover = f"{node.get('label')} ({nodeId}): " + ", ".join(detail)
        classes = f"node {kind}" + (" current" if node.get("current") else "")
        weight = ' font-weight="bold"' if kind in ("self", "gateway") else ""
        out.append(f'<g class="{classes}" data-id="{text(nodeId)}"><title>{text(hover)}</title>'
                   f'{shape}<text x="{x + 11}" y="{y - 7}"{weight} {HALO}>'
                   f"{text(_short(node.get('label') or nodeId))}</text>")
        if kind == "gateway" and node.get("label") != nodeId:
            out.append(f'<text x="{x + 11}" y="{y + 19}" fill="#666" {HALO}>'
                       f"{text(_short(nodeId))}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
