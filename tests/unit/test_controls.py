"""
The client's controls and explanations: the score breakdown, the switch
countdown (Clock), the machine's C{moving} state (the operator's C{use}:
the session goes on until the chosen gateway grants a lease), the
agent's C{use}/C{block}/C{unblock}/C{rescan}/C{events}/C{why}, the
failover and degraded hooks and their argument vectors, and mnigsctl's
output (human and --json).  Real machine and ranking; recording fakes for
the effects and the hooks.
"""

import io
import json
import sys
from dataclasses import replace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.cli import clientctl, ctl
from mnigs.client import explain
from mnigs.client.agent import ClientAgent
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Backoff, ClientCore, makeClient
from mnigs.client.plan import buildPlan
from mnigs.client.ranking import PARTS, Policy, SwitchPolicy, rank, scoreParts
from mnigs.protocol import GATEWAY_FULL, METHOD_UNAVAILABLE, RPCError
from tests.unit.test_agent import AgentEffects, goOnline
from tests.unit.test_agent import ranked as fixedRanked
from tests.unit.test_client_machine import LEASE, Connection, RecordingEffects, ranked
from tests.unit.test_effects import EffectsTestCase
from tests.unit.test_ranking import NOW, History, fee, seen


class ScorePartsTests(SynchronousTestCase):
    def test_partsAddUpToTheScore(self):
        policy = Policy(methods=("wireguard",), acceptFees=True)
        quality = History().get("a")
        quality.failures, quality.loss = 1, 0.25
        item = seen("a", distance=256.0, rtt=0.1, clients=5, fee=fee())
        parts = scoreParts(item, policy, quality, NOW)
        self.assertEqual(list(parts), list(PARTS))
        self.assertEqual(parts["distance"], 0.5)
        self.assertEqual(parts["rtt"], 0.25)
        self.assertEqual(parts["load"], 0.25)
        self.assertEqual(parts["fee"], 10.0)
        self.assertEqual(parts["history"], 0.5 + 0.25)
        [entry] = rank([item], policy, History(a=quality), NOW)
        self.assertEqual(entry.parts, parts)
        self.assertAlmostEqual(entry.score, sum(parts.values()))
        self.assertEqual(explain.parts(entry), {k: round(v, 4) for k, v in parts.items()})

    def test_chosenFirstAmongTheUsableUnlessCooling(self):
        items = [seen("near", distance=10.0), seen("far", distance=900.0)]
        policy = Policy(methods=("wireguard",), chosen="far")
        self.assertEqual([r.gatewayId for r in rank(items, policy, History(), NOW)],
                         ["far", "near"])
        quality = History().get("far")
        quality.lastFailure = NOW - 1
        history = History(far=quality)
        self.assertEqual([r.gatewayId for r in rank(items, policy, history, NOW)],
                         ["near", "far"])

    def test_blockedAtRunTime(self):
        policy = Policy(methods=("wireguard",), blockedNow=frozenset({"a"}))
        [entry] = rank([seen("a")], policy, History(), NOW)
        self.assertEqual((entry.usable, entry.whyNot),
                         (False, "blocked at run time (mnigsctl unblock)"))


class SwitchCountdownTests(SynchronousTestCase):
    def test_holdLeftCountsDown(self):
        clock = Clock()
        policy = SwitchPolicy(margin=0.2, hold=60)
        current, better = fixedRanked("A", 1.0), fixedRanked("B", 0.5)
        clock.advance(100)
        policy.consider("A", 1.0, better, clock.seconds())
        clock.advance(18)
        policy.consider("A", 1.0, better, clock.seconds())
        status = explain.switchStatus([better, current], "A", policy, clock.seconds())
        self.assertEqual(status, {"gateway": "B", "name": "B", "better_by": 0.5,
                                  "better_by_fraction": 0.5, "margin": 0.2, "hold": 60,
                                  "hold_left_s": 42.0})
        self.assertEqual(
            explain.summary(current, status, [better], None),
            "B scores 50 % (0.500) better; the client moves if that holds for 42 s more "
            "(switch_hold 60 s); a gateway must score better by more than switch_margin 0.2")
        self.assertIsNone(policy.holdLeft("C", clock.seconds()))
        clock.advance(100)
        self.assertEqual(explain.switchStatus([better, current], "A", policy,
                                              clock.seconds())["hold_left_s"], 0)

    def test_verdicts(self):
        policy = SwitchPolicy(margin=0.2, hold=60)
        current = fixedRanked("A", 1.0)
        self.assertEqual(explain.verdict(fixedRanked("B", 1.5), current, policy, None, None),
                         "scores 1.500, 0.500 worse than the current one")
        self.assertEqual(explain.verdict(fixedRanked("B", 0.9), current, policy, None, None),
                         "scores 0.100 better, not more than switch_margin 0.2: the client stays")
        self.assertEqual(explain.verdict(fixedRanked("B", 0.1, available=False), current,
                                         policy, None, None), "unusable: not available")
        self.assertEqual(explain.verdict(fixedRanked("B", 0.1), current, policy, None, "A"),
                         "the current gateway was chosen with mnigsctl use: the client stays on it")
        self.assertEqual(explain.summary(current, None, [fixedRanked("B", 0.1, available=False)],
                                         None),
                         "no other usable gateway: the client stays unless this one fails")


