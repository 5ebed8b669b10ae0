"""
Tests for the Yggdrasil walk (L{mnigs.routing.yggdrasil},
L{mnigs.routing.yggdrasilwalk}).  No yggdrasil here: the walk runs against
the FAKE admin of L{tests.unit.fakeyggdrasil}, answering for node 0 of a
SYNTHETIC overlay of 300 nodes on a Clock, or replaying the answers
CAPTURED from real daemons.  The walk over real daemons is in
tests.mesh.test_yggdrasil.
"""

import ipaddress

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IRouteSource
from mnigs.routing.yggdrasil import YggdrasilRouteSource
from mnigs.yggdrasil.admin import YggdrasilError
from tests.unit.fakeyggdrasil import REMOTE_TIMEOUT, FakeYggdrasilAdmin, ReplayAdmin, SyntheticOverlay

OVERLAY = SyntheticOverlay(seed=11, size=300, gateways=10)
HOPS = OVERLAY.hops(0)


def setup(budget=30.0, concurrency=8, latency=0.05):
    clock = Clock()
    admin = FakeYggdrasilAdmin(clock, OVERLAY, latency={"debug_remoteGetPeers": latency})
    source = YggdrasilRouteSource(clock, admin, budget=budget, concurrency=concurrency)
    return clock, admin, source


def settle(clock, d, step=0.01, limit=100000):
    for _ in range(limit):
        if d.called:
            break
        clock.advance(step)
    return d


def trueHops(candidate):
    return HOPS[OVERLAY.byAddress(candidate.address).index]


