"""
Turning a noisy stream of "something may have changed" into few, real
C{onChange()} calls, for route sources' C{watch}.

babeld repeats every route as a C{change} line at each hello, and a flapping
link makes the kernel send bursts of netlink messages: the route source
pokes a L{ChangeNotifier}, which waits a short while to coalesce the burst,
then compares a snapshot of what the source reports with the last one and
calls C{onChange()} only when it differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_UNSEEN = object()


class ChangeNotifier:
    """
    @ivar delay: how long after the first poke of a burst the snapshot is
        taken.

    @param baseline: what the watcher's user is assumed to know already;
        by default the first snapshot taken becomes the baseline silently.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        snapshot: Callable[[], Any],
        onChange: Callable[[], object],
        delay: float = 0.5,
        baseline: Any = _UNSEEN,
    ) -> None:
        self._clock = clock
        self._snapshot = snapshot
        self._onChange = onChange
        self.delay = delay
        self._last: Any = baseline
        self._pending: IDelayedCall | None = None

    def poke(self) -> None:
        """
        Something may have changed: look in C{delay} seconds, unless a look
        is already due.
        """
        if self._pending is None:
            self._pending = self._clock.callLater(self.delay, self._look)

    def lookNow(self) -> None:
        """
        Look at once (after a full dump, say), dropping any pending look.
        """
        self.cancel()
        self._look()

    def cancel(self) -> None:
        if self._pending is not None:
            if self._pending.active():
                self._pending.cancel()
            self._pending = None

    def _look(self) -> None:
        self._pending = None
        try:
            current = self._snapshot()
        except Exception:
            self.log.failure("Could not take a route snapshot")
            return
        if self._last is _UNSEEN:
            # The first snapshot is the baseline the watcher started from,
            # not a change.
            self._last = current
            return
        if current == self._last:
            return
        self._last = current
        try:
            self._onChange()
        except Exception:
            self.log.failure("onChange raised")
