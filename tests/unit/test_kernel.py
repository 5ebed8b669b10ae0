"""
Tests for L{mnigs.routing.kernel} with a fake netlink: the filtering is
pure, and the watch is driven by hand as the reactor would drive it.
"""

import errno
import socket
from ipaddress import ip_address, ip_network

from pyroute2.netlink.rtnl.rtmsg import rtmsg
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.routing.candidates import Candidate
from mnigs.interfaces import IRouteSource
from mnigs.routing.kernel import (
    POLL_INTERVAL,
    RTN_LOCAL,
    KernelRoute,
    KernelRouteSource,
    KernelWatch,
    kernelCandidates,
    kernelRoutes,
)

RTN_BROADCAST = 3
RTN_UNREACHABLE = 7


def route(destination, priority=0, protocol=42, table=254, gateway=None, interface="m0", type=1):
    return KernelRoute(
        ip_network(destination),
        table=table,
        protocol=protocol,
        priority=priority,
        type=type,
        gateway=None if gateway is None else ip_address(gateway),
        interface=interface,
    )


ROUTES = [
    route("10.251.0.2/32", 0, gateway="10.99.1.2"),
    route("10.251.0.3/32", 5, gateway="10.99.1.2"),
    route("10.251.0.4/32", 2, protocol=4, gateway="10.99.2.2", interface="m1"),
    route("fd00:251::2/128", 1024, protocol=4, gateway="fd99::2"),
    route("10.99.1.0/24", 0, protocol=2, interface="m0"),
    route("0.0.0.0/0", 0, gateway="10.99.1.9"),
    route("::/0", 1024, gateway="fe80::1"),
    route("10.251.0.9/32", 0, table=100, gateway="10.99.1.2"),
    route("10.251.0.10/32", 0, gateway="10.99.1.2", type=RTN_UNREACHABLE),
    # the node's own addresses as the local table lists them
    route("10.251.0.1/32", 0, protocol=2, table=255, type=RTN_LOCAL, interface="lo"),
    route("10.99.1.255/32", 0, protocol=2, table=255, type=RTN_BROADCAST),
    route("127.0.0.0/8", 0, protocol=2, table=255, type=RTN_LOCAL, interface="lo"),
    # a host route to one of them, and to unusable addresses
    route("10.251.0.1/32", 0, protocol=4, interface="lo"),
    route("127.0.0.2/32", 0),
    route("224.0.0.5/32", 0),
    route("fe80::5/128", 0),
]


def addresses(candidates):
    return [(str(c.address), c.distance) for c in candidates]


class KernelCandidatesTests(SynchronousTestCase):
    def test_hostRoutesOfMainTable(self):
        self.assertEqual(
            addresses(kernelCandidates(ROUTES)),
            [("10.251.0.2", 0), ("10.251.0.4", 2), ("10.251.0.3", 5), ("fd00:251::2", 1024)],
        )

    def test_viaAndInterface(self):
        candidates = kernelCandidates(ROUTES, protocols={4}, interfaces={"m1"})
        self.assertEqual(candidates, [Candidate(ip_address("10.251.0.4"), 2.0, "kernel", "10.99.2.2", "m1")])

    def test_protocols(self):
        self.assertEqual(
            addresses(kernelCandidates(ROUTES, protocols={42})), [("10.251.0.2", 0), ("10.251.0.3", 5)]
        )

    def test_tables(self):
        self.assertEqual(addresses(kernelCandidates(ROUTES, tables=(100,))), [("10.251.0.9", 0)])
        self.assertEqual(len(kernelCandidates(ROUTES, tables=(100, 254))), 5)

    def test_interfaces(self):
        self.assertEqual(addresses(kernelCandidates(ROUTES, interfaces={"m1"})), [("10.251.0.4", 2)])
        self.assertEqual(kernelCandidates(ROUTES, interfaces=()), [])

    def test_ownAddresses(self):
        self.assertEqual(
            addresses(kernelCandidates(ROUTES, localAddresses={ip_address("10.251.0.3")})),
            [("10.251.0.2", 0), ("10.251.0.4", 2), ("fd00:251::2", 1024)],
        )

    def test_nextHops(self):
        """
        Next hops count one more than their route, the default route's
        included; a host route to the same address wins; link-local next
        hops are left out.
        """
        candidates = kernelCandidates(ROUTES + [route("10.99.2.2/32", 0, protocol=4)], nextHops=True)
        self.assertEqual(
            [(str(c.address), c.distance, c.via) for c in candidates],
            [
                ("10.99.2.2", 0, None),
                ("10.251.0.2", 0, "10.99.1.2"),
                ("10.99.1.2", 1, None),
                ("10.99.1.9", 1, None),
                ("10.251.0.4", 2, "10.99.2.2"),
                ("10.251.0.3", 5, "10.99.1.2"),
                ("fd00:251::2", 1024, "fd99::2"),
                ("fd99::2", 1025, None),
            ],
        )

    def test_sourceName(self):
        self.assertEqual({c.source for c in kernelCandidates(ROUTES, source="kernel-bird")}, {"kernel-bird"})


