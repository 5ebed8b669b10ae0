"""
L{KernelRouteSource} against a real kernel routing table, in a namespace:
node k linked to node peer (k m0 10.99.1.1/24, fd99::1/64 <-> peer), with
routes of several protocols, metrics and tables added through pyroute2.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mnigs.routing.kernel import (
    PROTO_BABEL,
    PROTO_STATIC,
    KernelRouteSource,
    PyRoute2Netlink,
    MonitorReader,
)
from tests.mesh.commands import waitFor
from tests.mesh.harness import Mesh, requireNamespaces

TIMEOUT = 10
PEER = "10.99.1.2"
PEER6 = "fd99::2"


class CountingNetlink(PyRoute2Netlink):
    """
    Counts the looks the watch takes, so a test can tell that a change was
    looked at and found irrelevant.
    """

    snapshots = 0

    def snapshot(self):
        self.snapshots += 1
        return super().snapshot()


def monitorReaders():
    return [reader for reader in reactor.getReaders() if isinstance(reader, MonitorReader)]


def addresses(candidates):
    return [(str(c.address), c.distance) for c in candidates]


class KernelRouteSourceMeshTests(unittest.TestCase):
    def setUp(self):
        requireNamespaces(self)
        mesh = Mesh(self)
        self.k = mesh.node("k")
        peer = mesh.node("peer")
        mesh.link(self.k, peer, "10.99.1.1/24", f"{PEER}/24")
        self.k.run(["ip", "-6", "addr", "add", "fd99::1/64", "dev", "m0", "nodad"])
        self.ipr = self.k.ipr()
        self.m0 = self.ipr.link_lookup(ifname="m0")[0]
        for destination, gateway, proto, priority, table in [
            ("10.77.0.1/32", PEER, PROTO_BABEL, 10, 254),
            ("10.77.0.2/32", PEER, PROTO_BABEL, 5, 254),
            ("10.77.0.3/32", None, PROTO_STATIC, 1, 254),
            ("fd77::1/128", PEER6, PROTO_BABEL, 7, 254),
            ("10.77.1.0/24", PEER, PROTO_BABEL, 0, 254),
            ("0.0.0.0/0", PEER, PROTO_STATIC, 0, 254),
            ("10.77.0.9/32", PEER, PROTO_BABEL, 0, 100),
            # k's own node address (on lo), routed out of m0
            (f"{self.k.address}/32", None, PROTO_STATIC, 0, 254),
        ]:
            self.addRoute(destination, gateway, proto, priority, table)

    def addRoute(self, destination, gateway=None, proto=PROTO_BABEL, priority=0, table=254, command="add"):
        spec = dict(dst=destination, oif=self.m0, proto=proto, priority=priority, table=table)
        if gateway is not None:
            spec["gateway"] = gateway
        self.ipr.route(command, **spec)

    def candidates(self, **kw):
        return KernelRouteSource(reactor, netns=self.k.ns, **kw).candidates()

    @defer.inlineCallbacks
    def test_babelRoutesByMetric(self):
        found = yield self.candidates(protocols={PROTO_BABEL})
        self.assertEqual(addresses(found), [("10.77.0.2", 5), ("fd77::1", 7), ("10.77.0.1", 10)])
        self.assertEqual((found[0].via, found[0].interface, found[0].source), (PEER, "m0", "kernel"))

    @defer.inlineCallbacks
    def test_everyProtocolButNotOwnAddressOrPrefixes(self):
        found = yield self.candidates()
        self.assertEqual(
            addresses(found), [("10.77.0.3", 1), ("10.77.0.2", 5), ("fd77::1", 7), ("10.77.0.1", 10)]
        )

    @defer.inlineCallbacks
    def test_otherTable(self):
        found = yield self.candidates(tables=(100,))
        self.assertEqual(addresses(found), [("10.77.0.9", 0)])

    @defer.inlineCallbacks
    def test_nextHops(self):
        found = yield self.candidates(protocols={PROTO_STATIC}, nextHops=True)
        self.assertEqual(addresses(found), [("10.77.0.3", 1), (PEER, 1)])

    @defer.inlineCallbacks
    def test_interfaces(self):
        self.assertEqual((yield self.candidates(interfaces={"lo"})), [])
        self.assertEqual(len((yield self.candidates(interfaces={"m0"}))), 4)

    @defer.inlineCallbacks
    def test_missingNamespaceFails(self):
        source = KernelRouteSource(reactor, netns=self.k.ns + "-nonexistent")
        yield self.assertFailure(source.candidates(), OSError)

    @defer.inlineCallbacks
    def test_watch(self):
        """
        The watch reports a relevant route appearing and going; a route
        that does not pass the filter is looked at, and not reported.
        """
        netlink = CountingNetlink(self.k.ns)
        source = KernelRouteSource(reactor, netlink=netlink, protocols={PROTO_BABEL}, debounce=0.1)
        changes = []
        watcher = source.watch(lambda: changes.append(reactor.seconds()))
        self.addCleanup(watcher.stop)
        self.assertEqual(len(monitorReaders()), 1)
        looks = netlink.snapshots

        self.addRoute("10.77.0.60/32", PEER, PROTO_STATIC, 1)
        yield waitFor(reactor, lambda: netlink.snapshots > looks, TIMEOUT, 0.02,
                      message="a look at the static route")
        self.assertEqual(changes, [])

        self.addRoute("10.77.0.50/32", PEER, PROTO_BABEL, 3)
        yield waitFor(reactor, lambda: len(changes) == 1, TIMEOUT, 0.02,
                      message="the babel route to be reported")
        found = yield source.candidates()
        self.assertEqual(addresses(found)[0], ("10.77.0.50", 3))

        self.addRoute("10.77.0.50/32", PEER, PROTO_BABEL, 3, command="del")
        yield waitFor(reactor, lambda: len(changes) == 2, TIMEOUT, 0.02,
                      message="the route's removal to be reported")

        yield watcher.stop()
        self.assertEqual(monitorReaders(), [])
        self.addRoute("10.77.0.51/32", PEER, PROTO_BABEL, 3)
        self.assertEqual(len(changes), 2)
