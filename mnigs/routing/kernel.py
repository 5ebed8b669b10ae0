"""
The kernel route source: candidate gateways from the kernel's routing
tables, read over netlink with pyroute2 (never from C{ip} output).  What
is kept is decided in L{mnigs.routing.kerneltable}.

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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mnigs.routing.candidates import Candidate, IPAddress
from mnigs.interfaces import IRouteSource
from mnigs.routing.changes import ChangeNotifier
from mnigs.routing.kerneltable import (
    PROTO_BABEL,
    PROTO_STATIC,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTN_LOCAL,
    RTN_UNICAST,
    KernelRoute,
    kernelCandidates,
    kernelRoutes,
)

__all__ = [
    "PROTO_BABEL",
    "PROTO_STATIC",
    "RT_TABLE_LOCAL",
    "RT_TABLE_MAIN",
    "RTN_LOCAL",
    "RTN_UNICAST",
    "KernelRoute",
    "KernelRouteSource",
    "KernelWatch",
    "PyRoute2Netlink",
    "RouteMonitor",
    "kernelCandidates",
    "kernelRoutes",
]

#: Seconds between looks when the netlink monitor socket is lost.
POLL_INTERVAL = 2.0

class RouteMonitor:
    """
    A non-blocking netlink socket bound to the IPv4 and IPv6 route groups
    (or to C{groups}: the gateway's replies by arrival watch neighbours).
    """

    def __init__(self, netns: str | None = None, groups: int | None = None) -> None:
        from mnigs.system.pyroute import RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, IPRoute

        self._ipr = IPRoute(netns=netns, flags=0)
        try:
            self._ipr.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE if groups is None else groups)
            self._socket = self._ipr.asyncore.socket
            self._socket.setblocking(False)
        except BaseException:
            self._ipr.close()
            raise

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
        from mnigs.system.pyroute import IPRoute

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


class _WatchInputs(Protocol):
    def start(self) -> None:
        "Open the netlink monitor and take the baseline."

    def monitorLost(self, reason: Failure) -> None:
        "The monitor socket failed; the reactor has dropped it."

    def stop(self) -> None:
        "Stop watching for good."


@dataclass
class _WatchCore:
    reactor: object
    netlink: object
    notifier: ChangeNotifier
    log: Logger = field(default_factory=Logger)


@implementer(IReadDescriptor)
class MonitorReader:
    """
    The reactor's reader of a L{RouteMonitor}: turns readability into
    pokes of the notifier, and a failed read into C{monitorLost}.
    """

    def __init__(self, monitor: RouteMonitor, onMessages: Callable[[], object], onLost) -> None:
        self.monitor = monitor
        self._onMessages = onMessages
        self._onLost = onLost

    def fileno(self) -> int:
        return self.monitor.fileno()

    def doRead(self):
        try:
            seen = self.monitor.drain()
        except Exception:
            return Failure()
        if seen:
            self._onMessages()
        return None

    def connectionLost(self, reason: Failure) -> None:
        # Only a failed doRead gets here: stopping removes the reader
        # without calling this.
        self._onLost(reason)

    def logPrefix(self) -> str:
        return "KernelRouteMonitor"


def _startReading(inputs: _WatchInputs, core: _WatchCore) -> MonitorReader:
    reader = MonitorReader(core.netlink.openMonitor(), core.notifier.poke, inputs.monitorLost)
    # The baseline, taken once the monitor is open so that no change can
    # fall between the two.
    core.notifier.lookNow()
    core.reactor.addReader(reader)
    return reader


def _startPolling(inputs: _WatchInputs, core: _WatchCore, reason: Failure) -> LoopingCall:
    poll = LoopingCall(core.notifier.poke)
    poll.clock = core.reactor
    poll.start(POLL_INTERVAL, now=False)
    return poll


def _buildWatchMachine():
    machine = TypeMachineBuilder(_WatchInputs, _WatchCore)
    idle = machine.state("idle")
    reading = machine.state("reading", _startReading)
    polling = machine.state("polling", _startPolling)
    stopped = machine.state("stopped")

    idle.upon(_WatchInputs.start).to(reading).returns(None)
    idle.upon(_WatchInputs.stop).to(stopped).returns(None)
    stopped.upon(_WatchInputs.stop).loop().returns(None)
    stopped.upon(_WatchInputs.monitorLost).loop().returns(None)

    @reading.upon(_WatchInputs.monitorLost).to(polling)
    def monitorFailed(inputs: _WatchInputs, core: _WatchCore, reader: MonitorReader, reason: Failure) -> None:
        core.log.failure(
            "Netlink route monitor lost; polling every {interval} s instead", reason, interval=POLL_INTERVAL
        )
        try:
            reader.monitor.close()
        except Exception:
            core.log.failure("Closing the route monitor failed")

    @reading.upon(_WatchInputs.stop).to(stopped)
    def readerStop(inputs: _WatchInputs, core: _WatchCore, reader: MonitorReader) -> None:
        core.notifier.cancel()
        core.reactor.removeReader(reader)
        reader.monitor.close()

    @polling.upon(_WatchInputs.stop).to(stopped)
    def pollStop(inputs: _WatchInputs, core: _WatchCore, poll: LoopingCall) -> None:
        core.notifier.cancel()
        poll.stop()

    return machine.build()


_WatchMachine = _buildWatchMachine()


class KernelWatch:
    """
    Calls C{onChange()} when the candidates of a L{KernelRouteSource} have
    changed since the watch started or last reported.

    A machine: C{idle} --start--> C{reading} (the reactor reads the netlink
    monitor) --monitorLost--> C{polling}; C{stop} from anywhere leads to
    C{stopped}.
    """

    def __init__(self, reactor, netlink, snapshot, onChange, debounce: float = 0.5) -> None:
        notifier = ChangeNotifier(reactor, lambda: tuple(snapshot()), onChange, delay=debounce)
        self._machine = _WatchMachine(_WatchCore(reactor, netlink, notifier))

    def start(self) -> None:
        self._machine.start()

    def stop(self) -> Deferred[None]:
        """
        Stop watching; no C{onChange} after this.  Stopping again is
        harmless.
        """
        self._machine.stop()
        return succeed(None)


def buildSource(context, section):
    """The registry's builder (L{mnigs.routing}): C{[sources.kernel]}."""
    return KernelRouteSource(context.reactor, tables=tuple(section.tables),
                             protocols=set(section.protocols) or None)