def encoded(family, dst, dst_len, attrs, table=254, proto=42, type=1):
    message = rtmsg()
    message["family"] = family
    message["dst_len"] = dst_len
    message["table"] = table
    message["proto"] = proto
    message["type"] = type
    message["attrs"] = ([("RTA_DST", dst)] if dst else []) + attrs
    message.encode()
    parsed = rtmsg(message.data)
    parsed.decode()
    return parsed


class KernelRoutesTests(SynchronousTestCase):
    """
    L{kernelRoutes} on netlink messages encoded and decoded by pyroute2, as
    they come from the kernel.
    """

    def test_hostRoute(self):
        message = encoded(
            socket.AF_INET,
            "10.251.0.3",
            32,
            [("RTA_TABLE", 254), ("RTA_PRIORITY", 7), ("RTA_GATEWAY", "10.99.1.2"), ("RTA_OIF", 3)],
        )
        self.assertEqual(kernelRoutes(message, {3: "m0"}), [route("10.251.0.3/32", 7, gateway="10.99.1.2")])

    def test_defaultRouteWithoutPriority(self):
        message = encoded(socket.AF_INET6, None, 0, [("RTA_GATEWAY", "fd99::1"), ("RTA_OIF", 9)], proto=4)
        self.assertEqual(
            kernelRoutes(message, {}), [route("::/0", 0, protocol=4, gateway="fd99::1", interface=None)]
        )

    def test_largeTableId(self):
        message = encoded(socket.AF_INET, "10.1.0.0", 16, [("RTA_TABLE", 1000)], table=252)
        self.assertEqual(kernelRoutes(message, {})[0].table, 1000)

    def test_multipath(self):
        message = encoded(
            socket.AF_INET,
            "10.0.5.0",
            24,
            [
                ("RTA_PRIORITY", 9),
                (
                    "RTA_MULTIPATH",
                    [
                        {"oif": 3, "attrs": [("RTA_GATEWAY", "10.0.0.7")]},
                        {"oif": 4, "attrs": [("RTA_GATEWAY", "10.0.0.8")]},
                    ],
                ),
            ],
            proto=4,
        )
        self.assertEqual(
            kernelRoutes(message, {3: "m0", 4: "m1"}),
            [
                route("10.0.5.0/24", 9, protocol=4, gateway="10.0.0.7", interface="m0"),
                route("10.0.5.0/24", 9, protocol=4, gateway="10.0.0.8", interface="m1"),
            ],
        )

    def test_otherFamily(self):
        message = rtmsg()
        message["family"] = socket.AF_BRIDGE
        self.assertEqual(kernelRoutes(message, {}), [])


class FakeMonitor:
    def __init__(self):
        self.pending = 0
        self.closed = False
        self.error = None

    def fileno(self):
        return 99

    def drain(self):
        if self.error is not None:
            raise self.error
        seen, self.pending = self.pending, 0
        return seen

    def close(self):
        self.closed = True


