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

import dataclasses
import ipaddress
import math

from twisted.internet import defer
from twisted.logger import Logger

from mnigs.routing.candidates import Candidate, mergeCandidates
from mnigs.client.ranking import Seen
from mnigs.protocol import OfferRejected, verifyOffer

log = Logger()


class Discovery:
    """
    @param rpc: an L{mnigs.rpc.client.RPCClient} (without keep-alive, as most
        candidates are asked once).
    @param ownAddresses: a callable returning the node's own addresses,
        which are never probed.
    @param observer: told about every scan and every dropped offer (an
        L{mnigs.interfaces.IDiscoveryObserver}: the client's metrics), or None.
    """

    def __init__(self, reactor, rpc, ports=(8150,), concurrency=512, timeout=2.0,
                 maxCandidates=4096, ownAddresses=lambda: set(), pinned=None,
                 blocked=frozenset(), observer=None):
        self.reactor = reactor
        self.rpc = rpc
        self.ports = tuple(ports)
        self.concurrency = concurrency
        self.timeout = timeout
        self.maxCandidates = maxCandidates
        self.ownAddresses = ownAddresses
        self.pinned = pinned
        self.blocked = blocked
        self.observer = observer
        self.rejected = {}

    def order(self, candidates) -> list[Candidate]:
        """
        Nearest first, without the node's own addresses, at most
        C{maxCandidates}.  Pure apart from C{ownAddresses()}.
        """
        own = {ipaddress.ip_address(a) for a in self.ownAddresses()}
        merged = mergeCandidates([candidates])
        return [c for c in merged if c.address not in own][:self.maxCandidates]

    def scan(self, candidates, onFound=None, settle=None, usable=None, hot=(),
             retry=0.5) -> defer.Deferred:
        """
        Probe C{candidates}; fire with every L{Seen} (one per gateway id, the
        nearest address), nearest first.  C{onFound(seen)} is called as each
        verified offer arrives.

        With C{settle} (seconds) the scan ends early: C{settle} seconds
        after the first offer that C{usable(seen)} accepts, with what has
        answered by then, and the calls still out are cancelled.  A silent
        candidate (a dead gateway) then no longer holds the client for the
        whole timeout when a live one has long answered.

        C{hot} lists C{(host, port)} of gateways met recently.  They are
        asked whether or not a route source lists them (the mesh may just
        be relearning the way to a gateway that came back), and asked again
        every C{retry} seconds until one answers or C{timeout} has passed:
        a gateway whose path returns mid-scan is heard within C{retry}, not
        after a whole TCP retransmission and the next scan.
        """
        started = self.reactor.seconds()
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
        distances = {str(c.address): c.distance for c in ordered}
        hotPlaces = self._notOwn(hot)
        hotCalls = [self._askAgain(host, port, distances.get(host, math.inf), retry, keep)
                    for host, port in hotPlaces]
        ended = []

        def stopCalls():
            for call in calls + hotCalls:
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
                best = _bestPerGateway(found)
                if self.observer is not None:
                    asked = {str(c.address) for c in ordered} | {host for host, _ in hotPlaces}
                    self.observer.scanned(self.reactor.seconds() - started, len(asked), len(best))
                result.callback(best)

        result = defer.Deferred(cancelAll)
        defer.DeferredList(calls + hotCalls, consumeErrors=True).addCallback(settled)
        return result

    def watch(self, hot, usable, every=0.5) -> defer.Deferred:
        """
        Ask each C{(host, port)} of C{hot} every C{every} seconds, for as
        long as it takes: fires with the first L{Seen} that C{usable}
        accepts.  What an offline client does while it waits to scan again,
        so that a gateway it knows is taken as soon as the mesh reaches it
        again, not at the end of a backoff.  Cancel to stop; with nothing
        in C{hot} it never fires.
        """
        def keep(seen):
            if not usable(seen):
                return False
            if not result.called:
                result.callback(seen)
            return True

        def stopAll(_=None):
            for call in calls:
                call.cancel()

        result = defer.Deferred(stopAll)
        calls = [self._askAgain(host, port, math.inf, every, keep, forever=True)
                 for host, port in self._notOwn(hot)]
        result.addBoth(lambda outcome: (stopAll(), outcome)[1])
        return result

    def _notOwn(self, hot):
        """C{hot} without repeats and without the node's own addresses."""
        own = {ipaddress.ip_address(a) for a in self.ownAddresses()}
        return [(host, port) for host, port in dict.fromkeys(hot)
                if ipaddress.ip_address(host) not in own]

    def _askAgain(self, host, port, distance, every, keep, forever=False) -> defer.Deferred:
        """
        Ask C{host} every C{every} seconds until one call answers or
        C{timeout} has passed since the first (every call ends by then),
        or, C{forever}, until an answer is kept; C{keep(seen)} gets the
        answers, and returns C{False} to go on asking.  Fires with None;
        cancelling it cancels the calls out.
        """
        candidate = Candidate(ipaddress.ip_address(host), distance, "recent")
        deadline = None if forever else self.reactor.seconds() + self.timeout
        out = []
        nextCall = []

        def finish(_=None):
            if done.called:
                return
            done.callback(None)  # first: what cancelling below fires is ignored
            for delayed in nextCall:
                if delayed.active():
                    delayed.cancel()
            for call in list(out):
                call.cancel()

        def answered(seen, call):
            out.remove(call)
            if done.called:
                return
            if seen is not None and keep(seen) is not False:
                finish()
            elif not out and not any(d.active() for d in nextCall):
                finish()  # the last try came back empty

        def ask():
            del nextCall[:]
            remaining = self.timeout if forever else deadline - self.reactor.seconds()
            if forever or every < remaining:
                nextCall.append(self.reactor.callLater(every, ask))
            call = self.probe(candidate, port, timeout=remaining)
            out.append(call)
            call.addCallback(answered, call)

        done = defer.Deferred(lambda _: finish())
        ask()
        return done

    def probe(self, candidate: Candidate, port: int, timeout=None) -> defer.Deferred:
        """
        One C{gateway.info} call (within C{timeout}, by default the
        scan's); fires with a L{Seen} or C{None}, never fails.
        """
        host = str(candidate.address)
        started = self.reactor.seconds()
        d = self.rpc.call(host, port, "gateway.info", {},
                          timeout=self.timeout if timeout is None else timeout)

        def answered(offer):
            rtt = self.reactor.seconds() - started
            try:
                verified = verifyOffer(offer, self.pinned, self.blocked)
            except OfferRejected as e:
                self.rejected[host] = str(e)
                if self.observer is not None:
                    self.observer.offerRejected(e.kind)
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
    """
    One L{Seen} per gateway id, nearest first: the nearest address, with
    the gateway's other addresses in C{others}.
    """
    byGateway = {}
    for seen in found:
        byGateway.setdefault(seen.offer.gatewayId, {}).setdefault((seen.host, seen.port), seen)
    best = []
    for places in byGateway.values():
        nearest = sorted(places.values(), key=lambda s: (s.distance, s.rtt or 0, s.host))
        best.append(dataclasses.replace(nearest[0], others=tuple(nearest[1:])))
    return sorted(best, key=lambda s: (s.distance, s.rtt or 0, s.offer.gatewayId))
