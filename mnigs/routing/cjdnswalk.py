# -*- test-case-name: tests.unit.test_cjdns.test_routing -*-
"""
One walk of a cjdns mesh through the admin API, for
L{mnigs.routing.cjdns.CjdnsRouteSource} (which says how it goes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

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
from mnigs.routing.candidates import Candidate, mergeCandidates
from mnigs.routing.walk import LevelWalk

log = Logger()

#: dht/dhtcore/NodeStore.c (NodeStore_getPeers, as NodeStore_test.c calls
#: it): a getPeers answer holds at most 8 peers, from C{nearbyPath} up,
#: that label included; a full answer means there may be more.
PEERS_PER_ANSWER = 8
#: Entries of one answer looked at, whatever a hostile node sends.
MAX_ENTRIES = 64
#: Nodes a walk keeps by default (C{sources.cjdns.max_nodes}): the
#: nearest ones; the walk asks no node beyond them.
MAX_NODES = 20000


@dataclass(frozen=True)
class _Found:
    address: NodeAddress  # label relative to us
    hops: int


def entries(answer, key: str) -> list:
    """The list C{answer[key]}, at most L{MAX_ENTRIES} of it; else nothing."""
    found = answer.get(key) if isinstance(answer, dict) else None
    return found[:MAX_ENTRIES] if isinstance(found, list) else []


class MeshWalk(LevelWalk):
    """
    One walk of the mesh (L{LevelWalk}); L{run} fires with the candidates.
    """

    name = "cjdns"
    adminError = CjdnsError

    def __init__(self, reactor, admin, budget: float, concurrency: int, source: str,
                 askRouteLabel: bool = True, maxPeerPages: int = 8,
                 maxNodes: int = MAX_NODES) -> None:
        super().__init__(reactor, admin, budget, concurrency, source)
        self.askRouteLabel = askRouteLabel
        self.maxPeerPages = maxPeerPages
        self.maxNodes = maxNodes
        self.found: dict = {}  # ip -> _Found, by BFS
        self.guessed: dict = {}  # ip -> hops guessed from a dumpTable label
        self.storeLabels: set[int] = set()  # labels the node's NodeStore knows
        self.own = set()
        self._keys: dict = {}  # key text -> address (parseNodeAddress's memo)

    def candidates(self) -> list[Candidate]:
        byWalk = [Candidate(ip, float(f.hops), self.source) for ip, f in self.found.items()]
        byLabel = [Candidate(ip, float(hops), self.source) for ip, hops in self.guessed.items()]
        return [c for c in mergeCandidates([byWalk, byLabel]) if c.address not in self.own]

    def _parse(self, text) -> NodeAddress | None:
        try:
            return parseNodeAddress(text, self._keys)
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

    def _settle(self, nextLevel: dict, hops: int) -> list[_Found]:
        self.found.update(nextLevel)
        return list(nextLevel.values())

    def _where(self, node: _Found) -> str:
        return str(node.address.ip)

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
                if self.askRouteLabel and node.address.label in self.storeLabels:
                    label = yield self._routeLabel(node.address.label, peer.label)
                else:
                    label = splice(peer.label, node.address.label)
                if label is None:
                    self.skipped += 1
                elif not self._known(peer.ip, nextLevel) and len(self.found) + len(nextLevel) < self.maxNodes:
                    nextLevel[peer.ip] = _Found(NodeAddress(peer.version, label, peer.key, peer.ip),
                                                hops + 1)
            if len(listed) < PEERS_PER_ANSWER or not fresh:
                return
            nearby = max(seen)

    def _known(self, ip, nextLevel) -> bool:
        return ip in self.found or ip in nextLevel or ip in self.own

    @inlineCallbacks
    def _routeLabel(self, parent: int, child: int):
        """
        C{child} (relative to C{parent}) spliced by the node's NodeStore,
        which knows C{parent} (and adapts the encoding forms); locally if
        it cannot.
        """
        try:
            answer = yield self.admin.call("NodeStore_getRouteLabel",
                                           pathToParent=formatLabel(parent),
                                           pathParentToChild=formatLabel(child))
            return parseLabel(answer.get("result"))
        except (CjdnsError, ValueError) as e:
            log.debug("cjdns walk: splicing locally: {error}", error=str(e))
        return splice(child, parent)
