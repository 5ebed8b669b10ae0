"""
Candidate gateway addresses, as route sources report them.

Pure: no I/O, no reactor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from zope.interface import implementer

from mnigs.interfaces import IRouteSource

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Candidate:
    """
    One address that might be a gateway, and how far away it is.

    @ivar address: the mesh address to ask for an offer.
    @ivar distance: the route source's own measure of cost (babel metric,
        kernel route priority, ...): only comparable between candidates of
        one source, and only ever used to order them, nearest first.
    @ivar source: the L{IRouteSource.name} of the source that saw it.
    @ivar via: the next hop the route goes through, when known (text, since
        it may carry a scope such as C{fe80::1%eth0}).
    @ivar interface: the interface the route leaves by, when known.
    """

    address: IPAddress
    distance: float
    source: str
    via: str | None = None
    interface: str | None = None


# Overlay sources (Yggdrasil, cjdns) count hops; babel counts metric, 96 a
# wired hop.  The client scales hop counts by this (L{HopScaled}), so the
# ranking's distance scale tells 2 hops from 3 whatever the source.
HOP_METRIC = 96.0


@implementer(IRouteSource)
class HopScaled:
    """
    A route source whose distances are hop counts, seen in babel-like
    metric units.
    """

    def __init__(self, source, factor=HOP_METRIC):
        self.source = source
        self.name = source.name
        self.factor = factor

    def candidates(self):
        return self.source.candidates().addCallback(
            lambda found: [Candidate(c.address, c.distance * self.factor, c.source, c.via, c.interface)
                           for c in found])

    def watch(self, onChange):
        return self.source.watch(onChange)


def usableAddress(address: IPAddress) -> bool:
    """
    Whether C{address} could be a gateway's mesh address at all: not
    link-local, multicast, loopback or unspecified.
    """
    return not (
        address.is_link_local
        or address.is_multicast
        or address.is_loopback
        or address.is_unspecified
    )


def _order(candidate: Candidate) -> tuple:
    # IPv4 sorts before IPv6 at equal distance; ipaddress refuses to compare
    # the two families directly.
    address = candidate.address
    return (candidate.distance, address.version, int(address), candidate.source)


def sortCandidates(candidates: Iterable[Candidate]) -> list[Candidate]:
    """
    Nearest first; ties broken by address, then source, so that the order
    never depends on the order the routes happened to arrive in.
    """
    return sorted(candidates, key=_order)


def mergeCandidates(lists: Iterable[Iterable[Candidate]]) -> list[Candidate]:
    """
    Merge the answers of several route sources into one list: one entry per
    address, the one with the smallest distance (ties: the one that sorts
    first), nearest first.
    """
    best: dict[IPAddress, Candidate] = {}
    for candidates in lists:
        for candidate in candidates:
            known = best.get(candidate.address)
            if known is None or _order(candidate) < _order(known):
                best[candidate.address] = candidate
    return sortCandidates(best.values())
