# -*- test-case-name: tests.unit.test_health -*-
"""
How the client notices, within about a second, that its gateway went
silent.

Babel with its default timers takes 7-14 s to route around a gateway that
silently stops answering: far too long for someone on a video call.  So
the client probes the gateway itself, several times a second, and gives up
on it after a few unanswered rounds in a row.

Every C{interval} a probe round starts: one echo to every target (the
gateway's mesh address, its tunnel address, a host behind it...).  A round
succeeds if I{any} target answers within C{timeout}.  With C{timeout >
interval} rounds overlap; their results are still counted in the order the
rounds started, so "three misses in a row" means three consecutive rounds.

Detection time
==============

Let the last answered round start at t0.  Rounds then start at t0 +
k*interval; the loss is declared when round k = C{misses} has timed out::

    lost at  t0 + misses*interval + timeout

That is C{(misses-1)*interval + timeout} after the start of the first
round that went unanswered, and at most C{misses*interval + timeout - rtt}
after the last answer arrived.  With the defaults (0.25 s, 0.75 s, 3):
1.25 s after the first unanswered probe, under 1.5 s after the last answer.
Smaller C{timeout} detects faster but calls a merely slow (loaded, Wi-Fi)
gateway dead; 0.75 s is well above mesh round-trip times.

    idle --start--> probing --probesExhausted--> lost
    every state --stop--> stopped; lost/stopped --start--> probing
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()

_PENDING = object()


def _nothing(*args: object) -> None:
    pass


class _Monitor(Protocol):
    def start(self) -> None:
        "Begin probing (afresh after a loss or a stop)."

    def stop(self) -> None:
        "Stop probing and abandon every outstanding probe."

    def intervalElapsed(self) -> None:
        "Time for the next probe round."

    def roundAnswered(self, rtt: float) -> None:
        "The oldest outstanding round got an answer."

    def roundMissed(self, count: int) -> None:
        "The oldest outstanding round went unanswered, the count-th in a row."

    def probesExhausted(self, count: int) -> None:
        "As many rounds in a row as we tolerate went unanswered."

    def describe(self) -> dict:
        "Status for humans and mnigsctl."


@dataclass
class _Core:
    reactor: object
    pinger: object
    targets: list[str]
    interval: float
    timeout: float
    misses: int
    onMissed: Callable[[int], object]
    onAnswered: Callable[[float], object]
    onLost: Callable[[str], object]
    onSample: Callable[[float | None], object]
    lostReason: str = ""

    def notify(self, callback: Callable, *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.failure("health monitor callback {callback!r} failed", callback=callback)


class _Round:
    """
    One probe round: an echo to every target, a deadline of C{timeout}.
    Its C{result} is C{_PENDING}, then the first answer's round-trip time
    or C{None}.
    """

    def __init__(self, core: _Core, settled: Callable[[], None]) -> None:
        self.result: object = _PENDING
        self._core = core
        self._settled = settled
        self._outstanding: list[Deferred] = []
        self._deadline: IDelayedCall | None = None

    def send(self) -> None:
        """
        Probe every target.  Pingers may answer synchronously: every probe
        is sent before any result is looked at, so that an early C{None}
        does not settle the round while other targets are unasked.
        """
        core = self._core
        self._deadline = core.reactor.callLater(core.timeout, self._settle, None)
        sent = [(target, maybeDeferred(core.pinger.ping, target, core.timeout))
                for target in core.targets]
        self._outstanding = [d for target, d in sent]
        for target, d in sent:
            d.addCallbacks(self._pinged, self._failed, callbackArgs=(d,),
                           errbackArgs=(target, d))

    def _pinged(self, rtt: float | None, d: Deferred) -> None:
        self._outstanding.remove(d)
        if rtt is not None:
            self._settle(rtt)
        elif not self._outstanding:
            self._settle(None)

    def _failed(self, failure, target: str, d: Deferred) -> None:
        if self.result is _PENDING:
            log.debug("probe to {target} failed: {error}", target=target, error=failure.value)
        self._pinged(None, d)

    def _settle(self, rtt: float | None) -> None:
        if self.result is not _PENDING:
            return
        self.result = rtt
        self.cancel()
        self._settled()

    def cancel(self) -> None:
        """Abandon whatever is still outstanding; the result stays as it is."""
        if self.result is _PENDING:
            self.result = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        for d in list(self._outstanding):
            d.cancel()


@dataclass
class _Probing:
    """
    What the C{probing} state owns: the round timer, the rounds not yet
    counted (oldest first) and the count of misses in a row.
    """

    monitor: _Monitor
    core: _Core
    rounds: collections.deque = field(default_factory=collections.deque)
    missedInARow: int = 0
    timer: LoopingCall | None = None

    def startRound(self) -> None:
        probeRound = _Round(self.core, self.count)
        self.rounds.append(probeRound)
        probeRound.send()

    def count(self) -> None:
        """
        Feed the machine every settled round at the head of the queue: a
        round that settles early waits for the rounds started before it.
        """
        while self.rounds and self.rounds[0].result is not _PENDING:
            rtt = self.rounds.popleft().result
            if rtt is not None:
                self.missedInARow = 0
                self.monitor.roundAnswered(rtt)
            else:
                self.missedInARow += 1
                if self.missedInARow >= self.core.misses:
                    self.monitor.probesExhausted(self.missedInARow)
                    return
                self.monitor.roundMissed(self.missedInARow)

    def cancel(self) -> None:
        if self.timer is not None and self.timer.running:
            self.timer.stop()
        rounds, self.rounds = self.rounds, collections.deque()
        for probeRound in rounds:
            probeRound.cancel()


def _startProbing(monitor: _Monitor, core: _Core) -> _Probing:
    probing = _Probing(monitor, core)
    probing.timer = LoopingCall(monitor.intervalElapsed)
    probing.timer.clock = core.reactor
    probing.timer.start(core.interval, now=True)
    return probing


def _buildMachine():
    m = TypeMachineBuilder(_Monitor, _Core)
    idle = m.state("idle")
    probing = m.state("probing", _startProbing)
    lost = m.state("lost")
    stopped = m.state("stopped")

    for state in (idle, lost, stopped):
        state.upon(_Monitor.start).to(probing).returns(None)
    probing.upon(_Monitor.start, nodata=True).loop().returns(None)

    @pep614(probing.upon(_Monitor.stop).to(stopped))
    def abandonProbes(monitor: _Monitor, core: _Core, probing: _Probing) -> None:
        probing.cancel()

    for state in (idle, lost, stopped):
        state.upon(_Monitor.stop).to(stopped).returns(None)

    @pep614(probing.upon(_Monitor.intervalElapsed).loop())
    def probeAll(monitor: _Monitor, core: _Core, probing: _Probing) -> None:
        probing.startRound()

    @pep614(probing.upon(_Monitor.roundAnswered).loop())
    def answered(monitor: _Monitor, core: _Core, probing: _Probing, rtt: float) -> None:
        core.notify(core.onSample, rtt)
        core.notify(core.onAnswered, rtt)

    @pep614(probing.upon(_Monitor.roundMissed).loop())
    def missed(monitor: _Monitor, core: _Core, probing: _Probing, count: int) -> None:
        core.notify(core.onSample, None)
        core.notify(core.onMissed, count)

    @pep614(probing.upon(_Monitor.probesExhausted).to(lost))
    def giveUp(monitor: _Monitor, core: _Core, probing: _Probing, count: int) -> None:
        probing.cancel()
        core.lostReason = f"no answer from {', '.join(core.targets)} in {count} probes"
        log.warn("gateway lost: {reason}", reason=core.lostReason)
        core.notify(core.onSample, None)
        core.notify(core.onLost, core.lostReason)

    # Stragglers: a timer tick or a settled round racing a stop or a loss.
    for state in (idle, lost, stopped):
        state.upon(_Monitor.intervalElapsed).loop().returns(None)
        state.upon(_Monitor.roundAnswered).loop().returns(None)
        state.upon(_Monitor.roundMissed).loop().returns(None)
        state.upon(_Monitor.probesExhausted).loop().returns(None)

    @pep614(probing.upon(_Monitor.describe).loop())
    def describeProbing(monitor: _Monitor, core: _Core, probing: _Probing) -> dict:
        return {"state": "probing", "targets": list(core.targets),
                "missed": probing.missedInARow, "outstanding": len(probing.rounds)}

    @pep614(lost.upon(_Monitor.describe).loop())
    def describeLost(monitor: _Monitor, core: _Core) -> dict:
        return {"state": "lost", "targets": list(core.targets), "reason": core.lostReason}

    for state, name in ((idle, "idle"), (stopped, "stopped")):
        @pep614(state.upon(_Monitor.describe).loop())
        def describe(monitor: _Monitor, core: _Core, name: str = name) -> dict:
            return {"state": name, "targets": list(core.targets)}

    return m.build()


_makeMonitor = _buildMachine()


def HealthMonitor(reactor, pinger, targets: list[str], interval: float = 0.25,
                  timeout: float = 0.75, misses: int = 3,
                  onMissed: Callable[[int], object] = _nothing,
                  onAnswered: Callable[[float], object] = _nothing,
                  onLost: Callable[[str], object] = _nothing,
                  onSample: Callable[[float | None], object] = _nothing) -> _Monitor:
    """
    A gateway health monitor probing C{targets} through C{pinger} (an
    L{mnigs.interfaces.IPinger}); see the module docstring for the timing.

    Callbacks, once per counted round, in the order the rounds started:
    C{onSample(rtt or None)} for every round, then C{onAnswered(rtt)} (the
    first answer's round-trip time; resets the count), or C{onMissed(n)}
    for the n-th unanswered round in a row, or, when n reaches C{misses},
    C{onLost(reason)} once, after which the monitor has stopped itself.

    Returns an object with C{start()}, C{stop()} (abandons everything
    outstanding; no callbacks after it) and C{describe()}.
    """
    if not targets:
        raise ValueError("a health monitor needs at least one target")
    if interval <= 0 or timeout <= 0:
        raise ValueError("interval and timeout must be positive")
    if misses < 1:
        raise ValueError("misses must be at least 1")
    return _makeMonitor(_Core(reactor, pinger, list(targets), interval, timeout, misses,
                              onMissed, onAnswered, onLost, onSample))
