# -*- test-case-name: tests.unit.test_yggdrasil.test_walk -*-
"""
One walk of a Yggdrasil overlay through the admin socket, for
L{mnigs.routing.yggdrasil.YggdrasilRouteSource} (which says how it goes).
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from mnigs.routing.candidates import Candidate, sortCandidates
from mnigs.routing.walk import LevelWalk
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


class OverlayWalk(LevelWalk):
    """
    One breadth-first walk (L{LevelWalk}); L{run} fires with the candidates.

    @ivar found: key -> (node, hops) for every node the walk reached.
    @ivar asked: debug_remoteGetPeers calls sent; C{answered} of them
        usable.
    """

    name = "yggdrasil"
    adminError = YggdrasilError

    def __init__(self, reactor, admin, budget: float, concurrency: int, source: str,
                 maxNodes: int = MAX_NODES) -> None:
        super().__init__(reactor, admin, budget, concurrency, source)
        self.maxNodes = maxNodes
        self.own: OverlayNode | None = None
        self.found: dict[str, tuple[OverlayNode, int]] = {}
        self.pathHops: dict = {}  # address -> hops along the tree (getPaths)
        self.known: dict = {}  # address -> node, from getDHT / getSessions
        self.asked = 0
        self.answered = 0

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
        calls = [self._quietly(self._track(self.admin.call(request)), errors)
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

    def _settle(self, nextLevel: dict, hops: int) -> list[OverlayNode]:
        for key, node in nextLevel.items():
            self.found[key] = (node, hops + 1)
        return list(nextLevel.values())

    def _where(self, node: OverlayNode) -> str:
        return str(node.address)

    @inlineCallbacks
    def _visit(self, node: OverlayNode, hops: int, nextLevel: dict):
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
