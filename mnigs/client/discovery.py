"""
Finding gateways: ask every candidate address for C{gateway.info}, nearest
first (breadth first over the mesh, since candidates are ordered by their
routing distance), with a bounded number of calls in flight and a timeout
on each, and keep the offers that verify.

Most candidates on a mesh run no gateway and many drop packets silently,
so the cost of a scan is dominated by how many silent candidates can wait
out their timeout at once: the concurrency bound is also the number of
sockets a scan may hold open.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger

from mnigs.client.candidates import Candidate, mergeCandidates
from mnigs.client.ranking import Seen
from mnigs.protocol import OfferRejected, verifyOffer

log = Logger()


class Discovery:
    """
    @param rpc: an L{mnigs.rpc.client.RPCClient} (without keep-alive, as most
        candidates are asked once).
    @param ownAddresses: a callable returning the node's own addresses,
        which are never probed.
    """

    def __init__(self, reactor, rpc, ports=(8150,), concurrency=512, timeout=2.0,
                 maxCandidates=4096, ownAddresses=lambda: set(), pinned=None,
                 blocked=frozenset()):
        self.reactor = reactor
        self.rpc = rpc
        self.ports = tuple(ports)
        self.concurrency = concurrency
        self.timeout = timeout
        self.maxCandidates = maxCandidates
        self.ownAddresses = ownAddresses
        self.pinned = pinned
        self.blocked = blocked
        self.rejected = {}

    def order(self, candidates) -> list[Candidate]:
        """
        Nearest first, without the node's own addresses, at most
        C{maxCandidates}.  Pure apart from C{ownAddresses()}.
        """
        own = {ipaddress.ip_address(a) for a in self.ownAddresses()}
        merged = mergeCandidates([candidates])
        return [c for c in merged if c.address not in own][:self.maxCandidates]

    def scan(self, candidates, onFound=None, settle=None, usable=None) -> defer.Deferred:
        """
        Probe C{candidates}; fire with every L{Seen} (one per gateway id, the
        nearest address), nearest first.  C{onFound(seen)} is called as each
        verified offer arrives.

        With C{settle} (seconds) the scan ends early: C{settle} seconds
        after the first offer that C{usable(seen)} accepts, with what has
        answered by then, and the calls still out are cancelled.  A silent
        candidate (a dead gateway) then no longer holds the client for the
        whole timeout when a live one has long answered.
        """
        ordered = self.order(candidates)
        semaphore = defer.DeferredSemaphore(self.concurrency)
        found = []
        early = []  # the settle call, once a usable offer is in

        def probe(candidate, port):
            return self.probe(candidate, port).addCallback(keep)

        def keep(seen):
            if seen is not None:
                found.append(seen)
                if onFound is not None:
                    onFound(seen)
                if settle is not None and not early and (usable is None or usable(seen)):
                    early.append(self.reactor.callLater(settle, settled))

        calls = [semaphore.run(probe, candidate, port) for candidate in ordered for port in self.ports]
        ended = []

        def stopCalls():
            for call in calls:
                call.cancel()
            for delayed in early:
                if delayed.active():
                    delayed.cancel()

        def cancelAll(_):
            ended.append(True)  # the result is CancelledError, not partial
            stopCalls()

        def settled(_=None):
            # Every call answered, or the settle time is over.
            if not ended:
                ended.append(True)
                stopCalls()
                result.callback(_bestPerGateway(found))

        result = defer.Deferred(cancelAll)
        defer.DeferredList(calls, consumeErrors=True).addCallback(settled)
        return result

    def probe(self, candidate: Candidate, port: int) -> defer.Deferred:
        """
        One C{gateway.info} call; fires with a L{Seen} or C{None}, never
        fails.
        """
        host = str(candidate.address)
        started = self.reactor.seconds()
        d = self.rpc.call(host, port, "gateway.info", {}, timeout=self.timeout)

        def answered(offer):
            rtt = self.reactor.seconds() - started
            try:
                verified = verifyOffer(offer, self.pinned, self.blocked)
            except OfferRejected as e:
                self.rejected[host] = str(e)
                log.info("dropped the offer from {host}: {reason}", host=host, reason=str(e))
                return None
            return Seen(verified, host, port, candidate.distance, rtt)

        def silent(failure):
            if failure.check(defer.CancelledError):
                return None
            log.debug("no gateway at {host}:{port}: {why}", host=host, port=port,
                      why=failure.getErrorMessage())
            return None

        return d.addCallbacks(answered, silent)


def _bestPerGateway(found):
    best = {}
    for seen in found:
        gid = seen.offer.gatewayId
        current = best.get(gid)
        if current is None or (seen.distance, seen.rtt or 0) < (current.distance, current.rtt or 0):
            best[gid] = seen
    return sorted(best.values(), key=lambda s: (s.distance, s.rtt or 0, s.offer.gatewayId))
