"""
Bytes per lease on the gateway.  Each method counts what its data path
counts (L{mnigs.interfaces.IGatewayMethod.traffic}); the meter asks every
method every C{interval} seconds and keeps the last answers, so that the
status, the status page and the metrics read them without waiting, and
asks the one method again when a lease ends (the release hook's bytes) or
when C{mnigsctl --server leases} wants them fresh.

Directions are the client's: C{bytesIn} went to the client (downloads),
C{bytesOut} came from it (uploads).  What a method counts differs in
detail (WireGuard: its encrypted datagrams; OpenVPN and SoftEther: their
sessions' bytes; forward: the IP packets the gate let through), see
docs/operations.md.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.methods.traffic import Traffic

log = Logger()

#: Seconds between two looks at the counters by default (server.traffic_interval).
DEFAULT_INTERVAL = 10.0


class TrafficMeter:
    """
    @param methods: name -> L{IGatewayMethod}, the same dict the registry has.
    """

    def __init__(self, clock, methods: dict, interval: float = DEFAULT_INTERVAL):
        self.clock = clock
        self.methods = methods
        self.interval = interval
        self.counted: dict[str, tuple[str, Traffic]] = {}  # lease id -> (method, traffic)
        self._loop = None

    def start(self) -> None:
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("the traffic meter stopped", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _ask(self, name, method):
        def failed(failure):
            # A daemon restarting or going away at stop: the next look
            # will do (the last counts are kept meanwhile).
            log.warn("method {method} could not count its traffic: {why}", method=name,
                     why=failure.getErrorMessage())
            return None

        return defer.maybeDeferred(method.traffic).addErrback(failed)

    @defer.inlineCallbacks
    def refresh(self):
        """
        Ask every method now; the answers replace what was kept (a method
        that failed keeps its last answers).  Fires when all answered.
        """
        names = list(self.methods)
        answers = yield defer.gatherResults([self._ask(n, self.methods[n]) for n in names])
        counted = {}
        for name, answer in zip(names, answers):
            if answer is None:
                counted.update((leaseId, kept) for leaseId, kept in self.counted.items()
                               if kept[0] == name)
            else:
                counted.update((leaseId, (name, traffic)) for leaseId, traffic in answer.items())
        self.counted = counted

    @defer.inlineCallbacks
    def final(self, lease):
        """
        C{lease}'s counters read now (before its data path goes), or the
        last ones kept when the method cannot answer.
        """
        method = self.methods.get(lease.method)
        answer = None if method is None else (yield self._ask(lease.method, method))
        if answer is not None and lease.id in answer:
            return answer[lease.id]
        return self.forLease(lease.id)

    def forget(self, leaseId: str) -> None:
        self.counted.pop(leaseId, None)

    def forLease(self, leaseId: str) -> Traffic:
        kept = self.counted.get(leaseId)
        return Traffic() if kept is None else kept[1]

    def trafficByLease(self) -> dict[str, tuple[str, int | None, int | None]]:
        """
        {lease id: (method, bytes in, bytes out)} as last counted, for
        every lease a method counted (C{None}: that direction is not
        counted).  A dict copy, made without I/O: cheap at scrape time.
        """
        return {leaseId: (name, traffic.bytesIn, traffic.bytesOut)
                for leaseId, (name, traffic) in self.counted.items()}
