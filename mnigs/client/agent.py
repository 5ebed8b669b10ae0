"""
The client agent: the one object the session's watchers, the route
sources, the rescans and the admin socket talk to.  It decides in plain
methods (which gateway next, whether a better one has been better for
long enough) and feeds the client machine (L{mnigs.client.machine}) clean
inputs.  L{wire} connects it with the effects the machine acts through.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.client.machine import (
    Backoff,
    Client,
    ClientCore,
    IClientEffects,
    ISessionReports,
    makeClient,
)
from mnigs.client.plan import Attempt
from mnigs.client.reasons import SAYS_UNAVAILABLE, UNAVAILABLE, Reason
from mnigs.interfaces import ITransitionObserver

log = Logger()


def wire(agent: ClientAgent, effects, observers=()) -> ClientAgent:
    """
    Connect the client's parts once each is built (magic-wormhole's
    C{wire}): the machine acts on the world through C{effects} (the
    agent's core holds them), and what the effects' session watchers see
    (L{ISessionReports}) goes to the agent, which decides and feeds the
    machine, and then to each of C{observers} (L{ISessionReports} too:
    the metrics), which only count; an observer that is also an
    L{ITransitionObserver} is told the machine's transitions as well.
    """
    if agent.effects is not effects:
        raise ValueError("the agent was built over other effects")
    effects.wire(_Reports([agent, *observers]) if observers else agent)
    for observer in observers:
        if ITransitionObserver.providedBy(observer):
            agent.core.trace.observe(observer)
    return agent


class _Reports:
    """
    One L{ISessionReports} telling several, in order (the agent first),
    as C{twisted.names} composes resolvers.
    """

    def __init__(self, told):
        self.told = told


def _tellEach(name):
    def tell(self, session, detail):
        for reports in self.told:
            getattr(reports, name)(session, detail)
    tell.__name__ = name
    return tell


for _name in ISessionReports.names():
    setattr(_Reports, _name, _tellEach(_name))
implementer(ISessionReports)(_Reports)


@implementer(ISessionReports)
class ClientAgent:
    def __init__(self, reactor: IReactorTime, effects: IClientEffects, history, switchPolicy,
                 rescanInterval: float = 60.0, backoff: Backoff | None = None):
        self.reactor = reactor
        self.effects = effects
        self.history = history
        self.switchPolicy = switchPolicy
        self.core = ClientCore(reactor, effects, backoff or Backoff())
        self.machine: Client = makeClient(self.core)
        self.rescanner = LoopingCall(self.rescan)
        self.rescanner.clock = reactor
        self.rescanInterval = rescanInterval
        self.rescanning = None
        self.watches = []

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        self.machine.start()
        self.rescanner.start(self.rescanInterval, now=False)
        for source in self.effects.sources:
            try:
                self.watches.append(source.watch(self.routesChanged))
            except Exception:
                log.failure("could not watch route source {name}", name=source.name)

    def stop(self):
        if self.rescanner.running:
            self.rescanner.stop()
        for watch in self.watches:
            watch.stop()
        self.watches = []
        if self.rescanning is not None:
            self.rescanning.cancel()
        return self.machine.stop()

    # -- what the session's watchers report --------------------------------
    def _current(self, session):
        return session is not None and session is self.core.session

    def lost(self, session, reason):
        if not self._current(session):
            return
        # Rank the last scan again as of now: a gateway that was cooling
        # down after an earlier failure may be usable again by now.
        self.core.ranked = self.effects.rerank()
        attempt = self.effects.plan(self.core.ranked, frozenset({session.step.gatewayId}))
        if attempt is None:
            self.machine.dropped(session, reason)
        else:
            self.machine.failover(session, attempt, reason)

    def leaseLost(self, session, reason):
        if not self._current(session):
            return
        others = self.effects.plan(self.core.ranked, frozenset({session.step.gatewayId}))
        steps = (session.step,) + (others.steps if others else ())
        self.machine.failover(session, Attempt(steps), reason)

    def probeMissed(self, session, count):
        if self._current(session):
            self.machine.probeMissed(session, count)

    def probeAnswered(self, session, rtt):
        if self._current(session):
            self.machine.probeAnswered(session, rtt)

    def probeSample(self, session, rtt):
        if self._current(session):
            self.history.get(session.step.gatewayId).probe(None if rtt is None else rtt * 1000)

    # -- routes and rescans -------------------------------------------------
    def routesChanged(self):
        self.machine.retry()  # waiting: look again at once; searching: again if empty
        session = self.core.session
        if session is not None:
            self.effects.checkSession(session)
            self.rescan()

    def rescan(self):
        """
        While online: refresh the ranking, so that a failover knows the
        current alternatives, and move to a better gateway once it has
        been better by the margin for the hold time.
        """
        if self.core.session is None or self.rescanning is not None:
            return
        self.rescanning = self.effects.scan()
        self.rescanning.addCallbacks(self._rescanned, self._rescanFailed)
        self.rescanning.addBoth(self._rescanDone)

    def _rescanDone(self, _):
        self.rescanning = None

    def _rescanFailed(self, failure):
        if not failure.check(defer.CancelledError):
            log.failure("rescan failed", failure)

    def _rescanned(self, ranked):
        self.core.ranked = ranked
        session = self.core.session
        if session is None:
            return
        gid = session.step.gatewayId
        current = next((r for r in ranked if r.seen.offer.gatewayId == gid), None)
        if current is not None and session.saysUnavailable(current.seen.offer):
            self.lost(session, Reason(UNAVAILABLE, SAYS_UNAVAILABLE))
            return
        best = next((r for r in ranked if r.usable), None)
        currentScore = current.score if current is not None and current.usable else float("inf")
        better = self.switchPolicy.consider(gid, currentScore, best, self.reactor.seconds())
        if better is not None and better.seen.offer.gatewayId != gid:
            plan = self.effects.plan([better] + [r for r in ranked if r is not better], frozenset({gid}))
            if plan is not None:
                self.switchPolicy.reset()
                self.machine.switch(session, plan)

    def policyChanged(self):
        """
        The policy changed (a config reload): rank the last scan again, look
        again at once if waiting, and leave a gateway the new policy no
        longer allows for the best one it does (a planned move).
        """
        self.core.ranked = self.effects.rerank()
        self.machine.retry()  # only acts while waiting
        session = self.core.session
        if session is None:
            return
        gid = session.step.gatewayId
        current = next((r for r in self.core.ranked if r.seen.offer.gatewayId == gid), None)
        if current is None or current.usable:
            return
        plan = self.effects.plan(self.core.ranked, frozenset({gid}))
        if plan is None:
            log.info("the policy no longer allows gateway {name}, but nothing else is "
                     "usable: staying", name=current.seen.offer.name)
            return
        log.info("the policy no longer allows gateway {name} ({why}): moving",
                 name=current.seen.offer.name, why=current.whyNot)
        self.switchPolicy.reset()
        self.machine.switch(session, plan)

    # -- status -------------------------------------------------------------
    def describe(self):
        status = self.machine.describe()
        status["transitions"] = self.core.trace.describe()
        gateways = []
        for place, ranked in enumerate(self.core.ranked, 1):
            offer = ranked.seen.offer
            quality = self.history.get(offer.gatewayId).toDict() if offer.gatewayId in self.history else {}
            gateways.append({
                "rank": place if ranked.usable else None, "gateway": offer.gatewayId,
                "name": offer.name, "host": ranked.seen.host, "score": round(ranked.score, 4),
                "usable": ranked.usable, "why_not": ranked.whyNot,
                "cooling": ranked.cooling,
                "distance": ranked.seen.distance,
                "rtt_ms": None if ranked.seen.rtt is None else round(ranked.seen.rtt * 1000, 1),
                "load": f"{offer.clients}/{offer.maxClients}",
                "fee": None if offer.fee is None else f"{offer.fee.amount} {offer.fee.currency}/{offer.fee.period}",
                "methods": list(ranked.methods), "quality": quality})
        status["gateways"] = gateways
        # Gateways the last scan did not see (a dead one, say) keep their
        # record: the quality history of every gateway known, latest first.
        listed = {g["gateway"] for g in gateways}
        others = sorted(((gid, q) for gid, q in self.history.gateways.items() if gid not in listed),
                        key=lambda item: -(item[1].lastSeen or 0))[:50]
        status["history"] = {gid: quality.toDict() for gid, quality in others}
        return status
