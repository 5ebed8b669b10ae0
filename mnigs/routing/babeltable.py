"""
babeld's local-socket state, parsed: the line parser, the table the lines
build, and the choice of candidate gateways from it.

Pure: no I/O, no reactor.  Line formats as babeld 1.12.1 writes them
(C{local.c}; the captured samples are in C{tests/unit/data/babel_*.txt})::

    add interface ab0 up true ipv6 fe80::e82c:d7ff:fe08:af7e
    flush interface ab0 up false
    add neighbour 5619a8a34d80 address fe80::54f1:89ff:fe07:3667 if ab0
        reach fffe ureach 0000 rxcost 96 txcost 96 cost 96
        (optionally "rtt 1.234 rttcost 20" before "cost")
    add xroute 10.251.0.1/32-0.0.0.0/0 prefix 10.251.0.1/32 from 0.0.0.0/0
        metric 0
    add route 5619a8a36030 prefix 10.251.0.2/32 from 0.0.0.0/0
        installed yes id a0:2f:99:88:ff:b5:77:84 metric 96 refmetric 0
        via fe80::54f1:89ff:fe07:3667 if ab0

The first word is C{add}, C{change} or C{flush}; C{flush} lines repeat the
entry's last description.  A route's id is the address of babeld's own
record: unique while the route lives, possibly reused after its flush.  A
route whose metric is 65535 (infinity) is a retraction kept until babeld
garbage-collects it: it is still reported, even as "installed yes".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from mnigs.routing.candidates import Candidate, IPAddress, sortCandidates, usableAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: babel's infinite metric: the route is a retraction, nothing is reachable.
INFINITY = 0xFFFF

ACTIONS = frozenset({"add", "change", "flush"})


@dataclass(frozen=True)
class BabelInterface:
    name: str
    up: bool
    ipv6: IPAddress | None = None
    ipv4: IPAddress | None = None

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class BabelNeighbour:
    id: str
    address: IPAddress
    interface: str
    reach: int
    ureach: int
    rxcost: int
    txcost: int
    cost: int

    @property
    def key(self) -> str:
        return self.id


@dataclass(frozen=True)
class BabelXroute:
    """
    A route this node itself redistributes (one of its own addresses, a
    redistributed kernel route).
    """

    id: str
    prefix: IPNetwork
    fromPrefix: IPNetwork
    metric: int

    @property
    def key(self) -> str:
        return self.id


@dataclass(frozen=True)
class BabelRoute:
    """
    A route learnt from a neighbour.

    @ivar fromPrefix: the source prefix (source-specific routing); the
        whole address space for ordinary routes.
    @ivar routerId: the originating router's id (EUI-64 text).
    """

    id: str
    prefix: IPNetwork
    fromPrefix: IPNetwork
    installed: bool
    routerId: str
    metric: int
    refmetric: int
    via: IPAddress
    interface: str

    @property
    def key(self) -> str:
        return self.id

    @property
    def reachable(self) -> bool:
        return self.metric < INFINITY


BabelEntry = Union[BabelInterface, BabelNeighbour, BabelXroute, BabelRoute]


@dataclass(frozen=True)
class BabelEvent:
    """
    One line of babeld's dump or monitor stream: C{action} (C{"add"},
    C{"change"} or C{"flush"}) applied to C{entry}.
    """

    action: str
    entry: BabelEntry


def _uint(text: str, base: int = 10) -> int:
    # int() alone would take "+5", " 5", "1_0" and non-ASCII digits.
    digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not text or any(c not in digits for c in text):
        raise ValueError(text)
    return int(text, base)


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=False)


def _yesNo(text: str, yes: str, no: str) -> bool:
    if text == yes:
        return True
    if text == no:
        return False
    raise ValueError(text)


def _interface(key: str, fields: dict[str, str]) -> BabelInterface:
    up = _yesNo(fields["up"], "true", "false")
    ipv6 = fields.get("ipv6")
    ipv4 = fields.get("ipv4")
    return BabelInterface(
        name=key,
        up=up,
        ipv6=None if ipv6 is None else _address(ipv6),
        ipv4=None if ipv4 is None else _address(ipv4),
    )


def _neighbour(key: str, fields: dict[str, str]) -> BabelNeighbour:
    return BabelNeighbour(
        id=key,
        address=_address(fields["address"]),
        interface=fields["if"],
        reach=_uint(fields["reach"], 16),
        ureach=_uint(fields.get("ureach", "0"), 16),
        rxcost=_uint(fields["rxcost"]),
        txcost=_uint(fields["txcost"]),
        cost=_uint(fields["cost"]),
    )


def _xroute(key: str, fields: dict[str, str]) -> BabelXroute:
    return BabelXroute(
        id=key,
        prefix=_network(fields["prefix"]),
        fromPrefix=_network(fields["from"]),
        metric=_uint(fields["metric"]),
    )


def _route(key: str, fields: dict[str, str]) -> BabelRoute:
    return BabelRoute(
        id=key,
        prefix=_network(fields["prefix"]),
        fromPrefix=_network(fields["from"]),
        installed=_yesNo(fields["installed"], "yes", "no"),
        routerId=fields["id"],
        metric=_uint(fields["metric"]),
        refmetric=_uint(fields["refmetric"]),
        via=_address(fields["via"]),
        interface=fields["if"],
    )


_KINDS = {
    "interface": _interface,
    "neighbour": _neighbour,
    "xroute": _xroute,
    "route": _route,
}


def parseBabelLine(line: str | bytes) -> BabelEvent | None:
    """
    Parse one line of babeld's local-socket stream into a L{BabelEvent}, or
    return C{None} for anything else: the greeting and C{ok} lines, kinds
    this version does not know, and garbage.  Never raises.

    Fields babeld may add in later versions are ignored; a missing or
    malformed field of a known kind makes the whole line C{None}.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    if not isinstance(line, str):
        return None
    words = line.split()
    if len(words) < 3 or words[0] not in ACTIONS:
        return None
    action, kind, key = words[0], words[1], words[2]
    build = _KINDS.get(kind)
    pairs = words[3:]
    if build is None or len(pairs) % 2:
        return None
    fields = dict(zip(pairs[0::2], pairs[1::2]))
    try:
        entry = build(key, fields)
    except (KeyError, ValueError):
        return None
    return BabelEvent(action, entry)


