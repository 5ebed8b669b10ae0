"""
The kernel route source: candidate gateways from the kernel's routing
tables, read over netlink with pyroute2 (never from C{ip} output).

Whatever routing daemon fills the tables (babeld's routes have protocol 42,
static ones 4), the host routes (/32, /128) it installs name nodes of the
mesh; optionally the next hops of routes do too.

Watching: a netlink socket bound to the route multicast groups, read by the
reactor itself (C{addReader} on its file descriptor, draining it without
blocking), so a change is seen at once and nothing is polled.  pyroute2
0.9's asyncio core only runs its event loop inside its synchronous calls,
which this socket never makes: the reactor alone reads it.  Should that
socket die, the watch falls back to polling every L{POLL_INTERVAL} seconds.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mnigs.client.candidates import (
    Candidate,
    IPAddress,
    mergeCandidates,
    usableAddress,
)
from mnigs.interfaces import IRouteSource
from mnigs.routing.changes import ChangeNotifier

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
RTN_LOCAL = 2
PROTO_STATIC = 4
PROTO_BABEL = 42
#: Seconds between looks when the netlink monitor socket is lost.
POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class KernelRoute:
    """
    One route (one next hop of a multipath route), in plain terms.

    @ivar type: the kernel's route type (C{RTN_UNICAST}, C{RTN_LOCAL}, ...).
    @ivar priority: the route's metric (C{RTA_PRIORITY}), 0 when absent.
    @ivar interface: the outgoing interface's name, when known.
    """

    destination: IPNetwork
    table: int = RT_TABLE_MAIN
    protocol: int = PROTO_STATIC
    priority: int = 0
    type: int = RTN_UNICAST
    gateway: IPAddress | None = None
    interface: str | None = None


def kernelCandidates(
    routes: Iterable[KernelRoute],
    localAddresses: Collection[IPAddress] = (),
    tables: Collection[int] = (RT_TABLE_MAIN,),
    protocols: Collection[int] | None = None,
    interfaces: Collection[str] | None = None,
    nextHops: bool = False,
    source: str = "kernel",
) -> list[Candidate]:
    """
    Candidates from kernel routes: the destinations of unicast host routes
    in C{tables}, of a protocol in C{protocols} and out of an interface in
    C{interfaces} (C{None}: any), with distance the route's priority; with
    C{nextHops}, also the gateways of all such routes (the default route's
    included) at priority + 1.  The node's own addresses (C{localAddresses}
    and the local table's C{local} routes), link-local, multicast, loopback
    and unspecified addresses are left out.  One entry per address, the
    nearest; nearest first.
    """
    routes = list(routes)
    own = set(localAddresses)
    own.update(
        route.destination.network_address
        for route in routes
        if route.type == RTN_LOCAL and route.destination.prefixlen == route.destination.max_prefixlen
    )
    found = []
    for route in routes:
        if route.type != RTN_UNICAST or route.table not in tables:
            continue
        if protocols is not None and route.protocol not in protocols:
            continue
        if interfaces is not None and route.interface not in interfaces:
            continue
        destination = route.destination
        via = None if route.gateway is None else str(route.gateway)
        if destination.prefixlen == destination.max_prefixlen:
            found.append(
                Candidate(destination.network_address, float(route.priority), source, via, route.interface)
            )
        if nextHops and route.gateway is not None:
            found.append(Candidate(route.gateway, float(route.priority + 1), source, None, route.interface))
    return mergeCandidates([[c for c in found if c.address not in own and usableAddress(c.address)]])


def kernelRoutes(message, linkNames: dict[int, str]) -> list[KernelRoute]:
    """
    The L{KernelRoute}s of one pyroute2 C{rtmsg} (one per next hop of a
    multipath route); C{linkNames} maps interface indexes to names.
    """
    family = message["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return []
    destination = message.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    common = dict(
        destination=ipaddress.ip_network(f"{destination}/{message['dst_len']}", strict=False),
        table=message.get("table") or message["table"],
        protocol=message["proto"],
        priority=message.get("priority") or 0,
        type=message["type"],
    )
    hops = message.get("multipath")
    if not hops:
        hops = [message]
    routes = []
    for hop in hops:
        gateway = hop.get("gateway")
        oif = hop.get("oif") if hop is message else hop["oif"]
        routes.append(
            KernelRoute(
                gateway=None if gateway is None else ipaddress.ip_address(gateway),
                interface=linkNames.get(oif),
                **common,
            )
        )
    return routes


class RouteMonitor:
    """
    A non-blocking netlink socket bound to the IPv4 and IPv6 route groups.
    """

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE

        self._ipr = IPRoute(netns=netns, flags=0)
        self._ipr.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
        self._socket = self._ipr.asyncore.socket
        self._socket.setblocking(False)

    def fileno(self) -> int:
        return self._ipr.fileno()

    def drain(self) -> int:
        """
        Read every pending datagram without blocking; return how many (an
        overrun, C{ENOBUFS}, counts as one: changes were lost).
        """
        count = 0
        while True:
            try:
                data = self._socket.recv(65536)
            except BlockingIOError:
                return count
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                count += 1
                continue
            if not data:
                raise ConnectionLost("netlink socket closed")
            count += 1

    def close(self) -> None:
        self._ipr.close()


class PyRoute2Netlink:
    """
    The kernel's tables through pyroute2's blocking C{IPRoute}, opened for
    each look (a few milliseconds) so that nothing is held between them.

    @param netns: a named network namespace (C{ip netns}), or C{None} for
        the caller's own.
    """

    log = Logger()

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def snapshot(self) -> tuple[list[KernelRoute], set[IPAddress]]:
        """
        Every route of every table, and the node's own addresses.
        """
        from pyroute2 import IPRoute

        with IPRoute(netns=self.netns, flags=0) as ipr:
            linkNames = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            routes = []
            for message in ipr.route("dump"):
                try:
                    routes.extend(kernelRoutes(message, linkNames))
                except (KeyError, TypeError, ValueError) as e:
                    self.log.warn("Skipping a route netlink message: {error!r}", error=e)
            addresses = set()
            for message in ipr.get_addr():
                address = message.get("address")
                if address is not None:
                    addresses.add(ipaddress.ip_address(address))
        return routes, addresses

    def openMonitor(self) -> RouteMonitor:
        return RouteMonitor(self.netns)


@implementer(IRouteSource)
class KernelRouteSource:
    """
    Candidates from the kernel's routing tables; see L{kernelCandidates}
    for what is kept.

    @param netlink: what reads the tables (C{snapshot()} and
        C{openMonitor()}, like L{PyRoute2Netlink}); by default pyroute2 in
        C{netns}.
    @param protocols: route protocols to keep (e.g. C{{42}} for babel's
        routes), C{None} for all.
    @param interfaces: names of the interfaces routes must leave by, C{None}
        for any.
    @param nextHops: also yield the gateways of routes.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        netlink=None,
        netns: str | None = None,
        tables: Collection[int] = (RT_TABLE_MAIN,),
        protocols: Collection[int] | None = None,
        interfaces: Collection[str] | None = None,
        nextHops: bool = False,
        debounce: float = 0.5,
        name: str = "kernel",
    ) -> None:
        self._reactor = reactor
        self._netlink = PyRoute2Netlink(netns) if netlink is None else netlink
        self._tables = frozenset(tables)
        self._protocols = None if protocols is None else frozenset(protocols)
        self._interfaces = None if interfaces is None else frozenset(interfaces)
        self._nextHops = nextHops
        self._debounce = debounce
        self.name = name

    def currentCandidates(self) -> list[Candidate]:
        """
        L{candidates}, synchronously.
        """
        routes, addresses = self._netlink.snapshot()
        return kernelCandidates(
            routes,
            addresses,
            tables=self._tables,
            protocols=self._protocols,
            interfaces=self._interfaces,
            nextHops=self._nextHops,
            source=self.name,
        )

    def candidates(self) -> Deferred[list[Candidate]]:
        # A dump takes milliseconds: not worth a thread (and pyroute2's
        # sockets are bound to the thread that uses them).
        return maybeDeferred(self.currentCandidates)

    def watch(self, onChange: Callable[[], object]) -> KernelWatch:
        watcher = KernelWatch(self._reactor, self._netlink, self.currentCandidates, onChange, self._debounce)
        watcher.start()
        return watcher


