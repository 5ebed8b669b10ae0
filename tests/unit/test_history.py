"""
Tests for L{mnigs.client.history}.
"""

import json
import math
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.history import (
    HISTORY_FILE,
    PROBE_ALPHA,
    GatewayQuality,
    HistoryFile,
    QualityHistory,
    parseSnapshot,
)

GID = "ed25519:AAAA"


def clockAt(seconds):
    clock = Clock()
    clock.advance(seconds)
    return clock


class GatewayQualityTests(SynchronousTestCase):
    def test_startsEmpty(self):
        quality = GatewayQuality()
        self.assertEqual((quality.sessions, quality.failures, quality.onlineSeconds), (0, 0, 0.0))
        self.assertIsNone(quality.rttMs)
        self.assertEqual(quality.loss, 0.0)
        self.assertIsNone(quality.lastFailure)
        self.assertIsNone(quality.lastSeen)

    def test_sessionStartedCountsAndMarksSeen(self):
        quality = GatewayQuality()
        quality.sessionStarted(100)
        quality.sessionStarted(200)
        self.assertEqual((quality.sessions, quality.lastSeen), (2, 200))

    def test_sessionEndedAddsOnlineTime(self):
        quality = GatewayQuality()
        quality.sessionEnded(100, 60)
        quality.sessionEnded(300, 30.5)
        self.assertEqual((quality.onlineSeconds, quality.lastSeen), (90.5, 300))

    def test_sessionEndedIgnoresNonsenseDurations(self):
        quality = GatewayQuality()
        for nonsense in (-5, math.inf, math.nan, None):
            quality.sessionEnded(100, nonsense)
        self.assertEqual(quality.onlineSeconds, 0.0)

    def test_failedCountsAndRemembersWhy(self):
        quality = GatewayQuality()
        quality.failed(100, "registration refused (1001)")
        quality.failed(150, "health lost")
        self.assertEqual(quality.failures, 2)
        self.assertEqual(quality.lastFailure, 150)
        self.assertEqual(quality.lastFailureReason, "health lost")
        self.assertEqual(quality.lastSeen, 150)

    def test_failureReasonIsBounded(self):
        quality = GatewayQuality()
        quality.failed(1, "x" * 1000)
        self.assertEqual(len(quality.lastFailureReason), 256)
        GatewayQuality.fromDict(quality.toDict())

    def test_firstProbeSetsRtt(self):
        quality = GatewayQuality()
        quality.probe(40.0)
        self.assertEqual(quality.rttMs, 40.0)
        self.assertEqual(quality.loss, 0.0)

    def test_probesAverage(self):
        quality = GatewayQuality()
        quality.probe(40.0)
        quality.probe(140.0)
        self.assertAlmostEqual(quality.rttMs, 40.0 + PROBE_ALPHA * 100.0)

    def test_lostProbesRaiseLossAndKeepRtt(self):
        quality = GatewayQuality()
        quality.probe(40.0)
        quality.probe(None)
        self.assertAlmostEqual(quality.loss, PROBE_ALPHA)
        self.assertEqual(quality.rttMs, 40.0)
        for _ in range(200):
            quality.probe(None)
        self.assertGreater(quality.loss, 0.99)
        self.assertLessEqual(quality.loss, 1.0)
        for _ in range(200):
            quality.probe(10.0)
        self.assertLess(quality.loss, 0.01)

    def test_impossibleRoundTripsCountAsLost(self):
        quality = GatewayQuality()
        for nonsense in (-1.0, math.inf, math.nan):
            quality.probe(nonsense)
        self.assertIsNone(quality.rttMs)
        self.assertGreater(quality.loss, 0.0)

    def test_answeredProbeAtATimeMarksSeen(self):
        quality = GatewayQuality()
        quality.probe(None, now=50)
        self.assertIsNone(quality.lastSeen)
        quality.probe(10.0, now=60)
        self.assertEqual(quality.lastSeen, 60)

    def test_trafficCounters(self):
        quality = GatewayQuality()
        quality.traffic(100, 20)
        quality.traffic(5, 1)
        self.assertEqual((quality.bytesIn, quality.bytesOut), (105, 21))

    def test_dictUsesSnakeCaseKeys(self):
        self.assertEqual(
            sorted(GatewayQuality().toDict()),
            ["bytes_in", "bytes_out", "failures", "last_failure", "last_failure_reason",
             "last_seen", "loss", "online_seconds", "rtt_ms", "sessions"],
        )

    def test_fromDictDefaultsMissingAndIgnoresUnknown(self):
        self.assertEqual(GatewayQuality.fromDict({"sessions": 3, "future": [1]}), GatewayQuality(sessions=3))

    def test_fromDictRefusesWrongTypes(self):
        for bad in (
            [], "x", None,
            {"sessions": True}, {"sessions": -1}, {"sessions": 1.0}, {"failures": "2"},
            {"online_seconds": -1}, {"online_seconds": math.inf}, {"online_seconds": None},
            {"rtt_ms": "fast"}, {"rtt_ms": math.nan}, {"loss": 1.5}, {"loss": None},
            {"last_failure": "yesterday"}, {"last_seen": False}, {"last_failure_reason": 7},
            {"last_failure_reason": "x" * 257}, {"bytes_in": -3}, {"bytes_out": 2.5},
        ):
            self.assertRaises(ValueError, GatewayQuality.fromDict, bad)


operations = st.lists(st.one_of(
    st.tuples(st.just("started"), st.floats(0, 2e9)),
    st.tuples(st.just("ended"), st.floats(0, 2e9), st.one_of(st.none(), st.floats(allow_nan=True))),
    st.tuples(st.just("failed"), st.floats(0, 2e9), st.text(max_size=300)),
    st.tuples(st.just("probe"), st.one_of(st.none(), st.floats(allow_nan=True))),
    st.tuples(st.just("traffic"), st.integers(0, 2**40), st.integers(0, 2**40)),
), max_size=30)


