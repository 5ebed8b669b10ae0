# -*- test-case-name: tests.unit.test_health -*-
"""
The paced probes of a health monitor (L{mnigs.client.health}) and the
dead-time rule: the gateway is dead when nothing was heard from it for
the dead time (L{mnigs.client.pacing} has the arithmetic; the health
module's docstring what counts as life and why).
"""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mnigs.client.pacing import Pacing, QualityWindow, RttEstimator

log = Logger()


class Heartbeat:
    """
    Paced probes to C{targets} and the dead-time rule (the module
    docstring).  C{expired(reason)} is called once, when nothing was heard
    for the dead time (the reason starts with C{silence()}); L{heard} is
    told of every other sign of life (the answers of the slower rounds).

    @param window: where every probe's outcome goes, as C{kind}.
    @param received: C{received()} -> the bytes the tunnel has received
        (or C{None}): evidence of life; C{None}: there is none.
    @param answered: C{answered(target, rtt)}, for every answer.
    """

    def __init__(self, reactor: IReactorTime, pinger, targets: Sequence[str], kind: str,
                 pacing: Pacing, window: QualityWindow,
                 received: Callable[[], int | None] | None,
                 answered: Callable[[str, float], None],
                 silence: Callable[[], str], expired: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.pinger = pinger
        self.targets = tuple(targets)
        self.kind = kind
        self.pacing = pacing
        self.window = window
        self.received = received
        self.answeredBy = answered
        self.silence = silence
        self.expired = expired
        self.rtt = RttEstimator()
        #: probe -> [when its quality sample is due (its RTO), whether taken]
        self.outstanding: dict[Deferred, list] = {}
        self.lastLife = 0.0
        self.nextTick = 0.0
        #: (when, bytes) the tunnel had received at the suspect point
        self.rxSeen: tuple[float, int] | None = None
        self.rxEvidence = 0
        self.tickCall: IDelayedCall | None = None
        self.deadCall: IDelayedCall | None = None
        self.suspectCall: IDelayedCall | None = None

    def start(self) -> None:
        self.nextTick = self.reactor.seconds()
        self.heard()
        self.tick()

    def tick(self) -> None:
        reactor = self.reactor
        now = reactor.seconds()
        # On a grid, as LoopingCall does: timers that fire late must not
        # thin out the probes a dead time spans.
        self.nextTick = max(self.nextTick + self.pacing.interval(self.rtt), now)
        self.tickCall = reactor.callLater(self.nextTick - now, self.tick)
        # A probe still unanswered after its timeout counts as lost for
        # the quality window; it may still prove life (and give a round
        # trip) until the pinger's own timeout, the ceiling.
        for entry in self.outstanding.values():
            if not entry[1] and entry[0] <= now:
                entry[1] = True
                self.window.add(now, self.kind, None)
        due = now + self.pacing.timeout(self.rtt)
        for target in self.targets:
            entry = [due, False]
            d = maybeDeferred(self.pinger.ping, target, self.pacing.maxTimeout)
            if not d.called:
                self.outstanding[d] = entry
            d.addCallbacks(self.answered, self.failed, callbackArgs=(target, d, entry),
                           errbackArgs=(target, d, entry))

    def answered(self, rtt: float | None, target: str, d: Deferred, entry: list) -> None:
        self.outstanding.pop(d, None)
        if not entry[1]:
            entry[1] = True
            self.window.add(self.reactor.seconds(), self.kind, rtt)
        if rtt is None:
            return
        self.rtt.sample(rtt)
        self.answeredBy(target, rtt)
        self.heard()

    def failed(self, failure, target: str, d: Deferred, entry: list) -> None:
        if failure.check(CancelledError):
            return  # abandoned: the monitor stopped
        log.debug("probe to {target} failed: {error}", target=target, error=failure.value)
        self.answered(None, target, d, entry)

    def heard(self, at: float | None = None) -> None:
        """A sign of life at C{at} (now): the dead time starts again."""
        reactor = self.reactor
        now = reactor.seconds()
        self.lastLife = now if at is None else at
        self.rxSeen = None
        dead = self.pacing.deadTime(self.rtt)
        self.deadCall = rearm(reactor, self.deadCall, self.lastLife + dead - now, self.dead)
        if self.received is not None and at is None:
            self.suspectCall = rearm(reactor, self.suspectCall, dead / 2, self.suspect)

    def suspect(self) -> None:
        "Half the dead time without an answer: note what the tunnel has received."
        received = self._received()
        if received is not None:
            self.rxSeen = (self.reactor.seconds(), received)

    def dead(self) -> None:
        received = self._received()
        if self.rxSeen is not None and received is not None and received > self.rxSeen[1]:
            # Bytes came out of the tunnel since the suspect point: the
            # gateway was alive then, at least.
            self.rxEvidence += 1
            seenAt = self.rxSeen[0]
            self.heard(at=seenAt)
            self.rxSeen = (self.reactor.seconds(), received)
            return
        self.cancel()
        pacing, rtt = self.pacing, self.rtt
        self.expired(f"{self.silence()}: "
                     f"nothing heard for {self.reactor.seconds() - self.lastLife:.2f} s "
                     f"(dead time {pacing.deadProbes} probes at {pacing.interval(rtt):g} s "
                     f"+ timeout {pacing.timeout(rtt):g} s)")

    def _received(self) -> int | None:
        if self.received is None:
            return None
        try:
            return self.received()
        except Exception:
            log.failure("could not read the tunnel's receive counter")
            return None

    def cancel(self) -> None:
        for call in (self.tickCall, self.deadCall, self.suspectCall):
            if call is not None and call.active():
                call.cancel()
        outstanding, self.outstanding = self.outstanding, {}
        for d in outstanding:
            d.cancel()

    def describe(self) -> dict:
        pacing, rtt = self.pacing, self.rtt
        return {"srtt_ms": None if rtt.srtt is None else round(rtt.srtt * 1000, 2),
                "rttvar_ms": round(rtt.rttvar * 1000, 2),
                "interval_s": round(pacing.interval(rtt), 3),
                "timeout_s": round(pacing.timeout(rtt), 3),
                "dead_time_s": round(pacing.deadTime(rtt), 3),
                "heard_ago_s": round(self.reactor.seconds() - self.lastLife, 3),
                "rx_evidence": self.rxEvidence}


def rearm(reactor, call: IDelayedCall | None, delay: float,
           function: Callable[[], None]) -> IDelayedCall:
    delay = max(0.0, delay)
    if call is not None and call.active():
        call.reset(delay)
        return call
    return reactor.callLater(delay, function)