class OnlineMachine:
    "An online machine with the recording effects."

    def setUp(self):
        self.clock = Clock()
        self.effects = RecordingEffects()
        self.core = ClientCore(self.clock, self.effects, Backoff(1, 8))
        self.client = makeClient(self.core)
        self.client.start()
        self.effects.fire("scan", [ranked("A", "10.0.0.1"), ranked("B", "10.0.0.2")])
        self.effects.fire("register", LEASE)
        self.effects.fire("connect", Connection())
        self.effects.fire("verify", 0.01)
        self.session = self.core.session
        del self.effects.events[:]

    def use(self, gid="B"):
        gateways = [ranked("B", "10.0.0.2"), ranked("A", "10.0.0.1")]
        reply = defer.Deferred()
        self.client.use(self.session, buildPlan(gateways), reply)
        return reply


class MovingTests(OnlineMachine, SynchronousTestCase):
    """The machine's moving state, with the recording effects."""

    def test_theSessionGoesOnUntilALeaseIsGranted(self):
        reply = self.use()
        self.assertEqual(self.client.describe()["state"], "moving")
        self.assertEqual(self.effects.events, [("register", "B", "wireguard")])
        self.assertNoResult(reply)
        self.effects.fire("register", LEASE)
        # The old session ends before the new tunnel is asked for.
        self.assertEqual(self.effects.events[1:], [
            ("endSession", "A", "wireguard"), ("connect", "B", "wireguard"),
            ("unregister", "A", "wireguard")])
        self.assertEqual(self.successResultOf(reply),
                         {"gateway": "B", "name": "B", "method": "wireguard",
                          "state": "connecting"})
        self.assertIsNone(self.core.session)

    def test_aRefusalLeavesTheSessionUntouched(self):
        reply = self.use()
        self.effects.fail("register", RPCError(GATEWAY_FULL, "gateway full"))
        self.assertIn("staying on A (10.0.0.1)", str(self.failureResultOf(reply, ValueError).value))
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertIs(self.core.session, self.session)
        self.assertEqual(self.effects.events, [("register", "B", "wireguard"), ("failure", "B")])

    def test_theChosenGatewaysOtherMethodsOnlyThenRefused(self):
        reply = self.use()
        self.effects.fail("register", RPCError(METHOD_UNAVAILABLE, "no"))
        self.assertEqual(self.effects.events[-1], ("register", "B", "forward"))
        self.effects.fail("register", RPCError(METHOD_UNAVAILABLE, "no"))
        self.failureResultOf(reply, ValueError)
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertNotIn(("register", "A", "wireguard"), self.effects.events)

    def test_theOldGatewayLostMeanwhileFailsOver(self):
        reply = self.use()
        operation = self.effects.pending["register"]
        self.client.failover(self.session, buildPlan([ranked("B", "10.0.0.2")]), "it died")
        self.assertTrue(operation.called)  # cancelled; the machine ignores its CancelledError
        self.assertIn("lost meanwhile (it died)",
                      str(self.failureResultOf(reply, ValueError).value))
        self.assertEqual(self.client.describe()["state"], "registering")
        self.assertEqual(self.effects.announced[-1], ("failover", "A", "it died", "B"))

    def test_aSecondUseWhileMovingIsRefused(self):
        self.use()
        second = self.use()
        self.assertIn("already moving", str(self.failureResultOf(second, ValueError).value))

    def test_stopWhileMoving(self):
        reply = self.use()
        d = self.client.stop()
        self.failureResultOf(reply, ValueError)
        self.assertEqual(self.client.describe()["state"], "stopped")
        self.successResultOf(d)
        self.assertIn(("endSession", "A", "wireguard"), self.effects.events)

    def test_degradedIsAnnouncedOnceAnEpisode(self):
        self.client.probeMissed(self.session, 1)
        self.client.probeMissed(self.session, 2)
        self.client.probeAnswered(self.session, 0.01)
        self.client.probeMissed(self.session, 1)
        self.assertEqual(self.effects.announced, [
            ("degraded", "A", "1 health probe(s) unanswered", None)] * 2)


