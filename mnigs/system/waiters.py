# -*- test-case-name: tests.unit.test_waiters -*-
"""
Deferreds waiting for one thing to happen (a machine to have stopped, a
device to be up), each fired once when it does.
"""

from __future__ import annotations

from typing import Generic, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class Waiters(Generic[T]):
    """
    Who is waiting.  C{wait()} (or C{add(d)} for a Deferred the caller
    made) joins; C{fire(result)} fires everyone waiting so far with
    C{result}, or errs them with it when it is a L{Failure}, and forgets
    them: who waits after that waits for the next time.
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[T]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiter: Deferred[T]) -> Deferred[T]:
        self._waiting.append(waiter)
        return waiter

    def wait(self) -> Deferred[T]:
        return self.add(Deferred())

    def fire(self, result: Optional[T | Failure] = None) -> None:
        # Taken first: a callback may start waiting again.
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
