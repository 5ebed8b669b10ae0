# -*- test-case-name: tests.unit.test_degrade -*-
"""
Counting false failovers: a gateway the health probes gave up on as
silent that answers C{gateway.info} over the mesh a moment later was
most likely alive (the probes were unlucky: loss on the mesh, a queue),
and leaving it was a false failover.

What this can and cannot tell: the RPC crosses the mesh, not the tunnel,
so a gateway whose tunnel daemon hung while its RPC server still answers
is counted false too (a real failure of the data path); a gateway that
came back within C{delay} as well.  A gateway that stays silent, or that
the mesh no longer routes to, is not counted.  Losses where the gateway
answered but the Internet beyond it did not are never checked: the
gateway was alive, its uplink was not.

Counted in C{mnigsctl status} (C{false_failovers}) and the metric
C{mnigs_client_false_failovers}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class FalseLossCheck:
    """
    @param rpc: the client's RPC client (C{call(host, port, method,
        params, timeout)}).
    """

    def __init__(self, reactor: IReactorTime, rpc, delay: float = 1.0, timeout: float = 3.0):
        self.reactor = reactor
        self.rpc = rpc
        self.delay = delay
        self.timeout = timeout
        self.count = 0
        self.checked = 0
        self.pending: set = set()

    def check(self, step) -> None:
        "The probes gave up on C{step}'s gateway: ask it over the mesh in C{delay} s."
        call = self.reactor.callLater(self.delay, self._ask, step)
        self.pending.add(call)

    def _ask(self, step) -> None:
        self.pending = {c for c in self.pending if c.active()}
        self.checked += 1
        d = self.rpc.call(step.host, step.port, "gateway.info", {}, timeout=self.timeout)
        d.addCallbacks(lambda _: self._answered(step), lambda _: None)

    def _answered(self, step) -> None:
        self.count += 1
        log.warn("false failover: gateway {gateway} answers over the mesh {delay:g} s after its "
                 "probes were given up", gateway=step.gateway, delay=self.delay)

    def stop(self) -> None:
        pending, self.pending = self.pending, set()
        for call in pending:
            if call.active():
                call.cancel()

    def describe(self) -> dict:
        return {"false_failovers": self.count, "silent_losses_checked": self.checked}