class FakeNetlink:
    def __init__(self, routes=(), addresses=()):
        self.routes = list(routes)
        self.addresses = set(addresses)
        self.monitors = []
        self.snapshots = 0

    def snapshot(self):
        self.snapshots += 1
        return list(self.routes), set(self.addresses)

    def openMonitor(self):
        monitor = FakeMonitor()
        self.monitors.append(monitor)
        return monitor

    def change(self, routes):
        self.routes = list(routes)
        self.monitors[-1].pending += 1


class KernelRouteSourceTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.netlink = FakeNetlink(ROUTES)
        self.changes = []

    def source(self, **kw):
        return KernelRouteSource(self.reactor, netlink=self.netlink, **kw)

    def test_providesIRouteSource(self):
        source = self.source()
        self.assertTrue(verifyObject(IRouteSource, source))
        self.assertEqual(source.name, "kernel")

    def test_candidates(self):
        found = self.source(protocols={42}, nextHops=True).candidates()
        self.assertEqual(
            addresses(self.successResultOf(found)),
            [("10.251.0.2", 0), ("10.99.1.2", 1), ("10.99.1.9", 1), ("10.251.0.3", 5)],
        )

    def test_candidatesFailure(self):
        def broken():
            raise OSError(errno.ENOENT, "no such namespace")

        self.netlink.snapshot = broken
        self.failureResultOf(self.source().candidates(), OSError)

    def watch(self, **kw):
        watcher = self.source(**kw).watch(lambda: self.changes.append(self.reactor.seconds()))
        self.assertIsInstance(watcher, KernelWatch)
        return watcher

    def reader(self):
        [reader] = self.reactor.getReaders()
        return reader

    def test_watchReadsMonitorFromReactor(self):
        self.watch()
        self.assertEqual(self.reader().fileno(), 99)
        self.assertEqual(self.netlink.snapshots, 1, "the baseline")
        self.assertEqual(self.changes, [])

    def test_changeReportedAfterDebounce(self):
        self.watch(debounce=0.5)
        self.netlink.change(ROUTES + [route("10.251.0.20/32", 3)])
        self.assertIsNone(self.reader().doRead())
        self.reactor.advance(0.25)
        self.netlink.change(ROUTES + [route("10.251.0.20/32", 3), route("10.251.0.21/32", 4)])
        self.reader().doRead()
        self.reactor.advance(0.25)
        self.assertEqual(self.changes, [0.5])
        self.assertEqual(self.netlink.snapshots, 2)

    def test_irrelevantChangeNotReported(self):
        self.watch(protocols={42})
        self.netlink.change(ROUTES + [route("10.251.0.20/32", 3, protocol=4), route("10.77.0.0/16", 0)])
        self.reader().doRead()
        self.reactor.advance(1)
        self.assertEqual((self.changes, self.netlink.snapshots), ([], 2))

    def test_readWithoutMessagesLooksNot(self):
        self.watch()
        self.reader().doRead()
        self.reactor.advance(1)
        self.assertEqual(self.netlink.snapshots, 1)

    def test_monitorLostFallsBackToPolling(self):
        watcher = self.watch()
        reader = self.reader()
        self.netlink.monitors[-1].error = OSError(errno.EBADF, "gone")
        reason = reader.doRead()
        self.assertIsInstance(reason, Failure)
        # What the reactor does with a Failure from doRead:
        self.reactor.removeReader(reader)
        reader.connectionLost(reason)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertTrue(self.netlink.monitors[-1].closed)
        self.netlink.routes = ROUTES + [route("10.251.0.20/32", 3)]
        self.reactor.advance(POLL_INTERVAL)
        self.reactor.advance(0.5)
        self.assertEqual(self.changes, [POLL_INTERVAL + 0.5])
        self.successResultOf(watcher.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop(self):
        watcher = self.watch()
        self.netlink.change(ROUTES + [route("10.251.0.20/32", 3)])
        self.reader().doRead()
        self.successResultOf(watcher.stop())
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertTrue(self.netlink.monitors[-1].closed)
        self.reactor.advance(1)
        self.assertEqual(self.changes, [])
        self.successResultOf(watcher.stop())

    def test_stopBeforeStart(self):
        watcher = KernelWatch(self.reactor, self.netlink, lambda: [], self.changes.append)
        self.successResultOf(watcher.stop())
        self.assertEqual(self.netlink.monitors, [])
