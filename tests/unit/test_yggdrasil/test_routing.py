"""
Tests for watching a Yggdrasil node (L{mnigs.routing.yggdrasil},
L{mnigs.routing.polling}) against the FAKE admin of
L{tests.unit.fakeyggdrasil} on a Clock, and for the client's
C{[sources.yggdrasil]} configuration.
"""

import json
import os
import tempfile

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.client.service import buildSources
from mnigs.daemon.config import ConfigError
from mnigs.routing import polling
from mnigs.routing.polling import PollingWatch
from mnigs.routing.yggdrasil import YggdrasilRouteSource, overlaySnapshot
from mnigs.yggdrasil.admin import YggdrasilError
from tests.unit.fakeyggdrasil import FakeYggdrasilAdmin, SyntheticOverlay

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def response(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)["response"]


class SnapshotTests(SynchronousTestCase):
    def test_capturedAnswers(self):
        snapshot = overlaySnapshot(response("ygg_getpeers.json"), response("ygg_getdht.json"))
        self.assertEqual({kind for kind, _ in snapshot}, {"peer", "dht"})
        self.assertEqual(len([1 for kind, _ in snapshot if kind == "peer"]),
                         len(response("ygg_getpeers.json")["peers"]))

    def test_unusableAnswersAreAnError(self):
        self.assertRaises(YggdrasilError, overlaySnapshot, "nonsense", {})


class WatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.overlay = SyntheticOverlay(seed=3, size=20, gateways=2)
        self.admin = FakeYggdrasilAdmin(self.clock, self.overlay)
        self.source = YggdrasilRouteSource(self.clock, self.admin, pollInterval=10.0, debounce=1.0)
        self.changes = []

    def run_(self, seconds, step=0.5):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def test_nothingChangesNothingIsReported(self):
        watch = self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.run_(60)
        self.assertEqual(self.changes, [])
        polls = [r for r, _ in self.admin.calls]
        self.assertEqual(set(polls), {"getPeers", "getDHT"})
        self.assertEqual(len(polls), 2 * 7)  # at 0, 10, ... 60
        watch.stop()

    def test_aNewPeerIsReportedOnceAfterTheDebounce(self):
        watch = self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.run_(5)
        self.overlay.nodes[0].peers.append(19)
        self.admin.dht = [7]  # changes in the same look come as one
        self.run_(30)
        # Seen by the look at 10 s, reported a debounce (1 s) later.
        self.assertEqual(len(self.changes), 1)
        self.assertTrue(11.0 <= self.changes[0] <= 11.5, self.changes)
        watch.stop()

    def test_stopStopsPollingAndPendingReports(self):
        watch = self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.run_(5)
        self.overlay.nodes[0].peers.append(19)
        self.clock.advance(5.0)  # the look at 10 s sees it; the report is due at 11 s
        watch.stop()
        self.run_(60)
        self.assertEqual(self.changes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.admin.inflight, 0)

    def test_failedLooksAreSkipped(self):
        watch = self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.run_(5)
        self.admin.failing["getDHT"] = "boom"
        self.overlay.nodes[0].peers.append(19)
        self.run_(30)
        self.assertEqual(self.changes, [])
        del self.admin.failing["getDHT"]
        self.run_(15)
        self.assertEqual(len(self.changes), 1)
        watch.stop()


class PollingWatchTests(SynchronousTestCase):
    def test_aLookStillGoingSkipsTheNext(self):
        clock = Clock()
        looks = []

        def look():
            looks.append(Deferred())
            return looks[-1]

        watch = PollingWatch(clock, look, lambda: None, interval=1.0)
        watch.start()
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(len(looks), 1)
        looks[0].callback(frozenset())
        clock.advance(1.0)
        self.assertEqual(len(looks), 2)
        watch.stop()
        self.assertTrue(looks[1].called)  # cancelled

    def test_stopBeforeStartAndTwice(self):
        watch = PollingWatch(Clock(), lambda: succeed(1), lambda: None, interval=1.0)
        watch.stop()
        watch.start()
        watch.stop()

    def test_lookFailuresAreLoggedAsWarnings(self):
        events = []
        self.patch(polling, "log", Logger(observer=events.append))
        watch = PollingWatch(Clock(), lambda: fail(YggdrasilError("getPeers", "boom")),
                             lambda: None, interval=1.0, name="yggdrasil")
        watch.start()
        watch.stop()
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(formatEvent(event), "yggdrasil watch: yggdrasil getPeers: boom")


class ConfigTests(SynchronousTestCase):
    def load(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(text)
        self.addCleanup(os.unlink, f.name)
        return loadClientConfig(f.name)

    def test_defaults(self):
        settings = self.load("").sources.yggdrasil
        self.assertEqual(settings.admin, "unix:///var/run/yggdrasil/yggdrasil.sock")
        self.assertEqual((settings.budget, settings.concurrency, settings.timeout,
                          settings.poll_interval), (20.0, 8, 10.0, 10.0))

    def test_theShippedFileLoads(self):
        config = loadClientConfig(os.path.join(TOP, "etc", "mnigs-client.toml"))
        self.assertEqual(config.sources.yggdrasil.budget, 20.0)

    def test_aBadEndpointNamesTheKey(self):
        with self.assertRaises(ConfigError) as caught:
            self.load('[sources.yggdrasil]\nadmin = "/var/run/ygg.sock"\n')
        self.assertEqual(caught.exception.key, "sources.yggdrasil.admin")

    def test_buildSources(self):
        config = self.load('[discovery]\nsources = ["yggdrasil"]\nscan = ["routes"]\n'
                           '[sources.yggdrasil]\nadmin = "tcp://[::1]:9001"\nbudget = 5\n'
                           'concurrency = 2\n')
        [scaled] = buildSources(Clock(), config)
        source = scaled.source  # hop counts seen in babel-like metric units
        self.assertIsInstance(source, YggdrasilRouteSource)
        self.assertEqual((source.budget, source.concurrency), (5.0, 2))
        self.assertEqual(source.admin.address, ("tcp", "::1", 9001))
