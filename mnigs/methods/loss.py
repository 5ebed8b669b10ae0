# -*- test-case-name: tests.unit.test_loss -*-
"""
The news every client connection gives its watcher: that it is lost, and
why.
"""

from __future__ import annotations

from twisted.internet import defer


class Loss:
    """
    One-shot: L{happened} fires every L{when} Deferred, earlier or later
    ones, with the first reason given; reasons after the first are
    ignored.  L{end} is for a deliberate disconnect: waiting Deferreds
    are dropped unfired and nothing fires them later.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._waiting: list[defer.Deferred] = []
        self._ended = False

    def happened(self, reason: str) -> bool:
        """
        Report the loss; True if this is the news (the first reason).
        """
        if self.reason is not None or self._ended:
            return False
        self.reason = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(reason)
        return True

    def when(self) -> defer.Deferred:
        """
        A Deferred that fires with the reason once the loss happened (at
        once if it already has); cancelling it stops waiting.
        """
        d = defer.Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        if self.reason is not None:
            d.callback(self.reason)
        elif not self._ended:
            self._waiting.append(d)
        return d

    def end(self) -> None:
        self._ended = True
        self._waiting = []
