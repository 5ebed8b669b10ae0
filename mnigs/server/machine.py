"""
The gateway's lifecycle as one Automat machine:

    starting --started--> serving <--uplinkDown/uplinkUp--> unavailable
        every state --stop--> stopping --stopped--> stopped

Registrations are only taken while serving; renewals and releases also
while unavailable (a client keeps its lease across an uplink outage);
offers say C{available: false} in every state but serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.logger import Logger

from mnigs.protocol import UNAVAILABLE, RPCError


class Gateway(Protocol):
    def started(self) -> None:
        "Methods are up and the leases restored."

    def uplinkDown(self, reason: str) -> None:
        "The uplink monitor found the uplink unusable."

    def uplinkUp(self) -> None:
        "The uplink monitor found the uplink usable."

    def stop(self) -> defer.Deferred:
        "Stop serving and tear the data path down."

    def stopped(self) -> None:
        "Teardown finished."

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
    registry: Any
    offers: Any
    teardown: Callable[[], defer.Deferred]
    log: Logger = field(default_factory=Logger)
    uplinkProblem: str = ""
    stopWaiters: list = field(default_factory=list)

    def offer(self, localHost, available):
        return self.offers.offer(localHost, available, len(self.registry.book))

    def status(self, state: str) -> dict:
        status = {"state": state, "gateway": self.offers.gatewayId, "name": self.offers.name}
        if self.uplinkProblem:
            status["uplink_problem"] = self.uplinkProblem
        status.update(self.registry.describe())
        return status


def _refuse(why):
    def refuse(gateway, core, *args):
        return defer.fail(RPCError(UNAVAILABLE, f"gateway unavailable: {why}"))
    return refuse


def _buildMachine():
    builder = TypeMachineBuilder(Gateway, GatewayCore)
    starting = builder.state("starting")
    serving = builder.state("serving")
    unavailable = builder.state("unavailable")
    stopping = builder.state("stopping")
    stopped = builder.state("stopped")

    # -- lifecycle --
    starting.upon(Gateway.started).to(serving).returns(None)
    serving.upon(Gateway.started).loop().returns(None)

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
    def noteProblem(gateway, core, reason):
        core.uplinkProblem = reason

    @starting.upon(Gateway.uplinkUp).loop()
    @serving.upon(Gateway.uplinkUp).loop()
    def uplinkStillUp(gateway, core):
        pass

    for state in (starting, serving, unavailable):
        @state.upon(Gateway.stop).to(stopping)
        def beginStopping(gateway, core):
            d = defer.Deferred()
            core.stopWaiters.append(d)
            defer.maybeDeferred(core.teardown).addBoth(lambda _: gateway.stopped())
            return d

    @stopping.upon(Gateway.stop).loop()
    def alsoWaitStop(gateway, core):
        d = defer.Deferred()
        core.stopWaiters.append(d)
        return d

    @stopping.upon(Gateway.stopped).to(stopped)
    def finishStopping(gateway, core):
        waiters, core.stopWaiters = core.stopWaiters, []
        for d in waiters:
            d.callback(None)

    @stopped.upon(Gateway.stop).loop()
    def alreadyStopped(gateway, core):
        return defer.succeed(None)
    for state in (stopping, stopped):
        state.upon(Gateway.uplinkDown).loop().returns(None)
        state.upon(Gateway.uplinkUp).loop().returns(None)
        state.upon(Gateway.started).loop().returns(None)

    # -- the calls clients make --
    @serving.upon(Gateway.info).loop()
    def availableOffer(gateway, core, localHost):
        return core.offer(localHost, True)

    for state in (starting, unavailable, stopping, stopped):
        @state.upon(Gateway.info).loop()
        def unavailableOffer(gateway, core, localHost):
            return core.offer(localHost, False)

    @serving.upon(Gateway.register).loop()
    def register(gateway, core, request, clientHost, localHost):
        return core.registry.register(request, clientHost, localHost)

    starting.upon(Gateway.register).loop()(_refuse("starting"))
    unavailable.upon(Gateway.register).loop()(_refuse("its uplink is down"))
    stopping.upon(Gateway.register).loop()(_refuse("stopping"))
    stopped.upon(Gateway.register).loop()(_refuse("stopped"))

    for state in (serving, unavailable):
        @state.upon(Gateway.renew).loop()
        def renew(gateway, core, leaseId, token):
            return core.registry.renew(leaseId, token)

        @state.upon(Gateway.unregister).loop()
        def unregister(gateway, core, leaseId, token):
            return core.registry.unregister(leaseId, token)

    for state, why in ((starting, "starting"), (stopping, "stopping"), (stopped, "stopped")):
        state.upon(Gateway.renew).loop()(_refuse(why))
        state.upon(Gateway.unregister).loop()(_refuse(why))

    for state, name in ((starting, "starting"), (serving, "serving"),
                        (unavailable, "unavailable"), (stopping, "stopping"),
                        (stopped, "stopped")):
        @state.upon(Gateway.describe).loop()
        def describe(gateway, core, name=name):
            return core.status(name)

    return builder.build()


makeGateway = _buildMachine()
