"""
L{mnigs.methods.loss.Loss}, which every client connection uses to tell
its watcher that it is lost.
"""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from mnigs.methods.loss import Loss


class LossTests(SynchronousTestCase):
    def test_waitersGetTheFirstReason(self):
        loss = Loss()
        a, b = loss.when(), loss.when()
        self.assertNoResult(a)
        self.assertTrue(loss.happened("daemon died"))
        self.assertFalse(loss.happened("interface gone"))
        self.assertEqual(self.successResultOf(a), "daemon died")
        self.assertEqual(self.successResultOf(b), "daemon died")

    def test_aLossBeforeAnyoneAskedIsNotMissed(self):
        loss = Loss()
        loss.happened("daemon died")
        self.assertEqual(self.successResultOf(loss.when()), "daemon died")

    def test_endDropsWaitersAndLaterNews(self):
        loss = Loss()
        d = loss.when()
        loss.end()
        self.assertFalse(loss.happened("daemon killed by the disconnect"))
        self.assertNoResult(d)
        self.assertNoResult(loss.when())

    def test_cancelledWaiterIsForgotten(self):
        loss = Loss()
        d = loss.when()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        loss.happened("gone")  # does not fire the cancelled one again
