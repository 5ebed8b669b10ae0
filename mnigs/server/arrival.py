# -*- test-case-name: tests.unit.test_arrival,tests.mesh.test_reply_by_arrival -*-
"""
The gateway answers a mesh peer by the way its packets came (issue 11).

While a mesh routing protocol converges, the gateway's route back to a
client may lead through a node that is gone (or there may be none yet),
although the client's packets reach the gateway well: its registration and
its tunnel's handshake then get no answer for the seconds babel takes.
Replies to what arrived from the mesh therefore leave through the
interface it arrived on, to the neighbour it came from, whatever the main
table says (the marking: L{mnigs.system.arrivalnft}; the rules and tables:
L{mnigs.server.hoproutes}).  When routing is symmetric that neighbour is
the main table's next hop anyway.

The previous hops are learnt from the kernel's neighbour tables (the
neighbour a packet came from has resolved the gateway's address, so the
gateway holds an entry for it), read again L{SETTLE} seconds after the
kernel says that neighbours or links changed, and every
L{SAFETY_INTERVAL} seconds anyway; every L{POLL_INTERVAL} seconds without
a netlink monitor.  (A read costs pyroute2 some 10 ms of CPU even for a few
entries: not something to do every second for nothing.)  Their ids are
kept by L{mnigs.server.prevhops.PreviousHops}.

Like the pool routes, all of it is replaced at start, kept across a
restart, and removed with the data path.  A start takes over what a
previous run left (the ids in its tables, so that connections keep their
marks; its rules and routes, replaced in place): a restart leaves no
moment without a way back.
"""

from __future__ import annotations

import os

from typing import Callable, Iterable, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.routing.kernel import MonitorReader
from mnigs.server.hoproutes import HopRouting, chooseInterfaces
from mnigs.system.sysctl import SysctlSwitch
from mnigs.server.prevhops import Neighbour, PreviousHops
from mnigs.system.arrivalnft import arrivalScript, removeArrivalScript

log = Logger()

POLL_INTERVAL = 1.0
SAFETY_INTERVAL = 10.0
SETTLE = 0.05


def replyMarkSwitches(stateDir: str) -> list[SysctlSwitch]:
    """
    The sysctls that carry a hop's mark into the gateway's own first
    answers.  The output chain re-routes a reply only after the route
    lookup succeeded, and a mesh protocol that has just lost its routes
    leaves C{unreachable} ones (babeld keeps a retracted route so for a
    while): the lookup for a TCP SYN-ACK or an ICMP echo reply then fails
    before any hook sees it.  The prerouting chain stamps the hop into the
    packet mark of what arrives for the gateway itself, and with these the
    kernel routes by that mark from the first lookup on: an accepted
    connection takes its SYN's mark (C{tcp_fwmark_accept}), the kernel's
    own answers (echo replies, resets) the mark of what they answer
    (C{fwmark_reflect}).  (wireguard-go answers through the interface the
    packet came in on, which the kernel takes as on-link when the lookup
    fails, so its answers reach the output chain anyway.)
    """
    return [SysctlSwitch(f"/proc/sys/net/{name}", f"replies by arrival: {name}",
                         os.path.join(stateDir, f"sysctl-{name.replace('/', '-')}.on"))
            for name in ("ipv4/tcp_fwmark_accept", "ipv4/fwmark_reflect", "ipv6/fwmark_reflect")]


def neighbourMonitor():
    """A netlink monitor of the neighbour tables and the links."""
    from mnigs.routing.kernel import RouteMonitor
    from mnigs.system.pyroute import RTMGRP_LINK, RTMGRP_NEIGH

    return RouteMonitor(groups=RTMGRP_NEIGH | RTMGRP_LINK)


def adoptable(installed: dict, neighbours: Iterable[Neighbour]) -> list[tuple[Neighbour, int]]:
    """
    The (neighbour, id) pairs of the hops a previous run installed
    (L{HopRouting.installedHops}: id -> (interface, address)) that the
    neighbour tables still know.
    """
    byAddress = {(n.ifname, n.address): n for n in neighbours}
    found = []
    for hopId, (ifname, address) in sorted(installed.items()):
        neighbour = byAddress.get((ifname, address))
        if neighbour is not None:
            found.append((neighbour, hopId))
    return found


