# -*- test-case-name: tests.unit.test_cjdns.test_routing -*-
"""
The cjdns route source: candidate gateways are the fc00::/8 addresses of
the nodes a cjdns node can reach, nearest first.

cjdns keeps no routing table of the whole mesh, so this walks it through
the admin API (L{mnigs.cjdns.admin}; the walk is
L{mnigs.routing.cjdnswalk.MeshWalk}):

  1. what the node knows: InterfaceController_peerStats (its direct
     peers, one hop), NodeStore_dumpTable (the nodes of its NodeStore
     with their switch labels, distance guessed from the label length)
     and Core_nodeInfo (its own address, never a candidate);
  2. breadth first, one level at a time, at most C{concurrency} calls at
     once: RouterModule_getPeers of each node of the level.  Its answer
     names the node's peers with labels relative to that node
     (dht/dhtcore/RouterModule_admin.c: getPeersResponse does not splice),
     so each is spliced onto the label of the node asked: by
     NodeStore_getRouteLabel when the node's NodeStore knows the parent
     (it then also adapts the encoding forms), else locally
     (switch/LabelSplicer.h).  A node first seen at level n+1 is n+1 hops
     away, since every nearer node was already seen.

The whole walk has a time budget; when it runs out, what was found so far
is the answer, still nearest first.  It keeps at most C{maxNodes} nodes,
the nearest: a level that would pass that is cut there, and the walk
asks no further.  Answers that do not parse are
skipped, entry by entry.

Watching polls NodeStore_dumpTable (L{mnigs.routing.polling.PollingWatch})
and reports when it changes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mnigs.interfaces import IRouteSource
from mnigs.routing.cjdnswalk import MAX_NODES, MeshWalk, entries
from mnigs.routing.polling import PollingWatch


@implementer(IRouteSource)
class CjdnsRouteSource:
    """
    Candidates from a cjdns node, through its admin API.

    @param admin: a L{mnigs.cjdns.admin.CjdnsAdmin}.
    @param budget: seconds a walk may take in all.
    @param concurrency: getPeers calls in flight at once.
    @param maxNodes: how many of the nearest nodes a walk keeps.
    @param pollInterval: seconds between looks at dumpTable when watching.
    """

    def __init__(self, reactor, admin, budget: float = 30.0, concurrency: int = 8,
                 pollInterval: float = 30.0, debounce: float = 1.0, askRouteLabel: bool = True,
                 name: str = "cjdns", maxNodes: int = MAX_NODES) -> None:
        self.reactor = reactor
        self.admin = admin
        self.budget = budget
        self.concurrency = concurrency
        self.pollInterval = pollInterval
        self.debounce = debounce
        self.askRouteLabel = askRouteLabel
        self.name = name
        self.maxNodes = maxNodes

    def candidates(self) -> Deferred:
        walk = MeshWalk(self.reactor, self.admin, self.budget, self.concurrency, self.name,
                        askRouteLabel=self.askRouteLabel, maxNodes=self.maxNodes)
        return walk.run()

    def watch(self, onChange: Callable[[], object]) -> PollingWatch:
        watcher = PollingWatch(self.reactor, self._look, onChange, self.pollInterval,
                               self.debounce, name=self.name)
        watcher.start()
        return watcher

    def _look(self) -> Deferred:
        return self.admin.callPaged("NodeStore_dumpTable").addCallback(tableSnapshot)


def tableSnapshot(pages) -> frozenset:
    """What dumpTable says that matters for candidates: (addr, path) pairs."""
    rows = set()
    for page in pages:
        for entry in entries(page, "routingTable"):
            if isinstance(entry, dict):
                rows.add((entry.get("addr"), entry.get("path")))
    return frozenset(rows)


def buildSource(context, section):
    """
    The registry's builder (L{mnigs.routing}): C{[sources.cjdns]} and the
    shared C{[cjdns]} node settings, its distances (hop counts) seen in
    babel-like metric units.
    """
    from mnigs.cjdns.settings import makeAdmin
    from mnigs.routing.candidates import HopScaled

    reactor = context.reactor
    return HopScaled(CjdnsRouteSource(
        reactor, makeAdmin(reactor, context.config.cjdns), budget=section.budget,
        concurrency=section.concurrency, pollInterval=section.poll_interval,
        maxNodes=section.max_nodes))
