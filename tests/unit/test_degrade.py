"""
L{mnigs.client.degrade}: when a session is degraded, what is measurably
better, the hold, the cooldown and the hysteresis on a uniformly lossy
mesh; L{mnigs.client.falseloss}; and the agent moving through the
planned-move path.
"""

import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.agent import ClientAgent
from mnigs.client.degrade import Alternative, DegradeJudge, DegradeRules, degradedBy, isBetter
from mnigs.client.falseloss import FalseLossCheck
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Backoff, NoStandbys
from mnigs.client.pacing import Quality, lossBounds
from mnigs.client.ranking import SwitchPolicy
from mnigs.client.reasons import PROBES, Reason
from tests.unit.test_agent import AgentEffects, goOnline, ranked


def quality(loss, rtt=0.002, minRtt=0.001, samples=250, span=4.0):
    "A window of C{samples} probes of one kind, C{loss} of them lost."
    return Quality(loss, rtt, minRtt, samples, span, *lossBounds(loss * samples, samples))


def standby(gid, loss, rtt=0.002, samples=250):
    return Alternative.measured(gid, quality(loss, rtt, samples=samples))


RULES = DegradeRules()


class RulesTests(SynchronousTestCase):

    def test_degradedWhenTheLossIsSurelyAboveTheThreshold(self):
        """
        The lower bound of the loss's 95 % interval must reach
        C{degrade.loss}: 15 % of 250 probes does (at least 11 %), 12 %
        does not (at least 8.5 %); of 20 probes 30 % does, 20 % does not.
        """
        self.assertIn("15% of the probes lost over 4.0 s (at least 11%",
                      degradedBy(RULES, quality(0.15)))
        self.assertIsNone(degradedBy(RULES, quality(0.12)))
        self.assertIsNotNone(degradedBy(RULES, quality(0.3, samples=20)))
        self.assertIsNone(degradedBy(RULES, quality(0.2, samples=20)))

    def test_notJudgedBeforeTheWindowIsFull(self):
        self.assertIsNone(degradedBy(RULES, quality(0.5, span=3.0)))
        self.assertIsNone(degradedBy(RULES, quality(0.5, samples=9)))

    def test_roundTripInflation(self):
        """Four times the floor and 50 ms above it: degraded."""
        self.assertIn("round trip 60 ms", degradedBy(RULES, quality(0.0, rtt=0.06, minRtt=0.002)))
        # four times the floor, but only 6 ms above it: a fast path's jitter
        self.assertIsNone(degradedBy(RULES, quality(0.0, rtt=0.008, minRtt=0.002)))
        # 50 ms above it, but less than four times: a slow path's jitter
        self.assertIsNone(degradedBy(RULES, quality(0.0, rtt=0.25, minRtt=0.1)))

    def test_betterNeedsBothMargins(self):
        current = quality(0.3)
        self.assertTrue(isBetter(RULES, current, standby("B", 0.0, 0.002)))
        self.assertTrue(isBetter(RULES, current, standby("B", 0.15, 0.002)))
        self.assertFalse(isBetter(RULES, current, standby("B", 0.16, 0.002)))
        # uniformly lossy: 0.34 against 0.30 is noise
        self.assertFalse(isBetter(RULES, quality(0.34), standby("B", 0.30, 0.002)))

    def test_betterByRoundTrip(self):
        current = quality(0.0, rtt=0.2, minRtt=0.01)
        self.assertTrue(isBetter(RULES, current, standby("B", 0.0, 0.02)))
        self.assertFalse(isBetter(RULES, current, standby("B", 0.2, 0.02)), "lossy")
        self.assertFalse(isBetter(RULES, current, standby("B", 0.0, 0.15)))


class JudgeTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.judge = DegradeJudge(RULES, self.clock)
        self.good = [standby("B", 0.0)]

    def test_movesAfterTheHold(self):
        self.assertIsNone(self.judge.consider(quality(0.3), self.good))
        self.clock.advance(0.25)
        self.assertIsNone(self.judge.consider(quality(0.3), self.good))
        self.clock.advance(0.25)
        move = self.judge.consider(quality(0.3), self.good)
        self.assertEqual(move.to.gatewayId, "B")
        self.assertIn("degraded: 30% of the probes lost", move.reason)

    def test_historyIsWeakEvidence(self):
        """
        A quality history weighs about 19 rounds: its 0 % loss may be up
        to 17 %, so the current loss must surely exceed that.
        """
        remembered = [Alternative.remembered("B", QualityHistory(self.clock).get("B"))]
        self.assertEqual(round(remembered[0].lossHigh, 3), 0.168)
        self.assertFalse(isBetter(RULES, quality(0.2), remembered[0]))
        self.assertTrue(isBetter(RULES, quality(0.25), remembered[0]))

    def test_aHistoryOfRoundsIsReadPerProbe(self):
        """
        What bench/degrade.py saw once rounds sent three echoes: on a mesh
        that had lost 10 % on every link, the history of rounds showed 1 %
        (a round is lost only when all three are) against 32 % of the
        session's probes: read per probe it is 22 %, not better.
        """
        past = QualityHistory(self.clock).get("B")
        past.loss = 0.01
        remembered = Alternative.remembered("B", past, echoes=3)
        self.assertEqual(round(remembered.loss, 2), 0.22)
        self.assertFalse(isBetter(RULES, quality(0.32), remembered))
        self.assertTrue(isBetter(RULES, quality(0.32), Alternative.remembered("B", past)))

    def test_aNoisyWindowIsNotBetterThanANoisyHistory(self):
        """
        What bench/degrade.py once saw on a uniformly lossy mesh: 55 % of
        20 Internet rounds lost against a history of 27 %; noise.
        """
        past = QualityHistory(self.clock).get("B")
        past.loss = 0.27
        self.assertFalse(isBetter(RULES, quality(0.55, samples=20),
                                  Alternative.remembered("B", past)))

    def test_aGoodMomentRestartsTheHold(self):
        self.judge.consider(quality(0.3), self.good)
        self.clock.advance(0.75)
        self.judge.consider(quality(0.05), self.good)
        self.clock.advance(0.5)
        self.assertIsNone(self.judge.consider(quality(0.3), self.good))

    def test_nothingBetterKnownStays(self):
        for _ in range(20):
            self.assertIsNone(self.judge.consider(quality(0.3), [standby("B", 0.25)]))
            self.clock.advance(0.25)
        self.assertIsNone(self.judge.consider(quality(0.3), []))

    def test_cooldownAfterAMove(self):
        self.judge.consider(quality(0.3), self.good)
        self.clock.advance(0.5)
        self.assertIsNotNone(self.judge.consider(quality(0.3), self.good))
        self.judge.newSession()
        for _ in range(100):
            self.clock.advance(0.25)
            self.assertIsNone(self.judge.consider(quality(0.3), self.good))
        self.clock.advance(5)  # 30 s after the move; degraded all along
        self.assertIsNotNone(self.judge.consider(quality(0.3), self.good))

    def test_disabled(self):
        judge = DegradeJudge(DegradeRules(enabled=False), self.clock)
        judge.consider(quality(0.9), self.good)
        self.clock.advance(5)
        self.assertIsNone(judge.consider(quality(0.9), self.good))

    def test_uniformlyLossyMeshNeverMoves(self):
        """
        Two gateways behind a mesh whose links drop 10 %: each probe is
        lost with p = 0.34 on both; windows of 250 probes judged four
        times a second for 5 minutes (a fresh sample of both windows at
        each judgement: more independent than sliding windows, so harder)
        never give a move.
        """
        rng = random.Random(16)
        p = 1 - 0.9 ** 4

        def window():
            return sum(rng.random() < p for _ in range(250)) / 250

        for _ in range(5 * 60 * 4):
            move = self.judge.consider(quality(window()),
                                       [standby("B", window())])
            self.assertIsNone(move)
            self.clock.advance(0.25)


class FalseLossTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.calls = []
        rpc = type("RPC", (), {"call": lambda _, *args, **kw: self.calls.append(args) or
                               self.answers.pop(0)})()
        self.check = FalseLossCheck(self.clock, rpc, delay=1.0)
        self.step = type("Step", (), {"host": "10.0.0.2", "port": 8150, "gateway": "B"})()

    def test_aGatewayThatAnswersWasAFalseLoss(self):
        self.answers = [defer.succeed({})]
        self.check.check(self.step)
        self.assertEqual(self.calls, [])
        self.clock.advance(1)
        self.assertEqual(self.calls, [("10.0.0.2", 8150, "gateway.info", {})])
        self.assertEqual(self.check.describe(), {"false_failovers": 1, "silent_losses_checked": 1})

    def test_aSilentGatewayWasNot(self):
        self.answers = [defer.fail(TimeoutError())]
        self.check.check(self.step)
        self.clock.advance(1)
        self.assertEqual(self.check.describe(), {"false_failovers": 0, "silent_losses_checked": 1})

    def test_stopCancels(self):
        self.check.check(self.step)
        self.check.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FakeMonitor:
    def __init__(self, quality):
        self.measured = quality

    def quality(self):
        return self.measured


class MeasuredStandbys(NoStandbys):
    "No standbys to promote, but their measured quality (C{gateway id: Quality}) to judge by."

    def __init__(self, measured):
        self.measured = measured

    def qualities(self):
        return self.measured


