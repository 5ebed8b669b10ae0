# -*- test-case-name: tests.unit.test_cjdns.test_routing,tests.unit.test_yggdrasil.test_walk -*-
"""
The breadth-first walk an overlay route source makes through its daemon's
admin API, level by level, at most C{concurrency} calls at once, within a
time budget: L{mnigs.routing.cjdnswalk} and L{mnigs.routing.yggdrasilwalk}
say what is asked and how answers are read.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class LevelWalk:
    """
    One walk; L{run} fires with the candidates.  Subclasses give:

     - C{name} (for logs) and C{adminError} (the admin client's error type);
     - C{_seed()}: a Deferred firing with the first level (the node's own
       peers, one hop away), or failing when the node says nothing at all;
     - C{_visit(node, hops, nextLevel)}: ask C{node} (C{hops} away) for
       its peers and put the new ones in the dict C{nextLevel};
     - C{_settle(nextLevel, hops)}: record a finished level, return it as
       the next frontier;
     - C{candidates()}: what was found, nearest first;
     - C{_where(node)}: the node, for logs.
    """

    name = "overlay"
    adminError: type[Exception] = Exception

    def __init__(self, reactor, admin, budget: float, concurrency: int, source: str) -> None:
        self.reactor = reactor
        self.admin = admin
        self.budget = budget
        self.concurrency = max(1, concurrency)
        self.source = source
        self.skipped = 0
        self._inflight: set[Deferred] = set()
        self._deadline = None

    def run(self) -> Deferred:
        """
        Walk; fires with the candidates found within the budget, nearest
        first.  Cancelling it stops the walk at once.
        """
        self._deadline = self.reactor.callLater(self.budget, self._timeUp)
        result = Deferred(self._cancelled)

        def deliver(outcome):
            if not result.called:  # not cancelled
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        self._walk().addBoth(deliver)
        return result

    def _cancelled(self, result: Deferred) -> None:
        result.errback(CancelledError())  # first: what is found by now is not the answer
        if self._deadline.active():
            self._deadline.cancel()
        self._timeUp()

    def _timeUp(self) -> None:
        for d in list(self._inflight):
            d.cancel()

    def _track(self, d: Deferred) -> Deferred:
        self._inflight.add(d)

        def untrack(result):
            self._inflight.discard(d)
            return result

        return d.addBoth(untrack)

    @inlineCallbacks
    def _quietly(self, d: Deferred, errors: list):
        """
        C{d}'s result; None if it was cancelled or the admin API said no
        (then the error is logged and appended to C{errors}).
        """
        try:
            result = yield d
        except CancelledError:
            return None
        except self.adminError as e:
            log.warn("{name} walk: {error}", name=self.name, error=str(e))
            errors.append(e)
            return None
        return result

    @inlineCallbacks
    def _walk(self):
        try:
            frontier = yield self._seed()
            hops = 1
            while frontier and self._deadline.active():
                frontier = yield self._level(frontier, hops)
                hops += 1
        finally:
            if self._deadline.active():
                self._deadline.cancel()
        if self.skipped:
            log.info("{name} walk skipped {count} unusable answer entries",
                     name=self.name, count=self.skipped)
        return self.candidates()

    def _level(self, frontier: list, hops: int) -> Deferred:
        """
        Ask every node of C{frontier} (C{hops} away) for its peers,
        C{concurrency} at a time; fires with the next level once all are
        done or time is up.
        """
        done = Deferred(lambda _: self._timeUp())
        queue = deque(frontier)
        nextLevel: dict = {}

        def launch():
            while queue and len(self._inflight) < self.concurrency and self._deadline.active():
                node = queue.popleft()
                d = self._track(self._visit(node, hops, nextLevel))
                d.addErrback(self._visitFailed, node).addBoth(lambda _: launch())
            if not self._inflight and not done.called:
                done.callback(self._settle(nextLevel, hops))

        launch()
        return done

    def _visitFailed(self, failure, node) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(self.adminError):
            log.info("{name} walk: {node}: {error}", name=self.name, node=self._where(node),
                     error=str(failure.value))
        else:
            log.failure("{name} walk: visiting {node} failed", failure, name=self.name,
                        node=self._where(node))
