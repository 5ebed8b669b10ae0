"""
What this client remembers about each gateway it has used or tried: how
often sessions worked, how often they failed, how the gateway answered
probes.  The ranking (L{mnigs.client.ranking}) reads it so that a gateway
that keeps refusing or dropping us sinks, and one that behaves rises again
as its failures age.

Attributes are camelCase; the state file uses snake_case keys, like the
lease file.  Times are epoch seconds from the clock handed in.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass

from twisted.logger import Logger

from mnigs.system.statefile import StateFileCorrupt, readJSON, writeJSON

log = Logger()

HISTORY_FILE = "history.json"
HISTORY_VERSION = 1

# Weight of the newest probe in the RTT and loss averages: about the last
# ten probes count, so one lost packet does not condemn a gateway.
PROBE_ALPHA = 0.1

MAX_REASON = 256
MAX_GATEWAY_ID = 128


@dataclass
class GatewayQuality:
    """
    The record of one gateway.

    @ivar sessions: sessions that came up (registered and tunnel up).
    @ivar failures: things that went wrong: registration refused, tunnel
        failed, health lost.
    @ivar onlineSeconds: total time spent online through this gateway.
    @ivar rttMs: moving average of probe round trips, C{None} before the
        first answer.
    @ivar loss: moving average of lost probes, 0 (none) to 1 (all).
    @ivar lastFailure: when the last failure happened, or C{None}.
    @ivar lastFailureReason: what it was, for status output.
    @ivar lastSeen: the last time anything was heard from or about the
        gateway; the history forgets the least recently seen first.
    @ivar bytesIn: bytes received through this gateway's tunnels.
    @ivar bytesOut: bytes sent through them.
    """

    sessions: int = 0
    failures: int = 0
    onlineSeconds: float = 0.0
    rttMs: float | None = None
    loss: float = 0.0
    lastFailure: float | None = None
    lastFailureReason: str = ""
    lastSeen: float | None = None
    bytesIn: int = 0
    bytesOut: int = 0

    def seen(self, now: float) -> None:
        """
        The gateway showed up (in discovery, say): it is worth remembering.
        """
        self.lastSeen = now

    def sessionStarted(self, now: float) -> None:
        self.sessions += 1
        self.lastSeen = now

    def sessionEnded(self, now: float, secondsOnline: float) -> None:
        if _sane(secondsOnline):
            self.onlineSeconds += secondsOnline
        self.lastSeen = now

    def failed(self, now: float, why: str) -> None:
        """
        Count a failure: registration refused, tunnel failed, health lost.
        """
        self.failures += 1
        self.lastFailure = now
        self.lastFailureReason = str(why)[:MAX_REASON]
        self.lastSeen = now

    def probe(self, rttMs: float | None, now: float | None = None) -> None:
        """
        Fold one probe into the averages: C{rttMs} is the round trip in
        milliseconds, or C{None} if the probe went unanswered (a negative
        or infinite time counts as unanswered too, so that the state file
        never holds a value it would refuse to load).  An answer
        at C{now} also counts as seeing the gateway.
        """
        lost = not _sane(rttMs)
        self.loss = (1 - PROBE_ALPHA) * self.loss + PROBE_ALPHA * (1.0 if lost else 0.0)
        if lost:
            return
        if self.rttMs is None:
            self.rttMs = rttMs
        else:
            self.rttMs = (1 - PROBE_ALPHA) * self.rttMs + PROBE_ALPHA * rttMs
        if now is not None:
            self.lastSeen = now

    def traffic(self, bytesIn: int, bytesOut: int) -> None:
        self.bytesIn += max(0, int(bytesIn))
        self.bytesOut += max(0, int(bytesOut))

    def toDict(self) -> dict:
        return {
            "sessions": self.sessions,
            "failures": self.failures,
            "online_seconds": self.onlineSeconds,
            "rtt_ms": self.rttMs,
            "loss": self.loss,
            "last_failure": self.lastFailure,
            "last_failure_reason": self.lastFailureReason,
            "last_seen": self.lastSeen,
            "bytes_in": self.bytesIn,
            "bytes_out": self.bytesOut,
        }

    @classmethod
    def fromDict(cls, record) -> GatewayQuality:
        """
        Rebuild a record written by L{toDict}, raising ValueError on any
        member of the wrong type or out of range.  Missing members take
        their defaults and unknown ones are ignored, so that a file written
        by a newer or older version still loads.
        """
        if not isinstance(record, dict):
            raise ValueError("gateway record must be an object")
        return cls(
            sessions=_count(record, "sessions"),
            failures=_count(record, "failures"),
            onlineSeconds=_number(record, "online_seconds", 0.0),
            rttMs=_number(record, "rtt_ms", None),
            loss=_number(record, "loss", 0.0, high=1.0),
            lastFailure=_number(record, "last_failure", None),
            lastFailureReason=_reason(record),
            lastSeen=_number(record, "last_seen", None),
            bytesIn=_count(record, "bytes_in"),
            bytesOut=_count(record, "bytes_out"),
        )


def _sane(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _count(record: dict, key: str) -> int:
    value = record.get(key, 0)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _number(record: dict, key: str, default, high: float = math.inf):
    value = record.get(key, default)
    if value is None and default is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= high:
        raise ValueError(f"{key} must be a number from 0 to {high}")
    return float(value)


def _reason(record: dict) -> str:
    value = record.get("last_failure_reason", "")
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise ValueError(f"last_failure_reason must be text of at most {MAX_REASON} characters")
    return value


def parseSnapshot(value) -> dict[str, GatewayQuality]:
    """
    Turn what L{QualityHistory.snapshot} produced back into records,
    raising ValueError if it is anything else.
    """
    if not isinstance(value, dict) or value.get("version") != HISTORY_VERSION:
        raise ValueError(f"not a version {HISTORY_VERSION} history file")
    gateways = value.get("gateways")
    if not isinstance(gateways, dict):
        raise ValueError("gateways must be an object")
    parsed = {}
    for gid, record in gateways.items():
        if not isinstance(gid, str) or not 0 < len(gid) <= MAX_GATEWAY_ID:
            raise ValueError(f"gateway ids must be 1 to {MAX_GATEWAY_ID} characters")
        try:
            parsed[gid] = GatewayQuality.fromDict(record)
        except ValueError as e:
            raise ValueError(f"gateway {gid}: {e}") from None
    return parsed


class HistoryFile:
    """
    The history in C{history.json} in the state directory, written
    atomically.
    """

    def __init__(self, stateDir: str):
        self.path = os.path.join(stateDir, HISTORY_FILE)

    def load(self):
        """
        The stored snapshot, or C{None} if there is none yet.  Raises
        L{StateFileCorrupt} after moving an unreadable file aside.
        """
        return readJSON(self.path, None, validate=parseSnapshot)

    def save(self, snapshot: dict) -> None:
        writeJSON(self.path, snapshot)


def _age(item: tuple[str, GatewayQuality]) -> tuple:
    gid, quality = item
    # Never-seen records go first; ties by id so that pruning is
    # deterministic.
    return (-math.inf if quality.lastSeen is None else quality.lastSeen, gid)


class QualityHistory:
    """
    L{GatewayQuality} records by gateway id, at most C{maxGateways} of them:
    a mesh can be large, and a client that wandered through many of them
    should not keep every gateway it ever heard of.

    @param clock: an L{IReactorTime}; C{seconds()} stamps new records.
    @param store: something with C{load()} and C{save(snapshot)} like
        L{HistoryFile}, or C{None} to remember nothing across restarts.
    """

    def __init__(self, clock, store=None, maxGateways: int = 1000):
        if maxGateways < 1:
            raise ValueError("maxGateways must be at least 1")
        self.clock = clock
        self.store = store
        self.maxGateways = maxGateways
        self.gateways: dict[str, GatewayQuality] = {}

    def __len__(self) -> int:
        return len(self.gateways)

    def __contains__(self, gid: str) -> bool:
        return gid in self.gateways

    def get(self, gid: str) -> GatewayQuality:
        """
        The record of C{gid}, created (as seen now) if there is none.
        """
        quality = self.gateways.get(gid)
        if quality is None:
            quality = self.gateways[gid] = GatewayQuality(lastSeen=self.clock.seconds())
            self._prune(keep=gid)
        return quality

    def _prune(self, keep: str | None = None) -> None:
        excess = len(self.gateways) - self.maxGateways
        if excess <= 0:
            return
        candidates = [item for item in self.gateways.items() if item[0] != keep]
        for gid, _ in heapq.nsmallest(excess, candidates, key=_age):
            del self.gateways[gid]

    def snapshot(self) -> dict:
        """
        Everything, as plain JSON-able data.
        """
        self._prune()
        return {
            "version": HISTORY_VERSION,
            "gateways": {gid: quality.toDict() for gid, quality in sorted(self.gateways.items())},
        }

    def load(self) -> None:
        """
        Replace what is in memory by what the store holds.  A corrupt file
        has been moved aside by the store; losing the history costs only
        some ranking accuracy, so say so and start empty.
        """
        if self.store is None:
            return
        try:
            stored = self.store.load()
        except StateFileCorrupt as e:
            log.warn("{error}; starting with no gateway history", error=e)
            self.gateways = {}
            return
        self.gateways = {} if stored is None else parseSnapshot(stored)
        self._prune()

    def save(self) -> None:
        if self.store is not None:
            self.store.save(self.snapshot())
