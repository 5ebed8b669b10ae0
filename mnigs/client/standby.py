# -*- test-case-name: tests.unit.test_standby -*-
"""
Hot standbys: while the client is online, the next-best gateway (another
than the serving one) is registered, its tunnel up beside the serving one
on a device of its own (L{mnigs.methods.slots}) without mnigs's default
route, verified and watched like the serving session (health probes,
renewal, route check, offer watch, the tunnel's loss).  When the serving
gateway fails, the agent hands a ready standby to the client machine,
whose C{promoting} state makes it the serving session by a route change
(L{mnigs.client.machine.IClientEffects.activate}): no RPC on the
failover path.

A standby's life is one machine (L{StandbyMachine}, a slot):

    idle         --begin-->       registering
    registering  --registered-->  connecting
    registering  --tryNext-->     registering   (the next method or gateway)
    connecting   --connected-->   verifying
    connecting   --tryNext-->     registering
    verifying    --answered-->    ready         (its watchers start)
    verifying    --tryNext-->     registering
    registering/connecting/verifying --exhausted--> failed
    ready        --lost-->        failed        (probes, lease, route, unavailable, tunnel)
    ready        --promote-->     promoted      (the session is the client machine's now)
    every state  --release-->     released      (what is under way cancelled; the
                                                 tunnel down, the lease released unless
                                                 the client machine registers with its
                                                 gateway: it gets the same lease)

Entering registering, connecting and verifying starts their work, as in
the client machine (whose L{Pending} and L{Verifying} data they share).

L{Standbys} keeps C{standby.count} slots going: it plans each from the
last scan ranked as of now, without the serving gateway and the other
standbys' gateways and only over methods that hold more than one
connection; a slot that failed is replaced after a backoff (sooner when
the routes change or a rescan ends), and every standby is released when
the client leaves online other than by a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.client.machine import (
    IClientEffects,
    IStandbys,
    Pending,
    Session,
    Trace,
    Verifying,
    _ignore,
    _ignoreWithData,
    _named,
    _session,
    bringUp,
    register,
    registerNext,
    stepDone,
    stepNext,
)
from mnigs.client.machine import verify as _verify
from mnigs.client.plan import Attempt
from mnigs.client.reasons import PROBES, ROUTE, kindOf
from mnigs.system.backoff import Backoff
from mnigs.system.tracing import setTrace

log = Logger()


class Standby(Protocol):
    def begin(self, attempt: Attempt) -> None:
        "Register for C{attempt}'s step (from idle)."

    def registered(self, attempt: Attempt, lease: dict) -> None:
        "The gateway granted a lease."

    def tryNext(self, attempt: Attempt, reason: str) -> None:
        "The step failed; C{attempt} points at the next one."

    def exhausted(self, reason: str) -> None:
        "Every step of the plan failed."

    def connected(self, attempt: Attempt, session: Session) -> None:
        "The standby's tunnel is up (without the route)."

    def answered(self, session: Session, rtt: float) -> None:
        "A probe through it was answered: it is ready to take over."

    def lost(self, session: Session, reason: str) -> None:
        "Its gateway or tunnel failed (a watcher's report)."

    def promote(self, session: Session) -> Session | None:
        "Hand the ready session over to the client machine (C{None}: not ready)."

    def release(self, keepLease: bool = False) -> defer.Deferred:
        """
        Give it all up: cancel, take the tunnel down, release the lease
        (not with C{keepLease}: the client registers with the same
        gateway, which answers with this very lease).
        """

    def describe(self) -> dict:
        "Status."


@dataclass
class StandbyCore:
    """
    What a slot shares between its states: the clock, the effects, the
    trace (the L{Standbys}' one, C{standby}), and the pool's callbacks,
    told once the slot is C{ready} or C{failed}.
    """
    clock: IReactorTime
    effects: IClientEffects
    trace: Trace
    onReady: Callable[[Session], None]
    #: C{onFailed(reason, silent)}: C{silent}, its gateway did not answer
    #: (a registration unanswered, probes or the route lost)
    onFailed: Callable[[str, bool], None]
    log: Logger = field(default_factory=Logger)
    reason: str = ""

    def because(self, reason: str) -> None:
        self.reason = reason
        self.trace.because(reason)

    def status(self, state: str, **extra) -> dict:
        status = {"state": state, "reason": self.reason}
        status.update(extra)
        return status


def connect(slot: Standby, core: StandbyCore, attempt: Attempt, lease: dict) -> Pending:
    "Entering connecting: the tunnel, beside the serving one, without the route."
    return bringUp(slot, core, attempt, lease, core.effects.connectStandby, "standby ")


def verify(slot: Standby, core: StandbyCore, attempt: Attempt, session: Session) -> Verifying:
    "Entering verifying: probe through the standby's tunnel."
    return _verify(slot, core, attempt, session, "standby ")


def _buildMachine():
    builder = TypeMachineBuilder(Standby, StandbyCore)
    idle = builder.state("idle")
    registering = builder.state("registering", register)
    connecting = builder.state("connecting", connect)
    verifying = builder.state("verifying", verify)
    ready = builder.state("ready", _session)
    failed = builder.state("failed")
    promoted = builder.state("promoted")
    released = builder.state("released")

    @idle.upon(Standby.begin).to(registering)
    def beginning(slot, core, attempt):
        core.because(f"registering with {attempt.step.gateway} over {attempt.step.method}")

    registering.upon(Standby.registered).to(connecting)(stepDone)
    registering.upon(Standby.tryNext).loop()(registerNext)
    connecting.upon(Standby.connected).to(verifying)(stepDone)
    connecting.upon(Standby.tryNext).to(registering)(stepNext)
    verifying.upon(Standby.tryNext).to(registering)(stepNext)

    def giveUp(core, reason, silent):
        core.because(reason)
        core.log.info("standby: {reason}", reason=reason)
        core.onFailed(reason, silent)

    @registering.upon(Standby.exhausted).to(failed)
    def unanswered(slot, core, pending: Pending, reason):
        # Refused or unanswered: the pool watches for an answer meanwhile
        # (a refusal's offer is not usable, so it does not end the wait).
        giveUp(core, reason, True)

    @connecting.upon(Standby.exhausted).to(failed)
    @verifying.upon(Standby.exhausted).to(failed)
    def notUp(slot, core, pending: object, reason):
        giveUp(core, reason, False)

    @verifying.upon(Standby.answered).to(ready)
    def becomeReady(slot, core, verifying: Verifying, session, rtt):
        core.because("")
        session.startedAt = core.clock.seconds()
        core.log.info("standby ready via {gateway} over {method} on {device} (a probe through "
                      "it answered in {rtt} ms)", device=session.connection.device,
                      rtt=f"{rtt * 1000:.1f}", **_named(session.step))
        core.effects.watch(session)
        core.onReady(session)

    @ready.upon(Standby.lost).to(failed)
    def goneBad(slot, core, session: Session, lostSession, reason):
        core.because(str(reason))
        core.log.warn("standby via {gateway} lost: {reason}; replacing it", reason=reason,
                      **_named(session.step))
        core.effects.noteFailure(session.step, str(reason))
        core.effects.disconnect(session)
        core.effects.unregister(session.step, session.lease)
        core.onFailed(str(reason), kindOf(reason) in (PROBES, ROUTE))

    @ready.upon(Standby.promote).to(promoted)
    def handOver(slot, core, session: Session, promotedSession):
        core.because(f"promoted: serving via {session.step.gateway}")
        return session

    # -- release ------------------------------------------------------------
    @idle.upon(Standby.release).to(released)
    @failed.upon(Standby.release).to(released)
    @promoted.upon(Standby.release).to(released)
    @released.upon(Standby.release).loop()
    def nothingToRelease(slot, core, keepLease=False):
        return defer.succeed(None)

    @registering.upon(Standby.release).to(released)
    def releaseRegistering(slot, core, pending: Pending, keepLease=False):
        pending.cancel()
        return defer.succeed(None)

    @connecting.upon(Standby.release).to(released)
    def releaseConnecting(slot, core, pending: Pending, keepLease=False):
        pending.cancel()
        if keepLease:
            return defer.succeed(None)
        return defer.maybeDeferred(core.effects.unregister, pending.attempt.step, pending.lease)

    def releaseSession(core, session, keepLease):
        done = [defer.maybeDeferred(core.effects.disconnect, session)]
        if not keepLease:
            done.append(defer.maybeDeferred(core.effects.unregister, session.step, session.lease))
        return defer.DeferredList(done, consumeErrors=True).addBoth(lambda _: None)

    @verifying.upon(Standby.release).to(released)
    def releaseVerifying(slot, core, verifying: Verifying, keepLease=False):
        verifying.cancel()
        return releaseSession(core, verifying.session, keepLease)

    @ready.upon(Standby.release).to(released)
    def releaseReady(slot, core, session: Session, keepLease=False):
        core.log.info("standby via {gateway} released{kept}", **_named(session.step),
                      kept=" (its lease goes on: the client registers with it)" if keepLease
                      else "")
        return releaseSession(core, session, keepLease)

    # -- late or misplaced inputs --------------------------------------------
    everything = (Standby.begin, Standby.registered, Standby.tryNext, Standby.exhausted,
                  Standby.connected, Standby.answered, Standby.lost, Standby.promote)
    handled = {
        idle: (Standby.begin,),
        registering: (Standby.registered, Standby.tryNext, Standby.exhausted),
        connecting: (Standby.connected, Standby.tryNext, Standby.exhausted),
        verifying: (Standby.answered, Standby.tryNext, Standby.exhausted),
        ready: (Standby.lost, Standby.promote),
        failed: (), promoted: (), released: (),
    }
    for state, inputs in handled.items():
        ignore = _ignore if state in (idle, failed, promoted, released) else _ignoreWithData
        for name in everything:
            if name not in inputs:
                state.upon(name).loop()(ignore)

    # -- status ----------------------------------------------------------------
    for state, name in ((idle, "idle"), (failed, "failed"), (promoted, "promoted"),
                        (released, "released")):
        def describe(slot, core, name=name):
            return core.status(name)
        state.upon(Standby.describe).loop()(describe)

    @registering.upon(Standby.describe).loop()
    @connecting.upon(Standby.describe).loop()
    def describePending(slot, core, pending: Pending):
        return core.status("registering" if pending.lease is None else "connecting",
                           attempt=pending.attempt.step.describe())

    @verifying.upon(Standby.describe).loop()
    def describeVerifying(slot, core, verifying: Verifying):
        return core.status("verifying", attempt=dict(
            verifying.attempt.step.describe(), device=verifying.session.connection.device))

    @ready.upon(Standby.describe).loop()
    def describeReady(slot, core, session: Session):
        return core.status("ready", standby=session.describe(core.clock.seconds()))

    return builder.build()


StandbyMachine = _buildMachine()


class Slot:
    """
    One standby: its machine, the gateway it was planned for, and the
    session it holds once ready (which the watchers' reports name).
    """

    def __init__(self, core: StandbyCore, gatewayId: str):
        self.gatewayId = gatewayId
        self.machine: Standby = StandbyMachine(core)
        setTrace(self.machine, core.trace)
        self.session: Session | None = None


@implementer(IStandbys)
class Standbys:
    """
    C{count} hot standbys while the client is online (see the module
    docstring).  The agent tells it what the serving session's watchers
    cannot: which session serves (L{serving}), which standby is handed
    over (L{take}), when the client leaves online otherwise
    (L{release}); the standbys' watchers' reports come through the agent
    (L{owns}, L{lost}).

    @param plan: C{plan(exclude, fresh)} -> an L{Attempt} over the last
        scan and the L{Seen}s in C{fresh} (heard since), ranked as of now,
        without the gateway ids in C{exclude}, over the methods that hold
        more than one connection; or C{None}.
    """

    def __init__(self, clock: IReactorTime, effects: IClientEffects, count: int,
                 plan: Callable[[frozenset], Attempt | None], backoff: Backoff | None = None,
                 trace: Trace | None = None):
        self.clock = clock
        self.effects = effects
        self.count = count
        self.plan = plan
        self.backoff = backoff or Backoff(1.0, 10.0)
        self.trace = trace or Trace(clock, name="standby")
        self.slots: list[Slot] = []
        self.servingId: str | None = None
        self.handingOver: Session | None = None
        self.timer: IDelayedCall | None = None
        self.waitingFor = ""  # why no standby is being made now
        #: gateways whose standby failed unanswered, watched for an answer
        #: meanwhile (IClientEffects.watchGateway), with when each was last tried
        self.watches: dict[str, defer.Deferred] = {}
        self.tried: dict[str, float] = {}
        #: what a watched gateway answered (maybe at another address than
        #: the last scan knows: a route to its node address lags behind)
        self.fresh: dict[str, object] = {}

    # -- what the agent and the client machine tell it --------------------------
    def serving(self, session: Session) -> None:
        "The client is online through C{session}: keep standbys for other gateways."
        self.servingId = session.step.gatewayId
        self.handingOver = None
        self.fill()

    def best(self) -> Session | None:
        """
        A ready standby's session to promote (the best ranked first), or
        C{None}: none is ready, or a promotion is under way already.
        """
        return next(self._ready(), None)

    def readyFor(self, gatewayId: str) -> Session | None:
        """
        The ready standby's session with gateway C{gatewayId} (a planned
        move there is a hand-over), or C{None}.
        """
        return next((s for s in self._ready() if s.step.gatewayId == gatewayId), None)

    def _ready(self):
        "The ready standbys' sessions, best ranked first; none while a promotion is under way."
        if self.handingOver is None:
            yield from (slot.session for slot in self.slots if slot.session is not None)

    def take(self, session: Session) -> None:
        "The client machine promotes C{session}: it is no standby any more."
        for slot in list(self.slots):
            if slot.session is session:
                slot.machine.promote(session)
                self.slots.remove(slot)
                self.handingOver = session
                self.servingId = session.step.gatewayId

    def release(self, keepLeaseAt: str | None = None) -> defer.Deferred:
        """
        The client left online other than by a promotion: every standby
        goes (what is under way cancelled, tunnels down, leases released
        but the one with gateway C{keepLeaseAt}, which the client
        registers with: it answers with that same lease), and none is
        made until it serves again.
        """
        self.servingId = None
        self.handingOver = None
        self._cancelTimer()
        self._unwatch()
        self.fresh.clear()
        slots, self.slots = self.slots, []
        if not slots:
            return defer.succeed(None)
        return defer.DeferredList([slot.machine.release(slot.gatewayId == keepLeaseAt)
                                   for slot in slots],
                                  consumeErrors=True).addBoth(lambda _: None)

    def owns(self, session: Session) -> bool:
        "Whether C{session} is a standby's (its watchers' reports come here)."
        return any(slot.session is session for slot in self.slots)

    def lost(self, session: Session, reason) -> None:
        for slot in list(self.slots):
            if slot.session is session:
                slot.machine.lost(session, reason)

    def keepOnly(self, usable) -> None:
        """
        The policy changed (C{mnigsctl block}, a reload): the standbys of
        gateways not in C{usable} (ids) are released, and replaced.
        """
        gone = [slot for slot in self.slots if slot.gatewayId not in usable]
        for slot in gone:
            self.slots.remove(slot)
            self.trace.note(f"standby via {slot.gatewayId} released",
                            "the policy no longer allows its gateway")
            slot.machine.release()
        if gone:
            self.fill()

    def retry(self) -> None:
        "The routes or the ranking changed: a replacement waiting on its backoff is made now."
        if self.timer is not None and self.timer.active():
            self._cancelTimer()
            self.fill()

    # -- keeping the count --------------------------------------------------------
    def fill(self) -> None:
        # While a promotion is under way the next standby waits for it to
        # serve (L{serving}): its gateway is not to be asked for a second lease.
        if self.servingId is None or self.handingOver is not None or self.count <= 0:
            return
        if self.timer is not None and self.timer.active():
            return
        while len(self.slots) < self.count:
            exclude = frozenset({self.servingId} | {slot.gatewayId for slot in self.slots})
            attempt = self.plan(exclude, tuple(self.fresh.values()))
            if attempt is None:
                self._later("no other usable gateway for a standby")
                return
            # One gateway a slot: one that fails is replaced by a fresh plan,
            # which ranks it after the others while it cools down.
            first = attempt.step.gatewayId
            self._start(Attempt(tuple(s for s in attempt.steps if s.gatewayId == first)))

    def _start(self, attempt: Attempt) -> None:
        def ready(session):
            slot.session = session
            self.backoff.reset()
            self.waitingFor = ""

        def failed(reason, silent):
            if slot in self.slots:
                self.slots.remove(slot)
            self._later(reason)
            if silent:
                self._watch(slot.gatewayId)

        gatewayId = attempt.step.gatewayId
        self._unwatch(gatewayId)
        self.fresh.pop(gatewayId, None)
        self.tried[gatewayId] = self.clock.seconds()
        slot = Slot(StandbyCore(self.clock, self.effects, self.trace, ready, failed), gatewayId)
        self.slots.append(slot)
        slot.machine.begin(attempt)

    #: A gateway watched answering again is tried at most this often.
    WATCHED_RETRY = 1.0

    def _watch(self, gatewayId: str) -> None:
        """
        The gateway of a standby that failed unanswered is asked for its
        offer meanwhile: once it answers again (it came back) a standby
        is made at once, not at the end of the backoff.
        """
        if gatewayId in self.watches:
            return
        watch = self.watches[gatewayId] = self.effects.watchGateway(gatewayId)

        def answered(seen):
            self.watches.pop(gatewayId, None)
            self.fresh[gatewayId] = seen
            wait = self.tried.get(gatewayId, 0.0) + self.WATCHED_RETRY - self.clock.seconds()
            self.trace.note("standby wanted", f"{seen.offer.name or gatewayId} answers again")
            if wait <= 0:
                self.retry()
            elif self.timer is not None and self.timer.active() and \
                    self.timer.getTime() > self.clock.seconds() + wait:
                self.timer.reset(wait)

        watch.addCallbacks(answered, lambda f: f.trap(defer.CancelledError))

    def _unwatch(self, gatewayId: str | None = None) -> None:
        for gid in ([gatewayId] if gatewayId is not None else list(self.watches)):
            watch = self.watches.pop(gid, None)
            if watch is not None and not watch.called:
                watch.cancel()

    def _later(self, reason: str) -> None:
        if self.timer is not None and self.timer.active():
            return
        delay = self.backoff.next()
        self.waitingFor = reason
        self.trace.note("standby wanted", f"{reason}; trying again in {delay:g} s")
        self.timer = self.clock.callLater(delay, self._again)

    def _again(self) -> None:
        self.timer = None
        self.fill()

    def _cancelTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def qualities(self) -> dict:
        qualities = {}
        for slot in self.slots:
            monitor = getattr(slot.session, "health", None)
            if monitor is not None:
                qualities[slot.gatewayId] = monitor.quality()
        return qualities

    def describe(self) -> dict:
        "C{mnigsctl status}'s C{standby}: the count wanted and each standby's state."
        status = {"count": self.count, "standbys": [slot.machine.describe() for slot in self.slots],
                  "transitions": self.trace.describe()}
        if self.timer is not None and self.timer.active():
            status["next_try_in"] = round(max(0.0, self.timer.getTime() - self.clock.seconds()), 1)
            status["waiting_for"] = self.waitingFor
        return status
