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
    seen = types.SimpleNamespace(offer=types.SimpleNamespace(probe=("9.9.9.9",), issuedAt=0), rtt=0.0375)


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
    def test_latestFirstBoundedAndForgotten(self):
        seen = [types.SimpleNamespace(host=f"10.0.0.{i}", port=8150, others=()) for i in range(20)]
        for item in seen:
            self.effects._remember([item])
            self.clock.advance(1)
        recent = self.effects.recentGateways()
        self.assertEqual(len(recent), self.effects.RECENT_MAX)
        self.assertEqual(recent[0], ("10.0.0.19", 8150))
        self.clock.advance(self.effects.RECENT_SECONDS - 1)  # 10.0.0.19 is 600 s old
        self.assertEqual(self.effects.recentGateways(), [("10.0.0.19", 8150)])
        self.clock.advance(1)
        self.assertEqual(self.effects.recentGateways(), [])


class PathRouting(Routing):
    """Routing that knows the path MTU and records MTUs set."""

    def __init__(self, path=1280):
        super().__init__()
        self.path = path
        self.mtus = []

    def pathMTU(self, host):
        return self.path

    def setMTU(self, device, mtu):
        self.mtus.append((device, mtu))


class DataPath:
    def __init__(self):
        self.events = []

    def online(self, passage):
        self.events.append(("online", passage))
        return defer.succeed(None)

    def offline(self):
        self.events.append(("offline",))
        return defer.succeed(None)


class FitPathTests(EffectsTestCase):
    """
    Issue 15: a new connection's tunnel sized to the path to its gateway,
    and the client's table told where its traffic goes.
    """

    def fit(self, method="wireguard", setMTU=True, path=1280):
        from mnigs.client.datapath import Passage

        self.routing = PathRouting(path)
        config = clientConfig()
        config.mtu.set_tunnel_mtu = setMTU
        self.makeEffects(config)
        data = self.effects.dataPath = DataPath()
        step = Step()
        step.method = method
        session = self.session()
        connection = self.successResultOf(self.effects.fitPath(session.connection, step,
                                                               session.lease))
        self.assertIs(connection, session.connection)
        [(event, passage)] = data.events
        self.assertIsInstance(passage, Passage)
        return passage

    def test_wireguardOverIPv4(self):
        passage = self.fit()
        self.assertEqual((passage.device, str(passage.address), passage.mtu),
                         ("wg-mnigs", "100.64.0.2", 1216))  # 1280 - 60, padded to 16
        self.assertEqual(self.routing.mtus, [("wg-mnigs", 1216)])

    def test_clampOnlyLeavesTheDeviceAlone(self):
        passage = self.fit(setMTU=False)
        self.assertEqual(passage.mtu, 1216)  # the clamp still fits the path
        self.assertEqual(self.routing.mtus, [])

    def test_aMethodWithoutOverheadClampsToTheRoute(self):
        passage = self.fit(method="forward")
        self.assertIsNone(passage.mtu)
        self.assertEqual(self.routing.mtus, [])

    def test_disconnectTellsTheTable(self):
        self.effects.dataPath = data = DataPath()
        session = self.session()
        self.successResultOf(self.effects.disconnect(session))
        self.assertEqual(data.events, [("offline",)])
