# -*- test-case-name: tests.unit.test_yggdrasil.test_walk -*-
"""
One walk of a Yggdrasil overlay through the admin socket, for
L{mnigs.routing.yggdrasil.YggdrasilRouteSource} (which says how it goes).
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.client.candidates import Candidate, sortCandidates
from mnigs.yggdrasil.admin import YggdrasilError
from mnigs.yggdrasil.answers import (
    AnswerError,
    OverlayNode,
    parseDHT,
    parsePaths,
    parsePeers,
    parseRemotePeers,
    parseSelf,
    parseSessions,
)

log = Logger()

MAX_NODES = 20000


class OverlayWalk:
    """
    One breadth-first walk; L{run} fires with the candidates.

    @ivar found: key -> (node, hops) for every node the walk reached.
    @ivar asked: debug_remoteGetPeers calls sent; C{answered} of them
        usable.
    """

    def __init__(self, reactor, admin, budget: float, concurrency: int, source: str,
                 maxNodes: int = MAX_NODES) -> None:
        self.reactor = reactor
        self.admin = admin
        self.budget = budget
        self.concurrency = max(1, concurrency)
        self.source = source
        self.maxNodes = maxNodes
        self.own: OverlayNode | None = None
        self.found: dict[str, tuple[OverlayNode, int]] = {}
        self.pathHops: dict = {}  # address -> hops along the tree (getPaths)
        self.known: dict = {}  # address -> node, from getDHT / getSessions
        self.asked = 0
        self.answered = 0
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
            log.info("yggdrasil walk skipped {count} unusable answer entries", count=self.skipped)
        return self.candidates()

    def candidates(self) -> list[Candidate]:
        """
        Walked nodes at their hop count; nodes only getPaths knows at
        their hops along the tree; nodes only getDHT / getSessions know
        one hop beyond all those.  Never the node itself.
        """
        walked = {node.address: hops for node, hops in self.found.values()}
        pathed = {address: hops for address, hops in self.pathHops.items() if address not in walked}
        deepest = max([0, *walked.values(), *pathed.values()])
        beyond = {address: deepest + 1 for address in self.known
                  if address not in walked and address not in pathed}
        own = self.own.address if self.own is not None else None
        return sortCandidates(Candidate(address, float(hops), self.source)
                              for distances in (walked, pathed, beyond)
                              for address, hops in distances.items() if address != own)

    @inlineCallbacks
    def _quietly(self, request: str, errors: list):
        try:
            response = yield self._track(self.admin.call(request))
        except CancelledError:
            return None
        except YggdrasilError as e:
            log.warn("yggdrasil walk: {error}", error=str(e))
            errors.append(e)
            return None
        return response

    def _parsed(self, parse, response):
        if response is None:
            return []
        try:
            parsed = parse(response)
        except AnswerError as e:
            log.warn("yggdrasil walk: unusable answer: {error}", error=str(e))
            return []
        self.skipped += parsed.skipped
        return parsed.nodes

    @inlineCallbacks
    def _seed(self):
        errors: list[YggdrasilError] = []
        calls = [self._quietly(request, errors)
                 for request in ("getSelf", "getPeers", "getDHT", "getSessions", "getPaths")]
        selfAnswer = yield calls[0]
        if selfAnswer is None:
            for d in calls[1:]:
                d.cancel()
            if errors:
                raise errors[0]  # nothing from the node: say why
            return []  # time is up already
        try:
            self.own = parseSelf(selfAnswer)
        except AnswerError as e:
            for d in calls[1:]:
                d.cancel()
            raise YggdrasilError("getSelf", str(e)) from None
        answers = []
        for d in calls[1:]:
            answers.append((yield d))
        peers, dht, sessions, paths = answers
        for node, hops in self._parsed(parsePaths, paths):
            self.pathHops[node.address] = hops
        for node in self._parsed(parseDHT, dht) + self._parsed(parseSessions, sessions):
            self.known[node.address] = node
        frontier = []
        for node in self._parsed(parsePeers, peers):
            if node.key != self.own.key and node.key not in self.found:
                self.found[node.key] = (node, 1)
                frontier.append(node)
        return frontier

    def _level(self, frontier: list[OverlayNode], hops: int) -> Deferred:
        """
        Ask every node of C{frontier} (C{hops} away) for its peers,
        C{concurrency} at a time; fires with the next level once all are
        done or time is up.
        """
        done = Deferred(lambda _: self._timeUp())
        queue = deque(frontier)
        nextLevel: dict[str, OverlayNode] = {}

        def launch():
            while queue and len(self._inflight) < self.concurrency and self._deadline.active():
                node = queue.popleft()
                d = self._track(self._visit(node, nextLevel))
                d.addErrback(self._visitFailed, node).addBoth(lambda _: launch())
            if not self._inflight and not done.called:
                for key, node in nextLevel.items():
                    self.found[key] = (node, hops + 1)
                done.callback(list(nextLevel.values()))

        launch()
        return done

    def _visitFailed(self, failure, node: OverlayNode) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(YggdrasilError):
            log.info("yggdrasil walk: {node}: {error}", node=str(node.address),
                     error=str(failure.value))
        else:
            log.failure("yggdrasil walk: visiting {node} failed", failure, node=str(node.address))

    @inlineCallbacks
    def _visit(self, node: OverlayNode, nextLevel: dict):
        self.asked += 1
        response = yield self.admin.call("debug_remoteGetPeers", key=node.key)
        try:
            parsed = parseRemotePeers(response, node)
        except AnswerError as e:
            log.info("yggdrasil walk: {node}: unusable answer: {error}", node=str(node.address),
                     error=str(e))
            return
        self.answered += 1
        self.skipped += parsed.skipped
        for peer in parsed.nodes:
            if (peer.key == self.own.key or peer.key in self.found or peer.key in nextLevel
                    or len(self.found) + len(nextLevel) >= self.maxNodes):
                continue
            nextLevel[peer.key] = peer
