# -*- test-case-name: tests.unit.test_cjdns.test_routing -*-
"""
One walk of a cjdns mesh through the admin API, for
L{mnigs.routing.cjdns.CjdnsRouteSource} (which says how it goes).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.cjdns.admin import CjdnsError
from mnigs.cjdns.names import (
    SELF_LABEL,
    NodeAddress,
    formatLabel,
    labelHops,
    parseLabel,
    parseNodeAddress,
    splice,
)
from mnigs.client.candidates import Candidate, mergeCandidates

log = Logger()

#: dht/dhtcore/NodeStore.c (NodeStore_getPeers, as NodeStore_test.c calls
#: it): a getPeers answer holds at most 8 peers, from C{nearbyPath} up,
#: that label included; a full answer means there may be more.
PEERS_PER_ANSWER = 8
#: Entries of one answer looked at, whatever a hostile node sends.
MAX_ENTRIES = 64
MAX_NODES = 20000


@dataclass(frozen=True)
class _Found:
    address: NodeAddress  # label relative to us
    hops: int


def entries(answer, key: str) -> list:
    """The list C{answer[key]}, at most L{MAX_ENTRIES} of it; else nothing."""
    found = answer.get(key) if isinstance(answer, dict) else None
    return found[:MAX_ENTRIES] if isinstance(found, list) else []


class MeshWalk:
    """
    One walk of the mesh; L{run} fires with the candidates.
    """

    def __init__(self, reactor, admin, budget: float, concurrency: int, source: str,
                 askRouteLabel: bool = True, maxPeerPages: int = 8) -> None:
        self.reactor = reactor
        self.admin = admin
        self.budget = budget
        self.concurrency = max(1, concurrency)
        self.source = source
        self.askRouteLabel = askRouteLabel
        self.maxPeerPages = maxPeerPages
        self.found: dict = {}  # ip -> _Found, by BFS
        self.guessed: dict = {}  # ip -> hops guessed from a dumpTable label
        self.storeLabels: set[int] = set()  # labels the node's NodeStore knows
        self.own = set()
        self.skipped = 0
        self._inflight: set[Deferred] = set()
        self._deadline = None

    def run(self) -> Deferred:
        """
        Walk; fires with the candidates found within the budget.
        Cancelling it stops the walk at once.
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
        self._stop()

    def _stop(self) -> None:
        if self._deadline.active():
            self._deadline.cancel()
        self._timeUp()

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
            log.info("cjdns walk skipped {count} unusable answer entries", count=self.skipped)
        return self.candidates()

    def candidates(self) -> list[Candidate]:
        byWalk = [Candidate(ip, float(f.hops), self.source) for ip, f in self.found.items()]
        byLabel = [Candidate(ip, float(hops), self.source) for ip, hops in self.guessed.items()]
        return [c for c in mergeCandidates([byWalk, byLabel]) if c.address not in self.own]

    def _timeUp(self) -> None:
        for d in list(self._inflight):
            d.cancel()

    def _track(self, d: Deferred) -> Deferred:
        self._inflight.add(d)
        return d.addBoth(self._untrack, d)

    def _untrack(self, result, d):
        self._inflight.discard(d)
        return result

    def _parse(self, text) -> NodeAddress | None:
        try:
            return parseNodeAddress(text)
        except ValueError:
            self.skipped += 1
            return None

    @inlineCallbacks
    def _seed(self):
        peers = self._track(self.admin.callPaged("InterfaceController_peerStats"))
        table = self._track(self.admin.callPaged("NodeStore_dumpTable"))
        info = self._track(self.admin.call("Core_nodeInfo"))
        errors: list[CjdnsError] = []
        peerPages = yield self._quietly(peers, errors)
        tablePages = yield self._quietly(table, errors)
        if len(errors) == 2:
            info.cancel()
            info.addErrback(lambda _: None)
            raise errors[0]  # nothing at all from this node: say why
        # admin/angel/Core.c (nodeInfo): myIp6 is our own address, which
        # our peers will name among theirs.
        own = (yield self._quietly(info, [])) or {}
        try:
            self.own.add(ipaddress.IPv6Address(own.get("myIp6")))
        except ValueError:
            pass
        frontier = {}
        for page in peerPages or ():
            for entry in entries(page, "peers"):
                if not isinstance(entry, dict) or entry.get("state") != "ESTABLISHED":
                    continue
                address = self._parse(entry.get("addr"))
                if address is not None:
                    frontier.setdefault(address.ip, _Found(address, 1))
        for page in tablePages or ():
            for entry in entries(page, "routingTable"):
                address = self._parse(entry.get("addr") if isinstance(entry, dict) else None)
                if address is None:
                    continue
                if address.label == SELF_LABEL:
                    self.own.add(address.ip)
                    continue
                self.storeLabels.add(address.label)
                hops = labelHops(address.label)
                if hops < self.guessed.get(address.ip, hops + 1):
                    self.guessed[address.ip] = hops
        self.found.update(frontier)
        return list(frontier.values())

    @inlineCallbacks
    def _quietly(self, d, errors: list):
        try:
            result = yield d
        except CancelledError:
            return None
        except CjdnsError as e:
            log.warn("cjdns walk: {error}", error=str(e))
            errors.append(e)
            return None
        return result

    def _level(self, frontier: list[_Found], hops: int) -> Deferred:
        """
        Ask every node of C{frontier} for its peers, C{concurrency} at a
        time; fires with the next level once all are done or time is up.
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
                self.found.update(nextLevel)
                done.callback(list(nextLevel.values()))

        launch()
        return done

    def _visitFailed(self, failure, node: _Found) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(CjdnsError):
            log.info("cjdns walk: {node}: {error}", node=str(node.address.ip), error=str(failure.value))
        else:
            log.failure("cjdns walk: visiting {node} failed", failure, node=str(node.address.ip))

    @inlineCallbacks
    def _visit(self, node: _Found, hops: int, nextLevel: dict):
        seen: set[int] = set()
        nearby = None
        for _ in range(self.maxPeerPages):
            args = {"path": str(node.address)}
            if nearby is not None:
                args["nearbyPath"] = formatLabel(nearby)
            answer = yield self.admin.call("RouterModule_getPeers", **args)
            if answer.get("result") != "peers":
                return  # "timeout": the node did not answer
            listed = entries(answer, "peers")
            fresh = []
            for entry in listed:
                peer = self._parse(entry)
                if peer is not None and peer.label not in seen:
                    seen.add(peer.label)
                    fresh.append(peer)
            for peer in fresh:
                if peer.label == SELF_LABEL or self._known(peer.ip, nextLevel):
                    continue
                label = yield self._splice(node.address.label, peer.label)
                if label is None:
                    self.skipped += 1
                elif not self._known(peer.ip, nextLevel) and len(self.found) + len(nextLevel) < MAX_NODES:
                    nextLevel[peer.ip] = _Found(NodeAddress(peer.version, label, peer.key, peer.ip),
                                                hops + 1)
            if len(listed) < PEERS_PER_ANSWER or not fresh:
                return
            nearby = max(seen)

    def _known(self, ip, nextLevel) -> bool:
        return ip in self.found or ip in nextLevel or ip in self.own

    @inlineCallbacks
    def _splice(self, parent: int, child: int):
        if self.askRouteLabel and parent in self.storeLabels:
            try:
                answer = yield self.admin.call("NodeStore_getRouteLabel",
                                               pathToParent=formatLabel(parent),
                                               pathParentToChild=formatLabel(child))
                return parseLabel(answer.get("result"))
            except (CjdnsError, ValueError) as e:
                log.debug("cjdns walk: splicing locally: {error}", error=str(e))
        return splice(child, parent)
