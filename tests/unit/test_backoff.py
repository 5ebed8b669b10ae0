"""
Tests for L{mnigs.system.backoff}: the one retry schedule.
"""

from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.backoff import Backoff, doubling


class DoublingTests(SynchronousTestCase):
    def test_doublesUpToTheMaximum(self):
        policy = doubling(0.5, 4)
        self.assertEqual([policy(n) for n in range(7)], [0.5, 1, 2, 4, 4, 4, 4])

    def test_noJitter(self):
        policy = doubling(1, 60)
        self.assertEqual({policy(3) for _ in range(20)}, {8})

    def test_aHugeAttemptCountStaysAtTheMaximum(self):
        self.assertEqual(doubling(1, 60)(10_000), 60)


class BackoffTests(SynchronousTestCase):
    def test_nextAndReset(self):
        backoff = Backoff(1, 8)
        self.assertEqual(backoff.current, 1)
        self.assertEqual([backoff.next() for _ in range(5)], [1, 2, 4, 8, 8])
        self.assertEqual(backoff.current, 8)
        self.assertEqual(backoff.attempts, 5)
        backoff.reset()
        self.assertEqual((backoff.attempts, backoff.next()), (0, 1))

    def test_defaults(self):
        backoff = Backoff()
        self.assertEqual([backoff.next() for _ in range(8)], [1, 2, 4, 8, 16, 32, 60, 60])