class MadeBeforeBreakTests(OnlineMachine, SynchronousTestCase):
    """
    The moving state when the method can hold the new tunnel beside the
    old one (C{canConnectBeside}): the new tunnel comes up and answers
    while the old session serves, then takes over (C{handOver}).
    """

    def setUp(self):
        super().setUp()
        self.effects.beside = True

    def granted(self):
        reply = self.use()
        self.effects.fire("register", LEASE)
        return reply

    def test_theNewTunnelAnswersBesideThenServes(self):
        reply = self.granted()
        self.assertEqual(self.successResultOf(reply)["gateway"], "B")
        self.assertEqual(self.effects.events[1:], [("connectStandby", "B", "wireguard")])
        self.effects.fire("connectStandby", Connection())
        self.assertEqual(self.effects.events[-1], ("verify", "B", "wireguard"))
        self.assertEqual(self.client.describe()["state"], "moving")
        self.assertIs(self.core.session, self.session)
        self.effects.fire("verify", 0.01)
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertEqual(self.core.session.step.gatewayId, "B")
        # The old session is handed over (kept, not ended), its lease with it.
        self.assertEqual(self.effects.events[3:], [("handOver", "A", "B"),
                                                   ("startSession", "B", "wireguard")])
        self.assertIn("connections stay on its tunnel", self.client.describe()["reason"])

    def test_aNewTunnelThatPassesNothingIsTakenDownAndTheSessionStays(self):
        """
        The new tunnel passes no probe: it is taken down, its lease
        released, the chosen gateway's other method tried, and once none
        is left the old session goes on untouched.
        """
        reply = self.granted()
        self.effects.fire("connectStandby", Connection())
        self.effects.fail("verify", RuntimeError("no answer within 0.9 s"))
        self.assertEqual(self.effects.events[3:], [
            ("failure", "B"), ("disconnect", "B", "wireguard"), ("unregister", "B", "wireguard"),
            ("register", "B", "forward")])
        self.effects.fail("register", RPCError(METHOD_UNAVAILABLE, "no"))
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertIs(self.core.session, self.session)
        self.successResultOf(reply)  # answered when the lease was granted
        self.assertNotIn(("endSession", "A", "wireguard"), self.effects.events)

    def test_theOldGatewayLostMeanwhileTakesTheNewDownAndFailsOver(self):
        self.granted()
        self.effects.fire("connectStandby", Connection())
        probing = self.effects.pending["verify"]
        self.client.failover(self.session, buildPlan([ranked("C", "10.0.0.3")]), "it died")
        self.assertTrue(probing.called)
        self.assertEqual(self.effects.events[-6:], [
            ("register", "C", "wireguard"), ("disconnect", "B", "wireguard"),
            ("unregister", "B", "wireguard"), ("failure", "A"), ("endSession", "A", "wireguard"),
            ("unregister", "A", "wireguard")])
        self.assertEqual(self.client.describe()["state"], "registering")

    def test_stopWhileTheNewTunnelComesUp(self):
        self.granted()
        connecting = self.effects.pending["connectStandby"]
        d = self.client.stop()
        self.assertTrue(connecting.called)
        self.successResultOf(d)
        self.assertEqual(self.effects.events[-3:], [
            ("unregister", "B", "wireguard"), ("endSession", "A", "wireguard"),
            ("unregister", "A", "wireguard")])

    def test_aPlannedMoveHasNoReplyAndStaysOnARefusal(self):
        self.client.plannedMove(self.session, buildPlan([ranked("B", "10.0.0.2")]),
                                "it scored better")
        self.assertEqual(self.client.describe()["state"], "moving")
        self.assertIn("moving to B (10.0.0.2): it scored better", self.client.describe()["reason"])
        self.effects.fail("register", RPCError(GATEWAY_FULL, "gateway full"))
        self.assertEqual(self.client.describe()["state"], "online")
        self.assertIs(self.core.session, self.session)


class AgentControlTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.effects = AgentEffects()
        self.agent = ClientAgent(self.clock, self.effects, QualityHistory(self.clock),
                                 SwitchPolicy(margin=0.2, hold=30), rescanInterval=10,
                                 backoff=Backoff(5, 60))

    def goOnline(self, gateways):
        return goOnline(self.agent, self.effects, gateways)

    def test_findByIdStartNameOrRefuse(self):
        self.goOnline([fixedRanked("A", 0.1), fixedRanked("Bb", 0.5), fixedRanked("Bc", 0.6)])
        self.assertEqual(self.agent.find("A"), ("A", "A"))
        self.assertEqual(self.agent.find("Bb"), ("Bb", "Bb"))
        error = self.assertRaises(ValueError, self.agent.find, "Z")
        self.assertEqual(str(error), "no gateway 'Z' in the last scan (mnigsctl gateways lists "
                                     "them; mnigsctl rescan looks again)")
        error = self.assertRaises(ValueError, self.agent.find, "B")
        self.assertEqual(str(error), "'B' names 2 gateways: Bb, Bc")
        self.assertEqual(self.agent.find("ed25519:new", unlisted=True), ("ed25519:new", "ed25519:new"))

    def test_useMovesAndTheChoiceHolds(self):
        self.goOnline([fixedRanked("A", 0.1), fixedRanked("B", 0.5)])
        d = self.agent.use("B")
        self.effects.fire("register", LEASE)
        self.assertEqual(self.successResultOf(d)["chosen"], "B")
        self.assertEqual(self.effects.policy.chosen, "B")
        self.effects.fire("connect", Connection())
        self.effects.fire("verify", 0.01)
        # A scores better, but the operator's choice holds through rescans.
        for _ in range(5):
            self.clock.advance(10)
            self.effects.fire("scan", [fixedRanked("A", 0.1), fixedRanked("B", 0.5)])
        self.assertEqual(self.agent.core.session.step.gatewayId, "B")
        self.assertIn("mnigsctl use", self.agent.why()["summary"])
        self.assertEqual(self.agent.use("-"), {"chosen": None,
                                               "note": "the ranking chooses the gateway again"})
        self.clock.advance(10)
        self.effects.fire("scan", [fixedRanked("A", 0.1), fixedRanked("B", 0.5)])
        self.assertEqual(self.agent.describe()["switch"]["hold_left_s"], 30)

    def test_useOfAnUnusableGatewayIsRefusedAtOnce(self):
        self.goOnline([fixedRanked("A", 0.1), fixedRanked("B", 0.5, available=False)])
        error = self.assertRaises(ValueError, self.agent.use, "B")
        self.assertEqual(str(error), "B is not usable: not available")
        self.assertEqual(self.effects.events, [])
        self.assertEqual(self.agent.events()["events"][-1],
                         {"ago": 0, "event": "use B refused", "reason": "not available"})

    def test_blockTheCurrentGatewayLeavesIt(self):
        self.goOnline([fixedRanked("A", 0.1), fixedRanked("B", 0.5)])
        answer = self.agent.block("A")
        self.assertEqual((answer["left"], answer["persisted"]), (True, False))
        self.assertEqual(self.effects.events[:3], [
            ("register", "B", "wireguard"), ("endSession", "A", "wireguard"),
            ("unregister", "A", "wireguard")])
        self.assertEqual(self.agent.unblock("A"), {"unblocked": "A", "persisted": False})
        self.assertRaises(ValueError, self.agent.unblock, "A")
        events = [(e["event"], e["reason"]) for e in self.agent.events()["events"]]
        block = events.index(("block A", "mnigsctl block, until unblock or a restart"))
        self.assertEqual(events[block + 1][0], "online --switch--> registering")
        self.assertEqual(events[-1], ("unblock A", "mnigsctl unblock"))

    def test_blockTheOnlyGatewaySearches(self):
        self.goOnline([fixedRanked("A", 0.1)])
        self.agent.block("A")
        self.assertEqual(self.agent.describe()["state"], "searching")
        self.assertEqual(self.effects.announced[-1][:3],
                         ("failover", "A", "blocked at run time (mnigsctl block)"))

    def test_rescanNow(self):
        self.goOnline([fixedRanked("A", 0.1)])
        self.assertEqual(self.agent.rescanNow()["rescan"][:7], "started")
        self.assertEqual(self.effects.events, [("scan",)])
        self.assertEqual(self.agent.rescanNow(), {"rescan": "a rescan is already under way"})

    def test_rescanNowWhileWaitingSearches(self):
        self.agent.start()
        self.effects.fire("scan", [])
        self.assertEqual(self.agent.describe()["state"], "waiting")
        self.assertEqual(self.agent.rescanNow()["state"], "searching")

    def test_describeCarriesThePageContract(self):
        gateways = [fixedRanked("A", 0.1), fixedRanked("B", 0.5)]
        gateways[0] = replace(gateways[0], parts=dict.fromkeys(PARTS, 0.02))
        self.goOnline(gateways)
        self.clock.advance(2)
        status = self.agent.describe()
        self.assertEqual(status["gateways"][0]["score_parts"], dict.fromkeys(PARTS, 0.02))
        self.assertEqual(status["gateways"][1]["score_parts"], dict.fromkeys(PARTS, 0.0))
        self.assertIsNone(status["switch"])
        self.assertEqual(status["better"], "lower score is better")
        self.assertEqual(status["events"][0], {"ago": 2, "event": "idle --start--> searching",
                                               "reason": ""})
        json.dumps(status)


