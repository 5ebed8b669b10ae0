"""
Tests for L{mnigs.routing.cjdns}.  No cjdns here: the walk runs against
the FAKE admin endpoint of L{tests.unit.fakecjdns}, which answers for node
0 of a SYNTHETIC mesh of 300 nodes (L{tests.unit.syntheticmesh}); the tests
check which addresses come out, and in what order.
"""

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.cjdns.admin import CjdnsAdmin, CjdnsError
from mnigs.cjdns.names import formatNodeAddress, parseLabel, parseNodeAddress
from mnigs.interfaces import IRouteSource
from mnigs.routing.cjdns import CjdnsRouteSource
from tests.unit.fakecjdns import FakeCjdns
from tests.unit.fakeudp import LoopbackUDPReactor
from tests.unit.syntheticmesh import SyntheticMesh, oneHopLabel

MESH = SyntheticMesh(seed=7, size=300, gateways=12)
BFS = MESH.bfs(0)
NOW = 1_700_000_000


def setup(budget=30.0, concurrency=8, latency=None, **sourceArgs):
    reactor = LoopbackUDPReactor()
    fake = FakeCjdns(MESH, password="walk-pw", latency=latency)
    reactor.addEndpoint(fake)
    reactor.advance(NOW)
    admin = CjdnsAdmin(reactor, password="walk-pw", timeout=5)
    source = CjdnsRouteSource(reactor, admin, budget=budget, concurrency=concurrency, **sourceArgs)
    return reactor, fake, admin, source


def settle(testCase, reactor, d, step=0.01, limit=100000):
    for _ in range(limit):
        if d.called:
            break
        reactor.advance(step)
    return d


def trueHops(candidate):
    return BFS[MESH.byIp(candidate.address).index][0]


