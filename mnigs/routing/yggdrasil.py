# -*- test-case-name: tests.unit.test_yggdrasil.test_routing -*-
"""
The Yggdrasil route source: candidate gateways are the 200::/7 addresses
of the nodes of a Yggdrasil 0.4 overlay, nearest first, the distance being
overlay hops.

Yggdrasil routes on a spanning tree and a DHT and keeps no table of the
whole overlay, so this walks it through the admin socket
(L{mnigs.yggdrasil.admin.YggdrasilAdmin}; the walk is
L{mnigs.routing.yggdrasilwalk.OverlayWalk}):

  1. what the node knows: getSelf (itself, never a candidate), getPeers
     (its direct peers, one hop), getPaths (nodes it has a path to, at
     their hops along the tree), getDHT and getSessions (nodes at an
     unknown distance);
  2. breadth first, one level at a time, at most C{concurrency} calls at
     once: debug_remoteGetPeers of each node of the level, which names
     the node's peers by key.  A node first seen at level n+1 is n+1 hops
     away, since every nearer node was already seen.  Each call can take
     seconds (yggdrasil looks the node up, and gives up after 6 s).

Addresses come from keys as yggdrasil derives them
(L{mnigs.yggdrasil.answers.addressForKey}).  The whole walk has a time
budget; when it runs out, what was found so far is the answer, still
nearest first.  Nodes only getPaths knows come at their tree hops, nodes
only getDHT / getSessions know after every walked one.  Answers that do
not parse are skipped, entry by entry.

Right after an overlay forms, yggdrasil 0.4.7 may keep a stale path to a
node for a minute, and debug_remoteGetPeers of that node then times out
each time (measured: a walk started while the spanning tree was still
settling missed the same nodes for 60 s; one started a second later
missed none).  The walk then answers with the nodes it did reach; a later
scan (rescan, retry, a watched change) finds the rest.

Watching polls getPeers and getDHT (two cheap local calls) and reports
when the set of peer and DHT keys changes.  getSessions is left out: the
walk itself opens sessions, and would report itself.

Connecting to a gateway found here: yggdrasil 0.4 has no tunnel routing,
so the client reaches the gateway by WireGuard between the two nodes'
200::/7 addresses, the gateway's offer naming the address the client
reached it on.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, FirstError, gatherResults
from zope.interface import implementer

from mnigs.interfaces import IRouteSource
from mnigs.routing.polling import PollingWatch
from mnigs.routing.yggdrasilwalk import OverlayWalk
from mnigs.yggdrasil.admin import YggdrasilAdmin, YggdrasilError, YggdrasilTimeout
from mnigs.yggdrasil.answers import AnswerError, parseDHT, parsePeers

__all__ = ["YggdrasilAdmin", "YggdrasilError", "YggdrasilRouteSource", "YggdrasilTimeout",
           "overlaySnapshot"]


@implementer(IRouteSource)
class YggdrasilRouteSource:
    """
    Candidates from a Yggdrasil 0.4 node, through its admin socket.

    @param admin: a L{YggdrasilAdmin}.
    @param budget: seconds a walk may take in all.
    @param concurrency: debug_remoteGetPeers calls in flight at once.
    @param pollInterval: seconds between looks at getPeers / getDHT when
        watching.
    @param debounce: changes within this many seconds are reported once.
    """

    def __init__(self, reactor, admin, budget: float = 20.0, concurrency: int = 8,
                 pollInterval: float = 10.0, debounce: float = 1.0,
                 name: str = "yggdrasil") -> None:
        self.reactor = reactor
        self.admin = admin
        self.budget = budget
        self.concurrency = concurrency
        self.pollInterval = pollInterval
        self.debounce = debounce
        self.name = name
        self.lastWalk: OverlayWalk | None = None

    def walk(self) -> OverlayWalk:
        """A fresh walk (L{candidates} runs one)."""
        self.lastWalk = OverlayWalk(self.reactor, self.admin, self.budget, self.concurrency,
                                    self.name)
        return self.lastWalk

    def candidates(self) -> Deferred:
        return self.walk().run()

    def watch(self, onChange: Callable[[], object]) -> PollingWatch:
        watcher = PollingWatch(self.reactor, self._look, onChange, self.pollInterval,
                               self.debounce, name=self.name)
        watcher.start()
        return watcher

    def _look(self) -> Deferred:
        d = gatherResults([self.admin.call("getPeers"), self.admin.call("getDHT")],
                          consumeErrors=True)
        return d.addCallbacks(lambda answers: overlaySnapshot(*answers), _firstFailure)


def _firstFailure(failure):
    failure.trap(FirstError)
    return failure.value.subFailure


def overlaySnapshot(peersResponse, dhtResponse) -> frozenset:
    """
    What a watch compares: the keys of the peers and of the DHT entries.
    Raises L{YggdrasilError} when either answer is unusable.
    """
    try:
        peers = parsePeers(peersResponse).nodes
        dht = parseDHT(dhtResponse).nodes
    except AnswerError as e:
        raise YggdrasilError("getPeers/getDHT", str(e)) from None
    return frozenset([("peer", n.key) for n in peers] + [("dht", n.key) for n in dht])


def buildSource(context, section):
    """
    The registry's builder (L{mnigs.routing}): C{[sources.yggdrasil]}, its
    distances (hop counts) seen in babel-like metric units.
    """
    from mnigs.routing.candidates import HopScaled

    reactor = context.reactor
    admin = YggdrasilAdmin(reactor, section.admin, timeout=section.timeout)
    return HopScaled(YggdrasilRouteSource(reactor, admin, budget=section.budget,
                                          concurrency=section.concurrency,
                                          pollInterval=section.poll_interval))
