"""
The client's lifecycle as one Automat machine:

    idle --start--> searching --scanned--> registering --registered--> connecting
    searching --nothingFound--> waiting --retry--> searching
    searching --retry--> searching (an empty scan is then repeated at once)
    registering/connecting/verifying --tryNext--> registering (next method or gateway)
    registering/connecting/verifying --exhausted--> waiting
    connecting --connected--> verifying --answered--> online
    online <--probeMissed/probeAnswered--> degraded
    online/degraded --failover/switch--> registering
    online/degraded --dropped--> searching
    every state --stop--> stopping --stopped--> stopped

Decisions that need computing (which step comes next after a failure,
whether a better gateway has been better for long enough) are made by
L{ClientFacade} in plain methods, which then feed the machine one clean
input.  Every input that leads into a data state carries that state's
data, so a session passes from online to degraded and back intact.

A tunnel that is up is not yet online: in C{verifying} the client probes
through it (L{IClientEffects.verify}) and goes online only once a probe is
answered; otherwise it takes the tunnel down and tries the next step at
once, as after a tunnel that did not come up.

All I/O goes through C{core.effects} (see L{IClientEffects}); tests wire a
recording fake there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface

from mnigs.client.plan import Attempt
from mnigs.system.backoff import Backoff


class IClientEffects(Interface):
    """
    What the client machine does to the world.  Every call returning a
    Deferred must be cancellable: the machine cancels what it no longer
    waits for.
    """

    def scan(early=False):
        """
        Discover and rank gateways: Deferred[list of Ranked].  C{early}:
        settle soon after the first usable answer instead of hearing out
        every candidate (what an offline client wants).
        """

    def rerank():
        "The last scan's offers ranked again as of now: list of Ranked."

    def plan(ranked, exclude):
        "An Attempt over C{ranked} without the gateway ids in C{exclude}, or None."

    def register(step):
        "Deferred[lease dict] from gateway.register."

    def connect(step, lease):
        "Deferred[connection]: the tunnel and routes are up."

    def verify(session):
        """
        Deferred[round-trip time]: a probe through the session's tunnel was
        answered (by the Internet, when there are Internet targets).  Fails
        with a reason when none is answered within a short deadline.
        """

    def disconnect(session):
        """
        Take down the tunnel of a session that never went online (no
        watchers, no hooks to undo); serialised with the next connect like
        C{endSession}.  Deferred.
        """

    def unregister(step, lease):
        "Best-effort release; never fails."

    def startSession(session):
        "Start health probes, renewals and watchers for an online session."

    def endSession(session):
        "Stop them, take the tunnel and routes down; Deferred."

    def noteFailure(step, reason):
        "Record a failure of the step's gateway in the quality history."


@dataclass
class Session:
    """
    A tunnel that is up, and what the effects hang on it: the probe
    targets and the pinger bound to its device (from verification on),
    the health monitor and the watchers' stoppers (once online), and the
    warnings already given.
    """
    step: Any
    lease: dict
    connection: Any
    startedAt: float
    stoppers: list = field(default_factory=list)
    targets: Any = None
    pinger: Any = None
    health: Any = None
    warned: set = field(default_factory=set)

    def describe(self, now):
        current = self.step.describe()
        current["lease_expires_in"] = max(0, int(self.lease.get("expires_at", now) - now))
        current["online_for"] = int(now - self.startedAt)
        current["address"] = self.lease.get("config", {}).get("address")
        current["device"] = getattr(self.connection, "device", None)
        if self.health is not None:
            current["health"] = self.health.describe()
        return current


@dataclass
class Verifying:
    """
    The data of verifying: the attempt (for what comes next), the session
    whose tunnel is up, and the probing under way.
    """
    attempt: Attempt
    session: Session
    operation: defer.Deferred | None = None

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()


@dataclass
class Pending:
    """
    The data of registering and connecting: the attempt and the operation
    under way, cancelled if the machine moves on first.
    """
    attempt: Attempt
    lease: dict | None = None
    operation: defer.Deferred | None = None
    #: searching: the routes changed while the scan ran, so an empty
    #: result is stale: scan again at once instead of backing off.
    routesChanged: bool = False

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()


@dataclass
class Waiting:
    call: Any

    def cancel(self):
        if self.call.active():
            self.call.cancel()


class Client(Protocol):
    def start(self) -> None:
        "Begin looking for a gateway."

    def scanned(self, attempt: Attempt) -> None:
        "Discovery found usable gateways; C{attempt} is the plan."

    def nothingFound(self, reason: str) -> None:
        "Discovery found nothing usable."

    def retry(self) -> None:
        """
        Look again now: the backoff delay is over, or the routes or the
        policy changed.  While searching it makes an empty result scan
        again at once.
        """

    def registered(self, attempt: Attempt, lease: dict) -> None:
        "The gateway granted a lease."

    def tryNext(self, attempt: Attempt, reason: str) -> None:
        "The step failed; C{attempt} points at the next one."

    def exhausted(self, reason: str) -> None:
        "Every step of the plan failed."

    def connected(self, attempt: Attempt, session: Session) -> None:
        "The tunnel and routes are up."

    def answered(self, session: Session, rtt: float) -> None:
        "A probe through the new tunnel was answered."

    def probeMissed(self, session: Session, count: int) -> None:
        "A health probe round got no answer."

    def probeAnswered(self, session: Session, rtt: float) -> None:
        "A health probe round was answered."

    def failover(self, session: Session, attempt: Attempt, reason: str) -> None:
        "The gateway died or the lease was lost: try C{attempt} next."

    def dropped(self, session: Session, reason: str) -> None:
        "The gateway died and nothing else is known: search again."

    def switch(self, session: Session, attempt: Attempt) -> None:
        "A better gateway has been better for long enough."

    def stop(self) -> defer.Deferred:
        "Unregister, restore the routing, stop."

    def stopped(self) -> None:
        "Teardown is finished."

    def describe(self) -> dict:
        "Status for mnigsctl."


@dataclass
class ClientCore:
    clock: Any
    effects: Any
    backoff: Backoff
    log: Logger = field(default_factory=Logger)
    ranked: list = field(default_factory=list)
    reason: str = ""
    session: Session | None = None
    stopWaiters: list = field(default_factory=list)

    def status(self, state, **extra):
        status = {"state": state, "reason": self.reason}
        status.update(extra)
        return status


def _named(step) -> dict:
    # Log fields naming a step: the text reads "pdx-gw-1 (10.99.0.5) over
    # wireguard"; the gateway's id is there for whoever reads events.
    return {"gateway": step.gateway, "gatewayId": step.gatewayId, "method": step.method}


def _ignore(client, core, *args):
    return None


def _ignoreWithData(client, core, data: object, *args):
    return None


def _pendingAttempt(client, core, *args):
    # scanned(attempt), tryNext(attempt, reason), failover(session, attempt,
    # reason) and switch(session, attempt) all lead into registering.
    return Pending(next(arg for arg in args if isinstance(arg, Attempt)))


def _buildMachine():
    builder = TypeMachineBuilder(Client, ClientCore)
    idle = builder.state("idle")
    searching = builder.state("searching", lambda client, core, *args: Pending(None))
    waiting = builder.state("waiting", lambda client, core, reason: Waiting(
        core.clock.callLater(core.backoff.next(), client.retry)))
    registering = builder.state("registering", _pendingAttempt)
    connecting = builder.state("connecting", lambda client, core, attempt, lease: Pending(attempt, lease))
    verifying = builder.state("verifying", lambda client, core, attempt, session: Verifying(attempt, session))
    online = builder.state("online", lambda client, core, session, *rest: session)
    degraded = builder.state("degraded", lambda client, core, session, *rest: session)
    stopping = builder.state("stopping")
    stopped = builder.state("stopped")

    # -- searching -------------------------------------------------------
    def beginScan(client, core, pending: Pending, *args):
        if pending.operation is not None:
            return
        pending.operation = core.effects.scan(early=True)

        def done(ranked):
            core.ranked = ranked
            attempt = core.effects.plan(ranked, frozenset())
            if attempt is not None:
                client.scanned(attempt)
            elif pending.routesChanged:
                pending.operation, pending.routesChanged = None, False
                client.start()  # the routes changed meanwhile: look again
            else:
                client.nothingFound("no usable gateway found")

        def failed(failure):
            if not failure.check(defer.CancelledError):
                core.log.failure("discovery failed", failure)
                client.nothingFound(f"discovery failed: {failure.getErrorMessage()}")

        pending.operation.addCallbacks(done, failed)

    @idle.upon(Client.start).to(searching)
    def firstScan(client, core):
        client.start()  # runs beginScan once in the new state

    searching.upon(Client.start).loop()(beginScan)

    @searching.upon(Client.retry).loop()
    def noteRoutesChanged(client, core, pending: Pending):
        pending.routesChanged = True

    @waiting.upon(Client.retry).to(searching)
    def retryScan(client, core, waiting: Waiting):
        waiting.cancel()
        client.start()

    @searching.upon(Client.nothingFound).to(waiting)
    def noteNothing(client, core, pending: Pending, reason):
        core.reason = reason
        core.log.info("{reason}; searching again later", reason=reason)

    # -- registering -----------------------------------------------------
    def beginRegister(client, core, pending: Pending, *args):
        step = pending.attempt.step
        pending.operation = core.effects.register(step)

        def done(lease):
            client.registered(pending.attempt, lease)

        def failed(failure):
            if failure.check(defer.CancelledError):
                return
            reason = f"{step.method} registration with {step.gateway} failed: {failure.getErrorMessage()}"
            core.effects.noteFailure(step, reason)
            nextAttempt = pending.attempt.afterRegisterFailure(failure)
            if nextAttempt is None:
                client.exhausted(reason)
            else:
                client.tryNext(nextAttempt, reason)

        pending.operation.addCallbacks(done, failed)

    @searching.upon(Client.scanned).to(registering)
    def scannedThenRegister(client, core, pending: Pending, attempt):
        core.reason = ""
        client.start()  # kicks off the registration in the new state

    registering.upon(Client.start).loop()(beginRegister)

    @registering.upon(Client.tryNext).loop()
    def registerNext(client, core, pending: Pending, attempt, reason):
        core.reason = reason
        core.log.info("{reason}; trying {gateway} over {method}", reason=reason,
                      **_named(attempt.step))
        pending.attempt = attempt
        beginRegister(client, core, pending)

    @registering.upon(Client.exhausted).to(waiting)
    @connecting.upon(Client.exhausted).to(waiting)
    @verifying.upon(Client.exhausted).to(waiting)
    def giveUp(client, core, pending: object, reason):
        core.reason = reason
        core.log.warn("every gateway failed ({reason}); searching again later", reason=reason)

    # -- connecting ------------------------------------------------------
    @registering.upon(Client.registered).to(connecting)
    def registeredThenConnect(client, core, pending: Pending, attempt, lease):
        client.start()

    @connecting.upon(Client.start).loop()
    def beginConnect(client, core, pending: Pending):
        step, lease = pending.attempt.step, pending.lease
        pending.operation = core.effects.connect(step, lease)

        def done(connection):
            client.connected(pending.attempt, Session(step, lease, connection, core.clock.seconds()))

        def failed(failure):
            if failure.check(defer.CancelledError):
                return
            why = ("nothing within methods.connect_timeout" if failure.check(defer.TimeoutError)
                   else failure.getErrorMessage())
            reason = f"{step.method} to {step.gateway} did not come up: {why}"
            core.effects.noteFailure(step, reason)
            core.effects.unregister(step, lease)
            nextAttempt = pending.attempt.nextMethod()
            if nextAttempt is None:
                client.exhausted(reason)
            else:
                client.tryNext(nextAttempt, reason)

        pending.operation.addCallbacks(done, failed)

    @connecting.upon(Client.tryNext).to(registering)
    @verifying.upon(Client.tryNext).to(registering)
    def connectNext(client, core, pending: object, attempt, reason):
        core.reason = reason
        core.log.info("{reason}; trying {gateway} over {method}", reason=reason,
                      **_named(attempt.step))
        client.start()

    # -- verifying -------------------------------------------------------
    @connecting.upon(Client.connected).to(verifying)
    def connectedThenVerify(client, core, pending: Pending, attempt, session):
        client.start()

    @verifying.upon(Client.start).loop()
    def beginVerify(client, core, verifying: Verifying):
        if verifying.operation is not None:
            return
        session = verifying.session
        verifying.operation = core.effects.verify(session)

        def done(rtt):
            client.answered(session, rtt)

        def failed(failure):
            if failure.check(defer.CancelledError):
                return
            step = session.step
            reason = f"{step.method} to {step.gateway} passes no traffic: {failure.getErrorMessage()}"
            core.effects.noteFailure(step, reason)
            core.effects.disconnect(session)
            core.effects.unregister(step, session.lease)
            nextAttempt = verifying.attempt.nextMethod()
            if nextAttempt is None:
                client.exhausted(reason)
            else:
                client.tryNext(nextAttempt, reason)

        verifying.operation.addCallbacks(done, failed)

    # -- online and degraded --------------------------------------------
    @verifying.upon(Client.answered).to(online)
    def goOnline(client, core, verifying: Verifying, session, rtt):
        core.session = session
        core.reason = ""
        core.backoff.reset()
        session.startedAt = core.clock.seconds()
        core.log.info("online via {gateway} over {method} (a probe through {device} answered "
                      "in {rtt} ms)", device=session.connection.device,
                      rtt=f"{rtt * 1000:.1f}", **_named(session.step))
        core.effects.startSession(session)

    @online.upon(Client.probeMissed).to(degraded)
    def goDegraded(client, core, session: Session, missedSession, count):
        core.reason = f"{count} health probe(s) unanswered"

    @degraded.upon(Client.probeMissed).loop()
    def stillDegraded(client, core, session: Session, missedSession, count):
        core.reason = f"{count} health probe(s) unanswered"

    @degraded.upon(Client.probeAnswered).to(online)
    def recovered(client, core, session: Session, answeredSession, rtt):
        core.reason = ""

    online.upon(Client.probeAnswered).loop()(_ignoreWithData)

    def leave(client, core, session: Session, failure):
        # endSession is serialised with the next connect by the effects, so
        # the next tunnel never races this one's teardown.
        core.session = None
        if failure:
            core.effects.noteFailure(session.step, failure)
        core.effects.endSession(session)
        core.effects.unregister(session.step, session.lease)

    for state in (online, degraded):
        @state.upon(Client.failover).to(registering)
        def failingOver(client, core, session: Session, lostSession, attempt, reason):
            core.reason = reason
            core.log.warn("leaving {left}: {reason}; trying {gateway} over {method}",
                          left=session.step.gateway, reason=reason, **_named(attempt.step))
            leave(client, core, session, reason)
            client.start()

        @state.upon(Client.dropped).to(searching)
        def droppedOut(client, core, session: Session, lostSession, reason):
            core.reason = reason
            core.log.warn("leaving {left}: {reason}; searching", left=session.step.gateway,
                          reason=reason)
            leave(client, core, session, reason)
            client.start()

        @state.upon(Client.switch).to(registering)
        def switching(client, core, session: Session, oldSession, attempt):
            core.reason = f"switching to the better gateway {attempt.step.gateway}"
            core.log.info("{reason}", reason=core.reason)
            leave(client, core, session, "")
            client.start()

    # -- stopping --------------------------------------------------------
    def waitStopped(core):
        d = defer.Deferred()
        core.stopWaiters.append(d)
        return d

    @idle.upon(Client.stop).to(stopped)
    def neverStarted(client, core):
        return defer.succeed(None)

    for state in (searching, waiting, registering, connecting):
        @state.upon(Client.stop).to(stopping)
        def stopPending(client, core, pending: object):
            pending.cancel()
            lease = getattr(pending, "lease", None)
            d = waitStopped(core)
            if lease is not None:
                core.effects.unregister(pending.attempt.step, lease)
            client.stopped()
            return d

    @verifying.upon(Client.stop).to(stopping)
    def stopVerifying(client, core, verifying: Verifying):
        verifying.cancel()
        d = waitStopped(core)
        session = verifying.session
        ending = defer.maybeDeferred(core.effects.disconnect, session)
        released = defer.maybeDeferred(core.effects.unregister, session.step, session.lease)
        defer.DeferredList([ending, released], consumeErrors=True).addBoth(
            lambda _: client.stopped())
        return d

    for state in (online, degraded):
        @state.upon(Client.stop).to(stopping)
        def stopSession(client, core, session: Session):
            d = waitStopped(core)
            core.session = None
            ending = defer.maybeDeferred(core.effects.endSession, session)
            released = defer.maybeDeferred(core.effects.unregister, session.step, session.lease)
            defer.DeferredList([ending, released], consumeErrors=True).addBoth(
                lambda _: client.stopped())
            return d

    @stopping.upon(Client.stop).loop()
    def stopAgain(client, core):
        return waitStopped(core)

    @stopping.upon(Client.stopped).to(stopped)
    def finishStopping(client, core):
        waiters, core.stopWaiters = core.stopWaiters, []
        for d in waiters:
            d.callback(None)

    @stopped.upon(Client.stop).loop()
    def alreadyStopped(client, core):
        return defer.succeed(None)

    # -- inputs that arrive late or out of place are dropped ------------
    ignored = {
        idle: (Client.scanned, Client.nothingFound, Client.retry, Client.registered,
               Client.tryNext, Client.exhausted, Client.connected, Client.answered,
               Client.probeMissed, Client.probeAnswered, Client.failover, Client.dropped,
               Client.switch, Client.stopped),
        searching: (Client.registered, Client.tryNext, Client.exhausted,
                    Client.connected, Client.answered, Client.probeMissed,
                    Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                    Client.stopped),
        waiting: (Client.start, Client.scanned, Client.nothingFound, Client.registered,
                  Client.tryNext, Client.exhausted, Client.connected, Client.answered,
                  Client.probeMissed, Client.probeAnswered, Client.failover, Client.dropped,
                  Client.switch, Client.stopped),
        registering: (Client.scanned, Client.nothingFound, Client.retry, Client.connected,
                      Client.answered, Client.probeMissed, Client.probeAnswered,
                      Client.failover, Client.dropped, Client.switch, Client.stopped),
        connecting: (Client.scanned, Client.nothingFound, Client.retry, Client.registered,
                     Client.answered, Client.probeMissed, Client.probeAnswered,
                     Client.failover, Client.dropped, Client.switch, Client.stopped),
        verifying: (Client.scanned, Client.nothingFound, Client.retry, Client.registered,
                    Client.connected, Client.probeMissed, Client.probeAnswered,
                    Client.failover, Client.dropped, Client.switch, Client.stopped),
        online: (Client.start, Client.scanned, Client.nothingFound, Client.retry,
                 Client.registered, Client.tryNext, Client.exhausted, Client.connected,
                 Client.answered, Client.stopped),
        degraded: (Client.start, Client.scanned, Client.nothingFound, Client.retry,
                   Client.registered, Client.tryNext, Client.exhausted, Client.connected,
                   Client.answered, Client.stopped),
        stopping: (Client.start, Client.scanned, Client.nothingFound, Client.retry,
                   Client.registered, Client.tryNext, Client.exhausted, Client.connected,
                   Client.answered, Client.probeMissed, Client.probeAnswered,
                   Client.failover, Client.dropped, Client.switch),
        stopped: (Client.start, Client.scanned, Client.nothingFound, Client.retry,
                  Client.registered, Client.tryNext, Client.exhausted, Client.connected,
                  Client.answered, Client.probeMissed, Client.probeAnswered,
                  Client.failover, Client.dropped, Client.switch, Client.stopped),
    }
    for state, inputs in ignored.items():
        ignore = _ignore if state in (idle, stopping, stopped) else _ignoreWithData
        for name in inputs:
            state.upon(name).loop()(ignore)

    # -- status ----------------------------------------------------------
    @idle.upon(Client.describe).loop()
    def describeIdle(client, core):
        return core.status("idle")

    @searching.upon(Client.describe).loop()
    def describeSearching(client, core, pending: Pending):
        return core.status("searching")

    @waiting.upon(Client.describe).loop()
    def describeWaiting(client, core, waiting: Waiting):
        return core.status("waiting", retry_in=max(0, round(waiting.call.getTime() - core.clock.seconds(), 1)))

    @registering.upon(Client.describe).loop()
    def describeRegistering(client, core, pending: Pending):
        return core.status("registering", attempt=pending.attempt.step.describe())

    @connecting.upon(Client.describe).loop()
    def describeConnecting(client, core, pending: Pending):
        return core.status("connecting", attempt=pending.attempt.step.describe())

    @verifying.upon(Client.describe).loop()
    def describeVerifying(client, core, verifying: Verifying):
        session = verifying.session
        return core.status("verifying", attempt=dict(
            verifying.attempt.step.describe(), device=getattr(session.connection, "device", None),
            address=session.lease.get("config", {}).get("address")))

    @online.upon(Client.describe).loop()
    def describeOnline(client, core, session: Session):
        return core.status("online", current=session.describe(core.clock.seconds()))

    @degraded.upon(Client.describe).loop()
    def describeDegraded(client, core, session: Session):
        return core.status("degraded", current=session.describe(core.clock.seconds()))

    @stopping.upon(Client.describe).loop()
    def describeStopping(client, core):
        return core.status("stopping")

    @stopped.upon(Client.describe).loop()
    def describeStopped(client, core):
        return core.status("stopped")

    return builder.build()


makeClient = _buildMachine()
