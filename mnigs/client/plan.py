"""
What the client will try, in order: a plan of (gateway, method) steps built
from the ranking, and the cursor over it.  Pure.

A method that fails to connect moves to the next method of the same
gateway; a gateway that refuses (full, unavailable, unreachable) moves to
the next gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mnigs.protocol import METHOD_UNAVAILABLE, UNKNOWN_LEASE, WRONG_TOKEN, RPCError


class LeaseRejected(Exception):
    """
    A register answer the client does not use; the message says why.  The
    answer was not the gateway's own (not signed by its key, or not what
    its offer pins), so the gateway is tried at its other addresses.
    """


@dataclass(frozen=True)
class Step:
    ranked: object  # mnigs.client.ranking.Ranked
    method: str

    @property
    def seen(self):
        return self.ranked.seen

    @property
    def gatewayId(self) -> str:
        return self.ranked.seen.offer.gatewayId

    @property
    def host(self) -> str:
        return self.ranked.seen.host

    @property
    def port(self) -> int:
        return self.ranked.seen.port

    @property
    def gateway(self) -> str:
        """
        The gateway as log lines and reasons name it: C{pdx-gw-1 (10.99.0.5)}.
        """
        name = self.ranked.seen.offer.name
        return f"{name} ({self.host})" if name else self.host

    @property
    def offerEntry(self) -> dict:
        return self.ranked.seen.offer.method(self.method)

    def describe(self) -> dict:
        return {"gateway": self.gatewayId, "name": self.ranked.seen.offer.name,
                "host": self.host, "port": self.port, "method": self.method}


@dataclass(frozen=True)
class Attempt:
    steps: tuple
    index: int = 0

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    def nextMethod(self) -> "Attempt | None":
        if self.index + 1 < len(self.steps):
            return Attempt(self.steps, self.index + 1)
        return None

    def nextGateway(self) -> "Attempt | None":
        gid = self.step.gatewayId
        for index in range(self.index + 1, len(self.steps)):
            if self.steps[index].gatewayId != gid:
                return Attempt(self.steps, index)
        return None

    def afterRegisterFailure(self, failure) -> "Attempt | None":
        """
        1002 (method not usable for us): next method; anything else (full,
        unavailable, rate limited, no answer): next gateway.
        """
        error = failure.value if hasattr(failure, "value") else failure
        if isinstance(error, RPCError) and error.code in (METHOD_UNAVAILABLE, UNKNOWN_LEASE, WRONG_TOKEN):
            return self.nextMethod()
        if isinstance(error, LeaseRejected):
            return self.otherAddress() or self.nextGateway()
        return self.nextGateway()

    def otherAddress(self) -> "Attempt | None":
        """
        The same gateway and method at the gateway's next other address
        (L{Seen.others}), tried next; None if it has none.
        """
        step = self.step
        others = step.ranked.seen.others
        if not others:
            return None
        seen = replace(others[0], others=others[1:])
        moved = Step(replace(step.ranked, seen=seen), step.method)
        steps = self.steps[:self.index + 1] + (moved,) + self.steps[self.index + 1:]
        return Attempt(steps, self.index + 1)


def buildPlan(ranked, canUse=lambda ranked, method: True, exclude=frozenset()) -> Attempt | None:
    """
    Every usable gateway in rank order, each with its methods in the
    client's order of preference, minus the gateways in C{exclude} and the
    (gateway, method) pairs C{canUse} refuses (forward to a gateway that is
    not a direct neighbour, say).
    """
    steps = tuple(Step(r, method) for r in ranked
                  if r.usable and r.seen.offer.gatewayId not in exclude
                  for method in r.methods if canUse(r, method))
    return Attempt(steps) if steps else None
