# -*- test-case-name: tests.unit.test_explain -*-
"""
Why the client is on its gateway and what would move it: the score
breakdown, the switch countdown and a verdict on every other gateway, as
plain data for C{mnigsctl gateways}/C{why} and the status page.  Pure: it
reads a ranking (L{mnigs.client.ranking.rank}), the switch policy and the
time.

Scores are lower-is-better sums (L{mnigs.client.ranking.scoreParts});
C{switch_margin} is a difference of scores, not a ratio, so "better by"
is given as that difference (C{better_by}) and, for people, as a fraction
of the current score (C{better_by_fraction}).
"""

from __future__ import annotations

import math

from mnigs.client.ranking import PARTS

#: What every status output says about the scores.
BETTER = "lower score is better"


def parts(ranked) -> dict[str, float]:
    "The rounded score breakdown of one L{Ranked} (zeros when it was not computed)."
    given = ranked.parts or {}
    return {name: round(given.get(name, 0.0), 4) for name in PARTS}


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def switchStatus(ranked: list, currentId: str | None, policy, now: float) -> dict | None:
    """
    The gateway the switch policy is waiting on (it beats the current one
    by C{policy.margin}), how much better it is and how long it must hold:
    C{{"gateway", "name", "better_by", "better_by_fraction", "margin",
    "hold_left_s"}}, or C{None} when no move is pending.
    """
    if currentId is None or policy.candidate is None:
        return None
    byId = {r.gatewayId: r for r in ranked}
    candidate, current = byId.get(policy.candidate), byId.get(currentId)
    left = policy.holdLeft(policy.candidate, now)
    if candidate is None or left is None:
        return None
    currentScore = current.score if current is not None and current.usable else None
    betterBy = None if currentScore is None else currentScore - candidate.score
    return {
        "gateway": candidate.gatewayId, "name": candidate.seen.offer.name,
        "better_by": None if betterBy is None else round(betterBy, 4),
        "better_by_fraction": (None if betterBy is None or not currentScore
                               else round(betterBy / currentScore, 4)),
        "margin": policy.margin, "hold": policy.hold, "hold_left_s": round(left, 1),
    }


def verdict(other, current, policy, pending: dict | None, chosen: str | None) -> str:
    """
    Why the client is not on C{other} (a L{Ranked}) while on C{current}
    (a L{Ranked}, or None when the last scan did not see it).
    """
    if not other.usable:
        return f"unusable: {other.whyNot}"
    if other.cooling:
        return f"{other.cooling}: tried after the others"
    if chosen is not None and current is not None and current.gatewayId == chosen:
        return "the current gateway was chosen with mnigsctl use: the client stays on it"
    if current is None or not current.usable:
        return f"usable; scores {other.score:.3f}"
    difference = current.score - other.score
    if difference <= 0:
        return f"scores {other.score:.3f}, {-difference:.3f} worse than the current one"
    if pending is not None and pending["gateway"] == other.gatewayId:
        return (f"scores {difference:.3f} better (margin {policy.margin:g}): the client moves "
                f"if that holds {pending['hold_left_s']:g} s more (switch_hold {policy.hold:g} s)")
    if difference <= policy.margin:
        return (f"scores {difference:.3f} better, not more than switch_margin {policy.margin:g}: "
                "the client stays")
    if pending is not None:
        return (f"scores {difference:.3f} better, by more than switch_margin "
                f"{policy.margin:g}, but {pending['name'] or pending['gateway']} is better still")
    return (f"scores {difference:.3f} better, by more than switch_margin {policy.margin:g}: "
            "the switch_hold wait starts at the next rescan")


def summary(current, pending: dict | None, others: list, chosen: str | None) -> str:
    "One sentence: what would make the client move."
    if current is None:
        return "the client has no gateway"
    if chosen is not None and current.gatewayId == chosen:
        return "the gateway was chosen with mnigsctl use; `mnigsctl use -` gives the choice back"
    if pending is not None:
        fraction = pending.get("better_by_fraction")
        if pending["better_by"] is None:
            better = f"usable while the current one is not ({current.whyNot}), so"
        elif fraction is not None:
            better = f"{fraction * 100:.0f} % ({pending['better_by']:.3f})"
        else:
            better = f"{pending['better_by']:.3f}"
        return (f"{pending['name'] or pending['gateway']} scores {better} better; the client "
                f"moves if that holds for {pending['hold_left_s']:g} s more (switch_hold "
                f"{pending['hold']:g} s); a gateway must score better by more than "
                f"switch_margin {pending['margin']:g}")
    if not any(o.usable for o in others):
        return "no other usable gateway: the client stays unless this one fails"
    return ("no other gateway scores better by more than switch_margin: the client stays "
            "unless this one fails")