class WalkTests(SynchronousTestCase):
    def assertNearestFirst(self, candidates):
        distances = [c.distance for c in candidates]
        self.assertEqual(distances, sorted(distances))

    def test_providesIRouteSource(self):
        reactor, fake, admin, source = setup()
        self.assertTrue(verifyObject(IRouteSource, source))
        self.assertEqual(source.name, "cjdns")

    def test_findsEveryGatewayInBfsOrder(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here), with 20 ms
        per getPeers: every node of the synthetic mesh comes out, within
        the budget, each at its true hop count, nearest first; so do the
        gateways among them.
        """
        reactor, fake, admin, source = setup(latency={"RouterModule_getPeers": 0.02})
        d = settle(self, reactor, source.candidates())
        candidates = self.successResultOf(d)
        self.assertLess(reactor.seconds() - NOW, 30.0)
        self.assertEqual({c.address for c in candidates}, {n.ip for n in MESH.nodes[1:]})
        self.assertEqual([c.distance for c in candidates], [float(trueHops(c)) for c in candidates])
        self.assertNearestFirst(candidates)
        self.assertEqual({c.source for c in candidates}, {"cjdns"})
        gatewayIps = {MESH.nodes[i].ip for i in MESH.gateways}
        gateways = [c for c in candidates if c.address in gatewayIps]
        self.assertEqual(len(gateways), len(MESH.gateways))
        self.assertEqual([c.distance for c in gateways],
                         sorted(float(BFS[i][0]) for i in MESH.gateways))
        self.assertEqual(admin._pending, {})

    def test_asksNodesByFullAddressAndSplicesKnownParents(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): getPeers
        names each node by its full address string (RouterModule_admin.c
        getNode accepts any node that way), and NodeStore_getRouteLabel is
        only asked for parents the node's NodeStore knows.
        """
        reactor, fake, admin, source = setup()
        self.successResultOf(settle(self, reactor, source.candidates()))
        paths = [args["path"] for args in fake.callsOf("RouterModule_getPeers")]
        self.assertIn(formatNodeAddress(21, BFS[MESH.nodes[0].peers[min(MESH.nodes[0].peers)]][1],
                                        MESH.nodes[MESH.nodes[0].peers[min(MESH.nodes[0].peers)]].key),
                      paths)
        self.assertTrue(all(p.startswith("v21.") for p in paths))
        asked = fake.callsOf("NodeStore_getRouteLabel")
        self.assertTrue(asked)
        self.assertTrue(all(parseLabel(a["pathToParent"]) in fake.known.values() for a in asked))

    def test_maxNodesKeepsTheNearest(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): with
        maxNodes 50 the walk keeps 50 nodes, the nearest (every node
        nearer than the farthest kept is kept), at their true distances,
        and asks none beyond them.
        """
        reactor, fake, admin, source = setup(maxNodes=50)
        candidates = self.successResultOf(settle(self, reactor, source.candidates()))
        fromTable = {MESH.nodes[i].ip for i in fake.known}
        walked = [c for c in candidates if c.address not in fromTable]
        self.assertTrue(0 < len(walked) <= 50)
        self.assertEqual([c.distance for c in candidates], [float(trueHops(c)) for c in candidates])
        farthest = max(trueHops(c) for c in candidates)
        nearer = {MESH.nodes[i].ip for i, (hops, _) in BFS.items() if 0 < hops < farthest}
        self.assertLessEqual(nearer, {c.address for c in candidates})
        self.assertLess(len(candidates), len(MESH) - 1)
        asked = {parseNodeAddress(a["path"]).ip for a in fake.callsOf("RouterModule_getPeers")}
        self.assertLessEqual(asked, {c.address for c in candidates})

    def test_localSplicingAlone(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): without
        NodeStore_getRouteLabel the labels spliced locally find the same.
        """
        reactor, fake, admin, source = setup(askRouteLabel=False)
        candidates = self.successResultOf(settle(self, reactor, source.candidates()))
        self.assertEqual(len(candidates), len(MESH) - 1)
        self.assertEqual(fake.callsOf("NodeStore_getRouteLabel"), [])

    def test_smallBudgetGivesPartialNearestFirst(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here), with 50 ms
        per getPeers and a 0.3 s budget: a part of the mesh, nearest
        first, at true distances, without error, and nothing left waiting.
        """
        reactor, fake, admin, source = setup(budget=0.3, latency={"RouterModule_getPeers": 0.05})
        d = settle(self, reactor, source.candidates())
        candidates = self.successResultOf(d)
        self.assertLessEqual(reactor.seconds() - NOW, 0.31)
        self.assertTrue(0 < len(candidates) < len(MESH) - 1)
        self.assertNearestFirst(candidates)
        self.assertEqual([c.distance for c in candidates], [float(trueHops(c)) for c in candidates])
        self.assertIn(1.0, [c.distance for c in candidates])
        reactor.advance(10)
        self.assertEqual(admin._pending, {})

    def test_concurrencyBound(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): never more
        than C{concurrency} getPeers calls in flight.
        """
        reactor, fake, admin, source = setup(concurrency=3, latency={"RouterModule_getPeers": 0.05})
        inflight = []
        original = admin.call

        def counting(function, **args):
            d = original(function, **args)
            if function == "RouterModule_getPeers":
                inflight.append(d)
            return d

        admin.call = counting
        d = source.candidates()
        most = 0
        for _ in range(100000):
            if d.called:
                break
            most = max(most, len([x for x in inflight if not x.called]))
            reactor.advance(0.01)
        self.assertEqual(len(self.successResultOf(d)), len(MESH) - 1)
        self.assertEqual(most, 3)

    def test_atMostConcurrencyExchangesOut(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here), with
        getRouteLabel and cookies slow too: the admin exchanges awaiting
        an answer (every function, cookies included) never pass
        C{concurrency}, here 20; the walk still finds every node.
        """
        reactor, fake, admin, source = setup(concurrency=20, latency={
            "RouterModule_getPeers": 0.05, "NodeStore_getRouteLabel": 0.03, "cookie": 0.02})
        original = admin._send
        most = []

        def counting(function, build):
            d = original(function, build)
            most.append(len(admin._pending))
            return d

        admin._send = counting
        d = settle(self, reactor, source.candidates())
        self.assertEqual(len(self.successResultOf(d)), len(MESH) - 1)
        self.assertEqual(max(most), 20)

    def test_hostileAnswersSkipped(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): garbled
        getPeers answers, a node that does not answer and garbage in
        peerStats are skipped entry by entry; the rest of the mesh comes
        out as if those nodes had no peers, nearest first.
        """
        reactor, fake, admin, source = setup()
        root = MESH.nodes[0]
        firstHop = sorted(root.peers.values())
        blocked = set(firstHop[:3])
        fake.hostile = {
            firstHop[0]: {"result": "peers", "peers": "not a list", "error": "none"},
            firstHop[1]: {"result": "peers", "error": "none",
                          "peers": [5, b"\xff\xfe", {"a": 1}, [], "v21.zzzz",
                                    "v21.0000.0000.0000.0013." + "0" * 52 + ".k",
                                    "v21.0000.0000.0000.0013.x.k", "x" * 5000] + ["junk"] * 5000},
        }
        fake.unresponsive = {firstHop[2]}
        fake.do_InterfaceController_peerStats = lambda args: {"peers": ["garbage", {"addr": 7}, [1]] + [
            {"addr": formatNodeAddress(21, oneHopLabel(root.interfaceTo(i)), MESH.nodes[i].key),
             "state": "ESTABLISHED"} for i in firstHop]}
        candidates = self.successResultOf(settle(self, reactor, source.candidates()))

        expected = {i: 1 for i in firstHop}
        level = [i for i in firstHop if i not in blocked]
        while level:
            following = []
            for index in level:
                for peer in MESH.nodes[index].peers.values():
                    if peer not in expected and peer != 0:
                        expected[peer] = expected[index] + 1
                        if peer not in blocked:
                            following.append(peer)
            level = following
        for index, label in fake.known.items():
            if index:
                expected[index] = min(expected.get(index, 99), BFS[index][0])
        self.assertEqual({(c.address, c.distance) for c in candidates},
                         {(MESH.nodes[i].ip, float(hops)) for i, hops in expected.items()})
        self.assertNearestFirst(candidates)

    def test_neverOurOwnAddress(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here), whose
        dumpTable fails: our peers name us among theirs, but Core_nodeInfo
        said who we are, so we are not a candidate; the walk still finds
        the rest of the mesh.
        """
        reactor, fake, admin, source = setup()
        fake.do_NodeStore_dumpTable = lambda args: {"error": "out of memory"}
        candidates = self.successResultOf(settle(self, reactor, source.candidates()))
        self.assertEqual({c.address for c in candidates}, {n.ip for n in MESH.nodes[1:]})
        self.assertEqual(fake.callsOf("NodeStore_getRouteLabel"), [])

    def test_cancelStopsTheWalk(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): cancelling
        a walk fails it with CancelledError at once and leaves no call to
        cjdns waiting and nothing scheduled.
        """
        for when in (0, 0.005, 0.05, 0.2):
            reactor, fake, admin, source = setup(latency={"RouterModule_getPeers": 0.02,
                                                          "NodeStore_dumpTable": 0.01})
            d = source.candidates()
            reactor.advance(when)
            d.cancel()
            self.failureResultOf(d, CancelledError)
            self.assertEqual(admin._pending, {})
            calls = len(fake.calls)
            reactor.advance(10)
            self.assertEqual(len(fake.calls), calls)
            self.assertEqual(reactor.getDelayedCalls(), [])

    def test_adminUnreachable(self):
        """
        Against no fake cjdns endpoint at all: the walk fails with the
        admin client's error instead of claiming an empty mesh.
        """
        reactor, fake, admin, source = setup()
        reactor.endpoints.clear()
        d = settle(self, reactor, source.candidates())
        self.assertIn("nothing listens", str(self.failureResultOf(d, CjdnsError).value))


