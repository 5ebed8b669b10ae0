"""
L{mnigs.server.arrival.ReplyByArrival} with a Clock, a recording nft runner
and a fake L{mnigs.server.hoproutes.HopRouting} (no netlink here; the real
one: tests.mesh.test_reply_by_arrival).
"""

import ipaddress

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.server.arrival import (
    POLL_INTERVAL, SAFETY_INTERVAL, SETTLE, ReplyByArrival, adoptable)
from mnigs.server.prevhops import Neighbour

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def n(ifname, mac, address):
    return Neighbour(ifname, mac, ipaddress.ip_address(address))


class FakeRouting:
    def __init__(self, neighbours=(), installed=None):
        self.neighbours = list(neighbours)
        self.installed = installed or {}
        self.calls = []
        self.links = {"m0": True, "m1": True, "up0": True, "tun0": False}
        self.chosen = None

    def readNeighbours(self, choose):
        self.chosen = choose(self.links)
        return [x for x in self.neighbours if x.ifname in self.chosen]

    def installedHops(self):
        return self.installed

    def clear(self):
        self.calls.append("clear")

    def takeOver(self):
        self.calls.append("takeOver")

    def install(self, hops):
        self.calls.append(("install", [hop.id for hop in hops]))

    def prune(self, hops):
        self.calls.append(("prune", [hop.id for hop in hops]))


class FakeRunner:
    def __init__(self):
        self.scripts = []
        self.pending = None

    def apply(self, script):
        self.scripts.append(script)
        if self.pending is not None:
            return self.pending
        return defer.succeed(None)


class FakeMonitor:
    def __init__(self):
        self.pending, self.closed = 0, False

    def fileno(self):
        return 99

    def drain(self):
        if self.pending is None:
            raise OSError("gone")
        count, self.pending = self.pending, 0
        return count

    def close(self):
        self.closed = True


class ReplyByArrivalTests(SynchronousTestCase):
    def build(self, neighbours=(), installed=None, interfaces=(), openMonitor=None):
        self.clock = MemoryReactorClock() if openMonitor else Clock()
        self.routing = FakeRouting(neighbours, installed)
        self.runner = FakeRunner()
        return ReplyByArrival(self.clock, self.runner, "mnigs_hops", self.routing,
                              interfaces, ["up0"], openMonitor=openMonitor)

    def test_withAMonitorChangesAreReadAtOnceAndTheTablesRarely(self):
        monitor = FakeMonitor()
        arrival = self.build([n("m0", A, "10.0.0.2")], openMonitor=lambda: monitor)
        self.successResultOf(arrival.start())
        [reader] = self.clock.getReaders()
        self.clock.advance(SAFETY_INTERVAL - 0.1)
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        monitor.pending = 3
        reader.doRead()
        self.assertEqual(len(self.runner.scripts), 1)
        self.clock.advance(SETTLE)
        self.assertEqual(len(self.runner.scripts), 2)
        self.assertIn("goto from2", self.runner.scripts[-1])
        arrival.leave()
        self.assertEqual((self.clock.getReaders(), monitor.closed), ([], True))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_aLostMonitorFallsBackToPolling(self):
        monitor = FakeMonitor()
        arrival = self.build([n("m0", A, "10.0.0.2")], openMonitor=lambda: monitor)
        self.successResultOf(arrival.start())
        [reader] = self.clock.getReaders()
        monitor.pending = None
        failure = reader.doRead()
        self.clock.removeReader(reader)  # what the reactor does on a failed read
        reader.connectionLost(failure)
        self.assertTrue(monitor.closed)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_noMonitorToBeHadPolls(self):
        def refuse():
            raise OSError("no netlink")
        arrival = self.build([n("m0", A, "10.0.0.2")], openMonitor=refuse)
        self.successResultOf(arrival.start())
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_startReplacesEverythingByTheHopsKnownNow(self):
        arrival = self.build([n("m0", A, "10.0.0.2"), n("up0", B, "203.0.113.1")])
        self.successResultOf(arrival.start())
        self.assertEqual(self.routing.chosen, {"m0": True, "m1": True})
        self.assertEqual(self.routing.calls, ["takeOver", ("install", [1]), ("prune", [1])])
        [script] = self.runner.scripts
        self.assertIn('"m0" . 02:00:00:00:00:01 : goto from1', script)
        self.assertNotIn("up0", script)
        self.assertEqual([hop["interface"] for hop in arrival.describe()], ["m0"])

    def test_configuredInterfacesOnly(self):
        arrival = self.build([n("m0", A, "10.0.0.2")], interfaces=["m1", "tun0"])
        self.successResultOf(arrival.start())
        self.assertEqual(self.routing.chosen, {"m1": True, "tun0": False})

    def test_pollAppliesOnlyChanges(self):
        arrival = self.build([n("m0", A, "10.0.0.2")])
        self.successResultOf(arrival.start())
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 1)
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 2)
        self.assertIn("goto from2", self.runner.scripts[-1])
        self.assertEqual(self.routing.calls[-2:], [("install", [1, 2]), ("prune", [1, 2])])

    def test_runsDoNotOverlap(self):
        arrival = self.build([n("m0", A, "10.0.0.2")])
        self.successResultOf(arrival.start())
        self.runner.pending = defer.Deferred()
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        self.clock.advance(POLL_INTERVAL)
        self.routing.neighbours.append(n("m1", A, "10.0.1.3"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 2)  # the third waits for the second
        pending, self.runner.pending = self.runner.pending, None
        pending.callback(None)
        self.assertEqual(len(self.runner.scripts), 3)
        self.assertIn("goto from3", self.runner.scripts[-1])

    def test_aFailedRunIsTriedAgainAtTheNextLook(self):
        arrival = self.build([n("m0", A, "10.0.0.2")])
        self.successResultOf(arrival.start())
        self.runner.pending = defer.fail(OSError("nft exited 1"))
        self.routing.neighbours.append(n("m1", B, "10.0.1.2"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.runner.pending = None
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 3)
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(len(self.runner.scripts), 3)

    def test_aPreviousRunsIdsAreTakenOver(self):
        arrival = self.build([n("m0", A, "10.0.0.2"), n("m0", B, "10.0.0.3")],
                             installed={4: ("m0", ipaddress.ip_address("10.0.0.3"))})
        self.successResultOf(arrival.start())
        self.assertEqual({hop["mac"]: hop["id"] for hop in arrival.describe()},
                         {"02:00:00:00:00:01": 1, "02:00:00:00:00:02": 4})

    def test_leaveStopsFollowingAndKeepsTheDataPath(self):
        arrival = self.build([n("m0", A, "10.0.0.2")])
        self.successResultOf(arrival.start())
        arrival.leave()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.routing.calls, ["takeOver", ("install", [1]), ("prune", [1])])

    def test_removeTakesAwayTableRulesAndRoutes(self):
        arrival = self.build([n("m0", A, "10.0.0.2")])
        self.successResultOf(arrival.start())
        self.successResultOf(arrival.remove())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.runner.scripts[-1],
                         "table inet mnigs_hops {}\ndelete table inet mnigs_hops\n")
        self.assertEqual(self.routing.calls[-1], "clear")

    def test_adoptableNeedsTheNeighbourStillThere(self):
        neighbours = [n("m0", A, "10.0.0.2")]
        self.assertEqual(adoptable({1: ("m0", ipaddress.ip_address("10.0.0.2")),
                                    2: ("m1", ipaddress.ip_address("10.0.0.2")),
                                    3: ("tun0", None)}, neighbours),
                         [(neighbours[0], 1)])
