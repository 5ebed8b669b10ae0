"""
The client's lifecycle as one Automat machine.  The whole table (every
transition is written out in L{_buildMachine}, in this order, and drawn in
docs/machines; docs/architecture.md has it too):

    idle         --start-->          searching
    searching    --scanned-->        registering
    searching    --nothingFound-->   waiting
    searching    --retry-->          searching     (the routes changed: an empty result is stale)
    searching    --scanStale-->      searching     (scan again at once)
    waiting      --retry-->          searching
    registering  --registered-->     connecting
    registering  --tryNext-->        registering   (the next method or gateway)
    connecting   --connected-->      verifying
    connecting   --tryNext-->        registering
    verifying    --answered-->       online
    verifying    --tryNext-->        registering
    registering/connecting/verifying --exhausted--> waiting
    online       --probeMissed-->    degraded
    degraded     --probeMissed-->    degraded
    degraded     --probeAnswered-->  online
    online/degraded --failover-->    registering   (the gateway died or forgot the lease)
    online/degraded --switch-->      registering   (a better gateway, or the policy moved us)
    online/degraded --dropped-->     searching     (it died and nothing else is known)
    online/degraded --use-->         moving        (the operator chose a gateway: mnigsctl use)
    online/degraded --plannedMove--> moving        (a better gateway held past the margin,
                                                    or this one says it is unavailable)
    moving       --tryNext-->        moving        (the chosen gateway's next method)
    moving       --answered-->       online        (made before break: its tunnel came up beside
                                                    the old one and answered; it serves, the old
                                                    session's connections stay on its tunnel)
    moving       --registered-->     connecting    (break before make, where the method cannot
                                                    hold two tunnels: the old session ends)
    moving       --refused-->        online        (it refused: the session goes on untouched)
    moving       --failover-->       registering   (the old gateway died meanwhile)
    moving       --dropped-->        searching
    online/degraded/moving --promote--> promoting (a hot standby takes over: a route change)
    promoting    --promoted-->       online
    promoting    --failover/dropped--> registering/searching
    online/degraded --moveToStandby--> handingOver (a planned move to the gateway of a
                                                    ready standby: made before break)
    handingOver  --promoted-->       online
    handingOver  --failover/dropped--> registering/searching
    every state  --stop-->           stopping --stopped--> stopped
                                     (idle and stopped: stopped at once)

Entering a state starts its work: the state's data factory does it and
returns what the state owns, as Twisted's C{ClientService} does
(C{_client_service.py}); no input is fired at the machine to get it going:

    searching    offline (L{IClientEffects.offline}); a scan (L{IClientEffects.scan},
                 settling early)
    waiting      offline; the backoff timer, which fires C{retry}
    registering  C{gateway.register} for the attempt's step
    connecting   the tunnel (L{IClientEffects.connect})
    verifying    a probe through it (L{IClientEffects.verify})
    promoting    the standby's route and the client's table
                 (L{IClientEffects.activate}); no RPC on the way
    handingOver  the old session's flows pinned to its tunnel, then as
                 promoting (L{IClientEffects.handOver})
    moving       C{gateway.register} with the chosen gateway, the session
                 still up; once granted, where the method can hold a
                 second tunnel (L{IClientEffects.canConnectBeside}), that
                 tunnel beside the old one (L{IClientEffects.connectStandby})
                 and a probe through it, then C{answered}; otherwise the
                 callback ends the old session before feeding
                 C{registered}, so the new tunnel is serialised after the
                 old one's teardown

A data factory runs before the behaviour of the transition that enters
its state: leaving a session for the next gateway starts the next
registration, then ends the session (the effects serialise the next
connect after its teardown).

Decisions that need computing (which step comes next after a failure,
whether a better gateway has been better for long enough, whether an
offer saying "unavailable" is to be believed) are made in plain methods
(the callbacks below, L{mnigs.client.agent.ClientAgent},
L{Session.saysUnavailable}), which then feed the machine one clean input.
Every input that leads into a data state carries that state's data, so a
session passes from online to degraded and back intact.

A tunnel that is up is not yet online: in C{verifying} the client probes
through it and goes online only once a probe is answered; otherwise it
takes the tunnel down and tries the next step at once, as after a tunnel
that did not come up.

All I/O goes through C{core.effects} (L{IClientEffects}); tests wire a
recording fake there.  Every transition goes to C{core.trace}
(L{Trace}), which the log (at debug) and C{mnigsctl status} show.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from mnigs.client.plan import Attempt, Step
from mnigs.client.reasons import SWITCH, Reason, kindOf
from mnigs.interfaces import IClientConnection, IPinger
from mnigs.system.backoff import Backoff
from mnigs.system.tracing import setTrace
from mnigs.system.waiters import Waiters

log = Logger()


class IClientEffects(Interface):
    """
    What the client machine does to the world.  Every call returning a
    Deferred must be cancellable: the machine cancels what it no longer
    waits for.
    """

    def watchGateway(gatewayId):
        """
        Deferred[Seen]: fires once that gateway offers something usable
        again (asked every 0.5 s at the addresses scans met it on; a
        standby's gateway that went silent); cancellable, never fails.
        """

    def watchRecent():
        """
        Deferred[Seen]: fires once a gateway met lately offers something
        usable again (asked every 0.5 s); cancellable, never fails.
        """

    def scan(early=False):
        """
        Discover and rank gateways: Deferred[list of Ranked].  C{early}:
        settle soon after the first usable answer instead of hearing out
        every candidate (what an offline client wants).
        """

    def rerank():
        "The last scan's offers ranked again as of now: list of Ranked."

    lastCandidates = Attribute(
        "The route sources' candidates (L{mnigs.routing.candidates.Candidate}) of the last "
        "scan, for the status page's drawing of the mesh.")

    def plan(ranked, exclude):
        "An Attempt over C{ranked} without the gateway ids in C{exclude}, or None."

    def register(step):
        "Deferred[lease dict] from gateway.register."

    def connect(step, lease):
        "Deferred[L{IClientConnection}]: the tunnel and routes are up."

    def connectStandby(step, lease):
        """
        Deferred[L{IClientConnection}]: a tunnel is up beside the serving
        one, on a device of its own, without mnigs's default route (a hot
        standby); L{activate} gives it the route later.
        """

    def activate(session):
        """
        Make a standby's session the serving one: mnigs's default route
        through its tunnel (a route change) and the client's table told
        its passage.  Deferred; fails if the route could not be put there.
        """

    def watch(session):
        """
        Start a session's watchers (health probes, renewal, route check,
        offer watch, the tunnel's loss), reporting about it to the
        L{ISessionReports}: a standby's before it serves, the serving
        session's from L{startSession} on.
        """

    def verify(session):
        """
        Deferred[round-trip time]: a probe through the session's tunnel was
        answered (by the Internet, when there are Internet targets).  Fails
        with a reason when none is answered within a short deadline.
        """

    def canConnectBeside(session, step):
        """
        Whether a planned move from C{session} to C{step}'s gateway can be
        made before break: the new tunnel brought up beside the session's
        (L{connectStandby}) and the session's connections kept on its
        tunnel once the new one serves (L{handOver}; C{routing.keep_old}).
        """

    def handOver(old, new):
        """
        A planned move's new session (verified, beside C{old}) serves now:
        C{old}'s connections stay on its tunnel (make-before-break,
        L{mnigs.client.pinning}) while mnigs's default route goes through
        C{new}'s; C{old} ends (C{offline} hook, quality history) and its
        tunnel and lease are kept only until none of its connections is
        left.  Deferred, fired once the client's table carries C{new};
        never fails.
        """

    def disconnect(session):
        """
        Take down the tunnel of a session that never went online (no
        hooks to undo; a standby's watchers stop); serialised with the
        next connect like C{endSession}.  Deferred.
        """

    def unregister(step, lease):
        "Best-effort release; never fails."

    def startSession(session):
        """
        An online session: its watchers (L{watch}, unless they run
        already), the quality history, the lease's resolvers, the hook.
        """

    def endSession(session):
        "Stop them, take the tunnel and routes down; Deferred."

    def offline():
        """
        No session is left and none is under way (searching, waiting,
        stopped): put back what outlasts one session to bridge a failover
        (the lease's resolvers).  Idempotent.
        """

    def noteFailure(step, reason):
        "Record a failure of the step's gateway in the quality history."

    def announce(event, session, reason, nextStep=None):
        """
        Tell the operator's hook for C{event} (C{failover}, C{degraded})
        about the session's gateway, why, and (failover) the step tried
        next.  Never fails.
        """


class ISessionReports(Interface):
    """
    What the watchers of an online session (L{IClientEffects.startSession})
    report, and to whom: L{mnigs.client.agent.ClientAgent}, which decides
    and feeds the machine.  Reports about a session that is no longer the
    current one are ignored.
    """

    def lost(session, reason):
        "The gateway or the tunnel is gone: fail over, or search."

    def leaseLost(session, reason):
        "The gateway no longer knows our lease: register again, with it first."

    def probeMissed(session, count):
        "The count-th health probe round in a row went unanswered."

    def probeAnswered(session, rtt):
        "A health probe round was answered."

    def probeSample(session, rtt):
        "One health probe round's result (None: unanswered), for the quality history."


class IStandbys(Interface):
    """
    The client's hot standbys (L{mnigs.client.standby.Standbys}): what the
    machine tells them (L{serving}, L{take}, L{release}) and what the
    agent asks and tells them (the rest).
    """

    def best():
        "A ready standby's session to promote, or None."

    def owns(session):
        "Whether C{session} is a standby's (its watchers' reports go to L{lost})."

    def lost(session, reason):
        "A standby's watcher reports its loss: it is replaced."

    def retry():
        "The routes or the ranking changed: a replacement waiting on its backoff is made now."

    def keepOnly(usable):
        "The policy changed: release the standbys of gateways not in C{usable} (ids)."

    def qualities():
        """
        C{{gateway id: Quality}} of the ready standbys, as their own health
        monitors measure them (L{mnigs.client.health}), for the
        degradation judge.
        """

    def describe():
        "Status (C{mnigsctl status}'s C{standby})."

    def serving(session):
        "The client is online through C{session}: keep standbys for other gateways."

    def take(session):
        "C{session}, a ready standby's, is being promoted: it is no standby any more."

    def readyFor(gatewayId):
        "A ready standby's session with the gateway C{gatewayId}, or None."

    def release(keepLeaseAt=None):
        """
        The client left online other than by a promotion: every standby
        goes (cancelled, tunnels down, leases released, but that of the
        gateway C{keepLeaseAt}, which the client is registering with: it
        answers with that same lease).  Deferred.
        """


@implementer(IStandbys)
class NoStandbys:
    "No standbys (C{standby.count = 0}, and the tests of the machine alone)."

    def serving(self, session):
        pass

    def take(self, session):
        pass

    def release(self, keepLeaseAt=None):
        return defer.succeed(None)

    def best(self):
        return None

    def readyFor(self, gatewayId):
        return None

    def owns(self, session):
        return False

    def keepOnly(self, usable):
        pass

    def lost(self, session, reason):
        pass

    def retry(self):
        pass

    def qualities(self):
        return {}

    def describe(self):
        return {"count": 0, "standbys": []}


@dataclass
class Session:
    """
    A tunnel that is up, and what the effects hang on it: the probe
    targets and the pinger bound to its device (from verification on),
    the health monitor and the watchers' stoppers (once online), the
    warnings already given, and the issue time of the latest verified
    offer of its gateway (L{saysUnavailable}).
    """
    step: Step
    lease: dict
    connection: IClientConnection
    startedAt: float
    stoppers: list = field(default_factory=list)
    targets: object = None  # mnigs.client.health.ProbeTargets
    pinger: IPinger | None = None
    health: object = None  # a mnigs.client.health.HealthMonitor
    warned: set = field(default_factory=set)
    latestOffer: float | None = None

    def saysUnavailable(self, offer) -> bool:
        """
        The one check of "the gateway says it is unavailable", for the
        offer watch and the rescans alike.  C{offer} (a verified
        L{mnigs.protocol.Offer}) counts only if it is signed by the
        session's gateway and is not older than the latest offer seen
        from it, at first the one the session registered from: anyone on
        the mesh between us and the gateway could replay an old one
        (protocol v2).  An offer that counts becomes the latest.  Logs
        why one saying unavailable moves nobody.
        """
        step = self.step
        latest = self.latestOffer
        if latest is None:
            latest = step.seen.offer.issuedAt
        if offer.gatewayId != step.gatewayId:
            why = "it is signed by another gateway"
        elif offer.issuedAt < latest:
            why = "it is older than an offer already seen (a replay)"
        else:
            self.latestOffer = offer.issuedAt
            return not offer.available
        if offer.available:
            log.debug("ignoring an offer from {gateway}: {why}", gateway=step.gateway, why=why)
        else:
            log.info("ignoring an offer saying {gateway} is unavailable: {why}",
                     gateway=step.gateway, why=why)
        return False

    def describe(self, now):
        current = self.step.describe()
        current["lease_expires_in"] = max(0, int(self.lease.get("expires_at", now) - now))
        current["online_for"] = int(now - self.startedAt)
        current["address"] = self.lease.get("config", {}).get("address")
        current["device"] = self.connection.device
        address6 = self.connection.describe().get("address6")  # IPv6 egress, when in use
        if address6:
            current["address6"] = address6
        if self.health is not None:
            current["health"] = self.health.describe()
        return current


@dataclass
class Searching:
    """
    The data of searching: the scan under way, and whether the routes
    changed while it ran (an empty result is then stale: scan again at
    once instead of backing off).
    """
    operation: defer.Deferred | None = None
    routesChanged: bool = False

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()


@dataclass
class Pending:
    """
    The data of registering and connecting: the attempt, the lease (once
    registered) and the operation under way, cancelled if the machine
    moves on first.
    """
    attempt: Attempt
    lease: dict | None = None
    operation: defer.Deferred | None = None

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()


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
class Moving:
    """
    The data of moving: the session that goes on while the chosen
    gateway is asked for a lease, the attempt (the chosen gateway's steps
    first, then the usual plan as the fallback once the old session is
    left), the operation under way (the registration; made before break,
    then the new tunnel beside the old and a probe through it), and
    C{reply}, which the operator's request waits on: it fires with the
    lease's gateway once one is granted, or fails with ValueError saying
    why the client stays (C{None} for a planned move of the agent's).
    """
    session: Session
    attempt: Attempt
    reply: defer.Deferred | None
    operation: defer.Deferred | None = None
    #: make-before-break: the new lease, then the new tunnel's session
    #: beside the old one, until it is verified (or fails)
    lease: dict | None = None
    beside: Session | None = None

    @property
    def chosenId(self) -> str:
        return self.attempt.steps[0].gatewayId

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()

    def abandon(self, effects: IClientEffects) -> None:
        """
        Leave the move: what is under way is cancelled, a tunnel brought
        up beside the old one taken down and its lease released.
        """
        self.cancel()
        beside, lease, self.beside, self.lease = self.beside, self.lease, None, None
        if beside is not None:
            effects.disconnect(beside)
        if lease is not None:
            effects.unregister(self.attempt.step, lease)

    def answer(self, value=None, error: str = "") -> None:
        if self.reply is None or self.reply.called:
            return
        if error:
            self.reply.errback(ValueError(error))
        else:
            self.reply.callback(value)


@dataclass
class Promoting:
    """
    The data of promoting: the standby's session taking over, and the
    route change under way (L{IClientEffects.activate}).
    """
    session: Session
    operation: defer.Deferred | None = None

    def cancel(self):
        if self.operation is not None and not self.operation.called:
            self.operation.cancel()


@dataclass
class Waiting:
    call: IDelayedCall
    #: the gateways met lately, asked while we wait (L{IClientEffects.watchRecent})
    watch: defer.Deferred | None = None

    def cancel(self):
        if self.call.active():
            self.call.cancel()
        if self.watch is not None and not self.watch.called:
            self.watch.cancel()


class Client(Protocol):
    def start(self) -> None:
        "Begin looking for a gateway (from idle; ignored anywhere else)."

    def scanned(self, attempt: Attempt) -> None:
        "Discovery found usable gateways; C{attempt} is the plan."

    def nothingFound(self, reason: str) -> None:
        "Discovery found nothing usable."

    def scanStale(self) -> None:
        "The scan found nothing, but the routes changed while it ran."

    def retry(self) -> None:
        """
        Look again now: the backoff delay is over, or the routes or the
        policy changed.  While searching it makes an empty result stale.
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

    def promote(self, standby: Session, session: Session, reason: str) -> None:
        """
        The gateway of C{session} failed (C{reason}) and C{standby}, a hot
        standby's session (L{IStandbys}), is ready: it takes over by a
        route change.
        """

    def promoted(self, session: Session) -> None:
        "The promoted standby's route is in place: it serves."

    def moveToStandby(self, standby: Session, session: Session, reason: str,
                      reply: defer.Deferred | None) -> None:
        """
        A planned move (as L{plannedMove} or L{use}, C{reply} then) to the
        gateway of C{standby}, a ready hot standby's session: made before
        break by a route change, C{session}'s connections staying on its
        tunnel (L{IClientEffects.handOver}).
        """

    def switch(self, session: Session, attempt: Attempt, reason: str = "") -> None:
        """
        A better gateway has been better for long enough, or the policy
        (a reload, C{mnigsctl block}) no longer allows this one: C{reason}.
        """

    def use(self, session: Session, attempt: Attempt, reply: defer.Deferred) -> None:
        """
        The operator chose the gateway of C{attempt}'s first step: ask it
        for a lease while the session goes on.  C{reply} fires once it
        grants one, or fails with ValueError saying why the client stays.
        """

    def plannedMove(self, session: Session, attempt: Attempt, reason: str) -> None:
        """
        A move the agent planned (a better gateway held past the switch
        margin, or the gateway says it is unavailable): as L{use}, the
        first step's gateway is asked while the session goes on, and the
        session's connections are kept where the method allows.
        """

    def refused(self, session: Session, reason: str) -> None:
        "The chosen gateway refused every step: the session goes on."

    def stop(self) -> defer.Deferred:
        "Unregister, restore the routing, stop."

    def stopped(self) -> None:
        "Teardown is finished."

    def describe(self) -> dict:
        "Status for mnigsctl."


@dataclass
class Transition:
    """One line of a machine's trace: C{online --probeMissed--> degraded (why)}."""
    at: float
    old: str
    input: str
    new: str
    reason: str = ""

    @property
    def event(self) -> str:
        return f"{self.old} --{self.input}--> {self.new}"

    def __str__(self) -> str:
        text = self.event
        return f"{text} ({self.reason})" if self.reason else text


@dataclass
class Note:
    """One decision in a machine's trace that is not a transition: C{block gw-2 (why)}."""
    at: float
    event: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.event} ({self.reason})" if self.reason else self.event


class Trace:
    """
    The last C{size} transitions of a machine (magic-wormhole's
    C{set_trace}), for the log and the status: every change of state, and
    the loops that give a reason (the next step of a plan, another
    unanswered probe); the other loops (status requests, late inputs) are
    left out.  L{setTrace} makes it the machine's tracer; the machine's
    behaviours give the reason of the transition under way with
    L{because}.  Changes of state are logged at debug as they happen, a
    loop once it gives its reason.  Decisions made outside the machine
    (ranking, the operator's requests) are kept among them with L{note}
    (C{mnigsctl events}).  L{observe} adds an
    L{mnigs.interfaces.ITransitionObserver} (the metrics), told the
    transitions.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, size: int = 50, name: str = "client"):
        self.clock = clock
        self.name = name
        self.entries: collections.deque[Transition] = collections.deque(maxlen=size)
        self._current: Transition | None = None
        #: when the machine entered the state it is in
        self.changedAt: float = clock.seconds()
        self.observers: list = []

    def observe(self, observer) -> None:
        "Tell C{observer} (an L{mnigs.interfaces.ITransitionObserver}) from now on."
        self.observers.append(observer)

    def __call__(self, old, input: str, new) -> None:
        # Automat's tracer: called as each input is taken, before its
        # outputs run.
        entry = self._current = Transition(self.clock.seconds(), old.name, input, new.name)
        if old is not new:
            self.changedAt = entry.at
            self._record(entry)

    def because(self, reason: str) -> None:
        "The transition under way happens for C{reason}."
        entry = self._current
        if entry is None or not reason:
            return
        recorded = bool(self.entries) and self.entries[-1] is entry
        entry.reason = reason
        if not recorded:
            self._record(entry)
        for observer in self.observers:
            observer.explained(entry)

    def _record(self, entry: Transition) -> None:
        self.entries.append(entry)
        self.log.debug("{machine}: {transition}", machine=self.name, transition=str(entry))
        for observer in self.observers:
            observer.transitioned(entry)

    def stateAge(self) -> float:
        "Seconds since the machine entered the state it is in."
        return round(self.clock.seconds() - self.changedAt, 1)
    def note(self, event: str, reason: str = "") -> None:
        """
        A decision that is not a transition of the machine (a ranking
        decision, an operator's request), kept with the transitions.
        """
        entry = Note(self.clock.seconds(), event, reason)
        self.entries.append(entry)
        self.log.debug("{machine}: {note}", machine=self.name, note=str(entry))

    def describe(self) -> list[dict]:
        "The transitions kept, oldest first, with how long ago each was."
        now = self.clock.seconds()
        return [{"at": entry.at, "ago": round(now - entry.at, 1), "transition": str(entry)}
                for entry in self.entries if isinstance(entry, Transition)]

    def events(self) -> list[dict]:
        """
        The transitions and decisions kept, oldest (first) to newest (last):
        C{{"ago": seconds, "event": what, "reason": why}}.
        """
        now = self.clock.seconds()
        return [{"ago": round(now - entry.at, 1), "event": entry.event, "reason": entry.reason}
                for entry in self.entries]


@dataclass
class ClientCore:
    clock: IReactorTime
    effects: IClientEffects
    backoff: Backoff
    log: Logger = field(default_factory=Logger)
    ranked: list = field(default_factory=list)  # the last scan's Ranked, best first
    reason: str = ""
    session: Session | None = None
    stopWaiters: Waiters[None] = field(default_factory=Waiters)
    trace: Trace | None = None
    standbys: IStandbys = field(default_factory=NoStandbys)

    def __post_init__(self):
        if self.trace is None:
            self.trace = Trace(self.clock)

    def because(self, reason: str) -> None:
        "Why the machine is where it is now (status), and why it moved (trace)."
        self.reason = reason
        self.trace.because(reason)

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


def _notOnline(client, core, session, attempt, reply):
    reply.errback(ValueError("the client is not online: it has no session to move"))


def _notOnlineWithData(client, core, data: object, session, attempt, reply):
    _notOnline(client, core, session, attempt, reply)


def _standbyNotOnline(client, core, standby, session, reason, reply):
    if reply is not None and not reply.called:
        reply.errback(ValueError("the client is not online, or is moving already"))


def _standbyNotOnlineWithData(client, core, data: object, standby, session, reason, reply):
    _standbyNotOnline(client, core, standby, session, reason, reply)


# -- entering a state: the data factories, which start the state's work ----

def _scan(client: Client, core: ClientCore, searching: Searching) -> None:
    searching.routesChanged = False
    searching.operation = core.effects.scan(early=True)

    def done(ranked):
        core.ranked = ranked
        attempt = core.effects.plan(ranked, frozenset())
        if attempt is not None:
            client.scanned(attempt)
        elif searching.routesChanged:
            client.scanStale()
        else:
            client.nothingFound("no usable gateway found")

    def failed(failure):
        if not failure.check(defer.CancelledError):
            core.log.failure("discovery failed", failure)
            client.nothingFound(f"discovery failed: {failure.getErrorMessage()}")

    searching.operation.addCallbacks(done, failed)


def search(client: Client, core: ClientCore, *args) -> Searching:
    "Entering searching: offline; scan."
    core.effects.offline()
    searching = Searching()
    _scan(client, core, searching)
    return searching


def scheduleRetry(client: Client, core: ClientCore, reason: str) -> Waiting:
    """
    Entering waiting: offline; retry after the backoff delay, or as soon
    as a gateway met lately answers again.
    """
    core.effects.offline()
    waiting = Waiting(core.clock.callLater(core.backoff.next(), client.retry))
    waiting.watch = core.effects.watchRecent()

    def answered(seen):
        core.log.info("{gateway} answers again; searching", gateway=seen.offer.name or seen.host)
        client.retry()

    waiting.watch.addCallbacks(answered, lambda f: f.trap(defer.CancelledError))
    return waiting


def _registerFor(core: ClientCore, holder, attempt: Attempt, granted, failed) -> None:
    """
    Register for C{attempt}'s step (the operation kept on C{holder}, a
    L{Pending} or L{Moving}, so that leaving the state cancels it):
    C{granted(lease)}, or, once the failure is noted,
    C{failed(nextAttempt, reason)} with the attempt's next step or None.
    """
    step = attempt.step
    holder.operation = core.effects.register(step)

    def refused(failure):
        if failure.check(defer.CancelledError):
            return
        reason = f"{step.method} registration with {step.gateway} failed: {failure.getErrorMessage()}"
        core.effects.noteFailure(step, reason)
        failed(attempt.afterRegisterFailure(failure), reason)

    holder.operation.addCallbacks(granted, refused)


def _nextOrExhausted(machine, nextAttempt: Attempt | None, reason: str) -> None:
    if nextAttempt is None:
        machine.exhausted(reason)
    else:
        machine.tryNext(nextAttempt, reason)


def _register(machine, core, pending: Pending) -> None:
    attempt = pending.attempt
    _registerFor(core, pending, attempt, lambda lease: machine.registered(attempt, lease),
                 lambda nextAttempt, reason: _nextOrExhausted(machine, nextAttempt, reason))


def register(machine, core, *args) -> Pending:
    """
    Entering registering: register for the attempt's step.  The attempt
    is the input's: C{scanned(attempt)}, C{tryNext(attempt, reason)},
    C{failover(session, attempt, reason)} or C{switch(session, attempt)}
    (a standby's: C{begin(attempt)}).
    """
    pending = Pending(next(arg for arg in args if isinstance(arg, Attempt)))
    _register(machine, core, pending)
    return pending


def connect(client: Client, core: ClientCore, attempt: Attempt, lease: dict) -> Pending:
    "Entering connecting: bring the tunnel up for the lease."
    return bringUp(client, core, attempt, lease, core.effects.connect)


def bringUp(machine, core, attempt: Attempt, lease: dict, connect, what: str = "") -> Pending:
    """
    Bring a tunnel up with C{connect(step, lease)} (the serving one's, or
    a standby's: C{what} says which in the reasons), feeding the machine
    C{connected}, or C{tryNext}/C{exhausted} once the lease is released.
    """
    pending = Pending(attempt, lease)
    step = attempt.step
    pending.operation = connect(step, lease)

    def done(connection):
        machine.connected(attempt, Session(step, lease, connection, core.clock.seconds()))

    def failed(failure):
        if failure.check(defer.CancelledError):
            return
        why = ("nothing within methods.connect_timeout" if failure.check(defer.TimeoutError)
               else failure.getErrorMessage())
        reason = f"{what}{step.method} to {step.gateway} did not come up: {why}"
        core.effects.noteFailure(step, reason)
        core.effects.unregister(step, lease)
        _nextOrExhausted(machine, attempt.nextMethod(), reason)

    pending.operation.addCallbacks(done, failed)
    return pending


def verify(machine, core, attempt: Attempt, session: Session, what: str = "") -> Verifying:
    "Entering verifying: probe through the new tunnel."
    verifying = Verifying(attempt, session)
    verifying.operation = core.effects.verify(session)

    def done(rtt):
        machine.answered(session, rtt)

    def failed(failure):
        if failure.check(defer.CancelledError):
            return
        step = session.step
        reason = (f"{what}{step.method} to {step.gateway} passes no traffic: "
                  f"{failure.getErrorMessage()}")
        core.effects.noteFailure(step, reason)
        core.effects.disconnect(session)
        core.effects.unregister(step, session.lease)
        _nextOrExhausted(machine, attempt.nextMethod(), reason)

    verifying.operation.addCallbacks(done, failed)
    return verifying


def move(client: Client, core: ClientCore, session: Session, attempt: Attempt,
         replyOrReason) -> Moving:
    """
    Entering moving: ask the chosen gateway for a lease; the session goes
    on.  The input is C{use(session, attempt, reply)} or
    C{plannedMove(session, attempt, reason)}.
    """
    reply = replyOrReason if isinstance(replyOrReason, defer.Deferred) else None
    moving = Moving(session, attempt, reply)
    _registerMove(client, core, moving)
    return moving


def _granted(attempt: Attempt) -> dict:
    step = attempt.step
    return {"gateway": step.gatewayId, "name": step.seen.offer.name, "method": step.method,
            "state": "connecting"}


def _registerMove(client: Client, core: ClientCore, moving: Moving) -> None:
    attempt = moving.attempt

    def granted(lease):
        if core.effects.canConnectBeside(moving.session, attempt.step):
            moving.lease = lease
            moving.answer(_granted(attempt))
            # A standby under way with that gateway holds this very lease
            # (it answers a second registration with it): the standbys go,
            # that lease stays, and come back once a session serves.
            core.standbys.release(attempt.step.gatewayId)
            _connectBeside(client, core, moving)
            return
        # Break before make: the old session goes before the new tunnel
        # comes up (the effects serialise the connect after this
        # teardown); its lease is released by the transition.
        core.effects.endSession(moving.session)
        client.registered(attempt, lease)

    def failed(nextAttempt, reason):
        _moveFailed(client, moving, nextAttempt, reason)

    _registerFor(core, moving, attempt, granted, failed)


def _moveFailed(client: Client, moving: Moving, nextAttempt, reason: str) -> None:
    # The chosen gateway's other steps are tried; past them the session
    # goes on where it is.
    if nextAttempt is None or nextAttempt.step.gatewayId != moving.chosenId:
        client.refused(moving.session, reason)
    else:
        client.tryNext(nextAttempt, reason)


def _connectBeside(client: Client, core: ClientCore, moving: Moving) -> None:
    """
    Made before break: the new tunnel beside the old one, then a probe
    through it; C{answered} once one is answered, else the lease is
    released and the next step tried (L{_moveFailed}).
    """
    attempt, lease = moving.attempt, moving.lease
    step = attempt.step

    def connected(connection):
        beside = moving.beside = Session(step, lease, connection, core.clock.seconds())
        moving.operation = core.effects.verify(beside)
        moving.operation.addCallbacks(lambda rtt: client.answered(beside, rtt), failed)

    def failed(failure):
        if failure.check(defer.CancelledError):
            return
        why = ("nothing within methods.connect_timeout" if failure.check(defer.TimeoutError)
               else failure.getErrorMessage())
        reason = (f"{step.method} to {step.gateway} "
                  + ("passes no traffic" if moving.beside is not None else "did not come up")
                  + f": {why}")
        core.effects.noteFailure(step, reason)
        moving.operation = None
        moving.abandon(core.effects)
        _moveFailed(client, moving, attempt.nextMethod(), reason)

    moving.operation = core.effects.connectStandby(step, lease)
    moving.operation.addCallbacks(connected, failed)


def handOverTo(client: Client, core: ClientCore, standby: Session, session: Session,
               reason: str, reply) -> Promoting:
    """
    Entering handingOver: a planned move to a ready standby; C{session}'s
    flows are pinned to its tunnel before the standby takes mnigs's route
    and the client's table (L{IClientEffects.handOver}).
    """
    return _takeOver(client, core, standby,
                     defer.maybeDeferred(core.effects.handOver, session, standby),
                     "could not hand over to the standby via {gateway}",
                     "the hand-over failed: ")


def promote(client: Client, core: ClientCore, standby: Session, session: Session,
            reason: str) -> Promoting:
    """
    Entering promoting: the standby's session takes mnigs's default route
    and the client's table (a route change; no RPC on the way).
    """
    return _takeOver(client, core, standby,
                     defer.maybeDeferred(core.effects.activate, standby),
                     "could not make the standby via {gateway} the serving session",
                     "the standby's route could not be put in place: ")


def _takeOver(client: Client, core: ClientCore, standby: Session, operation: defer.Deferred,
              failing: str, because: str) -> Promoting:
    """
    C{standby} takes over once C{operation} fires (C{promoted}); if it
    fails, C{failing} is logged (with C{{gateway}}) and the client drops
    the standby C{because} of it.
    """
    taking = Promoting(standby, operation)

    def failed(failure):
        if failure.check(defer.CancelledError):
            return
        core.log.failure(failing, failure, gateway=standby.step.gateway)
        client.dropped(standby, f"{because}{failure.getErrorMessage()}")

    operation.addCallbacks(lambda _: client.promoted(standby), failed)
    return taking


# -- the behaviours of a step of a plan, shared with the standbys' machine --

def stepDone(machine, core, pending: Pending, *args) -> None:
    "A step went through: the next state's data factory takes it on."


def registerNext(machine, core, pending: Pending, attempt: Attempt, reason: str) -> None:
    "A registration failed: register for the next step (C{attempt})."
    stepNext(machine, core, pending, attempt, reason)
    pending.attempt = attempt
    _register(machine, core, pending)


def stepNext(machine, core, pending: object, attempt: Attempt, reason: str) -> None:
    "A step failed (C{reason}); C{attempt}'s is next."
    core.because(reason)
    core.log.info("{reason}; trying {gateway} over {method}", reason=reason,
                  **_named(attempt.step))


def _session(client: Client, core: ClientCore, session: Session, *rest) -> Session:
    # online and degraded own the session the input names; going online
    # (goOnline) starts its watchers once, not on every recovery.
    return session


def _buildMachine():
    builder = TypeMachineBuilder(Client, ClientCore)
    idle = builder.state("idle")
    searching = builder.state("searching", search)
    waiting = builder.state("waiting", scheduleRetry)
    registering = builder.state("registering", register)
    connecting = builder.state("connecting", connect)
    verifying = builder.state("verifying", verify)
    online = builder.state("online", _session)
    degraded = builder.state("degraded", _session)
    moving = builder.state("moving", move)
    promoting = builder.state("promoting", promote)
    handingOver = builder.state("handingOver", handOverTo)
    stopping = builder.state("stopping")
    stopped = builder.state("stopped")

    # -- searching and waiting --------------------------------------------
    idle.upon(Client.start).to(searching).returns(None)

    @searching.upon(Client.scanned).to(registering)
    def scannedThenRegister(client, core, searching: Searching, attempt):
        core.because("")

    @searching.upon(Client.nothingFound).to(waiting)
    def noteNothing(client, core, searching: Searching, reason):
        core.because(reason)
        core.log.info("{reason}; searching again later", reason=reason)

    @searching.upon(Client.retry).loop()
    def noteRoutesChanged(client, core, searching: Searching):
        searching.routesChanged = True

    @searching.upon(Client.scanStale).loop()
    def scanAgain(client, core, searching: Searching):
        core.because("the routes changed during the scan")
        _scan(client, core, searching)

    @waiting.upon(Client.retry).to(searching)
    def stopWaiting(client, core, waiting: Waiting):
        waiting.cancel()

    # -- registering, connecting, verifying -------------------------------
    registering.upon(Client.registered).to(connecting)(stepDone)
    registering.upon(Client.tryNext).loop()(registerNext)
    connecting.upon(Client.connected).to(verifying)(stepDone)
    connecting.upon(Client.tryNext).to(registering)(stepNext)
    verifying.upon(Client.tryNext).to(registering)(stepNext)

    @registering.upon(Client.exhausted).to(waiting)
    @connecting.upon(Client.exhausted).to(waiting)
    @verifying.upon(Client.exhausted).to(waiting)
    def giveUp(client, core, pending: object, reason):
        core.because(reason)
        core.log.warn("every gateway failed ({reason}); searching again later", reason=reason)

    # -- online and degraded --------------------------------------------
    @verifying.upon(Client.answered).to(online)
    def goOnline(client, core, verifying: Verifying, session, rtt):
        core.session = session
        core.because("")
        core.backoff.reset()
        session.startedAt = core.clock.seconds()
        core.log.info("online via {gateway} over {method} (a probe through {device} answered "
                      "in {rtt} ms)", device=session.connection.device,
                      rtt=f"{rtt * 1000:.1f}", **_named(session.step))
        core.effects.startSession(session)
        core.standbys.serving(session)

    @online.upon(Client.probeMissed).to(degraded)
    def degrading(client, core, session: Session, missedSession, count):
        reason = f"{count} health probe(s) unanswered"
        core.because(reason)
        core.effects.announce("degraded", session, reason)

    @degraded.upon(Client.probeMissed).loop()
    def missed(client, core, session: Session, missedSession, count):
        core.because(f"{count} health probe(s) unanswered")

    @degraded.upon(Client.probeAnswered).to(online)
    def recovered(client, core, session: Session, answeredSession, rtt):
        core.because("")

    online.upon(Client.probeAnswered).loop()(_ignoreWithData)

    def leave(core, session: Session, failure):
        # endSession is serialised with the next connect by the effects, so
        # the next tunnel never races this one's teardown.
        core.session = None
        if failure:
            core.effects.noteFailure(session.step, failure)
        core.effects.endSession(session)
        core.effects.unregister(session.step, session.lease)

    @online.upon(Client.failover).to(registering)
    @degraded.upon(Client.failover).to(registering)
    def failingOver(client, core, session: Session, lostSession, attempt, reason):
        core.because(reason)
        core.log.warn("leaving {left}: {reason}; trying {gateway} over {method}",
                      left=session.step.gateway, reason=reason, **_named(attempt.step))
        core.effects.announce("failover", session, reason, attempt.step)
        core.standbys.release(attempt.step.gatewayId)
        leave(core, session, reason)

    @online.upon(Client.dropped).to(searching)
    @degraded.upon(Client.dropped).to(searching)
    def droppedOut(client, core, session: Session, lostSession, reason):
        core.because(reason)
        core.log.warn("leaving {left}: {reason}; searching", left=session.step.gateway,
                      reason=reason)
        core.effects.announce("failover", session, reason)
        core.standbys.release()
        leave(core, session, reason)

    @online.upon(Client.switch).to(registering)
    @degraded.upon(Client.switch).to(registering)
    def switching(client, core, session: Session, oldSession, attempt, reason=""):
        core.because(f"switching to {'the better gateway ' if not reason else ''}"
                     f"{attempt.step.gateway}" + (f": {reason}" if reason else ""))
        core.log.info("{reason}", reason=core.reason)
        core.standbys.release(attempt.step.gatewayId)
        leave(core, session, "")

    # -- promoting: a hot standby takes over by a route change -------------
    @online.upon(Client.promote).to(promoting)
    @degraded.upon(Client.promote).to(promoting)
    def promotingStandby(client, core, session: Session, standby, lostSession, reason):
        # The factory moved the route first; the old session's teardown
        # leaves it alone (its connection no longer holds it).
        core.because(Reason(kindOf(reason), f"{reason}; the standby via "
                                            f"{standby.step.gateway} takes over"))
        core.log.warn("leaving {left}: {reason}; the standby via {gateway} over {method} "
                      "takes over (a route change)", left=session.step.gateway, reason=reason,
                      **_named(standby.step))
        core.effects.announce("failover", session, reason, standby.step)
        core.standbys.take(standby)
        leave(core, session, reason)
        core.session = standby

    @moving.upon(Client.promote).to(promoting)
    def promotingWhileMoving(client, core, moving: Moving, standby, lostSession, reason):
        moving.abandon(core.effects)
        moving.answer(error=f"the current gateway was lost meanwhile ({reason})")
        promotingStandby(client, core, moving.session, standby, lostSession, reason)

    @online.upon(Client.moveToStandby).to(handingOver)
    @degraded.upon(Client.moveToStandby).to(handingOver)
    def handingOverToStandby(client, core, session: Session, standby, movedSession, reason,
                             reply):
        # The factory pinned the old session's flows, then moved the route.
        core.because(Reason(kindOf(reason, SWITCH),
                            f"moving to the standby via {standby.step.gateway}: {reason}; the "
                            f"connections through {session.step.gateway} stay on its tunnel"))
        core.log.info("{reason}", reason=core.reason)
        core.standbys.take(standby)
        core.session = standby
        if reply is not None and not reply.called:
            reply.callback(dict(standby.step.describe(), state="online"))

    @promoting.upon(Client.promoted).to(online)
    @handingOver.upon(Client.promoted).to(online)
    def servingViaStandby(client, core, promoting: Promoting, session):
        core.because("")
        core.backoff.reset()
        session.startedAt = core.clock.seconds()
        core.log.info("online via {gateway} over {method} (the standby on {device} took over)",
                      device=session.connection.device, **_named(session.step))
        core.effects.startSession(session)
        core.standbys.serving(session)

    @promoting.upon(Client.failover).to(registering)
    @handingOver.upon(Client.failover).to(registering)
    def failingOverWhilePromoting(client, core, promoting: Promoting, lostSession, attempt,
                                  reason):
        promoting.cancel()
        failingOver(client, core, promoting.session, lostSession, attempt, reason)

    @promoting.upon(Client.dropped).to(searching)
    @handingOver.upon(Client.dropped).to(searching)
    def droppedWhilePromoting(client, core, promoting: Promoting, lostSession, reason):
        promoting.cancel()
        droppedOut(client, core, promoting.session, lostSession, reason)

    # -- moving: the operator's choice, asked while the session goes on ---
    @online.upon(Client.use).to(moving)
    @degraded.upon(Client.use).to(moving)
    def choosing(client, core, session: Session, usedSession, attempt, reply):
        core.because(f"asking the chosen gateway {attempt.step.gateway} for a lease "
                     "(mnigsctl use); staying on the current one until it grants one")
        core.log.info("{reason}", reason=core.reason)

    @online.upon(Client.plannedMove).to(moving)
    @degraded.upon(Client.plannedMove).to(moving)
    def planningMove(client, core, session: Session, movedSession, attempt, reason):
        # counted as a move away from the gateway (SWITCH, or the
        # reason's own kind: a gateway saying it is unavailable)
        core.because(Reason(kindOf(reason, SWITCH),
                            f"moving to {attempt.step.gateway}: {reason}; staying on the "
                            "current gateway until the new one answers"))
        core.log.info("{reason}", reason=core.reason)

    @moving.upon(Client.tryNext).loop()
    def moveNext(client, core, moving: Moving, attempt, reason):
        core.because(reason)
        moving.attempt = attempt
        _registerMove(client, core, moving)

    @moving.upon(Client.answered).to(online)
    def movedOver(client, core, moving: Moving, session, rtt):
        # The new tunnel came up beside the old one and answered: it
        # serves now, and the old one keeps its connections.
        old = moving.session
        moving.beside = moving.lease = None
        core.session = session
        core.because(f"moved to {session.step.gateway} before leaving {old.step.gateway}, "
                     "whose connections stay on its tunnel until they end")
        core.backoff.reset()
        session.startedAt = core.clock.seconds()
        core.log.info("online via {gateway} over {method} (a probe through {device} answered "
                      "in {rtt} ms); {left}'s connections stay on {old}", left=old.step.gateway,
                      old=old.connection.device, device=session.connection.device,
                      rtt=f"{rtt * 1000:.1f}", **_named(session.step))
        core.effects.handOver(old, session)
        core.effects.startSession(session)
        core.standbys.serving(session)

    @moving.upon(Client.registered).to(connecting)
    def movedOn(client, core, moving: Moving, attempt, lease):
        # _registerMove ended the session before feeding this input.
        session = moving.session
        core.because(f"switching to the chosen gateway {attempt.step.gateway}")
        core.log.info("{reason}", reason=core.reason)
        core.session = None
        core.effects.unregister(session.step, session.lease)
        core.standbys.release(attempt.step.gatewayId)
        moving.answer({"gateway": attempt.step.gatewayId, "name": attempt.step.seen.offer.name,
                       "method": attempt.step.method, "state": "connecting"})

    @moving.upon(Client.refused).to(online)
    def stayOn(client, core, moving: Moving, session, reason):
        moving.operation = None
        core.standbys.serving(moving.session)
        core.because(f"staying on {moving.session.step.gateway}: {reason}")
        core.log.warn("{reason}", reason=core.reason)
        moving.answer(error=f"{reason}; staying on {moving.session.step.gateway}")

    @moving.upon(Client.failover).to(registering)
    def failingOverWhileMoving(client, core, moving: Moving, lostSession, attempt, reason):
        moving.abandon(core.effects)
        moving.answer(error=f"the current gateway was lost meanwhile ({reason})")
        failingOver(client, core, moving.session, lostSession, attempt, reason)

    @moving.upon(Client.dropped).to(searching)
    def droppedWhileMoving(client, core, moving: Moving, lostSession, reason):
        moving.abandon(core.effects)
        moving.answer(error=f"the current gateway was lost meanwhile ({reason})")
        droppedOut(client, core, moving.session, lostSession, reason)

    @moving.upon(Client.use).loop()
    def alreadyMoving(client, core, moving: Moving, usedSession, attempt, reply):
        reply.errback(ValueError(f"already moving to {moving.attempt.step.gateway}"))

    moving.upon(Client.plannedMove).loop()(_ignoreWithData)

    moving.upon(Client.probeMissed).loop()(_ignoreWithData)
    moving.upon(Client.probeAnswered).loop()(_ignoreWithData)

    # -- stopping --------------------------------------------------------
    def waitStopped(core):
        return core.stopWaiters.wait()

    @idle.upon(Client.stop).to(stopped)
    @stopped.upon(Client.stop).loop()
    def nothingToStop(client, core):
        return defer.succeed(None)

    @searching.upon(Client.stop).to(stopping)
    @waiting.upon(Client.stop).to(stopping)
    @registering.upon(Client.stop).to(stopping)
    def stopPending(client, core, pending: object):
        pending.cancel()
        d = waitStopped(core)
        client.stopped()
        return d

    @connecting.upon(Client.stop).to(stopping)
    def stopConnecting(client, core, pending: Pending):
        pending.cancel()
        d = waitStopped(core)
        core.effects.unregister(pending.attempt.step, pending.lease)
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

    @online.upon(Client.stop).to(stopping)
    @degraded.upon(Client.stop).to(stopping)
    def stopSession(client, core, session: Session):
        d = waitStopped(core)
        core.session = None
        ending = defer.maybeDeferred(core.effects.endSession, session)
        released = defer.maybeDeferred(core.effects.unregister, session.step, session.lease)
        standbys = defer.maybeDeferred(core.standbys.release)
        defer.DeferredList([ending, released, standbys], consumeErrors=True).addBoth(
            lambda _: client.stopped())
        return d

    @promoting.upon(Client.stop).to(stopping)
    @handingOver.upon(Client.stop).to(stopping)
    def stopPromoting(client, core, promoting: Promoting):
        promoting.cancel()
        return stopSession(client, core, promoting.session)

    @moving.upon(Client.stop).to(stopping)
    def stopMoving(client, core, moving: Moving):
        moving.abandon(core.effects)
        moving.answer(error="the client is stopping")
        return stopSession(client, core, moving.session)

    @stopping.upon(Client.stop).loop()
    def stopAgain(client, core):
        return waitStopped(core)

    @stopping.upon(Client.stopped).to(stopped)
    def finishStopping(client, core):
        core.effects.offline()
        core.stopWaiters.fire()

    # -- inputs that arrive late or out of place are dropped ------------
    # (start means "begin" only in idle; an operation's answer after the
    # machine moved on; a watcher's report about a session already left)
    ignored = {
        idle: (Client.scanned, Client.nothingFound, Client.scanStale, Client.retry,
               Client.registered, Client.tryNext, Client.exhausted, Client.connected,
               Client.answered, Client.probeMissed, Client.probeAnswered, Client.failover,
               Client.dropped, Client.switch, Client.stopped),
        searching: (Client.start, Client.registered, Client.tryNext, Client.exhausted,
                    Client.connected, Client.answered, Client.probeMissed,
                    Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                    Client.stopped),
        waiting: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                  Client.registered, Client.tryNext, Client.exhausted, Client.connected,
                  Client.answered, Client.probeMissed, Client.probeAnswered, Client.failover,
                  Client.dropped, Client.switch, Client.stopped),
        registering: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                      Client.retry, Client.connected, Client.answered, Client.probeMissed,
                      Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                      Client.stopped),
        connecting: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                     Client.retry, Client.registered, Client.answered, Client.probeMissed,
                     Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                     Client.stopped),
        verifying: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                    Client.retry, Client.registered, Client.connected, Client.probeMissed,
                    Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                    Client.stopped),
        online: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                 Client.retry, Client.registered, Client.tryNext, Client.exhausted,
                 Client.connected, Client.answered, Client.stopped),
        degraded: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                   Client.retry, Client.registered, Client.tryNext, Client.exhausted,
                   Client.connected, Client.answered, Client.stopped),
        stopping: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                   Client.retry, Client.registered, Client.tryNext, Client.exhausted,
                   Client.connected, Client.answered, Client.probeMissed,
                   Client.probeAnswered, Client.failover, Client.dropped, Client.switch),
        stopped: (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                  Client.retry, Client.registered, Client.tryNext, Client.exhausted,
                  Client.connected, Client.answered, Client.probeMissed,
                  Client.probeAnswered, Client.failover, Client.dropped, Client.switch,
                  Client.stopped),
    }
    ignored[moving] = (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                       Client.retry, Client.exhausted, Client.connected, Client.switch,
                       Client.stopped)
    ignored[promoting] = ignored[handingOver] = (Client.start, Client.scanned, Client.nothingFound, Client.scanStale,
                          Client.retry, Client.registered, Client.tryNext, Client.exhausted,
                          Client.connected, Client.answered, Client.probeMissed,
                          Client.probeAnswered, Client.switch, Client.stopped, Client.promote)
    for state in ignored:
        if state is not moving:
            ignored[state] += (Client.refused,)
        if state not in (online, degraded, moving):
            ignored[state] += (Client.plannedMove,)
        if state not in (online, degraded, moving, promoting, handingOver):
            ignored[state] += (Client.promote,)
        if state not in (promoting, handingOver):
            ignored[state] += (Client.promoted,)
    for state, inputs in ignored.items():
        ignore = _ignore if state in (idle, stopping, stopped) else _ignoreWithData
        for name in inputs:
            state.upon(name).loop()(ignore)

    # the operator's choice only moves an online client (the agent asks
    # only then); a late one is answered, not lost
    for state in (searching, waiting, registering, connecting, verifying, promoting,
                  handingOver):
        state.upon(Client.use).loop()(_notOnlineWithData)
    # a planned move to a standby is asked only of an online client; a
    # late one is answered
    for state in (searching, waiting, registering, connecting, verifying, promoting,
                  handingOver, moving):
        state.upon(Client.moveToStandby).loop()(_standbyNotOnlineWithData)
    for state in (idle, stopping, stopped):
        state.upon(Client.moveToStandby).loop()(_standbyNotOnline)
    for state in (idle, stopping, stopped):
        state.upon(Client.use).loop()(_notOnline)

    # -- status ----------------------------------------------------------
    @idle.upon(Client.describe).loop()
    def describeIdle(client, core):
        return core.status("idle")

    @searching.upon(Client.describe).loop()
    def describeSearching(client, core, searching: Searching):
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
            verifying.attempt.step.describe(), device=session.connection.device,
            address=session.lease.get("config", {}).get("address")))

    @online.upon(Client.describe).loop()
    def describeOnline(client, core, session: Session):
        return core.status("online", current=session.describe(core.clock.seconds()))

    @degraded.upon(Client.describe).loop()
    def describeDegraded(client, core, session: Session):
        return core.status("degraded", current=session.describe(core.clock.seconds()))

    @moving.upon(Client.describe).loop()
    def describeMoving(client, core, moving: Moving):
        return core.status("moving", current=moving.session.describe(core.clock.seconds()),
                           attempt=moving.attempt.step.describe())

    @promoting.upon(Client.describe).loop()
    @handingOver.upon(Client.describe).loop()
    def describePromoting(client, core, promoting: Promoting):
        return core.status("promoting", current=promoting.session.describe(core.clock.seconds()))

    @stopping.upon(Client.describe).loop()
    def describeStopping(client, core):
        return core.status("stopping")

    @stopped.upon(Client.describe).loop()
    def describeStopped(client, core):
        return core.status("stopped")

    return builder.build()


ClientMachine = _buildMachine()


def makeClient(core: ClientCore) -> Client:
    "A client machine over C{core}, its transitions going to C{core.trace}."
    client = ClientMachine(core)
    setTrace(client, core.trace)
    return client
