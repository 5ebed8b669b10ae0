# -*- test-case-name: tests.unit.test_prevhops -*-
"""
The gateway's previous hops: which neighbour a mesh packet came from, each
with a small id that nftables keeps in a connection's mark so that the
replies go back to that neighbour (L{mnigs.server.arrival}).

Pure bookkeeping, no I/O: L{PreviousHops.update} is given what the
neighbour tables hold now (L{Neighbour}s) and answers the L{Hop}s to
install.  A hop is one (interface, link-layer address) pair, or a whole
interface without link-layer addresses (tun); it keeps its id as long as
it is seen, and for C{forgetAfter} seconds after it last was, because
connections marked with its id may still be going.  A forgotten id is
reused last (the oldest freed first), so that a late packet of an old
connection is unlikely to be sent to a newer neighbour.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from typing import Iterable, NamedTuple, Optional, Union

from twisted.internet.interfaces import IReactorTime

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Ids 1..MAX_HOPS fit the eight bits of L{mnigs.system.arrivalnft.HOP_MASK}.
MAX_HOPS = 255
#: Seconds a hop stays after it left the neighbour tables.
FORGET_AFTER = 600.0


class Neighbour(NamedTuple):
    """
    One neighbour table entry that can take packets: C{mac} is six bytes,
    or C{None} for an interface without link-layer addresses (then
    C{address} is C{None} too).
    """
    ifname: str
    mac: Optional[bytes]
    address: Optional[IPAddress]


class Hop(NamedTuple):
    """
    A previous hop with its id and where to send its replies: C{via4} is
    the neighbour's IPv4 address, else an IPv6 one (IPv4 via IPv6), else
    C{None}; C{via6} its IPv6 address (link-local first).  For a hop
    without link-layer address both are C{None}: the interface is enough.
    """
    id: int
    ifname: str
    mac: Optional[bytes]
    via4: Optional[IPAddress]
    via6: Optional[IPAddress]


def _v6Preference(address: IPAddress) -> tuple:
    return (not address.is_link_local, int(address))


def _vias(addresses: set) -> tuple[Optional[IPAddress], Optional[IPAddress]]:
    v4 = sorted(a for a in addresses if a.version == 4)
    v6 = sorted((a for a in addresses if a.version == 6), key=_v6Preference)
    via6 = v6[0] if v6 else None
    return (v4[0] if v4 else via6), via6


class _Known(NamedTuple):
    id: int
    lastSeen: float
    addresses: frozenset


class PreviousHops:
    def __init__(self, clock: IReactorTime, maxHops: int = MAX_HOPS,
                 forgetAfter: float = FORGET_AFTER) -> None:
        if not 0 < maxHops <= MAX_HOPS:
            raise ValueError(f"maxHops must be 1..{MAX_HOPS}, not {maxHops!r}")
        self._clock = clock
        self._forgetAfter = forgetAfter
        self._known: dict[tuple[str, Optional[bytes]], _Known] = {}
        self._free = deque(range(1, maxHops + 1))
        self._hops: tuple[Hop, ...] = ()
        #: How many hops the last L{update} left out for want of ids.
        self.leftOut = 0

    def adopt(self, neighbour: Neighbour, hopId: int) -> None:
        """
        Give C{neighbour}'s hop the id C{hopId}, as a previous run left it
        installed, unless either is already taken.
        """
        key = (neighbour.ifname, neighbour.mac)
        if hopId not in self._free or key in self._known:
            return
        self._free.remove(hopId)
        addresses = frozenset() if neighbour.address is None else frozenset([neighbour.address])
        self._known[key] = _Known(hopId, self._clock.seconds(), addresses)

    def update(self, neighbours: Iterable[Neighbour]) -> bool:
        """
        Take what the neighbour tables hold now; C{True} if L{hops} changed.
        Neighbours beyond the id space are left out (counted in
        L{leftOut}): their replies follow the main table.
        """
        now = self._clock.seconds()
        seen: dict[tuple[str, Optional[bytes]], set] = {}
        for neighbour in neighbours:
            addresses = seen.setdefault((neighbour.ifname, neighbour.mac), set())
            if neighbour.address is not None:
                addresses.add(neighbour.address)
        for key, known in list(self._known.items()):
            if key in seen:
                self._known[key] = _Known(known.id, now, frozenset(seen[key]) or known.addresses)
            elif now - known.lastSeen >= self._forgetAfter:
                del self._known[key]
                self._free.append(known.id)
        new = sorted(seen.keys() - self._known.keys(), key=_keyOrder)
        self.leftOut = max(0, len(new) - len(self._free))
        for key in new[:len(self._free)]:
            self._known[key] = _Known(self._free.popleft(), now, frozenset(seen[key]))
        hops = tuple(sorted((Hop(known.id, ifname, mac, *_vias(known.addresses))
                             for (ifname, mac), known in self._known.items()),
                            key=lambda hop: hop.id))
        changed, self._hops = hops != self._hops, hops
        return changed

    def hops(self) -> tuple[Hop, ...]:
        """The hops as of the last L{update}, by id."""
        return self._hops


def _keyOrder(key: tuple[str, Optional[bytes]]) -> tuple:
    ifname, mac = key
    return (ifname, mac or b"")