class HookTests(EffectsTestCase):
    def test_argumentVectors(self):
        runs = []
        self.effects.hooks.run = lambda *args: runs.append(args)
        session = self.session()
        nextStep = type("Next", (), {"gatewayId": "ed25519:b", "host": "10.99.0.6",
                                     "method": "forward",
                                     "seen": type("S", (), {"offer": type("O", (), {"name": "b"})})})
        self.effects.startSession(session)
        self.effects.announce("degraded", session, "1 health probe(s) unanswered")
        self.effects.announce("failover", session, "it died", nextStep)
        self.effects.endSession(session)
        common = ("ed25519:gw", "10.99.0.5", "wireguard", "100.64.0.2/32", "pdx-gw-1")
        self.assertEqual(runs, [
            ("online",) + common + ("",),
            ("degraded",) + common + ("1 health probe(s) unanswered",),
            ("failover",) + common + ("it died", "ed25519:b", "b", "10.99.0.6", "forward"),
            ("offline",) + common + ("",)])


WHY = {
    "state": "online", "better": "lower score is better", "margin": 0.2, "hold": 60,
    "chosen": None,
    "current": {"gateway": "ed25519:a", "name": "gwA", "method": "wireguard", "score": 0.87,
                "score_parts": {"distance": 0.5, "rtt": 0.12, "load": 0.05, "fee": 0.0,
                                "history": 0.2}},
    "switch": {"gateway": "ed25519:b", "name": "gwB", "better_by": 0.35,
               "better_by_fraction": 0.4023, "margin": 0.2, "hold": 60, "hold_left_s": 42.0},
    "summary": "gwB scores 40 % (0.350) better; the client moves if that holds for 42 s more",
    "others": [{"gateway": "ed25519:b", "name": "gwB", "score": 0.52, "usable": True,
                "score_parts": {}, "verdict": "scores 0.350 better (margin 0.2): ..."}],
}