class WatchTests(SynchronousTestCase):
    def test_reportsTableChangesDebounced(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): the first
        dumpTable is the baseline; a change is reported once, a debounce
        after the poll that saw it; an unchanged table is not reported.
        """
        reactor, fake, admin, source = setup(pollInterval=30, debounce=1)
        changes = []
        watch = source.watch(lambda: changes.append(reactor.seconds() - NOW))
        reactor.advance(0)
        reactor.advance(1)
        reactor.advance(30)
        reactor.advance(1)
        self.assertEqual(changes, [])
        newcomer = next(i for i, (hops, _) in sorted(BFS.items()) if hops == 3)
        fake.known[newcomer] = BFS[newcomer][1]
        reactor.advance(28)
        reactor.advance(0)
        self.assertEqual(changes, [])
        reactor.advance(1)
        self.assertEqual(changes, [61])
        for _ in range(4):
            reactor.advance(30)
        self.assertEqual(changes, [61])
        watch.stop()
        watch.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopDuringPoll(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): stopping
        while a poll waits for cjdns abandons it quietly.
        """
        reactor, fake, admin, source = setup(latency={"NodeStore_dumpTable": 2})
        changes = []
        watch = source.watch(lambda: changes.append(1))
        reactor.advance(0)
        self.assertTrue(admin._pending)
        watch.stop()
        self.assertEqual(admin._pending, {})
        reactor.advance(100)
        self.assertEqual(changes, [])
        self.assertEqual(fake.callsOf("NodeStore_dumpTable"), [{"page": 0}])
