"""
The mesh as the client saw it in its last scan, for the status page's
drawing: the client itself, the next hops the route sources reported,
the candidate addresses behind them, and which of those answered as
gateways.  Pure: the last scan's candidates and ranking in, a small
bounded dict out (L{meshView}).

Route sources know the next hop of a route (babel, kernel) but not the
nodes beyond it; overlay walks (Yggdrasil, cjdns) know hop counts but no
next hop.  So the drawing has at most three columns of truth: the
client, its next hops, and each candidate at its distance.
"""

from __future__ import annotations

import ipaddress

#: Candidates drawn besides the gateways, nearest first.
MAX_NODES = 40


def _hopId(via: str, interface: str | None) -> str:
    # A link-local next hop only means something with its interface.
    try:
        linkLocal = ipaddress.ip_address(via.split("%")[0]).is_link_local
    except ValueError:
        linkLocal = False
    if linkLocal and interface and "%" not in via:
        return f"{via}%{interface}"
    return via


def meshView(candidates, ranked, currentGateway: str | None = None,
             maxNodes: int = MAX_NODES) -> dict:
    """
    C{{"nodes": [...], "edges": [...]}} for the last scan.

    A node is C{{"id", "kind", "label", "distance", "gateway", "usable",
    "current"}}: C{kind} is C{self}, C{hop} (a next hop), C{gateway} (an
    address a gateway answered on) or C{node} (a candidate that did not);
    C{gateway} is the gateway's id.  An edge is C{{"from", "to",
    "distance", "interface"}}: the client to a next hop (by its
    interface), a next hop (or the client, when the source gave none) to
    a candidate at the source's distance.  Every gateway is kept, then
    the nearest C{maxNodes} other candidates; the order is deterministic
    (nearest first, then by address).
    """
    gateways = {}
    for place in ranked:
        seen = place.seen
        offer = seen.offer
        gateways.setdefault(seen.host, (offer, place.usable))
    byAddress = {}
    for candidate in candidates:
        byAddress.setdefault(str(candidate.address), candidate)
    others = sorted((c for address, c in byAddress.items() if address not in gateways),
                    key=lambda c: (c.distance, str(c.address)))[:maxNodes]
    kept = [byAddress[host] for host in gateways if host in byAddress] + others
    nodes = {"self": {"id": "self", "kind": "self", "label": "this client", "distance": 0.0,
                      "gateway": None, "usable": None, "current": False}}
    edges = {}

    def join(start, end, distance, interface):
        edges.setdefault((start, end), {"from": start, "to": end, "distance": distance,
                                        "interface": interface})

    for candidate in sorted(kept, key=lambda c: (c.distance, str(c.address))):
        address = str(candidate.address)
        parent = "self"
        if candidate.via:
            parent = _hopId(candidate.via, candidate.interface)
            nodes.setdefault(parent, {"id": parent, "kind": "hop", "label": parent,
                                      "distance": None, "gateway": None, "usable": None,
                                      "current": False})
            join("self", parent, None, candidate.interface)
        # A next hop that is a candidate itself (a kernel route's gateway)
        # is drawn as what it is.
        if nodes.get(address, {"kind": "hop"})["kind"] == "hop":
            nodes[address] = _target(address, candidate.distance, gateways, currentGateway)
        if parent != address:
            join(parent, address, candidate.distance, None if candidate.via else candidate.interface)
    # A gateway heard at an address no route source listed (one met
    # lately, asked again): joined to the client, distance unknown.
    for host in sorted(h for h in gateways if h not in nodes):
        nodes[host] = _target(host, None, gateways, currentGateway)
        join("self", host, None, None)
    return {"nodes": list(nodes.values()), "edges": list(edges.values())}


def _target(address, distance, gateways, currentGateway) -> dict:
    offer, usable = gateways.get(address, (None, None))
    if offer is None:
        return {"id": address, "kind": "node", "label": address, "distance": distance,
                "gateway": None, "usable": None, "current": False}
    return {"id": address, "kind": "gateway", "label": offer.name or address,
            "distance": distance, "gateway": offer.gatewayId, "usable": usable,
            "current": offer.gatewayId == currentGateway}
