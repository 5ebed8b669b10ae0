"""
The gateway's lifecycle as one Automat machine:

    starting --started--> serving <--uplinkDown/uplinkUp--> unavailable
    serving, unavailable --drain--> draining
    draining --lastLeaseGone/drainTimedOut--> clearing --cleared--> drained
    every state --stop--> stopping --stopped--> stopped

Registrations are only taken while serving; renewals and releases also
while unavailable (a client keeps its lease across an uplink outage) and
draining (its holder is moving away); offers say C{available: false} in
every state but serving.

Stopping (SIGTERM: a restart, an upgrade) leaves the data path in place
for the next start to adopt, so that nobody is cut; taking the gateway out
of service is a drain, which removes the data path once the last lease is
gone or its time is up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.protocol import UNAVAILABLE, RPCError
from mnigs.system.waiters import Waiters


class Gateway(Protocol):
    def started(self) -> None:
        "Methods are up and the leases restored."

    def uplinkDown(self, reason: str) -> None:
        "The uplink monitor found the uplink unusable."

    def uplinkUp(self) -> None:
        "The uplink monitor found the uplink usable."

    def stop(self) -> defer.Deferred:
        "Stop serving, leaving the data path for the next start to adopt."

    def stopped(self) -> None:
        "Stopping finished."

    def drain(self, timeout: float) -> dict:
        "Take no more clients; remove the data path once the last lease is gone."

    def sweep(self) -> defer.Deferred:
        "End every lease whose time is up."

    def lastLeaseGone(self) -> None:
        "No lease is left (while draining)."

    def drainTimedOut(self) -> None:
        "The drain's time is up."

    def cleared(self) -> None:
        "The data path is gone."

    def info(self, localHost: str) -> dict:
        "The signed offer."

    def register(self, request: Any, clientHost: str, localHost: str) -> defer.Deferred:
        "Take a registration."

    def renew(self, leaseId: str, token: str) -> defer.Deferred:
        "Renew a lease."

    def unregister(self, leaseId: str, token: str) -> defer.Deferred:
        "Release a lease."

    def describe(self) -> dict:
        "Status for humans and mnigsctl."


@dataclass
class GatewayCore:
    """
    @ivar leave: stop serving and leave the data path in place (a restart).
    @ivar clear: release every lease left and remove the data path (the end
        of a drain).
    """
    registry: Any
    offers: Any
    leave: Callable[[], defer.Deferred]
    clear: Callable[[], defer.Deferred]
    clock: IReactorTime
    log: Logger = field(default_factory=Logger)
    uplinkProblem: str = ""
    stopWaiters: Waiters[None] = field(default_factory=Waiters)
    #: when the gateway was built (its daemon started), for the uptime
    bornAt: float | None = None

    def __post_init__(self):
        if self.bornAt is None:
            self.bornAt = self.clock.seconds()

    def offer(self, localHost, available):
        return self.offers.offer(localHost, available, len(self.registry.book))

    def status(self, state: str, **extra) -> dict:
        status = {"state": state, "gateway": self.offers.gatewayId, "name": self.offers.name,
                  "uptime_s": round(self.clock.seconds() - self.bornAt, 1),
                  "terms": self.offers.terms}
        if self.uplinkProblem:
            status["uplink_problem"] = self.uplinkProblem
        status.update(extra)
        status.update(self.registry.describe())
        return status

    def noLeaseLeft(self) -> bool:
        return len(self.registry.book) == 0


@dataclass
class Draining:
    """The drain's deadline."""
    deadline: IDelayedCall

    def remaining(self, clock) -> float:
        return max(0.0, round(self.deadline.getTime() - clock.seconds(), 1))

    def cancel(self) -> None:
        if self.deadline.active():
            self.deadline.cancel()


@dataclass
class Clearing:
    """Removing the data path; C{done} fires when that is over."""
    done: defer.Deferred


def _startDraining(gateway: Gateway, core: GatewayCore, timeout: float) -> Draining:
    core.log.info("draining: no new clients; the data path goes when the last of "
                  "{n} leases is gone, or in {timeout} s", n=len(core.registry.book),
                  timeout=timeout)
    if core.noLeaseLeft():
        gateway.lastLeaseGone()  # runs once this transition is over
    return Draining(core.clock.callLater(timeout, gateway.drainTimedOut))


