# -*- test-case-name: tests.unit.test_health -*-
"""
How the client notices, within a fraction of a second, that its gateway
went silent.

Babel with its default timers takes 7-14 s to route around a gateway that
silently stops answering: far too long for someone on a video call.  So
the client probes the gateway itself, several times a second, and gives up
on it after a few unanswered rounds in a row.

Every C{interval} a probe round starts: one echo to every target, through
the session's tunnel device (the pinger is bound to it, so no mesh route
can answer or swallow a probe).  The targets are L{ProbeTargets}: the
gateway itself (its inner address, or C{health.targets}) and, beyond it,
Internet addresses (the offer's C{probe} list, C{health.beyond}).  When
there are Internet targets a round succeeds only if one of I{them}
answers within C{timeout}: online means the Internet answers.  The gateway
is still probed, so that a loss can say whether the gateway itself still
answered.  Without Internet targets I{any} target's answer will do.  With
C{timeout > interval} rounds overlap; their results are still counted in
the order the rounds started, so "three misses in a row" means three
consecutive rounds.

Before a session counts as online, L{firstAnswer} probes the same targets
every 0.1 s until a round is answered by the same rule, or a deadline
passes (see the client machine's C{verifying} state).

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

Paced probes and the dead time (C{health.pacing}, the default)
==============================================================

Rounds every C{interval} are slow for a mesh whose round trip is a few
milliseconds, and "three misses in a row" gives up on a healthy gateway
whenever three probes are lost together.  So, beside the rounds, a
heartbeat probes the gateway (its inner address; the Internet targets
when there is none) at the pace of the measured round trip, and the
gateway is dead when I{nothing} was heard from it for the dead time
(L{mnigs.client.pacing} has the formulas and the loss arithmetic)::

    pace      = clamp(srtt, min_interval, interval)          0.02 s here
    timeout   = clamp(srtt + 4 rttvar, min_timeout, timeout) 0.05 s here
    dead time = dead_probes * pace + timeout                 0.37 s here

Evidence of life, each of which starts the dead time again:

  - any answer, from any target, to a heartbeat or a round, even one that
    arrives after its probe's timeout (probes wait up to C{timeout}, the
    ceiling): a late answer is still the gateway talking;
  - bytes received by the tunnel device (C{received}; WireGuard, OpenVPN
    and SoftEther, whose devices only carry what the gateway sent: see
    L{mnigs.client.service.RX_EVIDENCE}).  The counter is read at half the
    dead time and again at its end; if it grew, the gateway was alive at
    the first reading.  This proves that the gateway's side of the tunnel
    sent something, authenticated, that crossed the mesh to us; it proves
    neither that our packets reach the gateway (the path may fail one way)
    nor that the gateway's uplink works, so it only postpones the dead
    time, and never makes a session online (L{firstAnswer} does).

The detection time after the last sign of life is the dead time: 0.37 s
on a mesh with a round trip of a few ms, 0.89 s over a 50 ms Wi-Fi hop,
at most C{dead_probes * interval + timeout} (4.75 s) on a very slow one.

The rounds go on every C{interval} to every target and keep their
meaning for the callbacks (C{onAnswered}, C{onMissed}, C{onSample}: the
client machine's online and degraded, the quality history).  With
Internet targets they also keep the Internet rule: C{misses} rounds in a
row unanswered by the Internet, while the gateway still answers the
heartbeat, is a loss of the Internet beyond the gateway.  A round sends
C{echoes} echo requests to each target whose answer counts (the Internet
targets, or without them the gateway's), and one answer is enough, so a
round is lost with p ** echoes when each echo is lost with p: with 10 %
loss on each of four links crossed (p = 0.34) and 3 echoes, 0.039 per
round, and 5 rounds in a row 9e-8 (one false loss in some 100 days of
rounds).  The Internet beyond a gateway whose uplink died is then given
up 5 * 0.25 s + 0.75 s = 2.0 s after the last answered round started
(a single echo a round would need 12 rounds, 3.75 s, for the same
odds).

The monitor's L{Quality} (loss and round trip over C{quality_window}
seconds; L{_HealthMonitor.quality}) counts every heartbeat probe (lost
once its timeout passed) and every round; the client's degradation judge
(L{mnigs.client.degrade}) reads it.

    idle --start--> probing --probesExhausted--> lost
    probing --deadTimeExpired--> lost
    every state --stop--> stopped; lost/stopped --start--> probing
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.client.heartbeat import Heartbeat
from mnigs.client.pacing import Pacing, Quality, QualityWindow
from mnigs.client.reasons import PROBES, Reason

log = Logger()

_PENDING = object()


def _nothing(*args: object) -> None:
    pass


@dataclass(frozen=True)
class ProbeTargets:
    """
    What a session probes and through which device.

    @ivar gateway: the gateway itself (its inner address, or
        C{health.targets}).
    @ivar internet: addresses beyond the gateway (the offer's C{probe}
        list, C{health.beyond}); when there are any, only their answers
        count.
    @ivar device: the network device the probes are bound to, for log
        lines and reasons (the pinger does the binding).
    """

    gateway: tuple[str, ...] = ()
    internet: tuple[str, ...] = ()
    device: str | None = None

    @classmethod
    def of(cls, gateway: Iterable[str], internet: Iterable[str] = (),
           device: str | None = None) -> "ProbeTargets":
        """Each address once; one listed as both counts as the Internet."""
        internet = tuple(dict.fromkeys(str(t) for t in internet if t))
        gateway = tuple(t for t in dict.fromkeys(str(t) for t in gateway if t)
                        if t not in internet)
        return cls(gateway, internet, device)

    def all(self) -> list[str]:
        return list(self.internet + self.gateway)

    def counts(self, target: str) -> bool:
        """Whether an answer from C{target} makes a round answered."""
        return not self.internet or target in self.internet

    def through(self) -> str:
        return f" through {self.device}" if self.device else ""

    def describe(self) -> str:
        """C{9.9.9.9 (internet), 100.64.0.1 (gateway)}, for log lines."""
        if not self.internet:
            return ", ".join(self.gateway)
        return ", ".join([f"{t} (internet)" for t in self.internet]
                         + [f"{t} (gateway)" for t in self.gateway])

    def unanswered(self, gatewayAnswered: bool) -> str:
        """
        Which targets went unanswered, for a reason: the Internet's alone
        when the gateway still answers, all of them when nothing does.
        """
        if self.internet and self.gateway and gatewayAnswered:
            return (f"the Internet beyond {', '.join(self.gateway)} does not answer (the "
                    f"gateway does): no answer from {', '.join(self.internet)}")
        if self.internet and self.gateway:
            return f"nothing answers: no answer from {', '.join(self.all())}"
        return f"no answer from {', '.join(self.all())}"


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

    def deadTimeExpired(self, reason: str) -> None:
        "Paced probes: nothing was heard from the gateway for the dead time."

    def describe(self) -> dict:
        "Status for humans and mnigsctl."


@dataclass
class _Core:
    reactor: object
    pinger: object
    targets: ProbeTargets
    interval: float
    timeout: float
    misses: int
    onMissed: Callable[[int], object]
    onAnswered: Callable[[float], object]
    onLost: Callable[[str], object]
    onSample: Callable[[float | None], object]
    pacing: Pacing | None = None
    received: Callable[[], int | None] | None = None
    window: QualityWindow = field(default_factory=QualityWindow)
    #: echo requests a round sends to each target whose answer counts
    echoes: int = 1
    lostReason: str = ""
    gatewayAnsweredAt: float | None = None
    #: target -> (when it last answered, its round-trip time), for the status
    lastAnswers: dict = field(default_factory=dict)

    def answeredBy(self, target: str, rtt: float) -> None:
        now = self.reactor.seconds()
        self.lastAnswers[target] = (now, rtt)
        if target in self.targets.gateway:
            self.gatewayAnsweredAt = now

    def answers(self) -> list[dict]:
        """
        Each target's last answer: its round-trip time and how long ago
        (C{None} for both: it never answered).
        """
        now = self.reactor.seconds()
        out = []
        for target in self.targets.all():
            at, rtt = self.lastAnswers.get(target, (None, None))
            out.append({"target": target,
                        "kind": "internet" if target in self.targets.internet else "gateway",
                        "rtt_ms": None if rtt is None else round(rtt * 1000, 1),
                        "answered_ago": None if at is None else round(now - at, 2)})
        return out

    def status(self, state: str, **extra: object) -> dict:
        status = {"state": state, "targets": self.targets.all(), "answers": self.answers()}
        if self.pacing is not None:
            status["quality"] = self.window.quality(self.reactor.seconds()).toDict()
        if self.targets.device:
            status["device"] = self.targets.device
        if self.targets.internet and self.targets.gateway:
            status["gateway_answered_ago"] = (
                None if self.gatewayAnsweredAt is None
                else round(self.reactor.seconds() - self.gatewayAnsweredAt, 2))
        status.update(extra)
        return status

    def notify(self, callback: Callable, *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.failure("health monitor callback {callback!r} failed", callback=callback)


class _Round:
    """
    One probe round: an echo to every target (C{echoes} of them to each
    target whose answer counts), a deadline of C{timeout}.
    Its C{result} is C{_PENDING}, then the first counting answer's
    round-trip time (see L{ProbeTargets.counts}) or C{None};
    C{gatewayAnswered} says whether a gateway target answered meanwhile.
    C{onAnswer(target, rtt)} hears every answer that arrives in time.
    """

    def __init__(self, reactor, pinger, targets: ProbeTargets, timeout: float,
                 settled: Callable[[], None],
                 onAnswer: Callable[[str, float], None] = _nothing, echoes: int = 1) -> None:
        self.result: object = _PENDING
        self._echoes = echoes
        self.gatewayAnswered = False
        self._reactor = reactor
        self._pinger = pinger
        self._targets = targets
        self._timeout = timeout
        self._settled = settled
        self._onAnswer = onAnswer
        self._outstanding: list[Deferred] = []
        self._deadline: IDelayedCall | None = None

    def send(self) -> None:
        """
        Probe every target.  Pingers may answer synchronously: every probe
        is sent before any result is looked at, so that an early C{None}
        does not settle the round while other targets are unasked.
        """
        self._deadline = self._reactor.callLater(self._timeout, self._settle, None)
        sent = [(target, maybeDeferred(self._pinger.ping, target, self._timeout))
                for target in self._targets.all()
                for _ in range(self._echoes if self._targets.counts(target) else 1)]
        self._outstanding = [d for target, d in sent]
        for target, d in sent:
            d.addCallbacks(self._pinged, self._failed, callbackArgs=(target, d),
                           errbackArgs=(target, d))

    def _pinged(self, rtt: float | None, target: str, d: Deferred) -> None:
        self._outstanding.remove(d)
        if rtt is not None:
            self._onAnswer(target, rtt)
        if rtt is not None and target in self._targets.gateway:
            self.gatewayAnswered = True
        if rtt is not None and self._targets.counts(target):
            self._settle(rtt)
        elif not self._outstanding:
            self._settle(None)

    def _failed(self, failure, target: str, d: Deferred) -> None:
        if self.result is _PENDING:
            log.debug("probe to {target} failed: {error}", target=target, error=failure.value)
        self._pinged(None, target, d)

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
    #: whether the gateway answered in one of the rounds missed in a row
    gatewayAnsweredMissing: bool = False
    timer: LoopingCall | None = None

    #: paced probes and the dead-time rule, when the core has a pacing
    heartbeat: Heartbeat | None = None

    def startRound(self) -> None:
        core = self.core
        probeRound = _Round(core.reactor, core.pinger, core.targets, core.timeout, self.count,
                            self.answeredBy, core.echoes)
        self.rounds.append(probeRound)
        probeRound.send()

    def count(self) -> None:
        """
        Feed the machine every settled round at the head of the queue: a
        round that settles early waits for the rounds started before it.
        """
        core = self.core
        while self.rounds and self.rounds[0].result is not _PENDING:
            probeRound = self.rounds.popleft()
            rtt = probeRound.result
            core.window.add(core.reactor.seconds(),
                            "internet" if core.targets.internet else "gateway", rtt)
            if rtt is not None:
                self.missedInARow = 0
                self.gatewayAnsweredMissing = False
                self.monitor.roundAnswered(rtt)
            else:
                self.missedInARow += 1
                self.gatewayAnsweredMissing |= probeRound.gatewayAnswered
                # Paced, the heartbeat judges the gateway: the rounds only
                # judge the Internet beyond it.
                if self.missedInARow >= self.core.misses and (
                        self.heartbeat is None or core.targets.internet):
                    self.monitor.probesExhausted(self.missedInARow)
                    return
                self.monitor.roundMissed(self.missedInARow)

    def answeredBy(self, target: str, rtt: float) -> None:
        self.core.answeredBy(target, rtt)
        if self.heartbeat is not None:
            self.heartbeat.heard()

    def cancel(self) -> None:
        if self.timer is not None and self.timer.running:
            self.timer.stop()
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        rounds, self.rounds = self.rounds, collections.deque()
        for probeRound in rounds:
            probeRound.cancel()


def _startProbing(monitor: _Monitor, core: _Core) -> _Probing:
    log.info("health: probing {targets}{through} every {interval} s",
             targets=core.targets.describe(), through=core.targets.through(),
             interval=f"{core.interval:g}", device=core.targets.device)
    probing = _Probing(monitor, core)
    if core.pacing is not None:
        pacing = core.pacing
        log.info("health: paced probes to {paced} every {low:g}-{high:g} s from the RTT, "
                 "dead after {n} unanswered{evidence}", paced=", ".join(
                     core.targets.gateway or core.targets.internet),
                 low=pacing.minInterval, high=pacing.maxInterval, n=pacing.deadProbes,
                 evidence=" (bytes the tunnel receives count as life)"
                 if core.received is not None else "")
        targets = core.targets
        probing.heartbeat = Heartbeat(
            core.reactor, core.pinger, targets.gateway or targets.internet,
            "gateway" if targets.gateway else "internet", pacing, core.window, core.received,
            core.answeredBy, lambda: f"{targets.unanswered(False)}{targets.through()}",
            monitor.deadTimeExpired)
        probing.heartbeat.start()
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
        gatewayAnswered = probing.gatewayAnsweredMissing
        lose(core, probing, f"{core.targets.unanswered(gatewayAnswered)}"
                            f"{core.targets.through()} in {count} probes", gatewayAnswered)

    @pep614(probing.upon(_Monitor.deadTimeExpired).to(lost))
    def silent(monitor: _Monitor, core: _Core, probing: _Probing, reason: str) -> None:
        lose(core, probing, reason, False)

    def lose(core: _Core, probing: _Probing, reason: str, gatewayAnswered: bool) -> None:
        probing.cancel()
        core.lostReason = Reason(PROBES, reason)
        core.lostReason.gatewayAnswered = gatewayAnswered
        log.warn("gateway lost: {reason}", reason=core.lostReason)
        core.notify(core.onSample, None)
        core.notify(core.onLost, core.lostReason)

    # Stragglers: a timer tick or a settled round racing a stop or a loss.
    for state in (idle, lost, stopped):
        state.upon(_Monitor.deadTimeExpired).loop().returns(None)
        state.upon(_Monitor.intervalElapsed).loop().returns(None)
        state.upon(_Monitor.roundAnswered).loop().returns(None)
        state.upon(_Monitor.roundMissed).loop().returns(None)
        state.upon(_Monitor.probesExhausted).loop().returns(None)

    @pep614(probing.upon(_Monitor.describe).loop())
    def describeProbing(monitor: _Monitor, core: _Core, probing: _Probing) -> dict:
        extra = {} if probing.heartbeat is None else {"paced": probing.heartbeat.describe()}
        return core.status("probing", missed=probing.missedInARow,
                           outstanding=len(probing.rounds), **extra)

    @pep614(lost.upon(_Monitor.describe).loop())
    def describeLost(monitor: _Monitor, core: _Core) -> dict:
        return core.status("lost", reason=core.lostReason)

    for state, name in ((idle, "idle"), (stopped, "stopped")):
        @pep614(state.upon(_Monitor.describe).loop())
        def describe(monitor: _Monitor, core: _Core, name: str = name) -> dict:
            return core.status(name)

    return m.build()


_makeMonitor = _buildMachine()


def HealthMonitor(reactor, pinger, targets: ProbeTargets | list[str], interval: float = 0.25,
                  timeout: float = 0.75, misses: int = 3,
                  onMissed: Callable[[int], object] = _nothing,
                  onAnswered: Callable[[float], object] = _nothing,
                  onLost: Callable[[str], object] = _nothing,
                  onSample: Callable[[float | None], object] = _nothing,
                  pacing: Pacing | None = None,
                  received: Callable[[], int | None] | None = None,
                  qualityWindow: float = 4.0, echoes: int = 1) -> "_HealthMonitor":
    """
    A gateway health monitor probing C{targets} (L{ProbeTargets}, or a
    plain list whose every answer counts) through C{pinger} (an
    L{mnigs.interfaces.IPinger}); see the module docstring for the timing.

    Callbacks, once per counted round, in the order the rounds started:
    C{onSample(rtt or None)} for every round, then C{onAnswered(rtt)} (the
    first answer's round-trip time; resets the count), or C{onMissed(n)}
    for the n-th unanswered round in a row, or, when n reaches C{misses},
    C{onLost(reason)} once, after which the monitor has stopped itself.

    With C{pacing} (L{Pacing}), paced probes to the gateway run beside
    the rounds and C{onLost} is also called when nothing was heard for
    the dead time; C{received()} (bytes the tunnel device has received,
    or C{None}) then counts as life too.  See the module docstring.

    Each round sends C{echoes} echo requests to each target whose answer
    counts (see the module docstring).

    Returns an object with C{start()}, C{stop()} (abandons everything
    outstanding; no callbacks after it), C{describe()} and C{quality()}
    (L{Quality} over the last C{qualityWindow} seconds).
    """
    if not isinstance(targets, ProbeTargets):
        targets = ProbeTargets.of(targets)
    if not targets.all():
        raise ValueError("a health monitor needs at least one target")
    if interval <= 0 or timeout <= 0:
        raise ValueError("interval and timeout must be positive")
    if misses < 1 or echoes < 1:
        raise ValueError("misses and echoes must be at least 1")
    core = _Core(reactor, pinger, targets, interval, timeout, misses, onMissed, onAnswered,
                 onLost, onSample, pacing, received, QualityWindow(qualityWindow), echoes)
    return _HealthMonitor(_makeMonitor(core), core)


class _HealthMonitor:
    """
    The monitor's machine, and its quality window read directly: the
    quality is the same in every state, and is asked for from inside the
    machine's own callbacks (the agent judges it after each round), where
    a machine input would be reentrant.
    """

    def __init__(self, machine: _Monitor, core: _Core) -> None:
        self._machine = machine
        self._core = core
        self.start = machine.start
        self.stop = machine.stop
        self.describe = machine.describe

    def quality(self) -> Quality:
        "The tunnel's quality over the quality window (L{mnigs.client.pacing})."
        return self._core.window.quality(self._core.reactor.seconds())


class NoAnswer(Exception):
    """No probe round was answered before the deadline; the message says which."""


class _FirstAnswer:
    """
    The life of one L{firstAnswer}: a round every C{interval} until one is
    answered or the deadline passes.  It ends once, with its Deferred, so
    the Deferred's firing is its only state change and no machine is
    needed.
    """

    def __init__(self, reactor, pinger, targets: ProbeTargets, interval: float,
                 deadline: float) -> None:
        self.reactor = reactor
        self.pinger = pinger
        self.targets = targets
        self.deadline = deadline
        self.endsAt = reactor.seconds() + deadline
        self.maxRounds = max(1, math.ceil(deadline / interval))
        self.rounds: list[_Round] = []
        self.gatewayAnswered = False
        self.result = Deferred(lambda d: self.finish())
        self.interval = interval
        self.timer = LoopingCall(self.startRound)
        self.timer.clock = reactor
        self.expiry = reactor.callLater(deadline, self.expire)

    def start(self) -> Deferred:
        self.timer.start(self.interval, now=True)
        return self.result

    def startRound(self) -> None:
        remaining = self.endsAt - self.reactor.seconds()
        if len(self.rounds) >= self.maxRounds or remaining <= 0:
            self.timer.stop()
            return
        probeRound = _Round(self.reactor, self.pinger, self.targets, remaining,
                            lambda: self.settled(probeRound))
        self.rounds.append(probeRound)
        probeRound.send()

    def settled(self, probeRound: _Round) -> None:
        self.gatewayAnswered |= probeRound.gatewayAnswered
        if probeRound.result is not None and not self.result.called:
            rtt = probeRound.result
            self.finish()
            self.result.callback(rtt)

    def expire(self) -> None:
        if self.result.called:
            return
        for probeRound in self.rounds:
            self.gatewayAnswered |= probeRound.gatewayAnswered
        self.finish()
        targets = self.targets
        if targets.internet and targets.gateway and self.gatewayAnswered:
            why = (f"no probe answer from the Internet ({', '.join(targets.internet)})"
                   f"{targets.through()} within {self.deadline:g} s; the gateway "
                   f"({', '.join(targets.gateway)}) answers")
        else:
            why = (f"no probe answer{targets.through()} from {', '.join(targets.all())} "
                   f"within {self.deadline:g} s")
        self.result.errback(NoAnswer(why))

    def finish(self) -> None:
        if self.timer.running:
            self.timer.stop()
        if self.expiry.active():
            self.expiry.cancel()
        rounds, self.rounds = self.rounds, []
        for probeRound in rounds:
            probeRound.cancel()


def firstAnswer(reactor, pinger, targets: ProbeTargets, interval: float = 0.1,
                deadline: float = 1.0) -> Deferred:
    """
    Probe C{targets} through C{pinger} every C{interval} (at most
    C{deadline / interval} rounds, every probe waiting at most until the
    deadline) until a round is answered by the rule of L{ProbeTargets}.
    The Deferred fires with that answer's round-trip time, or fails with
    L{NoAnswer} once C{deadline} seconds have passed without one.
    Cancelling it abandons every outstanding probe.
    """
    if not targets.all():
        raise ValueError("nothing to probe")
    if interval <= 0 or deadline <= 0:
        raise ValueError("interval and deadline must be positive")
    return _FirstAnswer(reactor, pinger, targets, interval, deadline).start()
