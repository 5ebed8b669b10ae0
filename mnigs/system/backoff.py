# -*- test-case-name: tests.unit.test_backoff -*-
"""
Retry delays: one schedule for the whole of mnigs, on Twisted's own
L{twisted.application.internet.backoffPolicy} (what C{ClientService}
retries by).  Used by the client machine between fruitless searches, the
process supervisor between relaunches, and the babeld monitor between
reconnections.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import backoffPolicy


def doubling(first: float, maximum: float) -> Callable[[int], float]:
    """
    The delay before retry number C{attempt} (from 0): C{first}, doubling,
    at most C{maximum}.  Without jitter: each of these retries one thing
    of one host (a local daemon, a local search), so there is no herd to
    spread, and the schedule stays exact for tests and logs.
    """
    return backoffPolicy(initialDelay=first, maxDelay=maximum, factor=2.0,
                         jitter=lambda: 0.0)


class Backoff:
    """
    A L{doubling} schedule and the count of retries so far: C{next()} gives
    the next delay, C{reset()} starts again from C{first} (after a success).
    """

    def __init__(self, first: float = 1.0, maximum: float = 60.0) -> None:
        self.first = first
        self.maximum = maximum
        self.attempts = 0
        self._policy = doubling(first, maximum)

    @property
    def current(self) -> float:
        """The delay C{next()} will give."""
        return self._policy(self.attempts)

    def next(self) -> float:
        delay = self._policy(self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
