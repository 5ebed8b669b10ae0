"""
L{mnigs.client.health}: the probe-round scheduling, driven by a Clock and a
fake pinger whose answers the tests give by hand.
"""

from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mnigs.client.health import HealthMonitor, NoAnswer, ProbeTargets, firstAnswer
from mnigs.client.pacing import Pacing
from mnigs.interfaces import IPinger

settings.register_profile("mnigs-health", derandomize=True, max_examples=300, deadline=None)


@implementer(IPinger)
class FakePinger:
    """Hands out Deferreds and remembers them, oldest first."""

    def __init__(self, clock):
        self.clock = clock
        self.probes = []  # [target, timeout, sentAt, Deferred, cancelled]
        self.answer = None  # a callable(target) giving a synchronous answer

    def ping(self, target, timeout):
        if self.answer is not None:
            return self.answer(target)
        probe = [target, timeout, self.clock.seconds(), None, False]

        def cancel(d):
            probe[4] = True

        probe[3] = defer.Deferred(cancel)
        self.probes.append(probe)
        return probe[3]

    def close(self):
        pass

    def outstanding(self):
        return [p for p in self.probes if not p[3].called]

    def reply(self, index, rtt):
        self.probes[index][3].callback(rtt)


class Recorder:
    def __init__(self, clock):
        self.clock = clock
        self.events = []
        self.samples = []

    def callbacks(self):
        return dict(onMissed=lambda n: self.events.append(("missed", n)),
                    onAnswered=lambda rtt: self.events.append(("answered", rtt)),
                    onLost=lambda reason: self.events.append(("lost", reason)),
                    onSample=self.samples.append)


class HealthMonitorTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.pinger = FakePinger(self.clock)
        self.recorder = Recorder(self.clock)
        self.times = []

    def monitor(self, targets=("10.0.0.1",), **kw):
        callbacks = self.recorder.callbacks()
        for name, callback in list(callbacks.items()):
            if name != "onSample":
                callbacks[name] = self.timestamped(callback)
        callbacks.update(kw)
        return HealthMonitor(self.clock, self.pinger, list(targets), **callbacks)

    def timestamped(self, callback):
        def record(*args):
            self.times.append(self.clock.seconds())
            callback(*args)
        return record

    @property
    def events(self):
        return self.recorder.events

    def test_answeredMissedMissedLost(self):
        monitor = self.monitor()
        monitor.start()
        self.assertEqual([p[:3] for p in self.pinger.probes], [["10.0.0.1", 0.75, 0]])
        self.pinger.reply(0, 0.02)
        self.clock.pump([0.25] * 8)
        self.assertEqual(self.events, [("answered", 0.02), ("missed", 1), ("missed", 2),
                                       ("lost", "no answer from 10.0.0.1 in 3 probes")])
        self.assertEqual(self.times, [0, 1.0, 1.25, 1.5])
        self.assertEqual(self.recorder.samples, [0.02, None, None, None])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.pinger.outstanding(), [], "outstanding probes cancelled")
        self.assertEqual(len(self.pinger.probes), 6)  # rounds 0 .. 1.25
        self.assertEqual(monitor.describe(), {
            "state": "lost", "targets": ["10.0.0.1"],
            "answers": [{"target": "10.0.0.1", "kind": "gateway", "rtt_ms": 20.0,
                         "answered_ago": 2.0}],
            "reason": "no answer from 10.0.0.1 in 3 probes"})

    def runOutage(self, monitor, silentFrom, rtt, limit=60.0):
        """
        Start C{monitor}: the gateway answers every probe sent before C{silentFrom} after
        C{rtt}, then nothing.  Steps of 1/64 s keep every time exact in
        binary floating point.
        """
        def answerUntilSilent(target):
            d = defer.Deferred()
            if self.clock.seconds() < silentFrom and rtt == 0:
                self.answeredAt(d, rtt)  # a synchronous answer
            elif self.clock.seconds() < silentFrom:
                self.clock.callLater(rtt, lambda: d.called or self.answeredAt(d, rtt))
            return d

        self.answers = []
        self.pinger.answer = answerUntilSilent
        monitor.start()
        while not any(e[0] == "lost" for e in self.events) and self.clock.seconds() < limit:
            self.clock.advance(1 / 64)
        [lostAt] = [t for t, e in zip(self.times, self.events) if e[0] == "lost"]
        return lostAt

    def answeredAt(self, d, rtt):
        self.answers.append(self.clock.seconds())
        d.callback(rtt)

    def test_defaultsDetectWithinABitOverASecond(self):
        """
        With the defaults, loss is declared 1.25 s after the first probe the
        gateway left unanswered, and under 1.5 s after its last answer.
        """
        lostAt = self.runOutage(self.monitor(), silentFrom=2.0 + 1 / 64, rtt=1 / 64)
        self.assertEqual(lostAt - 2.25, 1.25)
        self.assertEqual(lostAt - self.answers[-1], 1.5 - 1 / 64)
        self.assertEqual(self.events[-3:], [("missed", 1), ("missed", 2),
                                            ("lost", "no answer from 10.0.0.1 in 3 probes")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @settings(settings.get_profile("mnigs-health"))
    @given(interval=st.sampled_from([4, 8, 16, 32, 64]),
           timeout=st.sampled_from([4, 16, 48, 96, 192]),
           misses=st.integers(1, 5), silentFrom=st.integers(0, 256),
           rttFraction=st.floats(0, 1, exclude_max=True))
    def test_lossDeadline(self, interval, timeout, misses, silentFrom, rttFraction):
        """
        Whatever the timing (in 64ths of a second) and however the rounds
        overlap, loss comes exactly (misses-1)*interval + timeout after the
        start of the first unanswered round: misses*interval + timeout -
        rtt after the last answer.
        """
        self.setUp()
        rtt = int(rttFraction * timeout) / 64
        interval, timeout, silentFrom = interval / 64, timeout / 64, silentFrom / 64
        monitor = self.monitor(interval=interval, timeout=timeout, misses=misses)
        lostAt = self.runOutage(monitor, silentFrom, rtt)
        firstUnanswered = -(-silentFrom // interval) * interval
        self.assertEqual(lostAt, firstUnanswered + (misses - 1) * interval + timeout)
        if self.answers:
            self.assertEqual(self.answers[-1], firstUnanswered - interval + rtt)
            self.assertEqual(lostAt - self.answers[-1], misses * interval + timeout - rtt)
        self.assertEqual(self.events.count(("missed", 1)), 0 if misses == 1 else 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_overlappingRoundsCountInStartOrder(self):
        """
        Round 1 answers while round 0 is still out: the answer is only
        counted once round 0 has missed.
        """
        self.monitor(interval=0.25, timeout=0.75).start()
        self.clock.advance(0.25)
        self.clock.advance(0.05)
        self.pinger.reply(1, 0.05)
        self.assertEqual(self.events, [])
        self.clock.advance(0.45)  # round 0's deadline
        self.assertEqual(self.events, [("missed", 1), ("answered", 0.05)])

    def test_lateAnswerOfAnOlderRoundStillCounts(self):
        self.monitor().start()
        self.clock.advance(0.25)
        self.pinger.reply(1, 0.01)
        self.clock.advance(0.4)
        self.pinger.reply(0, 0.65)
        self.assertEqual(self.events, [("answered", 0.65), ("answered", 0.01)])

    def test_anyTargetSuffices(self):
        self.monitor(targets=["10.0.0.1", "fd00::1", "198.51.100.1"]).start()
        self.assertEqual([p[0] for p in self.pinger.probes],
                         ["10.0.0.1", "fd00::1", "198.51.100.1"])
        self.pinger.reply(0, None)
        self.pinger.probes[1][3].errback(OSError("Network is unreachable"))
        self.assertEqual(self.events, [])
        self.pinger.reply(2, 0.03)
        self.assertEqual(self.events, [("answered", 0.03)])

    def test_firstAnswerWinsAndTheRestAreCancelled(self):
        self.monitor(targets=["10.0.0.1", "10.0.0.2"]).start()
        self.pinger.reply(1, 0.04)
        self.assertEqual(self.events, [("answered", 0.04)])
        self.assertTrue(self.pinger.probes[0][4])
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 0.25,
                         "only the round timer is left")

    def test_allTargetsSilentMissesBeforeTheDeadline(self):
        self.monitor(targets=["10.0.0.1", "10.0.0.2"]).start()
        self.pinger.reply(0, None)
        self.pinger.reply(1, None)
        self.assertEqual(self.events, [("missed", 1)])
        self.assertEqual(self.times, [0])

    def test_failedProbesAreMisses(self):
        self.pinger.answer = lambda target: defer.fail(OSError("Network is unreachable"))
        self.monitor().start()
        self.clock.pump([0.25] * 2)
        self.assertEqual(self.events, [("missed", 1), ("missed", 2),
                                       ("lost", "no answer from 10.0.0.1 in 3 probes")])
        self.assertEqual(self.times, [0, 0.25, 0.5])

    def test_raisingPingerIsAMiss(self):
        def broken(target):
            raise RuntimeError("broken pinger")
        self.pinger.answer = broken
        self.monitor(misses=2).start()
        self.clock.advance(0.25)
        self.assertEqual([e[0] for e in self.events], ["missed", "lost"])

    def test_synchronousAnswers(self):
        self.pinger.answer = lambda target: defer.succeed(0.001)
        monitor = self.monitor()
        monitor.start()
        self.clock.pump([0.25] * 3)
        self.assertEqual(self.events, [("answered", 0.001)] * 4)
        self.assertEqual(monitor.describe(), {
            "state": "probing", "targets": ["10.0.0.1"], "missed": 0, "outstanding": 0,
            "answers": [{"target": "10.0.0.1", "kind": "gateway", "rtt_ms": 1.0,
                         "answered_ago": 0.0}]})

    def test_answerResetsTheCount(self):
        self.monitor().start()
        self.clock.pump([0.25] * 4)  # rounds 0 and 1 miss at 0.75, 1.0
        self.pinger.reply(2, 0.5)
        self.clock.pump([0.25] * 3)
        self.assertEqual(self.events, [("missed", 1), ("missed", 2), ("answered", 0.5),
                                       ("missed", 1), ("missed", 2)])

    def test_zeroRoundTripIsAnAnswer(self):
        self.monitor().start()
        self.pinger.reply(0, 0.0)
        self.assertEqual(self.events, [("answered", 0.0)])

    def test_stopAbandonsEverything(self):
        monitor = self.monitor()
        monitor.start()
        self.clock.pump([0.25] * 2)
        monitor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.pinger.outstanding(), [])
        self.assertTrue(all(p[4] for p in self.pinger.probes))
        self.clock.advance(5)
        self.assertEqual(self.events, [])
        self.assertEqual(monitor.describe(), {
            "state": "stopped", "targets": ["10.0.0.1"],
            "answers": [{"target": "10.0.0.1", "kind": "gateway", "rtt_ms": None,
                         "answered_ago": None}]})
        monitor.stop()

    def test_restartAfterLoss(self):
        monitor = self.monitor(misses=1)
        self.assertEqual(monitor.describe()["state"], "idle")
        monitor.start()
        self.clock.advance(0.75)
        self.assertEqual([e[0] for e in self.events], ["lost"])
        monitor.start()
        monitor.start()
        self.pinger.reply(-1, 0.1)
        self.assertEqual([e[0] for e in self.events], ["lost", "answered"])
        self.assertEqual(monitor.describe()["missed"], 0)
        monitor.stop()

    def test_stopFromACallback(self):
        monitor = None

        def stopNow(rtt):
            self.events.append(("answered", rtt))
            monitor.stop()

        monitor = self.monitor(onAnswered=stopNow)
        monitor.start()
        self.clock.advance(0.25)
        self.pinger.reply(1, 0.01)
        self.pinger.reply(0, 0.3)
        self.assertEqual(self.events, [("answered", 0.3)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restartFromOnLost(self):
        monitor = None

        def restart(reason):
            self.events.append(("lost", reason))
            monitor.start()

        monitor = self.monitor(misses=1, onLost=restart)
        monitor.start()
        self.clock.advance(0.75)
        self.assertEqual(monitor.describe()["state"], "probing")
        monitor.stop()

    def test_failingCallbackIsLogged(self):
        def broken(rtt):
            raise ZeroDivisionError()

        self.monitor(onAnswered=broken).start()
        self.pinger.reply(0, 0.01)
        self.clock.advance(0.25)
        self.pinger.reply(1, 0.01)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_badArguments(self):
        for kw in ({"targets": []}, {"interval": 0}, {"timeout": -1}, {"misses": 0}):
            self.assertRaises(ValueError, self.monitor, **kw)


# A session's targets: the gateway's inner address, an Internet address
# from its offer, through the tunnel device.
TUNNEL = ProbeTargets.of(["100.64.0.1"], ["9.9.9.9"], device="wg-mnigs")


class InternetRuleTests(SynchronousTestCase):
    """
    With Internet targets a round is answered only when one of them
    answers; the gateway is still probed, and its answers show in the
    status and in the reason for a loss.
    """

    def setUp(self):
        self.clock = Clock()
        self.pinger = FakePinger(self.clock)
        self.recorder = Recorder(self.clock)

    def monitor(self, targets=TUNNEL, **kw):
        return HealthMonitor(self.clock, self.pinger, targets, **self.recorder.callbacks(), **kw)

    def test_targetsOnceEachInternetFirst(self):
        targets = ProbeTargets.of(["100.64.0.1", "9.9.9.9", "100.64.0.1"], ["9.9.9.9", "1.1.1.1"])
        self.assertEqual(targets, ProbeTargets(("100.64.0.1",), ("9.9.9.9", "1.1.1.1")))
        self.assertEqual(targets.all(), ["9.9.9.9", "1.1.1.1", "100.64.0.1"])
        self.assertEqual(targets.describe(),
                         "9.9.9.9 (internet), 1.1.1.1 (internet), 100.64.0.1 (gateway)")
        self.assertEqual(ProbeTargets.of(["100.64.0.1"]).describe(), "100.64.0.1")

    def test_theGatewaysAnswerAloneIsNotAnAnsweredRound(self):
        self.monitor().start()
        self.assertEqual([p[0] for p in self.pinger.probes], ["9.9.9.9", "100.64.0.1"])
        self.pinger.reply(1, 0.01)
        self.assertEqual(self.recorder.events, [])
        self.pinger.reply(0, 0.03)
        self.assertEqual(self.recorder.events, [("answered", 0.03)])

    def test_echoesToTheInternetOneAnswerSuffices(self):
        """
        With C{echoes} a round asks each Internet target that many times
        (the gateway once); the answer to any one of them answers the
        round, and the rest are abandoned.
        """
        self.monitor(echoes=3).start()
        self.assertEqual([p[0] for p in self.pinger.probes],
                         ["9.9.9.9", "9.9.9.9", "9.9.9.9", "100.64.0.1"])
        self.pinger.reply(2, 0.02)
        self.assertEqual(self.recorder.events, [("answered", 0.02)])
        self.assertEqual([p[4] for p in self.pinger.probes], [True, True, False, True])

    def test_echoesAllUnansweredMiss(self):
        self.monitor(echoes=2, misses=2).start()
        for _ in range(3):
            self.clock.advance(0.25)
        self.clock.advance(0.75)
        self.assertEqual(self.recorder.events[:2], [("missed", 1), ("lost", self.recorder.events[1][1])])
        self.assertEqual(len([p for p in self.pinger.probes if p[0] == "9.9.9.9"]),
                         2 * len([p for p in self.pinger.probes if p[0] == "100.64.0.1"]))

    def test_theInternetsAnswerSuffices(self):
        self.monitor().start()
        self.pinger.reply(0, 0.03)
        self.assertEqual(self.recorder.events, [("answered", 0.03)])
        self.assertTrue(self.pinger.probes[1][4], "the gateway's probe is abandoned")

    def test_lostWhileTheGatewayAnswersSaysTheInternetDoesNot(self):
        monitor = self.monitor()
        self.pinger.answer = lambda target: defer.succeed(0.01 if target == "100.64.0.1" else None)
        monitor.start()
        self.clock.pump([0.25] * 2)
        reason = ("the Internet beyond 100.64.0.1 does not answer (the gateway does): no answer "
                  "from 9.9.9.9 through wg-mnigs in 3 probes")
        self.assertEqual(self.recorder.events, [("missed", 1), ("missed", 2), ("lost", reason)])
        self.assertEqual(monitor.describe(), {
            "state": "lost", "targets": ["9.9.9.9", "100.64.0.1"], "device": "wg-mnigs",
            "answers": [{"target": "9.9.9.9", "kind": "internet", "rtt_ms": None,
                         "answered_ago": None},
                        {"target": "100.64.0.1", "kind": "gateway", "rtt_ms": 10.0,
                         "answered_ago": 0.0}],
            "gateway_answered_ago": 0.0, "reason": reason})

    def test_lostWhenNothingAnswersSaysSo(self):
        self.pinger.answer = lambda target: defer.succeed(None)
        self.monitor().start()
        self.clock.pump([0.25] * 2)
        self.assertEqual(self.recorder.events[-1], (
            "lost", "nothing answers: no answer from 9.9.9.9, 100.64.0.1 through wg-mnigs in 3 probes"))

    def test_theStatusShowsTheGatewaysLastAnswer(self):
        monitor = self.monitor()
        self.assertIsNone(monitor.describe()["gateway_answered_ago"])
        monitor.start()
        self.pinger.reply(1, 0.01)
        self.clock.advance(0.5)
        self.assertEqual(monitor.describe()["gateway_answered_ago"], 0.5)
        monitor.stop()

    def test_theStatusShowsEveryTargetsLastAnswer(self):
        """
        The status page's probe table: each target's last round-trip time
        and how long ago it answered; a target that never did has neither.
        """
        monitor = self.monitor()
        monitor.start()
        self.pinger.reply(0, 0.0304)
        self.clock.advance(0.25)
        self.pinger.reply(3, 0.004)  # round 1's gateway probe
        self.clock.advance(0.5)
        self.assertEqual(monitor.describe()["answers"], [
            {"target": "9.9.9.9", "kind": "internet", "rtt_ms": 30.4, "answered_ago": 0.75},
            {"target": "100.64.0.1", "kind": "gateway", "rtt_ms": 4.0, "answered_ago": 0.5}])
        monitor.stop()

    def test_startingSaysWhatThroughWhichDeviceHowOften(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        monitor = self.monitor()
        monitor.start()
        monitor.stop()
        self.assertIn("health: probing 9.9.9.9 (internet), 100.64.0.1 (gateway) through "
                      "wg-mnigs every 0.25 s", [formatEvent(e) for e in events])


class FirstAnswerTests(SynchronousTestCase):
    """
    L{firstAnswer}: what the client waits for before it calls a new tunnel
    online.
    """

    def setUp(self):
        self.clock = Clock()
        self.pinger = FakePinger(self.clock)

    def test_firesWithTheFirstAnsweredRound(self):
        d = firstAnswer(self.clock, self.pinger, TUNNEL, interval=0.1, deadline=0.9)
        self.assertEqual([p[:3] for p in self.pinger.probes],
                         [["9.9.9.9", 0.9, 0], ["100.64.0.1", 0.9, 0]])
        self.clock.advance(0.1)
        self.pinger.reply(2, 0.02)
        self.assertEqual(self.successResultOf(d), 0.02)
        self.assertEqual(self.pinger.outstanding(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_theGatewayAloneDoesNotAnswerForTheInternet(self):
        d = firstAnswer(self.clock, self.pinger, TUNNEL, interval=0.1, deadline=0.9)
        self.pinger.reply(1, 0.01)
        self.clock.pump([0.1] * 8)
        self.clock.advance(0.9 - self.clock.seconds())
        error = self.failureResultOf(d, NoAnswer).value
        self.assertEqual(str(error), "no probe answer from the Internet (9.9.9.9) through wg-mnigs "
                                     "within 0.9 s; the gateway (100.64.0.1) answers")
        self.assertEqual(self.pinger.outstanding(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timesOutAtTheDeadlineWithBoundedRounds(self):
        d = firstAnswer(self.clock, self.pinger, TUNNEL, interval=0.1, deadline=0.9)
        self.clock.pump([0.1] * 8)
        self.assertNoResult(d)
        self.clock.advance(0.9 - self.clock.seconds())
        self.assertEqual(str(self.failureResultOf(d, NoAnswer).value),
                         "no probe answer through wg-mnigs from 9.9.9.9, 100.64.0.1 within 0.9 s")
        self.assertLessEqual(len(self.pinger.probes), 2 * 10)
        self.assertTrue(all(p[1] <= 0.9 for p in self.pinger.probes))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_withoutInternetTargetsTheGatewaysAnswerCounts(self):
        d = firstAnswer(self.clock, self.pinger, ProbeTargets.of(["100.64.0.1"], device="wg0"))
        self.pinger.reply(0, 0.004)
        self.assertEqual(self.successResultOf(d), 0.004)

    def test_aSynchronousAnswer(self):
        self.pinger.answer = lambda target: defer.succeed(0.001)
        d = firstAnswer(self.clock, self.pinger, TUNNEL)
        self.assertEqual(self.successResultOf(d), 0.001)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancellingAbandonsEverything(self):
        d = firstAnswer(self.clock, self.pinger, TUNNEL, interval=0.1, deadline=0.9)
        self.clock.advance(0.2)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.pinger.outstanding(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PacedHealthTests(SynchronousTestCase):
    """
    Paced probes and the dead-time rule (L{Pacing}); a fake pinger whose
    answers come after C{rtt} on the Clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.pinger = FakePinger(self.clock)
        self.recorder = Recorder(self.clock)
        self.lostAt = None
        self.answered = 0

    def monitor(self, targets=ProbeTargets.of(["10.0.0.1"]), **kw):
        callbacks = self.recorder.callbacks()
        onLost = callbacks["onLost"]

        def lost(reason):
            self.lostAt = self.clock.seconds()
            onLost(reason)
        callbacks["onLost"] = lost
        callbacks.update(kw)
        return HealthMonitor(self.clock, self.pinger, targets, pacing=Pacing(), **callbacks)

    def answering(self, decide, rtt=0.002):
        """
        Probes answered after C{rtt} when C{decide(target, n, now)} says so
        (n counts the probes sent).
        """
        self.sent = 0

        def ping(target):
            d = defer.Deferred()
            self.sent += 1
            if decide(target, self.sent, self.clock.seconds()):
                self.clock.callLater(rtt, lambda: d.called or self.answer(d, rtt))
            return d
        self.pinger.answer = ping

    def answer(self, d, rtt):
        self.answered = self.clock.seconds()
        d.callback(rtt)

    def advance(self, until, step=0.001):
        while self.lostAt is None and self.clock.seconds() < until:
            self.clock.advance(step)

    def test_deadTimeOnAFastMesh(self):
        """
        On a 2 ms path the pace drops to 0.02 s and the gateway is lost
        the dead time (16 x 0.02 + 0.05 = 0.37 s) after its last answer.
        """
        self.answering(lambda target, n, now: now < 3.0)
        monitor = self.monitor()
        monitor.start()
        self.advance(10)
        paced = monitor.describe()
        self.assertLessEqual(abs(self.lostAt - self.answered - 0.37), 0.002)
        [lost] = [e for e in self.recorder.events if e[0] == "lost"]
        self.assertIn("nothing heard for 0.37 s (dead time 16 probes at 0.02 s + timeout 0.05 s)",
                      lost[1])
        self.assertFalse(lost[1].gatewayAnswered)
        self.assertEqual(paced["state"], "lost")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pacedFromTheRoundTrip(self):
        self.answering(lambda target, n, now: True)
        monitor = self.monitor()
        monitor.start()
        self.advance(2)
        paced = monitor.describe()["paced"]
        self.assertEqual((paced["interval_s"], paced["timeout_s"], paced["dead_time_s"]),
                         (0.02, 0.05, 0.37))
        # About 50 heartbeats a second after the first, plus a round every 0.25 s.
        self.assertTrue(95 <= self.sent <= 115, self.sent)
        monitor.stop()
        self.clock.advance(0.01)  # the fake pinger's last answers
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fifteenLostInARowAreTolerated(self):
        """
        Every 16th probe answered and the rest lost: the gateway is never
        given up (a silence is at most 15 probes at 0.02 s, less than the
        dead time); at 10 % loss per probe it stays up for minutes.
        """
        self.answering(lambda target, n, now: n < 50 or n % 16 == 0)
        self.monitor().start()
        self.advance(60, step=0.005)
        self.assertIsNone(self.lostAt)

    def test_receivedBytesPostponeTheDeadTime(self):
        """
        After the answers stop, bytes still coming out of the tunnel keep
        the gateway alive; once they stop too, it is lost within two dead
        times.
        """
        counter = [0]
        self.answering(lambda target, n, now: now < 1.0)
        monitor = self.monitor(received=lambda: counter[0])

        def grow():
            if self.clock.seconds() < 4.0:
                counter[0] += 100
                self.clock.callLater(0.05, grow)
        grow()
        monitor.start()
        self.advance(10)
        self.assertGreater(self.lostAt, 4.0)
        self.assertLess(self.lostAt, 4.0 + 2 * 0.37)
        self.assertEqual(monitor.describe()["state"], "lost")

    def test_internetBeyondRuleWhileTheGatewayAnswers(self):
        """
        The gateway answers its heartbeat, the Internet never: lost after
        C{misses} rounds, saying the gateway still answers.
        """
        self.answering(lambda target, n, now: target == "10.0.0.1")
        monitor = self.monitor(ProbeTargets.of(["10.0.0.1"], ["9.9.9.9"]))
        monitor.start()
        self.advance(10)
        [lost] = [e for e in self.recorder.events if e[0] == "lost"]
        self.assertIn("does not answer (the gateway does)", lost[1])
        self.assertTrue(lost[1].gatewayAnswered)
        self.assertLessEqual(abs(self.lostAt - (2 * 0.25 + 0.75)), 0.002)

    def test_qualityCountsLostProbesAtTheirTimeout(self):
        """Every other heartbeat lost: the window says half."""
        self.answering(lambda target, n, now: n % 2 == 0)
        monitor = self.monitor()
        monitor.start()
        self.advance(6)
        quality = monitor.quality()
        self.assertLessEqual(abs(quality.loss - 0.5), 0.05)
        self.assertEqual(quality.span, 4.0)
        self.assertAlmostEqual(quality.rtt, 0.002)
        self.assertIsNone(self.lostAt)