class AgentDegradeTests(SynchronousTestCase):
    """The agent feeds the judge after every round and moves with C{switch}."""

    def setUp(self):
        self.clock = Clock()
        self.effects = AgentEffects()
        self.history = QualityHistory(self.clock)
        self.standby = {}
        self.checks = []
        self.agent = ClientAgent(
            self.clock, self.effects, self.history, SwitchPolicy(margin=0.2, hold=30),
            rescanInterval=1000, backoff=Backoff(5, 60),
            degrade=DegradeJudge(RULES, self.clock),
            falseLosses=type("Check", (), {"check": lambda _, step: self.checks.append(step),
                                           "stop": lambda _: None, "count": 0})(),
            standbys=MeasuredStandbys(self.standby))

    def online(self, loss):
        session = goOnline(self.agent, self.effects, [ranked("A", 0.1), ranked("B", 0.5)])
        session.health = FakeMonitor(quality(loss))
        return session

    def rounds(self, session, seconds):
        for _ in range(int(seconds * 4)):
            self.clock.advance(0.25)
            if self.agent.core.session is not session:
                return
            self.agent.probeSample(session, 0.002)

    def test_movesToAMeasurablyBetterStandby(self):
        session = self.online(0.3)
        self.standby["B"] = quality(0.0)
        self.rounds(session, 2)
        # a planned move: B registered while A goes on (made before break)
        self.assertEqual(self.effects.events[-1], ("register", "B", "wireguard"))
        self.assertIn("online --plannedMove--> moving", self.agent.core.trace.describe()[-1]["transition"])
        self.assertEqual(self.agent.degradeMoves, 1)
        self.assertIn("): degraded: 30% of the probes lost", self.agent.core.reason)

    def test_aGatewayWithoutHistoryIsNotBetter(self):
        session = self.online(0.3)
        self.rounds(session, 5)
        self.assertIs(self.agent.core.session, session)

    def test_freshHistoryThatIsBetterIsFollowed(self):
        for _ in range(30):
            self.history.get("B").probe(2.0)
        self.agent.measuredAt["B"] = self.clock.seconds()
        session = self.online(0.3)
        self.rounds(session, 2)
        self.assertEqual(self.agent.degradeMoves, 1)

    def test_staleHistoryIsNotKnowledge(self):
        """Online with B more than degrade.history_age ago: nothing is known of B now."""
        for _ in range(30):
            self.history.get("B").probe(2.0)
        self.agent.measuredAt["B"] = self.clock.seconds()
        self.clock.advance(31)
        session = self.online(0.3)
        self.rounds(session, 5)
        self.assertIs(self.agent.core.session, session)

    def test_historyNoBetterStays(self):
        for _ in range(30):
            self.history.get("B").probe(None)
            self.history.get("B").probe(2.0)
        self.agent.measuredAt["B"] = self.clock.seconds()
        session = self.online(0.3)
        self.rounds(session, 5)
        self.assertIs(self.agent.core.session, session)

    def test_silentLossIsChecked(self):
        session = self.online(0.0)
        reason = Reason(PROBES, "nothing heard")
        reason.gatewayAnswered = False
        self.agent.lost(session, reason)
        self.assertEqual([s.gatewayId for s in self.checks], ["A"])

    def test_internetLossIsNotChecked(self):
        session = self.online(0.0)
        reason = Reason(PROBES, "the Internet does not answer")
        reason.gatewayAnswered = True
        self.agent.lost(session, reason)
        self.assertEqual(self.checks, [])


class TunnelReceivedTests(SynchronousTestCase):
    """
    L{mnigs.client.service.tunnelReceived}: the receive counter counts as
    life only for methods whose device carries nothing but the gateway's.
    """

    def session(self, method):
        from types import SimpleNamespace
        return SimpleNamespace(step=SimpleNamespace(method=method),
                               connection=SimpleNamespace(device="mnigs-c0"))

    def test_wireguardReadsItsDevice(self):
        from mnigs.client.service import tunnelReceived
        asked = []
        netlink = type("Netlink", (), {
            "linkStats": lambda _, name: asked.append(name) or (1234, 99)})()
        received = tunnelReceived(netlink, self.session("wireguard"))
        self.assertEqual(received(), 1234)
        self.assertEqual(asked, ["mnigs-c0"])

    def test_sharedDevicesAreNoEvidence(self):
        from mnigs.client.service import tunnelReceived
        for method in ("forward", "cjdns"):
            self.assertIsNone(tunnelReceived(object(), self.session(method)), method)
        self.assertIsNone(tunnelReceived(None, self.session("wireguard")))


class StatusTextTests(SynchronousTestCase):
    "mnigsctl status says how the paced probes and the session's quality stand."

    def test_pacedProbesAndQualityShown(self):
        from mnigs.cli.ctl import formatStatus
        text = formatStatus({"state": "online", "current": {
            "name": "gw", "gateway": "ed25519:x", "host": "10.0.0.1", "method": "wireguard",
            "health": {"state": "probing", "targets": ["100.64.0.1"],
                       "paced": {"interval_s": 0.02, "dead_time_s": 0.37, "heard_ago_s": 0.01},
                       "quality": {"loss": 0.313, "rtt_ms": 0.75, "span_s": 4.0}}}})
        self.assertIn("paced probes: every 0.02s, dead after 0.37s (heard 0.01s ago)", text)
        self.assertIn("quality over 4.0s: 31% lost, round trip 0.75 ms", text)