class CtlTests(SynchronousTestCase):
    def mnigsctl(self, argv, answer):
        asked = []

        def ask(path, command, timeout=5.0):
            asked.append((command, timeout))
            return answer
        self.patch(ctl, "ask", ask)
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        code = ctl.main(["--socket", "/x"] + argv)
        return code, out.getvalue(), asked

    def test_whyHuman(self):
        code, text, asked = self.mnigsctl(["why"], WHY)
        self.assertEqual((code, asked), (0, [("why", 5.0)]))
        self.assertEqual(text.splitlines()[:3], [
            "on gwA (ed25519:a) via wireguard: score 0.870 (lower score is better) = distance "
            "0.500 + rtt 0.120 + load 0.050 + fee 0.000 + history 0.200",
            "what would move the client: gwB scores 40 % (0.350) better; the client moves if "
            "that holds for 42 s more",
            "switch: gwB scores 0.350 (40 %) lower (better); the client moves if that holds "
            "42 s more (switch_hold 60 s; a gateway must score more than switch_margin 0.2 lower)"])

    def test_json(self):
        code, text, _ = self.mnigsctl(["why", "--json"], WHY)
        self.assertEqual(json.loads(text), WHY)

    def test_gatewaysHuman(self):
        answer = {"state": "online", "better": "lower score is better", "current": "ed25519:a",
                  "chosen": None, "switch": None, "blocked_now": ["ed25519:c"],
                  "gateways": [
                      {"rank": 1, "gateway": "ed25519:a", "name": "gwA", "score": 0.6,
                       "usable": True, "score_parts": dict(zip(PARTS, (0.3, 0.1, 0.1, 0, 0.1)))},
                      {"rank": None, "gateway": "ed25519:c", "name": "gwC\x1b[2J", "score": 0.2,
                       "usable": False, "why_not": "blocked at run time (mnigsctl unblock)",
                       "score_parts": {}}]}
        code, text, _ = self.mnigsctl(["gateways"], answer)
        lines = text.splitlines()
        self.assertIn("lower score is better", lines[0])
        self.assertEqual(lines[1], "switch: no better gateway is waited for")
        self.assertEqual(lines[3], "   1 *  gwA                0.600 =    0.300 +    0.100 +    "
                                   "0.100 +    0.000 +    0.100")
        self.assertNotIn("\x1b", text)
        self.assertIn("[blocked at run time (mnigsctl unblock)]", lines[4])

    def test_useWaitsLongerAndAnError(self):
        code, text, asked = self.mnigsctl(["use", "gwB"], {"error": "gateway full; staying on gwA"})
        self.assertEqual((code, text, asked), (1, "error: gateway full; staying on gwA\n",
                                               [("use gwB", clientctl.TIMEOUTS["use"])]))
        _, _, asked = self.mnigsctl(["use", "--auto"], {"chosen": None})
        self.assertEqual(asked[0][0], "use -")

    def test_eventsHuman(self):
        code, text, _ = self.mnigsctl(["events"], {"state": "online", "events": [
            {"ago": 12.5, "event": "block gwA", "reason": "mnigsctl block"},
            {"ago": 12.4, "event": "online --switch--> registering", "reason": ""}]})
        self.assertEqual(text.splitlines(), [
            "state: online; the last 2 events, oldest first:",
            "      12.5s ago  block gwA  (mnigsctl block)",
            "      12.4s ago  online --switch--> registering"])

    def test_gatewayArgumentRequired(self):
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, ctl.main, ["use"])
        self.assertRaises(SystemExit, ctl.main, ["why", "gwA"])


class StatusSaysWhichWayTests(SynchronousTestCase):
    def test_statusShowsTheWayAndTheWait(self):
        text = ctl.formatStatus({
            "state": "online", "switch": WHY["switch"],
            "gateways": [{"rank": 1, "name": "gwA", "host": "10.0.0.1", "score": 0.5}]})
        self.assertIn("known gateways (best first; lower score is better):\n  switch: gwB "
                      "scores 0.350 (40 %) lower (better); the client moves if that holds 42 s "
                      "more", text)


def onlineWithAStandby(test):
    """
    The real agent, client machine and standbys (one) on C{test}, with
    recording effects whose C{handOver} is an event; online with A, the
    standby's registration with B under way.  Returns the session.
    """
    from mnigs.client.standby import Standbys
    from tests.unit.test_standby import StandbyEffects

    test.clock = Clock()
    test.effects = StandbyEffects()

    def handOver(old, new):
        test.effects.events.append(("handOver", old.step.gatewayId, new.step.gatewayId))
        return defer.succeed(None)

    test.effects.handOver = handOver
    test.standbys = Standbys(test.clock, test.effects, 1, test.effects.planStandby,
                             backoff=Backoff(1, 8))
    test.agent = ClientAgent(test.clock, test.effects, QualityHistory(test.clock),
                             SwitchPolicy(margin=0.2, hold=30), rescanInterval=10,
                             standbys=test.standbys)
    test.gateways = [fixedRanked("A", 0.1), fixedRanked("B", 0.5)]
    test.effects.lastRanked = test.gateways
    return goOnline(test.agent, test.effects, test.gateways)


