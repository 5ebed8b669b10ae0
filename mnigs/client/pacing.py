# -*- test-case-name: tests.unit.test_pacing -*-
"""
The arithmetic of paced health probes, without I/O: a round-trip
estimator (RFC 6298's, without its 1 s floor), the pace and dead time it
gives (L{Pacing}) and a sliding window of probe outcomes that measures a
tunnel's quality (L{QualityWindow}).  L{mnigs.client.health} sends the
probes; L{mnigs.client.degrade} judges the quality.

Pace and dead time
==================

With C{srtt} and C{rttvar} the smoothed round trip and its variation
(gain 1/8 and 1/4, RFC 6298 section 2)::

    interval  = clamp(srtt,                minInterval, maxInterval)
    timeout   = clamp(srtt + 4 * rttvar,   minTimeout,  maxTimeout)
    dead time = deadProbes * interval + timeout

Before the first answer C{srtt} is unknown and the ceilings hold.  One
probe per round trip keeps about C{timeout / interval} probes in flight;
the dead time spans C{deadProbes} of them, every one of which must go
unanswered (no answer may even arrive late) before the gateway is given
up: with independent losses of probability C{p} per probe, a healthy
gateway is falsely given up with probability C{p ** deadProbes} per
probe sent.

On a namespace mesh (RTT 1-3 ms) the floors hold: one probe every 0.02 s,
a timeout of 0.05 s, dead time 16 * 0.02 + 0.05 = 0.37 s.  When every
mesh link drops 10 % and a probe crosses four links there and back,
p = 1 - 0.9 ** 4 = 0.34: 0.34 ** 16 = 3.6e-8 per probe, so about 5e-4
false losses in 5 minutes of probing (15,000 probes).  On a 50 ms Wi-Fi
path (rttvar 10 ms): one probe every 0.05 s, timeout 0.09 s, dead time
0.89 s; on a 300 ms path the ceilings: 0.25 s, 0.75 s, 4.75 s.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass
class RttEstimator:
    """RFC 6298's smoothed round trip C{srtt} and its variation C{rttvar}."""

    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, rtt: float) -> None:
        if rtt < 0:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt


@dataclass(frozen=True)
class Pacing:
    """
    Floors and ceilings of the probe pace (see the module docstring);
    C{deadProbes} probes in a row must go unanswered before a gateway is
    dead.
    """

    minInterval: float = 0.02
    maxInterval: float = 0.25
    minTimeout: float = 0.05
    maxTimeout: float = 0.75
    deadProbes: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.minInterval <= self.maxInterval:
            raise ValueError("need 0 < min_interval <= interval")
        if not 0 < self.minTimeout <= self.maxTimeout:
            raise ValueError("need 0 < min_timeout <= timeout")
        if self.deadProbes < 1:
            raise ValueError("dead_probes must be at least 1")

    def interval(self, rtt: RttEstimator) -> float:
        if rtt.srtt is None:
            return self.maxInterval
        return _clamp(rtt.srtt, self.minInterval, self.maxInterval)

    def timeout(self, rtt: RttEstimator) -> float:
        if rtt.srtt is None:
            return self.maxTimeout
        return _clamp(rtt.srtt + 4 * rtt.rttvar, self.minTimeout, self.maxTimeout)

    def deadTime(self, rtt: RttEstimator) -> float:
        return self.deadProbes * self.interval(rtt) + self.timeout(rtt)


#: The confidence of the loss bounds (z for 95 %, two-sided).
Z = 1.96


def lossBounds(lost: int | float, sent: int | float) -> tuple[float, float]:
    """
    The Wilson score interval of a loss fraction: C{lost} of C{sent}
    probes were lost; C{(0, 1)} when nothing was sent.  A window of 20
    probes of which 11 were lost says 0.34-0.74; one of 250 with 86 lost
    0.29-0.40.
    """
    if sent <= 0:
        return 0.0, 1.0
    p = lost / sent
    denominator = 1 + Z * Z / sent
    centre = (p + Z * Z / (2 * sent)) / denominator
    half = Z * ((p * (1 - p) / sent + Z * Z / (4 * sent * sent)) ** 0.5) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Quality:
    """
    A tunnel's quality over a window: the fraction of probes lost (the
    worse of the gateway's and the Internet's) with the bounds the number
    of probes allows (L{lossBounds}, the worse kind's each), the median
    round trip of the answered ones and the lowest round trip the
    monitor has seen (its path's floor), in seconds; C{samples} probes in
    C{span} seconds.
    """

    loss: float
    rtt: float | None
    minRtt: float | None
    samples: int
    span: float
    lossLow: float = 0.0
    lossHigh: float = 1.0

    def toDict(self) -> dict:
        def ms(value):
            return None if value is None else round(value * 1000, 2)
        return {"loss": round(self.loss, 3),
                "loss_bounds": [round(self.lossLow, 3), round(self.lossHigh, 3)],
                "rtt_ms": ms(self.rtt), "min_rtt_ms": ms(self.minRtt),
                "samples": self.samples, "span_s": round(self.span, 2)}


class QualityWindow:
    """
    The outcomes of the probes of the last C{window} seconds: C{add(now,
    kind, rtt)} with C{rtt} C{None} for a probe that went unanswered,
    C{kind} C{"gateway"} or C{"internet"}.
    """

    def __init__(self, window: float = 4.0) -> None:
        self.window = window
        self.samples: collections.deque = collections.deque()
        self.minRtt: float | None = None
        self.since: float | None = None

    def add(self, now: float, kind: str, rtt: float | None) -> None:
        if self.since is None:
            self.since = now
        self.samples.append((now, kind, rtt))
        if rtt is not None and (self.minRtt is None or rtt < self.minRtt):
            self.minRtt = rtt
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    def quality(self, now: float) -> Quality:
        self._forget(now)
        counted = {"gateway": [0, 0], "internet": [0, 0]}
        rtts = []
        for _, kind, rtt in self.samples:
            counted[kind][0] += 1
            if rtt is None:
                counted[kind][1] += 1
            else:
                rtts.append(rtt)
        kinds = [(sent, lost) for sent, lost in counted.values() if sent]
        loss = max((lost / sent for sent, lost in kinds), default=0.0)
        bounds = [lossBounds(lost, sent) for sent, lost in kinds] or [(0.0, 1.0)]
        span = 0.0 if self.since is None else min(self.window, now - self.since)
        return Quality(loss, statistics.median(rtts) if rtts else None, self.minRtt,
                       len(self.samples), span, max(low for low, _ in bounds),
                       max(high for _, high in bounds))
