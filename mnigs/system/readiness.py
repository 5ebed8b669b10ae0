# -*- test-case-name: tests.unit.test_process -*-
"""
How L{mnigs.system.process.SupervisedProcess} tells that a freshly launched daemon
is ready: once spawned, on a line of its output, or when a check (a control
socket that answers, say) succeeds.

A readiness is an object with C{watch(reactor, ready) -> Watch}; the
supervisor makes one watch per launch, tells it every output line and
cancels it when the launch ends either way.  C{ready} is called (at most
once matters) when the daemon is ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IDelayedCall


class Watch:
    """One launch's readiness watch: told every output line, cancelled when
    the launch ends either way."""

    def lineReceived(self, line: bytes) -> None:
        pass

    def cancel(self) -> None:
        pass


class _ReadyOnSpawn:
    def watch(self, reactor, ready: Callable[[], None]) -> Watch:
        ready()
        return Watch()


@dataclass
class _OutputWatch(Watch):
    predicate: Callable[[bytes], bool]
    ready: Callable[[], None]

    def lineReceived(self, line: bytes) -> None:
        if self.predicate(line):
            self.ready()


@dataclass
class _ReadyOnOutput:
    predicate: Callable[[bytes], bool]

    def watch(self, reactor, ready: Callable[[], None]) -> Watch:
        return _OutputWatch(self.predicate, ready)


@dataclass
class _PollWatch(Watch):
    reactor: object
    check: Callable[[], object]
    interval: float
    ready: Callable[[], None]
    pending: Optional[IDelayedCall] = None
    cancelled: bool = False

    def begin(self) -> "_PollWatch":
        self.pending = self.reactor.callLater(0, self._poll)
        return self

    def _poll(self) -> None:
        self.pending = None
        d = maybeDeferred(self.check)
        d.addErrback(lambda f: False)
        d.addCallback(self._answered)

    def _answered(self, isReady: object) -> None:
        if self.cancelled:
            return
        if isReady:
            self.ready()
        else:
            self.pending = self.reactor.callLater(self.interval, self._poll)

    def cancel(self) -> None:
        # A check already in flight is let finish; its answer is ignored.
        self.cancelled = True
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None


@dataclass
class _ReadyWhen:
    check: Callable[[], object]
    interval: float

    def watch(self, reactor, ready: Callable[[], None]) -> Watch:
        return _PollWatch(reactor, self.check, self.interval, ready).begin()


def readyOnOutput(predicate: Callable[[bytes], bool]) -> _ReadyOnOutput:
    """Ready once C{predicate(line)} is true for a line of stdout/stderr."""
    return _ReadyOnOutput(predicate)


def readyWhen(check: Callable[[], object], interval: float = 0.1) -> _ReadyWhen:
    """
    Ready once C{check()} (which may return a Deferred) gives a true value;
    it is asked every C{interval} seconds, and a failure counts as "not yet".
    """
    return _ReadyWhen(check, interval)


def asReadiness(readiness):
    if readiness is None:
        return _ReadyOnSpawn()
    if hasattr(readiness, "watch"):
        return readiness
    return _ReadyOnOutput(readiness)
