"""
Which gateway to use: free first, nearest, least loaded, best history.

L{rank} orders the gateways a client has heard from.  It is pure: it reads
the offers, the policy and the quality history and returns a list, so the
client machine can call it on every discovery round and status output can
show the same list with the reason each excluded gateway is excluded.

Usable and unusable
===================

A gateway is unusable, with the first of these reasons in C{whyNot}, when
it is blocked; not pinned (when the policy pins any ids); not available
(uplink down or draining); full (C{clients >= max_clients}); its fee is
refused (fees not accepted, or above C{maxFee}, or in another currency or
period than the policy names); or it offers none of the client's methods.

A gateway whose last failure is less than C{failureCooldown} seconds old
is "cooling down": it stays usable but is ranked after every usable
gateway that is not, so it is tried after the others, and at once (not
after a rescan or a backoff) when it is the only one left.

Score
=====

Lower is better::

    score = W_FEE  * (1 if the offer has a fee else 0)
          + W_DIST * d / (d + D0)
          + W_RTT  * r / (r + R0)
          + W_LOAD * clients / max_clients
          + W_HIST * h

    h = failures / (sessions + failures + 1) * exp(-(now - last_failure) / T)
        + loss

where C{d} is the routing distance (babel metric or hop count; infinite
gives 1), C{r} is the RPC round trip in seconds (R0 when unknown), C{loss}
is the moving average of lost probes (0..1) and C{T} is C{failureMemory}.
Defaults: W_FEE=10, W_DIST=1, W_RTT=0.5, W_LOAD=0.5, W_HIST=1, D0=256,
R0=0.1, T=600 s.  Each term but the fee is bounded (distance and rtt below
their weight, load at most W_LOAD, h below 2), so with the defaults the
other terms add up to less than 4 and every free gateway scores below
every paid one.  The saturating d/(d+D0) keeps one distant gateway from
drowning out the other terms, and the failure ratio fades with the age of
the last failure so that a gateway that once failed is forgiven.

The list holds the usable gateways first, then the unusable ones, each
part by score, ties broken by gateway id so that the order is total and
never depends on the order answers arrived in.  A gateway the operator
chose at run time (C{Policy.chosen}, C{mnigsctl use}) comes first among
the usable ones that are not cooling down, whatever its score.

L{scoreParts} gives each term of the sum above (weighted, so that they
add up to the score): what C{mnigsctl gateways} and the status page show.

Each gateway appears once: when it answered on several addresses the one
with the lowest distance (then lowest rtt, then address) is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from mnigs.protocol import Offer


@dataclass(frozen=True)
class Seen:
    """
    An offer as discovery saw it.

    @ivar host: the address the gateway answered on.
    @ivar distance: the route source's metric to C{host}.
    @ivar rtt: the round trip of the C{gateway.info} call, in seconds.
    @ivar others: the same gateway seen at its other addresses, nearest
        first (the client tries them when the answer at C{host} is not the
        gateway's own: a nearer node replaying its offer).
    """

    offer: Offer
    host: str
    port: int
    distance: float
    rtt: float | None = None
    others: tuple = ()


@dataclass(frozen=True)
class Policy:
    """
    What the client is willing to use, and how to weigh the rest.

    @ivar methods: the client's usable methods, preferred first.
    @ivar maxFee: the highest fee amount accepted; C{None} for any (when
        C{acceptFees}).  Amounts are compared as they are; a fee in another
        period is only refused when C{period} is set.
    @ivar currency: if set, a fee in another currency is refused.
    @ivar period: if set, a fee for another period is refused.
    @ivar pinned: if not empty, only these gateway ids are usable.
    @ivar blocked: gateway ids never used (C{policy.blocked}).
    @ivar blockedNow: gateway ids blocked at run time (C{mnigsctl block});
        not kept across restarts.
    @ivar chosen: a gateway id the operator chose at run time (C{mnigsctl
        use}): ranked first among the usable gateways that are not cooling
        down, whatever its score.
    @ivar failureCooldown: seconds during which a gateway that failed is
        passed over while there is anything else.
    """

    methods: tuple[str, ...]
    acceptFees: bool = False
    maxFee: Decimal | None = None
    currency: str | None = None
    period: str | None = None
    pinned: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()
    blockedNow: frozenset[str] = frozenset()
    chosen: str | None = None
    failureCooldown: float = 30.0
    feeWeight: float = 10.0
    distanceWeight: float = 1.0
    rttWeight: float = 0.5
    loadWeight: float = 0.5
    historyWeight: float = 1.0
    distanceScale: float = 256.0
    rttScale: float = 0.1
    failureMemory: float = 600.0

    def __post_init__(self):
        # Checked here so that a score can never be NaN and sorting stays
        # total whatever the configuration says.
        if not all(isinstance(m, str) for m in self.methods):
            raise ValueError("methods must be method type names")
        for name in ("failureCooldown", "feeWeight", "distanceWeight", "rttWeight", "loadWeight", "historyWeight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number, zero or more")
        for name in ("distanceScale", "rttScale", "failureMemory"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above zero")
        if self.maxFee is not None and not (self.maxFee.is_finite() and self.maxFee >= 0):
            raise ValueError("maxFee must be a non-negative amount")


@dataclass(frozen=True)
class Ranked:
    """
    One gateway's place in the ranking.

    @ivar score: lower is better; see the module docstring.
    @ivar whyNot: why the gateway is unusable, C{""} if it is usable.
    @ivar methods: the methods both sides have, in the client's order.
        C{forward} is included whenever it is offered: whether the gateway
        is a direct neighbour is for the caller to decide.
    @ivar cooling: why the gateway is cooling down after a failure (it is
        ranked after those that are not), C{""} if it is not.
    @ivar parts: the terms of C{score} (L{scoreParts}), or C{None} when
        the score was given rather than computed.
    @ivar chosen: the operator chose this gateway (C{mnigsctl use}): it is
        ranked before the other usable gateways unless it is cooling down.
    """

    seen: Seen
    score: float
    usable: bool
    whyNot: str
    methods: tuple[str, ...]
    cooling: str = ""
    parts: dict | None = field(default=None, compare=False)
    chosen: bool = False

    @property
    def gatewayId(self) -> str:
        return self.seen.offer.gatewayId


def _saturate(value: float | None, scale: float, missing: float) -> float:
    """
    C{value / (value + scale)}: 0 at 0, 1/2 at C{scale}, towards 1 beyond;
    an infinite or NaN value counts as infinitely far.
    """
    if value is None:
        value = missing
    if math.isnan(value) or value == math.inf:
        return 1.0
    value = max(0.0, value)
    return value / (value + scale)


def _badness(quality, policy: Policy, now: float) -> float:
    ratio = quality.failures / (quality.sessions + quality.failures + 1)
    if quality.lastFailure is not None:
        age = max(0.0, now - quality.lastFailure)
        ratio *= math.exp(-age / policy.failureMemory)
    return ratio + min(1.0, max(0.0, quality.loss))


#: The terms of a score, in the order status output shows them.
PARTS = ("distance", "rtt", "load", "fee", "history")


def scoreParts(seen: Seen, policy: Policy, quality, now: float) -> dict[str, float]:
    """
    Each term of one gateway's score, weighted: the score is their sum
    (the module docstring defines them; lower is better).
    """
    offer = seen.offer
    return {
        "distance": policy.distanceWeight * _saturate(seen.distance, policy.distanceScale, math.inf),
        "rtt": policy.rttWeight * _saturate(seen.rtt, policy.rttScale, policy.rttScale),
        "load": policy.loadWeight * offer.load,
        "fee": policy.feeWeight * (offer.fee is not None),
        "history": policy.historyWeight * _badness(quality, policy, now),
    }


def score(seen: Seen, policy: Policy, quality, now: float) -> float:
    """
    The score of one gateway (lower is better), as the module docstring
    defines it: the sum of its L{scoreParts}.
    """
    return sum(scoreParts(seen, policy, quality, now).values())


def _feeRefused(offer: Offer, policy: Policy) -> str:
    fee = offer.fee
    if fee is None:
        return ""
    asked = f"fee {fee.amount} {fee.currency}/{fee.period}"
    if not policy.acceptFees:
        return f"{asked}: fees not accepted"
    if policy.currency is not None and fee.currency.casefold() != policy.currency.casefold():
        return f"{asked}: not in {policy.currency}"
    if policy.period is not None and fee.period.casefold() != policy.period.casefold():
        return f"{asked}: not per {policy.period}"
    if policy.maxFee is not None and fee.amount > policy.maxFee:
        return f"{asked}: above {policy.maxFee}"
    return ""


def commonMethods(offer: Offer, policy: Policy) -> tuple[str, ...]:
    offered = {entry["type"] for entry in offer.methods}
    return tuple(m for m in dict.fromkeys(policy.methods) if m in offered)


def _whyNot(offer: Offer, policy: Policy, methods: tuple[str, ...]) -> str:
    gid = offer.gatewayId
    if gid in policy.blocked:
        return "blocked"
    if gid in policy.blockedNow:
        return "blocked at run time (mnigsctl unblock)"
    if policy.pinned and gid not in policy.pinned:
        return "not pinned"
    if not offer.available:
        return "not available"
    if offer.clients >= offer.maxClients:
        return f"full ({offer.clients}/{offer.maxClients} clients)"
    refused = _feeRefused(offer, policy)
    if refused:
        return refused
    if not methods:
        return "no common method"
    return ""


def _coolingDown(quality, policy: Policy, now: float) -> str:
    if quality.lastFailure is None:
        return ""
    age = now - quality.lastFailure
    # A failure stamped in the future means the clock was stepped back;
    # only a small step is believed, so such a record cannot bar a gateway
    # for good.
    if abs(age) >= policy.failureCooldown:
        return ""
    reason = getattr(quality, "lastFailureReason", "") or "failed"
    return f"{reason} {max(0.0, age):.0f}s ago; cooling down"


def _nearness(seen: Seen) -> tuple:
    distance = math.inf if math.isnan(seen.distance) else seen.distance
    rtt = math.inf if seen.rtt is None or math.isnan(seen.rtt) else seen.rtt
    return (distance, rtt, seen.host, seen.port, -seen.offer.issuedAt)


def deduplicate(seen: list[Seen]) -> list[Seen]:
    """
    One L{Seen} per gateway id: the nearest address (lowest distance, then
    lowest rtt, then host and port, then the newest offer).
    """
    best: dict[str, Seen] = {}
    for item in seen:
        gid = item.offer.gatewayId
        known = best.get(gid)
        if known is None or _nearness(item) < _nearness(known):
            best[gid] = item
    return list(best.values())


def rank(seen: list[Seen], policy: Policy, history, now: float) -> list[Ranked]:
    """
    Rank what discovery saw.  C{history} is anything with C{get(gid)}
    returning a record like L{mnigs.client.history.GatewayQuality}; a
    L{mnigs.client.history.QualityHistory} creates records for gateways it
    has not met, which is harmless and bounded by its C{maxGateways}.
    Returns every gateway once: the usable ones first, best first, then
    the unusable ones with the reason.
    """
    ranked = []
    for item in deduplicate(seen):
        quality = history.get(item.offer.gatewayId)
        methods = commonMethods(item.offer, policy)
        parts = scoreParts(item, policy, quality, now)
        whyNot = _whyNot(item.offer, policy, methods)
        ranked.append(Ranked(item, sum(parts.values()), not whyNot, whyNot, methods,
                             _coolingDown(quality, policy, now), parts,
                             item.offer.gatewayId == policy.chosen))
    ranked.sort(key=lambda r: (not r.usable, bool(r.cooling), not r.chosen, r.score, r.gatewayId))
    return ranked


class SwitchPolicy:
    """
    When to leave a gateway that works for one that merely scores better.

    Scores move with every probe; switching on each wobble would tear
    down working tunnels for nothing.  So the better gateway must beat the
    current score by more than C{margin}, and the same gateway must have
    done so at every call for at least C{hold} seconds.  (A current gateway
    that fails or goes unavailable is not this policy's business: the
    client leaves it at once.)

    @ivar candidate: the id of the gateway currently beating the current
        one, or C{None}.
    @ivar since: when it started doing so.
    """

    def __init__(self, margin: float = 0.2, hold: float = 30.0):
        if not (margin >= 0 and hold >= 0):
            raise ValueError("margin and hold must be zero or more")
        self.margin = margin
        self.hold = hold
        self.reset()

    def reset(self) -> None:
        self.candidate: str | None = None
        self.since: float | None = None

    def consider(self, currentId: str, currentScore: float, best: Ranked | None, now: float) -> Ranked | None:
        """
        Return C{best} if it is time to switch to it, else C{None}.

        @param currentId: the gateway the client is online through.
        @param currentScore: its score in the same ranking as C{best}.
        @param best: the best usable gateway of that ranking, if any.
        """
        if (
            best is None
            or not best.usable
            or best.gatewayId == currentId
            or not best.score < currentScore - self.margin
        ):
            self.reset()
            return None
        if self.candidate != best.gatewayId or self.since is None or now < self.since:
            self.candidate, self.since = best.gatewayId, now
        if now - self.since >= self.hold:
            self.reset()
            return best
        return None

    def holdLeft(self, gatewayId: str, now: float) -> float | None:
        """
        Seconds C{gatewayId} must go on beating the current gateway before
        the client moves (at the first rescan after that), or C{None} if it
        is not the gateway being waited for.
        """
        if self.candidate != gatewayId or self.since is None:
            return None
        return max(0.0, self.since + self.hold - now)
