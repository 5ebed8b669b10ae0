"""
The client machine's exact event sequences, with a Clock and a recording
fake for its effects: method fallback, gateway fallback, backoff,
failover, renewal-driven re-registration, switching and stopping.
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mnigs import protocol
from mnigs.client.machine import Backoff, ClientCore, IClientEffects, Session, makeClient
from mnigs.client.plan import Attempt, buildPlan


@dataclass(frozen=True)
class FakeOffer:
    gatewayId: str
    name: str


@dataclass(frozen=True)
class FakeSeen:
    offer: FakeOffer
    host: str
    port: int = 8150


@dataclass(frozen=True)
class FakeRanked:
    seen: FakeSeen
    methods: tuple
    usable: bool = True


def ranked(gid, host, methods=("wireguard", "forward"), name=None):
    return FakeRanked(FakeSeen(FakeOffer(gid, gid if name is None else name), host), tuple(methods))


@implementer(IClientEffects)
class RecordingEffects:
    def __init__(self):
        self.events = []
        self.pending = {}
        # offline() is not an event of its own (it comes with every entry
        # into searching and waiting): where it came, as len(events) then.
        self.offlines = []

    def _op(self, *event):
        self.events.append(event)
        d = defer.Deferred()
        self.pending[event[0]] = d
        return d

    def watchRecent(self):
        # Not an event of its own: the tests fire it through self.watches.
        d = defer.Deferred()
        self.watches = getattr(self, "watches", []) + [d]
        return d

    def scan(self, early=False):
        self.scanEarly = early
        return self._op("scan")

    def plan(self, ranked, exclude):
        return buildPlan(ranked, exclude=exclude)

    def rerank(self):
        return self.lastRanked

    lastRanked = ()
    lastCandidates = ()

    def register(self, step):
        return self._op("register", step.gatewayId, step.method)

    def connect(self, step, lease):
        return self._op("connect", step.gatewayId, step.method)

    def verify(self, session):
        return self._op("verify", session.step.gatewayId, session.step.method)

    #: whether a planned move is made before break (canConnectBeside)
    beside = False

    def canConnectBeside(self, session, step):
        return self.beside

    def connectStandby(self, step, lease):
        return self._op("connectStandby", step.gatewayId, step.method)

    def handOver(self, old, new):
        self.events.append(("handOver", old.step.gatewayId, new.step.gatewayId))

    def disconnect(self, session):
        self.events.append(("disconnect", session.step.gatewayId, session.step.method))
        return defer.succeed(None)

    def unregister(self, step, lease):
        self.events.append(("unregister", step.gatewayId, step.method))

    def startSession(self, session):
        self.events.append(("startSession", session.step.gatewayId, session.step.method))

    def endSession(self, session):
        self.events.append(("endSession", session.step.gatewayId, session.step.method))
        return defer.succeed(None)

    def noteFailure(self, step, reason):
        self.events.append(("failure", step.gatewayId))

    def offline(self):
        self.offlines.append(len(self.events))
    def announce(self, event, session, reason, nextStep=None):
        # Kept apart from self.events: the hooks are not steps of a plan.
        self.announced = getattr(self, "announced", []) + [
            (event, session.step.gatewayId, reason, nextStep and nextStep.gatewayId)]

    def fire(self, name, value=None):
        self.pending.pop(name).callback(value)

    def fail(self, name, error):
        self.pending.pop(name).errback(error)


LEASE = {"id": "L", "token": "T", "expires_in": 600, "config": {"address": "100.64.0.2/32"}}


class Connection:
    device = "wg-mnigs"

    def describe(self):
        return {"interface": self.device}


class ClientMachineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.effects = RecordingEffects()
        self.core = ClientCore(self.clock, self.effects, Backoff(1, 8))
        self.client = makeClient(self.core)
        self.gateways = [ranked("A", "10.0.0.1"), ranked("B", "10.0.0.2", ("wireguard",))]

    def state(self):
        return self.client.describe()["state"]

    def goOnline(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        self.effects.fire("connect", Connection())
        self.effects.fire("verify", 0.012)
        self.assertEqual(self.state(), "online")
        return self.core.session

    def test_happyPath(self):
        self.client.start()
        self.assertEqual(self.state(), "searching")
        self.effects.fire("scan", self.gateways)
        self.assertEqual(self.state(), "registering")
        self.effects.fire("register", LEASE)
        self.assertEqual(self.state(), "connecting")
        self.effects.fire("connect", Connection())
        self.assertEqual(self.state(), "verifying")
        self.effects.fire("verify", 0.012)
        self.assertEqual(self.state(), "online")
        self.assertEqual(self.effects.events, [
            ("scan",), ("register", "A", "wireguard"), ("connect", "A", "wireguard"),
            ("verify", "A", "wireguard"), ("startSession", "A", "wireguard")])
        self.assertEqual(self.client.describe()["current"]["host"], "10.0.0.1")

    def test_methodFallbackThenGatewayFallback(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        self.effects.fail("connect", RuntimeError("no handshake"))
        self.assertEqual(self.state(), "registering")
        self.effects.fail("register", protocol.RPCError(protocol.METHOD_UNAVAILABLE, "not a neighbour"))
        self.assertEqual(self.state(), "registering")
        self.effects.fire("register", LEASE)
        self.effects.fire("connect", Connection())
        self.effects.fire("verify", 0.012)
        self.assertEqual(self.effects.events, [
            ("scan",), ("register", "A", "wireguard"), ("connect", "A", "wireguard"),
            ("failure", "A"), ("unregister", "A", "wireguard"),
            ("register", "A", "forward"), ("failure", "A"),
            ("register", "B", "wireguard"), ("connect", "B", "wireguard"),
            ("verify", "B", "wireguard"), ("startSession", "B", "wireguard")])
        self.assertEqual(self.state(), "online")

    def test_fullGatewaySkipsItsOtherMethods(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fail("register", protocol.RPCError(protocol.GATEWAY_FULL, "full"))
        self.assertEqual(self.effects.events[-1], ("register", "B", "wireguard"))

    def test_exhaustedBacksOffThenSearchesAgain(self):
        self.client.start()
        self.effects.fire("scan", [self.gateways[1]])
        self.effects.fail("register", protocol.RPCError(protocol.UNAVAILABLE, "uplink down"))
        self.assertEqual(self.state(), "waiting")
        self.clock.advance(0.9)
        self.assertEqual(self.state(), "waiting")
        self.clock.advance(0.1)
        self.assertEqual(self.state(), "searching")
        self.effects.fire("scan", [])
        self.assertEqual(self.state(), "waiting")
        self.clock.advance(1.9)
        self.assertEqual(self.state(), "waiting")  # doubled: 2 s
        self.clock.advance(0.1)
        self.assertEqual(self.state(), "searching")
        self.assertEqual([e[0] for e in self.effects.events],
                         ["scan", "register", "failure", "scan", "scan"])

    def test_degradedAndBack(self):
        session = self.goOnline()
        self.client.probeMissed(session, 1)
        self.assertEqual(self.state(), "degraded")
        self.client.probeMissed(session, 2)
        self.assertEqual(self.state(), "degraded")
        self.client.probeAnswered(session, 0.01)
        self.assertEqual(self.state(), "online")
        self.assertIs(self.core.session, session)

    def test_failoverToNextGateway(self):
        session = self.goOnline()
        del self.effects.events[:]
        attempt = buildPlan(self.gateways, exclude={"A"})
        self.client.failover(session, attempt, "no answer from 3 probes")
        self.assertEqual(self.state(), "registering")
        # Entering registering registers (the state's data factory runs
        # first), then the transition leaves the session.
        self.assertEqual(self.effects.events, [
            ("register", "B", "wireguard"),
            ("failure", "A"), ("endSession", "A", "wireguard"), ("unregister", "A", "wireguard")])

    def test_droppedSearches(self):
        session = self.goOnline()
        del self.effects.events[:]
        self.client.dropped(session, "route withdrawn")
        self.assertEqual(self.state(), "searching")
        self.assertEqual(self.effects.events, [
            ("scan",),
            ("failure", "A"), ("endSession", "A", "wireguard"), ("unregister", "A", "wireguard")])

    def test_switchIsNotAFailure(self):
        session = self.goOnline()
        del self.effects.events[:]
        self.client.switch(session, buildPlan(self.gateways, exclude={"A"}))
        self.assertEqual(self.effects.events, [
            ("register", "B", "wireguard"),
            ("endSession", "A", "wireguard"), ("unregister", "A", "wireguard")])

    def test_stopOnlineUnregistersAndRestores(self):
        self.goOnline()
        del self.effects.events[:]
        d = self.client.stop()
        self.successResultOf(d)
        self.assertEqual(self.state(), "stopped")
        self.assertEqual(self.effects.events, [("endSession", "A", "wireguard"),
                                               ("unregister", "A", "wireguard")])

    def test_offlineWhenNoSessionIsLeftOrUnderWay(self):
        """
        The machine says when nothing is online or under way (entering
        searching or waiting, and stopped): what bridges a failover (the
        lease's resolvers) then goes.  A failover itself is not offline.
        """
        session = self.goOnline()
        self.assertEqual(self.effects.offlines, [0])  # entering searching at start
        self.client.failover(session, buildPlan(self.gateways, exclude={"A"}), "silent")
        self.assertEqual(self.effects.offlines, [0])
        self.effects.fail("register", protocol.RPCError(protocol.UNAVAILABLE, "uplink down"))
        self.assertEqual(self.state(), "waiting")
        self.assertEqual(self.effects.offlines, [0, len(self.effects.events)])

    def test_droppedIsOffline(self):
        session = self.goOnline()
        self.client.dropped(session, "route withdrawn")
        self.assertEqual(len(self.effects.offlines), 2)

    def test_stopIsOfflineAfterTheSessionEnded(self):
        self.goOnline()
        del self.effects.events[:]
        self.effects.offlines = []
        self.successResultOf(self.client.stop())
        self.assertEqual(self.effects.offlines, [2])  # after endSession and unregister

    def test_stopWhileConnectingCancelsAndUnregisters(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        connecting = self.effects.pending["connect"]
        self.successResultOf(self.client.stop())
        self.assertTrue(connecting.called)  # cancelled, and the cancellation swallowed
        self.assertEqual(self.effects.events[-1], ("unregister", "A", "wireguard"))
        self.assertEqual(self.state(), "stopped")

    def test_aRecentGatewayAnsweringEndsTheWait(self):
        """
        While waiting, the gateways met lately are watched: one answering
        again ends the backoff at once (a new scan), and the watch of a
        wait that ended otherwise is cancelled.
        """
        self.client.start()
        self.effects.fire("scan", [])
        self.assertEqual(self.state(), "waiting")
        [watch] = self.effects.watches
        watch.callback(ranked("A", "10.0.0.1").seen)
        self.assertEqual(self.state(), "searching")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.effects.fire("scan", [])
        self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
        self.assertEqual(self.state(), "searching")  # the backoff ended this wait
        self.assertTrue(self.effects.watches[1].called)  # cancelled

    def test_stopWhileWaitingCancelsTimer(self):
        self.client.start()
        self.effects.fire("scan", [])
        self.successResultOf(self.client.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateEventsIgnored(self):
        session = self.goOnline()
        self.successResultOf(self.client.stop())
        self.client.probeMissed(session, 1)
        self.client.failover(session, Attempt(()), "late")
        self.assertEqual(self.state(), "stopped")

    def test_backoffSchedule(self):
        """
        While no gateway answers at all: scans 1, 2, 4, 8, 8 s apart
        (Backoff(1, 8): doubling, capped), each an early-settling scan.
        """
        self.client.start()
        started = []
        for _ in range(6):
            self.assertTrue(self.effects.scanEarly)
            started.append(self.clock.seconds())
            self.effects.fire("scan", [])
            self.assertEqual(self.state(), "waiting")
            [call] = self.clock.getDelayedCalls()
            self.clock.advance(call.getTime() - self.clock.seconds())
        gaps = [b - a for a, b in zip(started, started[1:])]
        self.assertEqual(gaps, [1, 2, 4, 8, 8])

    def test_routesChangedWhileSearchingScanAgainAtOnce(self):
        """
        A route change during a scan that then finds nothing (a gateway came
        back while the scan ran): scan again at once, no backoff.
        """
        self.client.start()
        self.client.retry()  # the agent's routesChanged
        self.effects.fire("scan", [])
        self.assertEqual(self.state(), "searching")
        self.assertEqual(self.effects.events, [("scan",), ("scan",)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.effects.fire("scan", [])  # no change this time: back off
        self.assertEqual(self.state(), "waiting")

    def test_routesChangedWhileSearchingAndFoundGoesOn(self):
        self.client.start()
        self.client.retry()
        self.effects.fire("scan", self.gateways)
        self.assertEqual(self.state(), "registering")

    def test_backoffResetOnline(self):
        self.client.start()
        self.effects.fire("scan", [])
        self.clock.advance(1)
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        self.effects.fire("connect", Connection())
        self.effects.fire("verify", 0.012)
        self.assertEqual(self.core.backoff.current, 1)

    def test_logLinesNameGatewaysByNameAndAddress(self):
        events = []
        self.core.log = Logger(observer=events.append)
        self.gateways = [ranked("ed25519:a", "10.99.0.5", ("wireguard",), name="pdx-gw-1"),
                         ranked("ed25519:b", "10.99.0.9", ("wireguard",), name="pdx-gw-2")]
        session = self.goOnline()
        self.client.failover(session, buildPlan(self.gateways[1:]), "no answer")
        self.effects.fail("register", protocol.RPCError(protocol.GATEWAY_FULL, "full"))
        self.assertEqual([formatEvent(e) for e in events], [
            "online via pdx-gw-1 (10.99.0.5) over wireguard (a probe through wg-mnigs answered "
            "in 12.0 ms)",
            "leaving pdx-gw-1 (10.99.0.5): no answer; trying pdx-gw-2 (10.99.0.9) over wireguard",
            "every gateway failed (wireguard registration with pdx-gw-2 (10.99.0.9) failed: "
            "full (1001)); searching again later"])
        self.assertEqual(events[0]["gatewayId"], "ed25519:a")

    def test_aTunnelThatDoesNotComeUpIsLoggedWithWhyAndWhatIsNext(self):
        events = []
        self.core.log = Logger(observer=events.append)
        self.gateways = [ranked("ed25519:a", "10.99.0.5", ("wireguard",), name="pdx-gw-1"),
                         ranked("ed25519:b", "10.99.0.9", ("wireguard",), name="pdx-gw-2")]
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        self.effects.fail("connect", defer.TimeoutError())
        self.effects.fire("register", LEASE)
        self.effects.fail("connect", RuntimeError("no WireGuard handshake response within 5.0 s"))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines[:2], [
            "wireguard to pdx-gw-1 (10.99.0.5) did not come up: nothing within "
            "methods.connect_timeout; trying pdx-gw-2 (10.99.0.9) over wireguard",
            "every gateway failed (wireguard to pdx-gw-2 (10.99.0.9) did not come up: no "
            "WireGuard handshake response within 5.0 s); searching again later"])
        self.assertEqual(events[0]["log_level"], LogLevel.info)


class OnlineMeansAnsweredTests(SynchronousTestCase):
    """
    A tunnel that is up is verified: online only once a probe through it
    is answered, the next step at once when none is.
    """

    def setUp(self):
        self.clock = Clock()
        self.effects = RecordingEffects()
        self.core = ClientCore(self.clock, self.effects, Backoff(1, 8))
        self.client = makeClient(self.core)
        self.logged = []
        self.core.log = Logger(observer=self.logged.append)
        self.gateways = [ranked("ed25519:a", "10.99.0.5", ("wireguard",), name="pdx-gw-1"),
                         ranked("ed25519:b", "10.99.0.9", ("wireguard",), name="pdx-gw-2")]

    def tunnelUp(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        del self.effects.events[:]
        self.effects.fire("connect", Connection())

    def test_onlineOnlyOnceAProbeIsAnswered(self):
        self.tunnelUp()
        self.assertEqual(self.effects.events, [("verify", "ed25519:a", "wireguard")])
        self.assertEqual(self.client.describe(), {
            "state": "verifying", "reason": "",
            "attempt": {"gateway": "ed25519:a", "name": "pdx-gw-1", "host": "10.99.0.5",
                        "port": 8150, "method": "wireguard", "device": "wg-mnigs",
                        "address": "100.64.0.2/32"}})
        self.assertIsNone(self.core.session)
        self.clock.advance(0.3)
        self.effects.fire("verify", 0.012)
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertEqual(self.effects.events[-1], ("startSession", "ed25519:a", "wireguard"))
        self.assertEqual(self.core.session.startedAt, 0.3)
        self.assertEqual([formatEvent(e) for e in self.logged], [
            "online via pdx-gw-1 (10.99.0.5) over wireguard (a probe through wg-mnigs answered "
            "in 12.0 ms)"])

    def test_noAnswerTriesTheNextStepAtOnce(self):
        self.tunnelUp()
        self.effects.fail("verify", RuntimeError(
            "no probe answer through wg-mnigs from 9.9.9.9, 100.64.0.1 within 0.9 s"))
        self.assertEqual(self.client.describe()["state"], "registering")
        self.assertEqual(self.effects.events, [
            ("verify", "ed25519:a", "wireguard"), ("failure", "ed25519:a"),
            ("disconnect", "ed25519:a", "wireguard"), ("unregister", "ed25519:a", "wireguard"),
            ("register", "ed25519:b", "wireguard")])
        self.assertEqual(self.clock.getDelayedCalls(), [], "no backoff")
        self.assertEqual([formatEvent(e) for e in self.logged], [
            "wireguard to pdx-gw-1 (10.99.0.5) passes no traffic: no probe answer through "
            "wg-mnigs from 9.9.9.9, 100.64.0.1 within 0.9 s; trying pdx-gw-2 (10.99.0.9) over "
            "wireguard"])
        self.assertEqual(self.logged[0]["log_level"], LogLevel.info)
        self.assertEqual(self.logged[0]["gateway"], "pdx-gw-2 (10.99.0.9)")

    def test_noAnswerOnTheLastStepWaits(self):
        self.gateways = self.gateways[:1]
        self.tunnelUp()
        self.effects.fail("verify", RuntimeError("no probe answer"))
        self.assertEqual(self.client.describe()["state"], "waiting")
        self.assertEqual(self.effects.events[1:], [
            ("failure", "ed25519:a"), ("disconnect", "ed25519:a", "wireguard"),
            ("unregister", "ed25519:a", "wireguard")])
        self.assertEqual(self.client.describe()["reason"],
                         "wireguard to pdx-gw-1 (10.99.0.5) passes no traffic: no probe answer")

    def test_stopWhileVerifyingTakesTheTunnelDownAndUnregisters(self):
        self.tunnelUp()
        verifying = self.effects.pending["verify"]
        d = self.client.stop()
        self.successResultOf(d)
        self.assertTrue(verifying.called)  # cancelled, and the cancellation swallowed
        self.assertEqual(self.effects.events[1:], [("disconnect", "ed25519:a", "wireguard"),
                                                   ("unregister", "ed25519:a", "wireguard")])
        self.assertEqual(self.client.describe()["state"], "stopped")

    def test_stopWaitsForTheTunnelToGoDown(self):
        self.tunnelUp()
        down = defer.Deferred()
        self.effects.disconnect = lambda session: down
        d = self.client.stop()
        self.assertNoResult(d)
        self.assertEqual(self.client.describe()["state"], "stopping")
        down.callback(None)
        self.successResultOf(d)

    def test_inputsOutOfPlaceWhileVerifyingAreIgnored(self):
        self.tunnelUp()
        session = Session(None, LEASE, Connection(), 0)
        self.client.probeMissed(session, 1)
        self.client.failover(session, Attempt(()), "late")
        self.client.switch(session, Attempt(()))
        self.client.start()
        self.assertEqual(self.client.describe()["state"], "verifying")
        self.assertEqual(self.effects.events, [("verify", "ed25519:a", "wireguard")])

    def test_aLateAnswerAfterStopIsIgnored(self):
        self.tunnelUp()
        session = Session(None, LEASE, Connection(), 0)
        self.successResultOf(self.client.stop())
        self.client.answered(session, 0.01)
        self.assertEqual(self.client.describe()["state"], "stopped")


class TraceTests(SynchronousTestCase):
    """
    The trace: every change of state and every loop that gives a reason,
    with when and why; status requests and late inputs are left out.
    """

    def setUp(self):
        self.clock = Clock()
        self.effects = RecordingEffects()
        self.core = ClientCore(self.clock, self.effects, Backoff(1, 8))
        self.client = makeClient(self.core)
        self.gateways = [ranked("A", "10.0.0.1"), ranked("B", "10.0.0.2", ("wireguard",))]

    def lines(self):
        return [entry["transition"] for entry in self.core.trace.describe()]

    def test_whyOnlineWentToRegistering(self):
        self.client.start()
        self.effects.fire("scan", self.gateways)
        self.effects.fire("register", LEASE)
        self.effects.fail("connect", RuntimeError("no handshake"))
        self.effects.fire("register", LEASE)
        self.effects.fire("connect", Connection())
        self.clock.advance(2)
        self.effects.fire("verify", 0.012)
        session = self.core.session
        self.client.describe()
        self.client.probeAnswered(session, 0.01)
        self.client.probeMissed(session, 1)
        self.client.probeMissed(session, 2)
        self.client.failover(session, buildPlan(self.gateways, exclude={"A"}), "no answer")
        self.assertEqual(self.lines(), [
            "idle --start--> searching",
            "searching --scanned--> registering",
            "registering --registered--> connecting",
            "connecting --tryNext--> registering (wireguard to A (10.0.0.1) did not come up: "
            "no handshake)",
            "registering --registered--> connecting",
            "connecting --connected--> verifying",
            "verifying --answered--> online",
            "online --probeMissed--> degraded (1 health probe(s) unanswered)",
            "degraded --probeMissed--> degraded (2 health probe(s) unanswered)",
            "degraded --failover--> registering (no answer)"])
        [entry] = [e for e in self.core.trace.describe() if e["transition"].startswith("verifying")]
        self.assertEqual((entry["at"], entry["ago"]), (2, 0))

    def test_keepsTheLastOnes(self):
        self.client.start()
        for _ in range(60):
            self.effects.fire("scan", [])
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
        lines = self.lines()
        self.assertEqual(len(lines), 50)
        self.assertEqual(lines[-2:], ["searching --nothingFound--> waiting (no usable gateway found)",
                                      "waiting --retry--> searching"])

    def test_startOnlyBegins(self):
        """
        C{start} means "begin", from idle; entering a state starts its
        work, so nothing needs kicking and a second start does nothing.
        """
        self.client.start()
        self.client.start()
        self.assertEqual(self.effects.events, [("scan",)])
        self.effects.fire("scan", self.gateways)
        self.client.start()
        self.assertEqual(self.effects.events, [("scan",), ("register", "A", "wireguard")])
        self.assertEqual(self.lines(), ["idle --start--> searching",
                                        "searching --scanned--> registering"])

    def test_aStaleEmptyScanIsTracedWithItsReason(self):
        self.client.start()
        self.client.retry()
        self.effects.fire("scan", [])
        self.assertEqual(self.lines()[-1], "searching --scanStale--> searching (the routes "
                                           "changed during the scan)")