class HandOverToStandbyTests(SynchronousTestCase):
    """
    Planned moves to a gateway with a ready hot standby: the real agent,
    client machine and standbys, recording effects.  The standby takes
    over (C{handOver}: the old session's flows pinned, then the route),
    and no lease is asked on the way.
    """

    def setUp(self):
        self.session = onlineWithAStandby(self)
        self.effects.fire("register", LEASE)
        self.effects.fire("connectStandby", Connection())
        self.effects.fire("verify", 0.02)
        self.standby = self.standbys.best()
        del self.effects.events[:]

    def assertHandedOver(self):
        self.assertIs(self.agent.core.session, self.standby)
        self.assertEqual(self.agent.machine.describe()["state"], "online")
        events = [e for e in self.effects.events if e != ("scan",)]  # the rescans'
        self.assertEqual(events[:2], [("handOver", "A", "B"), ("startSession", "B", "wireguard")])
        self.assertNotIn(("register", "B", "wireguard"), self.effects.events)
        self.assertNotIn(("endSession", "A", "wireguard"), self.effects.events)
        self.assertNotIn(("unregister", "A", "wireguard"), self.effects.events)
        self.assertFalse(hasattr(self.effects, "announced"), "no failover hook")

    def test_useOfTheStandbysGatewayHandsOver(self):
        reply = self.agent.use("B")
        self.assertEqual(self.successResultOf(reply)["chosen"], "B")
        self.assertHandedOver()
        events = [e["event"] for e in self.agent.core.trace.events()]
        self.assertIn("online --moveToStandby--> handingOver", events)
        self.assertIn("handingOver --promoted--> online", events)

    def test_aGatewaySayingUnavailableHandsOverToTheStandby(self):
        from mnigs.client.reasons import SAYS_UNAVAILABLE, UNAVAILABLE, Reason

        self.agent.lost(self.session, Reason(UNAVAILABLE, SAYS_UNAVAILABLE))
        self.assertHandedOver()

    def test_aBetterGatewayWithAStandbyIsHandedOverTo(self):
        better = [fixedRanked("B", 0.0), fixedRanked("A", 0.5)]
        for _ in range(5):
            self.clock.advance(10)
            self.effects.fire("scan", better)
        self.assertHandedOver()

    def test_aFailureStillPromotesAndLeaves(self):
        self.agent.lost(self.session, "3 health probes unanswered")
        self.assertNotIn(("handOver", "A", "B"), self.effects.events)
        self.assertIn(("endSession", "A", "wireguard"), self.effects.events)

    def test_aLateHandOverIsAnswered(self):
        reply = defer.Deferred()
        self.agent.machine.stop()
        self.agent.machine.moveToStandby(self.standby, self.session, "mnigsctl use", reply)
        self.failureResultOf(reply, ValueError)


class MoveWhileAStandbyComesUpTests(SynchronousTestCase):
    """
    C{use} of the gateway whose standby is still coming up: the move
    asks it for a lease itself; once granted (the same lease the standby
    holds) the standbys go, keeping that lease, before the new tunnel
    comes up beside the old one; they come back once a session serves.
    """

    def setUp(self):
        onlineWithAStandby(self)
        self.effects.beside = True
        self.standbyRegistering = self.effects.pending.pop("register")  # the standby's, with B
        del self.effects.events[:]

    def test_theStandbysGoBeforeTheNewTunnelThenComeBack(self):
        reply = self.agent.use("B")
        self.assertEqual(self.effects.events, [("register", "B", "wireguard")])
        self.effects.fire("register", LEASE)
        self.successResultOf(reply)
        self.assertTrue(self.standbyRegistering.called)  # cancelled
        self.assertEqual(self.standbys.slots, [])
        self.assertEqual(self.effects.events[1:], [("connectStandby", "B", "wireguard")])
        self.effects.fire("connectStandby", Connection())
        self.effects.fire("verify", 0.01)
        self.assertEqual(self.agent.core.session.step.gatewayId, "B")
        self.assertIn(("handOver", "A", "B"), self.effects.events)
        self.assertEqual(self.effects.events[-1], ("register", "A", "wireguard"))  # a standby again

    def test_aRefusalBringsTheStandbysBack(self):
        reply = self.agent.use("B")
        self.effects.fail("register", RPCError(GATEWAY_FULL, "gateway full"))
        self.failureResultOf(reply, ValueError)
        self.assertEqual(self.agent.machine.describe()["state"], "online")
        self.assertEqual(len(self.standbys.slots), 1)