@implementer(IReadDescriptor)
class KernelWatch:
    """
    Calls C{onChange()} when the candidates of a L{KernelRouteSource} have
    changed since the watch started or last reported.  It is the reactor's
    reader of a L{RouteMonitor}.
    """

    log = Logger()

    def __init__(self, reactor, netlink, snapshot, onChange, debounce: float = 0.5) -> None:
        self._reactor = reactor
        self._netlink = netlink
        self._notifier = ChangeNotifier(reactor, lambda: tuple(snapshot()), onChange, delay=debounce)
        self._monitor: RouteMonitor | None = None
        self._poll: LoopingCall | None = None

    def start(self) -> None:
        self._monitor = self._netlink.openMonitor()
        # The baseline, taken after the monitor is open so no change falls
        # between the two.
        self._notifier.lookNow()
        self._reactor.addReader(self)

    def stop(self) -> Deferred[None]:
        """
        Stop watching; no C{onChange} after this.
        """
        self._notifier.cancel()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            self._reactor.removeReader(self)
            monitor.close()
        return succeed(None)

    # IReadDescriptor

    def fileno(self) -> int:
        if self._monitor is None:
            return -1
        return self._monitor.fileno()

    def doRead(self):
        try:
            seen = self._monitor.drain()
        except Exception:
            return Failure()
        if seen:
            self._notifier.poke()
        return None

    def connectionLost(self, reason: Failure) -> None:
        # Only an error in doRead gets here (stop() removes the reader
        # without a connectionLost): keep watching by polling.
        self.log.failure(
            "Netlink route monitor lost; polling every {interval} s instead",
            reason,
            interval=POLL_INTERVAL,
        )
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.close()
            except Exception:
                self.log.failure("Closing the route monitor failed")
        self._poll = LoopingCall(self._notifier.poke)
        self._poll.clock = self._reactor
        self._poll.start(POLL_INTERVAL, now=False)

    def logPrefix(self) -> str:
        return "KernelWatch"
