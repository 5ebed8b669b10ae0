"""
Tests for L{mnigs.daemon.gcpause}, on a L{Clock} with a recording stand-in
for the C{gc} module (the test runner's own collector is left alone).
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.daemon import gcpause
from mnigs.daemon.gcpause import START_SECONDS, pauseWhileStarting


class FakeCollector:
    def __init__(self, enabled=True):
        self.enabled = enabled
        self.calls = []

    def isenabled(self):
        return self.enabled

    def disable(self):
        self.calls.append("disable")
        self.enabled = False

    def enable(self):
        self.calls.append("enable")
        self.enabled = True

    def freeze(self):
        self.calls.append("freeze")


class PauseWhileStartingTests(SynchronousTestCase):
    def test_pausedThenFrozenAndResumed(self):
        clock, collector = Clock(), FakeCollector()
        pauseWhileStarting(clock, collector=collector)
        self.assertEqual(collector.calls, ["disable"])
        clock.advance(START_SECONDS - 0.001)
        self.assertFalse(collector.enabled)
        clock.advance(0.001)
        self.assertEqual(collector.calls, ["disable", "freeze", "enable"])
        self.assertTrue(collector.enabled)

    def test_aDisabledCollectorIsLeftAlone(self):
        clock, collector = Clock(), FakeCollector(enabled=False)
        self.assertIsNone(pauseWhileStarting(clock, collector=collector))
        clock.advance(START_SECONDS * 2)
        self.assertEqual(collector.calls, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_theModulesCollectorByDefault(self):
        clock, collector = Clock(), FakeCollector()
        self.patch(gcpause, "gc", collector)
        pauseWhileStarting(clock)
        clock.advance(START_SECONDS)
        self.assertEqual(collector.calls, ["disable", "freeze", "enable"])

    def test_clientTapPausesBeforeItsImports(self):
        """
        The client's C{makeService} pauses the collector before it builds
        the service (and imports what the service needs).
        """
        from twisted.internet.testing import MemoryReactorClock

        from mnigs.client import service, tap

        collector, seen = FakeCollector(), []

        class Service:
            def __init__(self, *args, **kwargs):
                seen.append(collector.enabled)

        self.patch(gcpause, "gc", collector)
        self.patch(service, "ClientService", Service)
        self.patch(tap, "checkClient", lambda path: FakeChecked())
        self.patch(tap, "levelled", lambda service, options, levelFilter: service)
        reactor = MemoryReactorClock()
        tap.makeService({"config": "/nonexistent"}, reactor=reactor)
        self.assertEqual(seen, [False])
        reactor.advance(START_SECONDS)
        self.assertTrue(collector.enabled)


class FakeChecked:
    class config:
        class log:
            level = "info"

    warnings = ()
