# -*- test-case-name: tests.unit.test_degrade -*-
"""
When to leave a gateway that works, but badly: the decision, without
I/O, judged on the quality the health monitor measures through the
tunnel (L{mnigs.client.pacing.Quality}) and fed by the client agent after
every probe round.

A session is I{degraded} when its quality window (C{health.quality_window},
4 s) is full and

  - at least C{degrade.loss} (10 %) of its probes are lost: the I{lower}
    bound of the loss's 95 % interval (L{mnigs.client.pacing.lossBounds}),
    the worse of the gateway's probes (about 200 in the window) and the
    Internet rounds' (16), so that a few unlucky rounds prove nothing; or
  - its median round trip is at least C{degrade.rtt_factor} (4) times the
    lowest the session has seen, and C{degrade.rtt_margin} (0.05 s) above
    it: queues filling at the gateway or on its uplink.

An alternative is I{measurably better} when its loss is C{degrade.better_by}
(0.1) lower and at most C{degrade.better_ratio} (0.5) times the current
loss, I{and} the upper bound of its loss lies below the lower bound of
the current one; or, for a session degraded by its round trip, when its
round trip is at most C{better_ratio} times the current one and its loss
no worse.  The client moves, through the planned-move path (the client
machine's C{switch}, so make-before-break applies), once the session has
been degraded for C{degrade.hold} (0.5 s) and a measurably better
alternative is known; after a move it waits C{degrade.cooldown} (30 s)
before judging again.

What is known of an alternative: a standby's own health monitor
(L{Alternative.measured}: its window, measured now through its own
tunnel), else the quality history of a gateway the client was online
with less than C{degrade.history_age} (30 s) ago (L{Alternative.remembered}:
its moving average of lost rounds, which weighs about 19 rounds, so its
bounds are wide: 0 % may be 17 %).  A gateway never used, or used
longer ago, is not measurably better: nothing is known of it now.  An
older history would say how the gateway was when the mesh was in
another state: bench/degrade.py once saw a client on a mesh that had
just turned lossy everywhere leave for a gateway whose history, from
minutes before, said 3 %.  Even a fresh history can be wrong once in
that way (the mesh got worse just after the client left the other
gateway); the gateway left is then remembered with its loss, so the
client does not come back.

Why this does not flap on a uniformly lossy mesh: there every gateway
loses about the same share.  With 10 % loss on each of four links a probe
crosses, p = 0.34: a window of 200 probes says 0.28-0.41, so another
window, or a history, must come below 0.28 while this one is above 0.41
to move.  A gateway left for its loss is remembered with that loss, so
the client goes back to it only if the new one is clearly worse still.

How fast: a gateway that starts losing 30 %, with a standby that loses
nothing (upper bound 0.02): the window's lower bound reaches 10 % when
its loss reaches about 14 %, after 4 s * 0.14 / 0.3 = 1.9 s; then the
hold: 2.4 s.  Against a history of 0 % (upper bound 0.17) the lower bound
must reach 0.17 (a loss of 22 %): 2.9 s, then the hold: 3.4 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from twisted.internet.interfaces import IReactorTime

from mnigs.client.history import PROBE_ALPHA
from mnigs.client.pacing import Quality, lossBounds

#: How many probe rounds the quality history's moving average weighs, as
#: a count of samples (an exponential average's equivalent window,
#: (2 - alpha) / alpha: 19 with alpha 0.1).
HISTORY_PROBES = round((2 - PROBE_ALPHA) / PROBE_ALPHA)


@dataclass(frozen=True)
class DegradeRules:
    "The C{[degrade]} settings (docs/configuration.md)."

    enabled: bool = True
    loss: float = 0.1
    rttFactor: float = 4.0
    rttMargin: float = 0.05
    hold: float = 0.5
    betterBy: float = 0.1
    betterRatio: float = 0.5
    cooldown: float = 30.0
    window: float = 4.0
    historyAge: float = 30.0
    #: echo requests in each history round (C{health.echoes})
    echoes: int = 1

    @classmethod
    def fromConfig(cls, config) -> "DegradeRules":
        d = config.degrade
        return cls(d.enabled, d.loss, d.rtt_factor, d.rtt_margin, d.hold, d.better_by,
                   d.better_ratio, d.cooldown, config.health.quality_window, d.history_age,
                   config.health.echoes)


@dataclass(frozen=True)
class Alternative:
    """
    What is known of another gateway: its loss (0-1) and round trip
    (seconds, or C{None}), from a C{"standby"}'s monitor or the
    C{"history"}.
    """

    gatewayId: str
    loss: float
    rtt: float | None
    source: str
    lossHigh: float = 1.0

    @classmethod
    def measured(cls, gatewayId: str, quality: Quality) -> "Alternative":
        "A standby's, from its own monitor's quality window."
        return cls(gatewayId, quality.loss, quality.rtt, "standby", quality.lossHigh)

    @classmethod
    def remembered(cls, gatewayId: str, past, echoes: int = 1) -> "Alternative":
        """
        From a gateway's quality history (L{GatewayQuality}): its loss
        average weighs about L{HISTORY_PROBES} rounds.  A round of
        C{echoes} echo requests is lost only when all of them are, so
        its loss is that of one probe to the power C{echoes}: the loss
        per probe, which the session's quality counts, is the round's to
        the power 1/C{echoes} (3 echoes: 1 % of rounds lost is 22 % of
        probes).
        """
        high = lossBounds(past.loss * HISTORY_PROBES, HISTORY_PROBES)[1]
        return cls(gatewayId, past.loss ** (1 / echoes),
                   None if past.rttMs is None else past.rttMs / 1000,
                   "history", high ** (1 / echoes))


def degradedBy(rules: DegradeRules, quality: Quality) -> str | None:
    """Why C{quality} is degraded, or C{None} if it is not (or not known yet)."""
    if quality.span < 0.9 * rules.window or quality.samples < 10:
        return None
    if quality.lossLow >= rules.loss:
        return (f"{quality.loss:.0%} of the probes lost over {quality.span:.1f} s "
                f"(at least {quality.lossLow:.0%}; degrade.loss {rules.loss:g})")
    if quality.rtt is not None and quality.minRtt is not None and quality.rtt >= max(
            rules.rttFactor * quality.minRtt, quality.minRtt + rules.rttMargin):
        return (f"round trip {quality.rtt * 1000:.0f} ms against a floor of "
                f"{quality.minRtt * 1000:.0f} ms (degrade.rtt_factor {rules.rttFactor:g})")
    return None


def isBetter(rules: DegradeRules, current: Quality, other: Alternative) -> bool:
    "Whether C{other} is measurably better than C{current} (the module docstring)."
    if (other.loss <= current.loss - rules.betterBy
            and other.loss <= current.loss * rules.betterRatio
            and other.lossHigh < current.lossLow):
        return True
    return (current.rtt is not None and other.rtt is not None
            and other.lossHigh <= max(current.lossHigh, rules.loss)
            and other.rtt <= current.rtt * rules.betterRatio
            and current.rtt - other.rtt >= rules.rttMargin)


@dataclass(frozen=True)
class Move:
    "Leave for C{to} (an L{Alternative}) because C{reason}."

    to: Alternative
    reason: str


class DegradeJudge:
    """
    Holds how long the current session has been degraded and when the
    last move was; L{consider} says when to move.
    """

    def __init__(self, rules: DegradeRules, clock: IReactorTime) -> None:
        self.rules = rules
        self.clock = clock
        self.degradedSince: float | None = None
        self.movedAt: float | None = None

    def newSession(self) -> None:
        self.degradedSince = None

    def consider(self, current: Quality, alternatives: Iterable[Alternative]) -> Move | None:
        """
        Judge the current session's C{current} quality against
        C{alternatives} (best ranked first; read only once the rules allow
        a move); a L{Move} to the first measurably better one then.
        """
        rules = self.rules
        if not rules.enabled:
            return None
        now = self.clock.seconds()
        why = degradedBy(rules, current)
        if why is None:
            self.degradedSince = None
            return None
        if self.degradedSince is None:
            self.degradedSince = now
        if now - self.degradedSince < rules.hold:
            return None
        if self.movedAt is not None and now - self.movedAt < rules.cooldown:
            return None
        for other in alternatives:
            if isBetter(rules, current, other):
                self.movedAt = now
                self.degradedSince = None
                rtt = "" if other.rtt is None else f", round trip {other.rtt * 1000:.0f} ms"
                return Move(other, f"degraded: {why}; the alternative lost {other.loss:.0%}"
                                   f"{rtt} ({other.source})")
        return None

    def describe(self) -> dict:
        now = self.clock.seconds()
        return {"enabled": self.rules.enabled,
                "degraded_for_s": None if self.degradedSince is None
                else round(now - self.degradedSince, 2),
                "moved_ago_s": None if self.movedAt is None else round(now - self.movedAt, 1)}