class ReplyByArrival:
    """
    C{runner} is an L{mnigs.system.nft.NftRunner}, C{routing} a
    L{HopRouting}; C{interfaces} the configured mesh interfaces (empty:
    every Ethernet-type link but C{excluded}, see L{chooseInterfaces}).
    C{openMonitor} makes a netlink monitor of neighbours and links (a
    L{mnigs.routing.kernel.RouteMonitor}) that C{clock}, then also an
    C{IReactorFDSet}, reads; without it, the tables are polled.
    """

    def __init__(self, clock: IReactorTime, runner, table: str, routing: HopRouting,
                 interfaces: Sequence[str], excluded: Sequence[str],
                 hops: Optional[PreviousHops] = None,
                 openMonitor: Optional[Callable[[], object]] = None,
                 switches: Sequence[SysctlSwitch] = ()) -> None:
        self._clock = clock
        self._openMonitor = openMonitor
        self._reader: Optional[MonitorReader] = None
        self._look = None
        self._runner = runner
        self.table = table
        self.routing = routing
        self._interfaces = list(interfaces)
        self._excluded = list(excluded)
        self.hops = hops if hops is not None else PreviousHops(clock)
        self._lock = DeferredLock()
        self._poller = LoopingCall(self._poll)
        self._poller.clock = clock
        # The last run failed: the next look applies the hops even unchanged.
        self._retry = False
        self._switches = list(switches)

    def _choose(self, links: dict[str, bool]) -> dict[str, bool]:
        return chooseInterfaces(self._interfaces, links, self._excluded)

    def start(self) -> Deferred[None]:
        """Replace whatever a previous run left by the hops known now, then follow them."""
        for switch in self._switches:
            switch.enable()
        # The monitor first: no change can fall between it and the baseline.
        interval = self._startReading()
        neighbours = self.routing.readNeighbours(self._choose)
        for neighbour, hopId in adoptable(self.routing.installedHops(), neighbours):
            self.hops.adopt(neighbour, hopId)
        self.hops.update(neighbours)
        self.routing.takeOver()
        d = self._lock.run(self._apply)

        def follow(_):
            log.info("replies by arrival: {count} previous hop(s), table inet {table}",
                     count=len(self.hops.hops()), table=self.table)
            self._poller.start(interval, now=False)

        return d.addCallback(follow)

    def _startReading(self) -> float:
        """Watch the neighbours if we can; the interval of the poll beside it."""
        if self._openMonitor is None:
            return POLL_INTERVAL
        try:
            monitor = self._openMonitor()
        except Exception:
            log.failure("replies by arrival: no netlink monitor; polling every {interval} s",
                        interval=POLL_INTERVAL)
            return POLL_INTERVAL
        self._reader = MonitorReader(monitor, self._changed, self._monitorLost)
        self._clock.addReader(self._reader)
        return SAFETY_INTERVAL

    def _changed(self) -> None:
        if self._look is None or not self._look.active():
            self._look = self._clock.callLater(SETTLE, self._poll)

    def _monitorLost(self, reason) -> None:
        log.failure("replies by arrival: netlink monitor lost; polling every {interval} s",
                    reason, interval=POLL_INTERVAL)
        self._stopReading()
        if self._poller.running:
            self._poller.stop()
            self._poller.start(POLL_INTERVAL, now=False)

    def _stopReading(self) -> None:
        if self._look is not None and self._look.active():
            self._look.cancel()
        self._look = None
        if self._reader is not None:
            reader, self._reader = self._reader, None
            self._clock.removeReader(reader)
            reader.monitor.close()

    def _poll(self) -> Deferred[None]:
        try:
            changed = self.hops.update(self.routing.readNeighbours(self._choose))
        except Exception:
            log.failure("replies by arrival: could not read the neighbour tables")
            return succeed(None)
        if not changed and not self._retry:
            return succeed(None)
        d = self._lock.run(self._apply)
        d.addErrback(self._failed)
        # The poll goes on while nft runs; the lock keeps the runs in order.
        return succeed(None)

    def _failed(self, failure) -> None:
        self._retry = True
        log.failure("replies by arrival: could not apply the hops; trying again at the next look",
                    failure)

    def _apply(self) -> Deferred[None]:
        self._retry = False
        hops = self.hops.hops()
        if self.hops.leftOut:
            log.warn("replies by arrival: no id left for {count} previous hop(s); their replies "
                     "follow the main table", count=self.hops.leftOut)
        self.routing.install(hops)
        d = self._runner.apply(arrivalScript(self.table, hops))
        d.addCallback(lambda _: self.routing.prune(hops))
        return d

    def _stopFollowing(self) -> None:
        self._stopReading()
        if self._poller.running:
            self._poller.stop()

    def leave(self) -> None:
        """Stop following the neighbours; the rules, tables and marks stay."""
        self._stopFollowing()

    def remove(self) -> Deferred[None]:
        """Stop, and take away the table, rules and routes."""
        self._stopFollowing()

        def routes(result):
            self.routing.clear()
            for switch in self._switches:
                switch.restore()
            return result

        return self._lock.run(self._runner.apply, removeArrivalScript(self.table)).addBoth(routes)

    def describe(self) -> list[dict]:
        return [{"id": hop.id, "interface": hop.ifname,
                 "mac": None if hop.mac is None else hop.mac.hex(":"),
                 "via4": None if hop.via4 is None else str(hop.via4),
                 "via6": None if hop.via6 is None else str(hop.via6)}
                for hop in self.hops.hops()]
