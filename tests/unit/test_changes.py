"""
Tests for L{mnigs.routing.changes}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.routing.changes import ChangeNotifier


class ChangeNotifierTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.state = ["a"]
        self.looks = 0
        self.changes = []

    def snapshot(self):
        self.looks += 1
        return tuple(self.state)

    def notifier(self, **kw):
        return ChangeNotifier(self.clock, self.snapshot, lambda: self.changes.append(self.clock.seconds()), **kw)

    def test_firstLookIsBaseline(self):
        notifier = self.notifier()
        notifier.lookNow()
        self.assertEqual(self.changes, [])
        self.state.append("b")
        notifier.lookNow()
        self.assertEqual(self.changes, [0])

    def test_givenBaseline(self):
        notifier = self.notifier(baseline=())
        notifier.lookNow()
        self.assertEqual(self.changes, [0])

    def test_burstCoalesced(self):
        notifier = self.notifier(delay=0.5)
        notifier.lookNow()
        self.state.append("b")
        for _ in range(4):
            notifier.poke()
            self.clock.advance(0.1)
        self.assertEqual(self.changes, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.changes), 1)
        self.assertEqual(self.looks, 2)

    def test_sameSnapshotIsNoChange(self):
        notifier = self.notifier()
        notifier.lookNow()
        notifier.poke()
        self.clock.advance(1)
        self.assertEqual((self.changes, self.looks), ([], 2))

    def test_changeAndBackAreTwoChanges(self):
        notifier = self.notifier()
        notifier.lookNow()
        self.state.append("b")
        notifier.poke()
        self.clock.advance(0.5)
        self.state.pop()
        notifier.poke()
        self.clock.advance(0.5)
        self.assertEqual(self.changes, [0.5, 1.0])

    def test_cancel(self):
        notifier = self.notifier()
        notifier.lookNow()
        self.state.append("b")
        notifier.poke()
        notifier.cancel()
        self.clock.advance(1)
        self.assertEqual((self.changes, self.clock.getDelayedCalls()), ([], []))

    def test_lookNowDropsPendingLook(self):
        notifier = self.notifier()
        notifier.poke()
        notifier.lookNow()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_snapshotErrorLoggedAndBaselineKept(self):
        notifier = self.notifier()
        notifier.lookNow()

        def broken():
            raise OSError("netlink")

        notifier._snapshot = broken
        notifier.poke()
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        notifier._snapshot = self.snapshot
        notifier.lookNow()
        self.assertEqual(self.changes, [])

    def test_onChangeErrorLogged(self):
        def boom():
            raise RuntimeError("client bug")

        notifier = ChangeNotifier(self.clock, self.snapshot, boom, baseline=())
        notifier.lookNow()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.state.append("b")
        notifier.poke()
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
