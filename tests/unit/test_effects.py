"""
The client effects around a session: verifying a new tunnel through its
device (the targets, the deadline, the Internet rule), the watchers of an
online session (ending it leaves no Deferred failing unconsumed), the
pinger's life and the warning about a mesh route to the gateway's inner
address.  Clock, a real L{Loss}, recording fakes for the pinger, the
health monitor, the routing, the RPC client and the hooks.
"""

import gc
import types

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import SCHEMA
from mnigs.client.effects import ClientEffects, verifyDeadline
from mnigs.client.health import NoAnswer, ProbeTargets
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Session
from mnigs.daemon.config import readSection
from mnigs.methods.loss import Loss
from tests.unit.test_health import FakePinger


class Step:
    gatewayId, host, port, method = "ed25519:gw", "10.99.0.5", 8150, "wireguard"
    gateway = "pdx-gw-1 (10.99.0.5)"
    # The offer as discovery saw it: its probe targets, the RPC round trip.
    seen = types.SimpleNamespace(offer=types.SimpleNamespace(probe=("9.9.9.9",), issuedAt=0,
                                                        name="pdx-gw-1"), rtt=0.0375)


class Connection:
    """A tunnel that reports its loss as the real ones do."""

    device = "wg-mnigs"

    def __init__(self):
        self.loss = Loss()
        self.disconnected = 0

    def whenLost(self):
        return self.loss.when()

    def disconnect(self):
        self.disconnected += 1
        self.loss.end()
        return defer.succeed(None)

    def traffic(self):
        return None

    def describe(self):
        return {"interface": self.device}


class Health:
    def __init__(self, session, reports):
        self.session = session
        self.reports = reports
        self.events = []

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")

    def describe(self):
        return {"state": "probing"}


class Routing:
    def __init__(self):
        self.innerRoute = None

    def routedOnMesh(self, host):
        return True

    def outgoingDevice(self, host):
        return self.innerRoute


class Hooks:
    def run(self, *args):
        pass


class Agent:
    def __init__(self):
        self.losses = []

    def lost(self, session, reason):
        self.losses.append(reason)


def clientConfig(**health):
    return readSection("<defaults>", "", SCHEMA, {"health": health})


class EffectsTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pingers = []
        self.routing = Routing()
        self.makeEffects(clientConfig())

    def makeEffects(self, config):
        self.effects = ClientEffects(self.clock, config, [], None, None, {}, None,
                                     QualityHistory(self.clock), self.routing, Health,
                                     Hooks(), SigningKey(b"k" * 32), pingerFactory=self.pinger)
        self.effects.wire(Agent())

    def pinger(self, device):
        pinger = FakePinger(self.clock)
        pinger.device, pinger.closed = device, (device, 0)

        def close():
            pinger.closed = device, pinger.closed[1] + 1
        pinger.close = close
        self.pingers.append(pinger)
        return pinger

    def session(self):
        return Session(Step(), {"id": "l1", "token": "t", "expires_at": 600.0,
                                "config": {"address": "100.64.0.2/32",
                                           "gateway_address": "100.64.0.1"}},
                       Connection(), self.clock.seconds())


class SessionWatcherTests(EffectsTestCase):

    def test_endingASessionLeavesNoUnhandledCancelledError(self):
        session = self.session()
        self.effects.startSession(session)
        self.successResultOf(self.effects.endSession(session))
        del session
        gc.collect()  # an unhandled error in a Deferred is logged when it is collected
        self.assertEqual(self.flushLoggedErrors(defer.CancelledError), [])

    def test_aLossDuringTheSessionReachesTheAgent(self):
        session = self.session()
        self.effects.startSession(session)
        session.connection.loss.happened("WireGuard daemon died")
        self.assertEqual(self.effects.reports.losses, ["WireGuard daemon died"])
        self.successResultOf(self.effects.endSession(session))