class BabelTable:
    """
    babeld's state as a stream of L{BabelEvent}s describes it: one entry
    per key (interface name, neighbour, xroute or route id), added or
    replaced by C{add}/C{change}, removed by C{flush}.
    """

    def __init__(self) -> None:
        self._entries: dict[type, dict[str, BabelEntry]] = {
            kind: {} for kind in (BabelInterface, BabelNeighbour, BabelXroute, BabelRoute)
        }

    def apply(self, event: BabelEvent) -> bool:
        """
        Apply C{event}; return whether the table now differs from before.
        """
        entries = self._entries[type(event.entry)]
        key = event.entry.key
        if event.action == "flush":
            return entries.pop(key, None) is not None
        changed = entries.get(key) != event.entry
        entries[key] = event.entry
        return changed

    def clear(self) -> None:
        for entries in self._entries.values():
            entries.clear()

    def routes(self) -> list[BabelRoute]:
        return list(self._entries[BabelRoute].values())

    def xroutes(self) -> list[BabelXroute]:
        return list(self._entries[BabelXroute].values())

    def neighbours(self) -> list[BabelNeighbour]:
        return list(self._entries[BabelNeighbour].values())

    def interfaces(self) -> list[BabelInterface]:
        return list(self._entries[BabelInterface].values())


def _preference(route: BabelRoute) -> tuple:
    return (not route.installed, route.metric, route.routerId, route.id)


def selectedRoutes(routes: list[BabelRoute]) -> list[BabelRoute]:
    """
    The one route babeld uses per (prefix, source prefix): installed before
    not installed, then the lowest metric; retractions left out.
    """
    best: dict[tuple, BabelRoute] = {}
    for route in routes:
        if not route.reachable:
            continue
        slot = (route.prefix, route.fromPrefix)
        known = best.get(slot)
        if known is None or _preference(route) < _preference(known):
            best[slot] = route
    return list(best.values())


def hostCandidates(routes: list[BabelRoute], source: str = "babel") -> list[Candidate]:
    """
    Candidate gateways from babel routes: the destination of every
    reachable host route (/32, /128), distance the babel metric, nearest
    first.  Source-specific routes are left out: they only carry traffic
    from their source prefix, which is not necessarily ours.
    """
    candidates = []
    for route in selectedRoutes(routes):
        prefix = route.prefix
        if prefix.prefixlen != prefix.max_prefixlen or route.fromPrefix.prefixlen:
            continue
        if not usableAddress(prefix.network_address):
            continue
        candidates.append(
            Candidate(
                address=prefix.network_address,
                distance=float(route.metric),
                source=source,
                via=str(route.via),
                interface=route.interface,
            )
        )
    return sortCandidates(candidates)


def defaultRoutes(routes: list[BabelRoute]) -> list[BabelRoute]:
    """
    The selected, reachable default routes (C{0.0.0.0/0}, C{::/0}, any
    source prefix), lowest metric first: their C{routerId} names the node
    that announces an exit.
    """
    defaults = [route for route in selectedRoutes(routes) if route.prefix.prefixlen == 0]
    return sorted(defaults, key=lambda route: (route.metric, route.prefix.version, route.routerId))
