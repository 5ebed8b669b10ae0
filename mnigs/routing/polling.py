# -*- test-case-name: tests.unit.test_yggdrasil.test_routing,tests.unit.test_cjdns.test_routing -*-
"""
Watching a route source that can only be asked, not subscribed to (an
overlay daemon's admin socket): look every C{interval} seconds, and report
through a L{mnigs.routing.changes.ChangeNotifier} when what was seen
differs from the last look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.routing.changes import ChangeNotifier

log = Logger()


class _WatchInputs(Protocol):
    def start(self) -> None:
        "Begin polling."

    def stop(self) -> None:
        "Stop for good."


@dataclass
class _WatchCore:
    reactor: Any
    look: Callable[[], Deferred]
    name: str
    interval: float
    notifier: ChangeNotifier | None = None
    latest: Any = None
    inflight: set = field(default_factory=set)


def _poll(core: _WatchCore) -> None:
    if core.inflight:
        return  # the previous look is still going
    d = core.look()
    core.inflight.add(d)

    def got(snapshot):
        core.latest = snapshot
        core.notifier.poke()

    def failed(failure):
        if not failure.check(CancelledError):
            log.warn("{name} watch: {error}", name=core.name, error=failure.getErrorMessage())

    d.addCallbacks(got, failed).addBoth(lambda _: core.inflight.discard(d))


def _startPolling(inputs: _WatchInputs, core: _WatchCore) -> LoopingCall:
    poll = LoopingCall(_poll, core)
    poll.clock = core.reactor
    poll.start(core.interval, now=True)
    return poll


def _buildWatchMachine():
    machine = TypeMachineBuilder(_WatchInputs, _WatchCore)
    idle = machine.state("idle")
    polling = machine.state("polling", _startPolling)
    stopped = machine.state("stopped")

    idle.upon(_WatchInputs.start).to(polling).returns(None)
    idle.upon(_WatchInputs.stop).to(stopped).returns(None)
    polling.upon(_WatchInputs.start).loop().returns(None)
    stopped.upon(_WatchInputs.start).loop().returns(None)
    stopped.upon(_WatchInputs.stop).loop().returns(None)

    @polling.upon(_WatchInputs.stop).to(stopped)
    def pollStop(inputs: _WatchInputs, core: _WatchCore, poll: LoopingCall) -> None:
        poll.stop()
        core.notifier.cancel()
        for d in list(core.inflight):
            d.cancel()

    return machine.build()


_WatchMachine = _buildWatchMachine()


class PollingWatch:
    """
    Calls C{onChange()} when the snapshot C{look()} fires with differs
    from the one before (the first is the baseline); differences seen
    within C{debounce} seconds of the first are reported once.  A look
    that fails is logged and skipped; a look still going when the next is
    due delays nothing, the next is simply skipped.

    A machine: C{idle} --start--> C{polling} --stop--> C{stopped}.
    """

    def __init__(self, reactor, look: Callable[[], Deferred], onChange: Callable[[], object],
                 interval: float, debounce: float = 1.0, name: str = "route source") -> None:
        core = _WatchCore(reactor, look, name, interval)
        core.notifier = ChangeNotifier(reactor, lambda: core.latest, onChange, delay=debounce)
        self._machine = _WatchMachine(core)

    def start(self) -> None:
        self._machine.start()

    def stop(self) -> Deferred:
        self._machine.stop()
        return succeed(None)