class VerifyTests(EffectsTestCase):
    def cancel(self, d):
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_deadlineFromTheRPCRoundTrip(self):
        config = clientConfig()
        self.assertEqual(verifyDeadline(config, 0.0375), 0.75 + 4 * 0.0375)
        self.assertEqual(verifyDeadline(config, 2.0), 5.0, "never past connect_timeout")
        self.assertEqual(verifyDeadline(config, None), 5.0, "unknown: connect_timeout")

    def test_probesTheOfferedAndTheGatewayThroughTheDevice(self):
        session = self.session()
        d = self.effects.verify(session)
        [pinger] = self.pingers
        self.assertEqual(pinger.device, "wg-mnigs")
        self.assertEqual(session.targets, ProbeTargets(("100.64.0.1",), ("9.9.9.9",), "wg-mnigs"))
        self.assertEqual([p[:2] for p in pinger.probes], [["9.9.9.9", 0.9], ["100.64.0.1", 0.9]])
        pinger.reply(0, 0.02)
        self.assertEqual(self.successResultOf(d), 0.02)

    def test_noAnswerWithinTheDeadlineFails(self):
        session = self.session()
        d = self.effects.verify(session)
        self.clock.pump([0.1] * 8)
        self.assertNoResult(d)
        self.clock.advance(0.9 - self.clock.seconds())
        self.assertEqual(str(self.failureResultOf(d, NoAnswer).value),
                         "no probe answer through wg-mnigs from 9.9.9.9, 100.64.0.1 within 0.9 s")
        self.successResultOf(self.effects.disconnect(session))
        self.assertEqual(self.pingers[0].closed, ("wg-mnigs", 1))
        self.assertEqual(session.connection.disconnected, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_theGatewayAloneIsNotTheInternet(self):
        d = self.effects.verify(self.session())
        self.pingers[0].reply(1, 0.004)
        self.clock.pump([0.1] * 8)
        self.clock.advance(0.9 - self.clock.seconds())
        self.assertIn("the gateway (100.64.0.1) answers", str(self.failureResultOf(d, NoAnswer).value))

    def test_withoutOfferProbesOnlyTheGatewayAndBeyond(self):
        self.makeEffects(clientConfig(offer_probes=False, beyond=["198.51.100.1"]))
        session = self.session()
        self.cancel(self.effects.verify(session))
        self.assertEqual(session.targets,
                         ProbeTargets(("100.64.0.1",), ("198.51.100.1",), "wg-mnigs"))

    def test_configuredTargetsReplaceTheGatewayAddress(self):
        self.makeEffects(clientConfig(targets=["10.99.0.5"], offer_probes=False))
        session = self.session()
        self.cancel(self.effects.verify(session))
        self.assertEqual(session.targets, ProbeTargets(("10.99.0.5",), (), "wg-mnigs"))

    def test_nothingToProbeFailsTheVerification(self):
        self.makeEffects(clientConfig(offer_probes=False))
        session = self.session()
        del session.lease["config"]["gateway_address"]
        self.assertEqual(str(self.failureResultOf(self.effects.verify(session), ValueError).value),
                         "nothing to probe")

    def test_theSessionKeepsItsPingerUntilItEnds(self):
        session = self.session()
        d = self.effects.verify(session)
        self.pingers[0].reply(0, 0.02)
        self.successResultOf(d)
        self.effects.startSession(session)
        self.assertEqual(len(self.pingers), 1, "health probes with the verified pinger")
        self.assertEqual(session.health.events, ["start"])
        self.successResultOf(self.effects.endSession(session))
        self.assertEqual(session.health.events, ["start", "stop"])
        self.assertEqual(self.pingers[0].closed, ("wg-mnigs", 1))


class InnerRouteTests(EffectsTestCase):
    def warnings(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def test_aMeshRouteToTheInnerAddressIsWarnedAboutOncePerSession(self):
        events = self.warnings()
        self.routing.innerRoute = "mesh0"
        session = self.session()
        self.effects.startSession(session)
        self.effects.checkSession(session)
        self.effects.checkSession(session)
        lines = [formatEvent(e) for e in events if "inner address" in formatEvent(e)]
        self.assertEqual(lines, [
            "traffic to pdx-gw-1 (10.99.0.5)'s inner address 100.64.0.1 leaves by mesh0, not "
            "through the tunnel wg-mnigs: a gateway announces its tunnel pool into the mesh "
            "(babeld's default redistribute local?); see etc/babeld-mnigs.conf"])
        self.successResultOf(self.effects.endSession(session))

    def test_throughTheTunnelNoWarning(self):
        events = self.warnings()
        self.routing.innerRoute = "wg-mnigs"
        session = self.session()
        self.effects.startSession(session)
        self.effects.checkSession(session)
        self.assertEqual([e for e in events if "inner address" in formatEvent(e)], [])
        self.successResultOf(self.effects.endSession(session))


class RecentGatewaysTests(EffectsTestCase):
    def seen(self, gid, host, others=(), addresses=()):
        offer = types.SimpleNamespace(gatewayId=gid, addresses=tuple(addresses))
        return types.SimpleNamespace(host=host, port=8150, offer=offer,
                                     others=tuple(types.SimpleNamespace(host=o, port=8150)
                                                  for o in others))

    def test_latestFirstBoundedAndForgotten(self):
        for i in range(20):
            self.effects._remember([self.seen(f"ed25519:{i}", f"10.0.0.{i}")])
            self.clock.advance(1)
        recent = self.effects.recentGateways()
        self.assertEqual(len(recent), self.effects.RECENT_MAX)
        self.assertEqual(recent[0], ("10.0.0.19", 8150))
        self.clock.advance(self.effects.RECENT_SECONDS - 1)  # 10.0.0.19 is 600 s old
        self.assertEqual(self.effects.recentGateways(), [("10.0.0.19", 8150)])
        self.clock.advance(1)
        self.assertEqual(self.effects.recentGateways(), [])

    def test_everyAddressOfAGatewayNearestFirstThenItsOfferedOnes(self):
        """
        A gateway is asked where it answered (nearest first) and at the
        addresses its signed offer lists, each once: a gateway just back
        has no route to its node address yet, but its address on a
        neighbour's link is routed by that neighbour.
        """
        self.effects._remember([self.seen("ed25519:a", "10.251.0.3", others=["10.99.3.1"],
                                          addresses=["10.251.0.3", "10.99.2.2", "10.99.3.1"])])
        self.assertEqual(self.effects.recentGateways(),
                         [("10.251.0.3", 8150), ("10.99.3.1", 8150), ("10.99.2.2", 8150)])

    def test_aWaitingClientWatchesTheLatestGatewaysAtAllTheirAddresses(self):
        for i in range(6):
            self.effects._remember([self.seen(f"ed25519:{i}", f"10.251.0.{i}",
                                              addresses=[f"10.99.{i}.2"])])
            self.clock.advance(1)
        watched = self.effects.recentGateways(self.effects.WATCHED)
        self.assertEqual(watched, [item for i in (5, 4, 3, 2)
                                   for item in ((f"10.251.0.{i}", 8150), (f"10.99.{i}.2", 8150))])

    def test_theAddressesAskedAreBounded(self):
        for i in range(16):
            self.effects._remember([self.seen(f"ed25519:{i}", f"10.251.0.{i}",
                                              addresses=[f"10.99.{i}.{k}" for k in range(1, 17)])])
        self.assertEqual(len(self.effects.recentGateways()), self.effects.RECENT_ADDRESSES)


class PassageTests(EffectsTestCase):
    """What the client's table is told of a new connection (fitPath)."""

    class PathRouting(Routing):
        def __init__(self):
            super().__init__()
            self.mtus = []

        def pathMTU(self, host):
            return 1500

        def setMTU(self, device, mtu):
            self.mtus.append((device, mtu))

    def passage(self, described):
        self.routing = self.PathRouting()
        self.makeEffects(clientConfig())
        connection = Connection()
        connection.describe = lambda: dict(described, interface=connection.device)
        return self.effects._passage(connection, Step(), self.session().lease)

    def test_theLeasesAddress6WhenTheConnectionUsesIt(self):
        import ipaddress

        passage = self.passage({"address6": "fd64:a::2/128"})
        self.assertEqual((passage.device, passage.address, passage.address6, passage.mtu),
                         ("wg-mnigs", ipaddress.ip_address("100.64.0.2"),
                          ipaddress.ip_address("fd64:a::2"), 1440))

    def test_noIPv6EgressNoAddress6(self):
        self.assertIsNone(self.passage({}).address6)


class StandbyConnectionTests(EffectsTestCase):
    """
    A standby's tunnel comes up beside the serving one without the route
    or the client's table, and takes both over with L{activate}; taking a
    standby down leaves the table to the serving connection.
    """

    class Method:
        def __init__(self):
            self.calls = []

        def connect(self, step, lease, route=True):
            connection = Connection()
            connection.activate = lambda: self.calls.append(("activate", connection))
            self.calls.append(("connect", route))
            return defer.succeed(connection)

    class DataPath:
        def __init__(self):
            self.calls = []

        def online(self, passage):
            self.calls.append(("online", passage.device))
            return defer.succeed(None)

        def offline(self):
            self.calls.append(("offline",))
            return defer.succeed(None)

    def setUp(self):
        super().setUp()
        self.routing = PassageTests.PathRouting()
        self.makeEffects(clientConfig())
        self.method = self.effects.methods["wireguard"] = self.Method()
        self.dataPath = self.effects.dataPath = self.DataPath()

    def test_aStandbyComesUpWithoutTheRouteAndWithoutWaiting(self):
        self.effects.teardown = defer.Deferred()  # a serving tunnel still going down
        connection = self.successResultOf(self.effects.connectStandby(Step(), self.session().lease))
        self.assertEqual(self.method.calls, [("connect", False)])
        self.assertEqual(self.routing.mtus, [("wg-mnigs", 1440)])  # sized all the same
        self.assertEqual(self.dataPath.calls, [])
        self.assertIs(self.effects.carrying, None)
        session = Session(Step(), self.session().lease, connection, 0)
        self.successResultOf(self.effects.activate(session))
        self.assertEqual(self.method.calls[-1], ("activate", connection))
        self.assertEqual(self.dataPath.calls, [("online", "wg-mnigs")])

    def test_takingAStandbyDownLeavesTheTableToTheServingOne(self):
        serving = self.successResultOf(self.effects.connect(Step(), self.session().lease))
        standby = self.successResultOf(self.effects.connectStandby(Step(), self.session().lease))
        self.assertEqual(self.method.calls, [("connect", True), ("connect", False)])
        self.successResultOf(self.effects.disconnect(Session(Step(), {}, standby, 0)))
        self.assertEqual(self.dataPath.calls, [("online", "wg-mnigs")])
        self.successResultOf(self.effects.disconnect(Session(Step(), {}, serving, 0)))
        self.assertEqual(self.dataPath.calls[-1], ("offline",))

    def test_aStandbysWatchersStopWhenItIsTakenDown(self):
        session = self.session()
        self.effects.watch(session)
        health = session.health
        self.successResultOf(self.effects.disconnect(session))
        self.assertEqual(health.events, ["start", "stop"])
        self.assertEqual(session.stoppers, [])


class StandbyPlanTests(EffectsTestCase):
    """A standby's plan: methods with more than one slot; what was heard since the scan."""

    def setUp(self):
        super().setUp()
        from mnigs.client.ranking import Policy
        from tests.unit.test_agent import offer

        self.effects.policy = Policy(methods=("wireguard", "forward"))
        self.effects.methods = {"wireguard": types.SimpleNamespace(slots=6),
                                "forward": types.SimpleNamespace(slots=1)}

        def seen(gid, host):
            from dataclasses import replace

            from mnigs.client.ranking import Seen
            methods = ({"type": "wireguard"}, {"type": "forward"})
            return Seen(replace(offer(gid), methods=methods), host, 8150, 1.0, 0.01)
        self.seenOf = seen
        self.effects.lastSeen = [seen("A", "10.0.0.1"), seen("B", "10.251.0.5")]

    def test_onlyMethodsWithSeveralSlotsAndNotTheExcluded(self):
        attempt = self.effects.planStandby(frozenset({"A"}))
        self.assertEqual([(s.gatewayId, s.method) for s in attempt.steps], [("B", "wireguard")])

    def test_whatWasHeardSinceReplacesTheScans(self):
        attempt = self.effects.planStandby(frozenset({"A"}), (self.seenOf("B", "10.99.2.2"),))
        self.assertEqual(attempt.step.host, "10.99.2.2")
        self.assertEqual(len(self.effects.lastSeen), 2)  # the scan's are kept