def _startClearing(gateway: Gateway, core: GatewayCore, *args) -> Clearing:
    def failed(failure: Failure) -> None:
        core.log.failure("could not remove the data path", failure)

    done = defer.maybeDeferred(core.clear).addErrback(failed)
    done.addCallback(lambda _: gateway.cleared())
    return Clearing(done)


def _refuse(why):
    def refuse(gateway, core, *args):
        return defer.fail(RPCError(UNAVAILABLE, f"gateway unavailable: {why}"))
    return refuse


def _buildMachine():
    builder = TypeMachineBuilder(Gateway, GatewayCore)
    starting = builder.state("starting")
    serving = builder.state("serving")
    unavailable = builder.state("unavailable")
    draining = builder.state("draining", _startDraining)
    clearing = builder.state("clearing", _startClearing)
    drained = builder.state("drained")
    stopping = builder.state("stopping")
    stopped = builder.state("stopped")
    everyState = (starting, serving, unavailable, draining, clearing, drained, stopping, stopped)

    def upon(state, input):
        # Transitions that do not need a data state's data leave it out.
        if state is draining or state is clearing:
            return state.upon(input, nodata=True)
        return state.upon(input)

    # -- lifecycle --
    starting.upon(Gateway.started).to(serving).returns(None)
    for state in (serving, unavailable, draining, clearing, drained, stopping, stopped):
        state.upon(Gateway.started).loop().returns(None)

    @serving.upon(Gateway.uplinkDown).to(unavailable)
    def goUnavailable(gateway, core, reason):
        core.uplinkProblem = reason
        core.log.warn("uplink unusable ({reason}): no longer offering access", reason=reason)

    @unavailable.upon(Gateway.uplinkUp).to(serving)
    def goServing(gateway, core):
        core.log.info("uplink usable again: offering access")
        core.uplinkProblem = ""

    @starting.upon(Gateway.uplinkDown).loop()
    @unavailable.upon(Gateway.uplinkDown).loop()
    @draining.upon(Gateway.uplinkDown, nodata=True).loop()
    @clearing.upon(Gateway.uplinkDown, nodata=True).loop()
    @drained.upon(Gateway.uplinkDown).loop()
    def noteProblem(gateway, core, reason):
        core.uplinkProblem = reason

    @starting.upon(Gateway.uplinkUp).loop()
    @serving.upon(Gateway.uplinkUp).loop()
    @draining.upon(Gateway.uplinkUp, nodata=True).loop()
    @clearing.upon(Gateway.uplinkUp, nodata=True).loop()
    @drained.upon(Gateway.uplinkUp).loop()
    def uplinkFine(gateway, core):
        core.uplinkProblem = ""

    for state in (stopping, stopped):
        state.upon(Gateway.uplinkDown).loop().returns(None)
        state.upon(Gateway.uplinkUp).loop().returns(None)

    # -- stopping: the data path stays for the next start --
    def beginStopping(gateway, core):
        d = core.stopWaiters.wait()
        defer.maybeDeferred(core.leave).addBoth(lambda _: gateway.stopped())
        return d

    for state in (starting, serving, unavailable, drained):
        state.upon(Gateway.stop).to(stopping)(beginStopping)

    @draining.upon(Gateway.stop).to(stopping)
    def stopDraining(gateway, core, drain: Draining):
        drain.cancel()
        core.log.info("stopped while draining: the data path stays, and the next "
                      "start serves again")
        return beginStopping(gateway, core)

    @clearing.upon(Gateway.stop).to(stopping)
    def stopWhenCleared(gateway, core, clearing: Clearing):
        d = core.stopWaiters.wait()
        clearing.done.addBoth(lambda _: core.leave()).addBoth(lambda _: gateway.stopped())
        return d

    @stopping.upon(Gateway.stop).loop()
    def alsoWaitStop(gateway, core):
        return core.stopWaiters.wait()

    @stopping.upon(Gateway.stopped).to(stopped)
    def finishStopping(gateway, core):
        core.stopWaiters.fire()

    @stopped.upon(Gateway.stop).loop()
    def alreadyStopped(gateway, core):
        return defer.succeed(None)

    # -- draining --
    @serving.upon(Gateway.drain).to(draining)
    @unavailable.upon(Gateway.drain).to(draining)
    def beginDraining(gateway, core, timeout):
        return {"state": "draining", "leases": len(core.registry.book), "timeout": timeout}

    @draining.upon(Gateway.drain).loop()
    def alreadyDraining(gateway, core, drain: Draining, timeout):
        return {"state": "draining", "leases": len(core.registry.book),
                "timeout": drain.remaining(core.clock)}

    for state, name in ((starting, "starting"), (clearing, "clearing"), (drained, "drained"),
                        (stopping, "stopping"), (stopped, "stopped")):
        @upon(state, Gateway.drain).loop()
        def cannotDrain(gateway, core, timeout, name=name):
            return {"state": name, "leases": len(core.registry.book)}

    @draining.upon(Gateway.lastLeaseGone).to(clearing)
    def lastOneLeft(gateway, core, drain: Draining):
        drain.cancel()
        core.log.info("drained: the last lease is gone; removing the data path")

    @draining.upon(Gateway.drainTimedOut).to(clearing)
    def drainTimeUp(gateway, core, drain: Draining):
        core.log.info("drain time is up: releasing the {n} leases left and removing "
                      "the data path", n=len(core.registry.book))

    @clearing.upon(Gateway.cleared).to(drained)
    def dataPathGone(gateway, core, clearing: Clearing):
        core.log.info("drained: the data path is removed; offers stay unavailable")

    for state in everyState:
        if state is not draining:
            upon(state, Gateway.lastLeaseGone).loop().returns(None)
            upon(state, Gateway.drainTimedOut).loop().returns(None)
        if state is not clearing:
            upon(state, Gateway.cleared).loop().returns(None)

    # -- the lease sweep --
    @serving.upon(Gateway.sweep).loop()
    @unavailable.upon(Gateway.sweep).loop()
    def sweep(gateway, core):
        return core.registry.sweep()

    @draining.upon(Gateway.sweep).loop()
    def sweepWhileDraining(gateway, core, drain: Draining):
        return core.registry.sweep().addCallback(_thenCheckEmpty(gateway, core))

    for state in (starting, clearing, drained, stopping, stopped):
        @upon(state, Gateway.sweep).loop()
        def noSweep(gateway, core):
            return defer.succeed([])

    # -- the calls clients make --
    @serving.upon(Gateway.info).loop()
    def availableOffer(gateway, core, localHost):
        return core.offer(localHost, True)

    for state in (starting, unavailable, draining, clearing, drained, stopping, stopped):
        @upon(state, Gateway.info).loop()
        def unavailableOffer(gateway, core, localHost):
            return core.offer(localHost, False)

    @serving.upon(Gateway.register).loop()
    def register(gateway, core, request, clientHost, localHost):
        return core.registry.register(request, clientHost, localHost)

    for state, why in ((starting, "starting"), (unavailable, "its uplink is down"),
                       (draining, "draining"), (clearing, "draining"), (drained, "drained"),
                       (stopping, "stopping"), (stopped, "stopped")):
        upon(state, Gateway.register).loop()(_refuse(why))

    for state in (serving, unavailable):
        @state.upon(Gateway.renew).loop()
        def renew(gateway, core, leaseId, token):
            return core.registry.renew(leaseId, token)

        @state.upon(Gateway.unregister).loop()
        def unregister(gateway, core, leaseId, token):
            return core.registry.unregister(leaseId, token)

    @draining.upon(Gateway.renew).loop()
    def renewWhileDraining(gateway, core, drain: Draining, leaseId, token):
        return core.registry.renew(leaseId, token)

    @draining.upon(Gateway.unregister).loop()
    def unregisterWhileDraining(gateway, core, drain: Draining, leaseId, token):
        return core.registry.unregister(leaseId, token).addCallback(_thenCheckEmpty(gateway, core))

    for state, why in ((starting, "starting"), (clearing, "drained"), (drained, "drained"),
                       (stopping, "stopping"), (stopped, "stopped")):
        upon(state, Gateway.renew).loop()(_refuse(why))
        upon(state, Gateway.unregister).loop()(_refuse(why))

    for state in everyState:
        if state is draining:
            @state.upon(Gateway.describe).loop()
            def describeDraining(gateway, core, drain: Draining):
                return core.status("draining", drain_timeout_in=drain.remaining(core.clock))
        else:
            @upon(state, Gateway.describe).loop()
            def describe(gateway, core, name=state.name):
                return core.status(name)

    return builder.build()


def _thenCheckEmpty(gateway, core):
    def check(result):
        if core.noLeaseLeft():
            gateway.lastLeaseGone()
        return result
    return check


makeGateway = _buildMachine()