def apply(quality, steps):
    for step in steps:
        if step[0] == "started":
            quality.sessionStarted(step[1])
        elif step[0] == "ended":
            quality.sessionEnded(step[1], step[2])
        elif step[0] == "failed":
            quality.failed(step[1], step[2])
        elif step[0] == "probe":
            quality.probe(step[1])
        else:
            quality.traffic(step[1], step[2])


class GatewayQualityPropertyTests(SynchronousTestCase):
    @settings(derandomize=True, max_examples=300, deadline=None)
    @given(operations)
    def test_anyHistorySurvivesTheFile(self, steps):
        """
        Whatever happens to a record, what it writes is strict JSON that
        reads back equal: the file never holds a value it would refuse.
        """
        quality = GatewayQuality()
        apply(quality, steps)
        self.assertTrue(0.0 <= quality.loss <= 1.0)
        text = json.dumps(quality.toDict(), allow_nan=False)
        self.assertEqual(GatewayQuality.fromDict(json.loads(text)), quality)


class QualityHistoryTests(SynchronousTestCase):
    def test_getCreatesOnceStampedNow(self):
        history = QualityHistory(clockAt(1000))
        quality = history.get(GID)
        self.assertEqual(quality.lastSeen, 1000)
        self.assertIs(history.get(GID), quality)
        self.assertIn(GID, history)
        self.assertEqual(len(history), 1)

    def test_prunesLeastRecentlySeen(self):
        clock = clockAt(0)
        history = QualityHistory(clock, maxGateways=3)
        for n in range(3):
            history.get(f"g{n}")
            clock.advance(1)
        history.get("g0").seen(clock.seconds())
        history.get("g3")
        self.assertEqual(sorted(history.gateways), ["g0", "g2", "g3"])

    def test_newGatewayNeverPrunedAtOnce(self):
        history = QualityHistory(clockAt(0), maxGateways=1)
        history.get("b")
        quality = history.get("a")  # same lastSeen, sorts first by id
        self.assertEqual(list(history.gateways), ["a"])
        self.assertIs(history.get("a"), quality)

    def test_maxGatewaysAtLeastOne(self):
        self.assertRaises(ValueError, QualityHistory, Clock(), maxGateways=0)

    def test_snapshotIsPlainJSON(self):
        history = QualityHistory(clockAt(5))
        history.get("b").failed(5, "tunnel failed")
        history.get("a").probe(12.5)
        snapshot = history.snapshot()
        self.assertEqual(json.loads(json.dumps(snapshot, allow_nan=False)), snapshot)
        self.assertEqual(list(snapshot["gateways"]), ["a", "b"])
        self.assertEqual(snapshot["version"], 1)
        self.assertEqual(snapshot["gateways"]["b"]["failures"], 1)

    def test_noStoreLoadsAndSavesNothing(self):
        history = QualityHistory(Clock())
        history.get(GID)
        history.load()
        history.save()
        self.assertIn(GID, history)

    def test_parseSnapshotRefusesOtherShapes(self):
        for bad in ([], {"version": 2, "gateways": {}}, {"version": 1}, {"version": 1, "gateways": []},
                    {"version": 1, "gateways": {"": {}}}, {"version": 1, "gateways": {"x" * 129: {}}},
                    {"version": 1, "gateways": {GID: {"sessions": "many"}}}):
            self.assertRaises(ValueError, parseSnapshot, bad)


class HistoryFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.store = HistoryFile(self.directory)

    def test_pathInStateDir(self):
        self.assertEqual(self.store.path, os.path.join(self.directory, HISTORY_FILE))

    def test_missingFileIsEmpty(self):
        history = QualityHistory(Clock(), self.store)
        history.load()
        self.assertEqual(len(history), 0)

    def test_saveThenLoad(self):
        history = QualityHistory(clockAt(100), self.store)
        history.get("a").sessionStarted(100)
        history.get("a").sessionEnded(160, 60)
        history.get("b").failed(120, "registration refused")
        history.get("b").probe(33.0)
        history.save()
        self.assertEqual(os.listdir(self.directory), [HISTORY_FILE])
        self.assertEqual(os.stat(self.store.path).st_mode & 0o777, 0o600)
        again = QualityHistory(Clock(), self.store)
        again.load()
        self.assertEqual(again.gateways, history.gateways)

    def test_loadReplacesAndPrunes(self):
        history = QualityHistory(Clock(), self.store)
        for n in range(5):
            history.get(f"g{n}").seen(n)
        history.save()
        small = QualityHistory(Clock(), self.store, maxGateways=2)
        small.get("other")
        small.load()
        self.assertEqual(sorted(small.gateways), ["g3", "g4"])

    def test_corruptFileMovedAsideLoggedAndForgotten(self):
        for junk in (b"{not json", b'{"version": 9, "gateways": {}}',
                     b'{"version": 1, "gateways": {"g": {"loss": 7}}}', b"\xff\xfe"):
            with open(self.store.path, "wb") as f:
                f.write(junk)
            history = QualityHistory(Clock(), self.store)
            history.get("stale")
            with capturedLogs() as events:
                history.load()
            self.assertEqual(len(history), 0)
            self.assertFalse(os.path.exists(self.store.path))
            [event] = events
            self.assertEqual(event["log_level"], LogLevel.warn)
            with open(event["error"].keptAs, "rb") as f:
                self.assertEqual(f.read(), junk)
            os.unlink(event["error"].keptAs)