class WalkTests(SynchronousTestCase):
    def assertNearestFirst(self, candidates):
        distances = [c.distance for c in candidates]
        self.assertEqual(distances, sorted(distances))

    def test_providesIRouteSource(self):
        clock, admin, source = setup()
        self.assertTrue(verifyObject(IRouteSource, source))
        self.assertEqual(source.name, "yggdrasil")

    def test_findsEveryNodeAtItsHopCountWithinTheBudget(self):
        """
        Against the fake admin (no yggdrasil here), 50 ms per
        debug_remoteGetPeers: every node of the synthetic overlay but the
        node itself comes out, each at its true hop count, nearest first;
        so do the gateways among them.  Every node is asked once, at most
        8 at a time.
        """
        clock, admin, source = setup()
        candidates = self.successResultOf(settle(clock, source.candidates()))
        self.assertLess(clock.seconds(), 30.0)
        self.assertEqual({c.address for c in candidates}, {n.address for n in OVERLAY.nodes[1:]})
        self.assertEqual([c.distance for c in candidates], [float(trueHops(c)) for c in candidates])
        self.assertNearestFirst(candidates)
        self.assertEqual({c.source for c in candidates}, {"yggdrasil"})
        gateways = [c for c in candidates if OVERLAY.byAddress(c.address).index in OVERLAY.gateways]
        self.assertEqual(sorted(c.distance for c in gateways),
                         sorted(float(HOPS[i]) for i in OVERLAY.gateways))
        remote = admin.remoteCalls()
        self.assertEqual(len(remote), len(set(remote)))
        self.assertEqual(set(remote), {n.key for n in OVERLAY.nodes[1:]})
        self.assertLessEqual(admin.maxRemote, 8)
        self.assertEqual(admin.inflight, 0)
        self.assertEqual(source.lastWalk.answered, len(OVERLAY.nodes) - 1)

    def test_concurrencyBoundsTheCallsInFlight(self):
        clock, admin, source = setup(concurrency=3)
        self.successResultOf(settle(clock, source.candidates()))
        self.assertEqual(admin.maxRemote, 3)

    def test_theBudgetEndsTheWalkWithWhatWasFoundNearestFirst(self):
        """
        With 1 s per remote call and 2.5 s in all, the walk stops at 2.5 s,
        cancels what is in flight, and answers with the levels it saw.
        """
        clock, admin, source = setup(budget=2.5, latency=1.0)
        d = source.candidates()
        for _ in range(240):
            clock.advance(0.01)
        self.assertNoResult(d)
        clock.advance(0.2)
        candidates = self.successResultOf(d)
        self.assertGreater(admin.cancelled, 0)
        self.assertEqual(admin.inflight, 0)
        self.assertTrue(candidates)
        self.assertLess(len(candidates), len(OVERLAY.nodes) - 1)
        self.assertEqual([c.distance for c in candidates], [float(trueHops(c)) for c in candidates])
        self.assertNearestFirst(candidates)
        self.assertEqual(max(c.distance for c in candidates), 3.0)

    def test_silentNodesTimeOutAndTheWalkGoesAround(self):
        """
        A node that does not answer (yggdrasil's 6 s "timeout") costs its
        slot 6 s; it is still a candidate (its peers named it), and every
        node also reachable another way is still found, at its hop count
        in the overlay without the silent node's links.
        """
        clock, admin, source = setup()
        cutting = next(i for i in sorted(HOPS, key=HOPS.get)
                       if HOPS[i] >= 2 and len(OVERLAY.hops(0, unexpanded={i})) < len(OVERLAY.nodes))
        silent = {OVERLAY.nodes[0].peers[0], cutting}
        admin.silent.update(silent)
        candidates = self.successResultOf(settle(clock, source.candidates()))
        self.assertGreaterEqual(clock.seconds(), REMOTE_TIMEOUT)
        expected = OVERLAY.hops(0, unexpanded=silent)
        del expected[0]
        self.assertLess(len(expected), len(OVERLAY.nodes) - 1)
        self.assertEqual({OVERLAY.byAddress(c.address).index: c.distance for c in candidates},
                         {i: float(h) for i, h in expected.items()})
        self.assertEqual(admin.inflight, 0)

    def test_cancelStopsEverything(self):
        clock, admin, source = setup(latency=1.0)
        d = source.candidates()
        clock.advance(1.5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(admin.inflight, 0)
        clock.advance(60)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noSelfIsAClearError(self):
        clock, admin, source = setup()
        admin.failing["getSelf"] = "Unknown action 'getself'"
        failure = self.failureResultOf(settle(clock, source.candidates()), YggdrasilError)
        self.assertIn("getself", str(failure.value))
        self.assertEqual(admin.inflight, 0)

    def test_withoutPeersTheWalkHasNowhereToGo(self):
        clock, admin, source = setup()
        admin.failing["getPeers"] = "boom"
        self.assertEqual(self.successResultOf(settle(clock, source.candidates())), [])

    def test_pathsGuessAndDhtAndSessionsComeAfterTheWalked(self):
        """
        Nodes the walk did not reach (here: no peers at all) come from
        getPaths at their tree hops, and from getDHT / getSessions after
        everything else; never the node itself (which getDHT lists).
        """
        clock, admin, source = setup()
        admin.failing["getPeers"] = "boom"
        admin.paths = {5: [1, 2, 0], 9: [1, 2, 3, 0]}
        admin.dht = [7, 5]
        admin.sessions = [8]
        candidates = self.successResultOf(settle(clock, source.candidates()))
        self.assertEqual([(OVERLAY.byAddress(c.address).index, c.distance) for c in candidates],
                         sorted([(5, 2.0), (9, 3.0), (7, 4.0), (8, 4.0)],
                                key=lambda p: (p[1], int(OVERLAY.nodes[p[0]].address))))

    def test_hostileRemoteAnswersAreSkipped(self):
        clock, admin, source = setup()
        peers = sorted((i for i in HOPS if i), key=HOPS.get)
        admin.hostile[peers[0]] = {"200::1": {"keys": ["zz"] * 5}}  # about somebody else
        admin.hostile[peers[1]] = {str(OVERLAY.nodes[peers[1]].address): {"keys": ["zz", 5, None]}}
        admin.hostile[peers[2]] = {str(OVERLAY.nodes[peers[2]].address): "nonsense"}
        candidates = self.successResultOf(settle(clock, source.candidates()))
        self.assertTrue(candidates)
        self.assertEqual(source.lastWalk.skipped, 3)
        self.assertNearestFirst(candidates)

    def test_aNodeNamingThousandsOfPeersCannotBlowTheWalkUp(self):
        clock, admin, source = setup()
        first = OVERLAY.nodes[0].peers[0]
        admin.hostile[first] = {str(OVERLAY.nodes[first].address): {
            "keys": [f"{i:064x}" for i in range(5000)]}}
        source.lastWalk = None
        d = source.candidates()
        source.lastWalk.maxNodes = 500
        candidates = self.successResultOf(settle(clock, d))
        self.assertLessEqual(len(source.lastWalk.found), 500)
        self.assertNearestFirst(candidates)


class ReplayTests(SynchronousTestCase):
    def test_theCapturedOverlayComesOutAtItsTrueHops(self):
        """
        Replaying the answers captured from real yggdrasil 0.4.7 daemons
        (node a of a - b - c - d - f with e next to b and c): every other
        node, at its hop count, nearest first.
        """
        admin = ReplayAdmin()
        source = YggdrasilRouteSource(Clock(), admin)
        candidates = self.successResultOf(source.candidates())
        expected = sorted(((float(n["hops"]), ipaddress.IPv6Address(n["address"]))
                           for n in admin.mesh["nodes"] if n["hops"]),
                          key=lambda p: (p[0], int(p[1])))
        self.assertEqual([(c.distance, c.address) for c in candidates], expected)
