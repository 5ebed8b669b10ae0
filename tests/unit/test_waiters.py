"""
Tests for L{mnigs.system.waiters.Waiters}.
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.waiters import Waiters


class WaitersTests(SynchronousTestCase):
    def test_everyoneWaitingSoFarGetsTheResult(self):
        waiters = Waiters()
        first, second = waiters.wait(), waiters.add(Deferred())
        self.assertNoResult(first)
        self.assertEqual(len(waiters), 2)
        waiters.fire("done")
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)),
                         ("done", "done"))
        self.assertEqual(len(waiters), 0)

    def test_aFailureErrsThemAll(self):
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        waiters.fire(Failure(ValueError("no")))
        self.failureResultOf(first, ValueError)
        self.failureResultOf(second, ValueError)

    def test_whoWaitsAfterwardsWaitsForTheNextTime(self):
        waiters = Waiters()
        waiters.fire()
        later = waiters.wait()
        self.assertNoResult(later)
        waiters.fire()
        self.assertIsNone(self.successResultOf(later))

    def test_aCallbackThatWaitsAgainIsNotFiredTwice(self):
        waiters = Waiters()
        again = []
        waiters.wait().addCallback(lambda _: again.append(waiters.wait()))
        waiters.fire()
        [d] = again
        self.assertNoResult(d)
        self.assertEqual(len(waiters), 1)
