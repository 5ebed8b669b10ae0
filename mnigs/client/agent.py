"""
The client agent: the one object the session's watchers, the route
sources, the rescans and the admin socket talk to.  It decides in plain
methods (which gateway next, whether a better one has been better for
long enough) and feeds the client machine (L{mnigs.client.machine}) clean
inputs.  L{wire} connects it with the effects the machine acts through.

The operator steers it at run time over the admin socket (C{mnigsctl use,
block, unblock, rescan}); what they choose lives in the ranking policy
(L{mnigs.client.ranking.Policy}'s C{chosen} and C{blockedNow}), so every
ranking, plan and status sees it, and it is not kept across restarts.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.client import explain
from mnigs.client.machine import (
    Backoff,
    Client,
    ClientCore,
    IClientEffects,
    ISessionReports,
    NoStandbys,
    makeClient,
)
from mnigs.client.degrade import Alternative, DegradeJudge
from mnigs.client.falseloss import FalseLossCheck
from mnigs.client.meshview import meshView
from mnigs.client.plan import Attempt
from mnigs.client.reasons import PROBES, SAYS_UNAVAILABLE, UNAVAILABLE, Reason, kindOf
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
                 rescanInterval: float = 60.0, backoff: Backoff | None = None,
                 degrade: DegradeJudge | None = None, falseLosses: FalseLossCheck | None = None,
                 standbys=None):
        """
        @param degrade: judges the session's quality (L{mnigs.client.degrade});
            C{None}: never move for a degraded session.
        @param falseLosses: checks gateways given up as silent
            (L{mnigs.client.falseloss}); C{None}: none are checked.
        @param standbys: the hot standbys (L{mnigs.client.standby.Standbys});
            their own monitors' quality also serves the degradation judge.
            C{None}: none, and only the quality history is known of the
            other gateways.
        """
        self.degrade = degrade
        self.falseLosses = falseLosses
        self.degradeMoves = 0
        #: gateway id -> when a session with it last measured its quality
        self.measuredAt: dict[str, float] = {}
        self._judged = None
        self.reactor = reactor
        self.effects = effects
        self.history = history
        self.switchPolicy = switchPolicy
        #: the hot standbys (L{mnigs.client.standby.Standbys}), or none
        self.standbys = standbys if standbys is not None else NoStandbys()
        self.core = ClientCore(reactor, effects, backoff or Backoff(), standbys=self.standbys)
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
        if self.falseLosses is not None:
            self.falseLosses.stop()
        if self.rescanning is not None:
            self.rescanning.cancel()
        return self.machine.stop()

    # -- what the session's watchers report --------------------------------
    def _current(self, session):
        return session is not None and session is self.core.session

    def lost(self, session, reason):
        if self.standbys.owns(session):
            self.standbys.lost(session, reason)  # a standby gone bad: replaced
            return
        if not self._current(session):
            return
        if (self.falseLosses is not None and kindOf(reason) == PROBES
                and not getattr(reason, "gatewayAnswered", True)):
            self.falseLosses.check(session.step)
        # A gateway that says it is unavailable (a drain, available: false)
        # still serves its leases: a planned move, made before break.
        planned = getattr(reason, "kind", None) == UNAVAILABLE
        standby = self.standbys.best() if planned else None
        if standby is not None:
            self.machine.moveToStandby(standby, session, reason, None)
            return
        if not planned and self._promote(session, reason):
            return
        # Rank the last scan again as of now: a gateway that was cooling
        # down after an earlier failure may be usable again by now.
        self.core.ranked = self.effects.rerank()
        attempt = self.effects.plan(self.core.ranked, frozenset({session.step.gatewayId}))
        if attempt is None:
            self.machine.dropped(session, reason)
        elif planned:
            self.machine.plannedMove(session, attempt, reason)
        else:
            self.machine.failover(session, attempt, reason)

    def _plannedMove(self, session, attempt, reason, reply=None):
        """
        A planned move to C{attempt}'s first gateway: a hand-over to its
        ready standby if it has one, else asked for a lease while the
        session goes on (the operator's C{use} when C{reply} is given).
        """
        standby = self.standbys.readyFor(attempt.step.gatewayId)
        if standby is not None:
            self.machine.moveToStandby(standby, session, reason, reply)
        elif reply is not None:
            self.machine.use(session, attempt, reply)
        else:
            self.machine.plannedMove(session, attempt, reason)

    def _promote(self, session, reason) -> bool:
        "A ready standby takes over from C{session}, if there is one: a route change."
        standby = self.standbys.best()
        if standby is None:
            return False
        self.machine.promote(standby, session, reason)
        return True

    def leaseLost(self, session, reason):
        if self.standbys.owns(session):
            self.standbys.lost(session, reason)
            return
        if not self._current(session) or self._promote(session, reason):
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
        # A standby's probes tell the quality history about its gateway too.
        if self._current(session) or self.standbys.owns(session):
            self.history.get(session.step.gatewayId).probe(None if rtt is None else rtt * 1000)
            self.measuredAt[session.step.gatewayId] = self.reactor.seconds()
        if self._current(session):
            self._judgeQuality(session)

    # -- failover on degradation ---------------------------------------------
    def _judgeQuality(self, session):
        """
        After every probe round: move (a planned move, the machine's
        C{switch}) when the judge finds the session degraded and another
        gateway measurably better (L{mnigs.client.degrade}).
        """
        monitor = getattr(session, "health", None)
        if self.degrade is None or monitor is None:
            return
        if session is not self._judged:
            self._judged = session
            self.degrade.newSession()
        move = self.degrade.consider(monitor.quality(), self.alternatives(session))
        if move is None:
            return
        gid = session.step.gatewayId
        ranked = self.core.ranked
        target = next((r for r in ranked if r.gatewayId == move.to.gatewayId), None)
        plan = None if target is None else self.effects.plan(
            [target] + [r for r in ranked if r is not target], frozenset({gid}))
        if plan is None:
            return
        self.degradeMoves += 1
        self.switchPolicy.reset()
        self.core.trace.note("degraded", move.reason)
        self._plannedMove(session, plan, move.reason)

    def alternatives(self, session):
        """
        What is known of the usable gateways other than the session's,
        best ranked first: a standby's measured quality, else the
        quality history of one used within C{degrade.history_age}
        (L{mnigs.client.degrade}).  A generator: nothing is measured
        until the judge asks (most rounds it does not: the session is
        not degraded).
        """
        gid = session.step.gatewayId
        measured = self.standbys.qualities()
        freshSince = self.reactor.seconds() - self.degrade.rules.historyAge
        for ranked in self.core.ranked:
            other = ranked.gatewayId
            if other == gid or not ranked.usable or ranked.cooling:
                continue
            if other in measured:
                yield Alternative.measured(other, measured[other])
            elif (self.measuredAt.get(other, -1.0) >= freshSince and other in self.history
                  and self.history.get(other).rttMs is not None):
                yield Alternative.remembered(other, self.history.get(other),
                                             self.degrade.rules.echoes)

    # -- routes and rescans -------------------------------------------------
    def routesChanged(self):
        self.machine.retry()  # waiting: look again at once; searching: again if empty
        self.standbys.retry()  # a standby waiting to be replaced: now
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
        self._noteRanking(self.core.ranked, ranked)
        self.core.ranked = ranked
        self.standbys.retry()
        session = self.core.session
        if session is None:
            return
        gid = session.step.gatewayId
        current = next((r for r in ranked if r.seen.offer.gatewayId == gid), None)
        if current is not None and session.saysUnavailable(current.seen.offer):
            self.lost(session, Reason(UNAVAILABLE, SAYS_UNAVAILABLE))
            return
        best = next((r for r in ranked if r.usable), None)
        chosen = self.effects.policy.chosen
        if chosen == gid:
            self.switchPolicy.reset()  # the operator's choice holds
            return
        if best is not None and best.chosen and not best.cooling:
            # Back to the gateway the operator chose, once it is usable
            # again; the session goes on if it refuses.
            self._move(session, best).addErrback(lambda f: f.trap(ValueError))
            return
        waitedFor = self.switchPolicy.candidate
        currentScore = current.score if current is not None and current.usable else float("inf")
        better = self.switchPolicy.consider(gid, currentScore, best, self.reactor.seconds())
        self._noteWait(waitedFor, current, best)
        if better is not None and better.seen.offer.gatewayId != gid:
            plan = self.effects.plan([better] + [r for r in ranked if r is not better], frozenset({gid}))
            if plan is not None:
                self.switchPolicy.reset()
                self._plannedMove(session, plan,
                                  f"it scored better by more than switch_margin "
                                  f"{self.switchPolicy.margin:g} for switch_hold "
                                  f"{self.switchPolicy.hold:g} s")

    def _noteRanking(self, before, after):
        "Note a ranking whose best gateway or usable set changed (C{mnigsctl events})."
        def usable(ranked):
            return [r.gatewayId for r in ranked if r.usable]
        if usable(before) == usable(after):
            return
        names = ", ".join(f"{_label(r)} {r.score:.3f}" for r in after if r.usable) or "none"
        self.core.trace.note("ranking", f"usable, best first ({explain.BETTER}): {names}")

    def _noteWait(self, waitedFor, current, best):
        candidate = self.switchPolicy.candidate
        if candidate == waitedFor:
            return
        if candidate is not None:
            self.core.trace.note(
                f"waiting on {_label(best)}",
                f"it scores {current.score - best.score if current else 0:.3f} better than "
                f"{_label(current) if current else 'the current gateway'} (more than "
                f"switch_margin {self.switchPolicy.margin:g}); the client moves if that holds "
                f"for switch_hold {self.switchPolicy.hold:g} s")
        else:
            self.core.trace.note("not waiting any more",
                                 "no gateway scores better by more than switch_margin "
                                 f"{self.switchPolicy.margin:g}: the switch_hold wait restarts")

    def policyChanged(self, policy=None):
        """
        The policy changed (a config reload, which gives the new
        C{policy}, or the operator's steering): rank the last scan again,
        look again at once if waiting, and leave a gateway the policy no
        longer allows for the best one it does (a planned move), or search
        if there is none and the operator blocked it.  What the operator
        chose at run time outlives a reload.
        """
        if policy is not None:
            steering = self.effects.policy
            self.effects.policy = replace(policy, blockedNow=steering.blockedNow,
                                          chosen=steering.chosen)
        self.core.ranked = self.effects.rerank()
        self.machine.retry()  # only acts while waiting
        # A standby on a gateway the policy no longer allows goes.
        self.standbys.keepOnly({r.gatewayId for r in self.core.ranked if r.usable})
        session = self.core.session
        if session is None:
            return
        gid = session.step.gatewayId
        current = next((r for r in self.core.ranked if r.seen.offer.gatewayId == gid), None)
        if current is None or current.usable:
            return
        plan = self.effects.plan(self.core.ranked, frozenset({gid}))
        if plan is None and gid in self.effects.policy.blockedNow:
            self.machine.dropped(session, "blocked at run time (mnigsctl block)")
            return
        if plan is None:
            log.info("the policy no longer allows gateway {name}, but nothing else is "
                     "usable: staying", name=current.seen.offer.name)
            return
        log.info("the policy no longer allows gateway {name} ({why}): moving",
                 name=current.seen.offer.name, why=current.whyNot)
        self.switchPolicy.reset()
        self.machine.switch(session, plan, f"the policy no longer allows {_label(current)} "
                                           f"({current.whyNot})")

    # -- status -------------------------------------------------------------
    def describe(self):
        status = self.machine.describe()
        status["state_for_s"] = self.core.trace.stateAge()
        status["transitions"] = self.core.trace.describe()
        status["events"] = self.core.trace.events()
        status["better"] = explain.BETTER
        status["switch"] = self._switchStatus()
        status["chosen"] = self.effects.policy.chosen
        status["blocked_now"] = sorted(self.effects.policy.blockedNow)
        if self.degrade is not None:
            status["degrade"] = dict(self.degrade.describe(), moves=self.degradeMoves)
        status["false_failovers"] = (None if self.falseLosses is None
                                     else self.falseLosses.count)
        kept = getattr(self.effects, "kept", None)
        # the sessions planned moves left, kept for their connections
        status["kept"] = kept.describe() if kept is not None else []
        status["standby"] = self.standbys.describe()
        gateways = []
        for place, ranked in enumerate(self.core.ranked, 1):
            offer = ranked.seen.offer
            quality = self.history.get(offer.gatewayId).toDict() if offer.gatewayId in self.history else {}
            gateways.append({
                "rank": place if ranked.usable else None, "gateway": offer.gatewayId,
                "name": offer.name, "host": ranked.seen.host, "score": round(ranked.score, 4),
                "score_parts": explain.parts(ranked), "chosen": ranked.chosen,
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
        session = self.core.session
        status["mesh"] = meshView(self.effects.lastCandidates, self.core.ranked,
                                  None if session is None else session.step.gatewayId)
        return status

    def _currentId(self):
        session = self.core.session
        return None if session is None else session.step.gatewayId

    def _switchStatus(self):
        return explain.switchStatus(self.core.ranked, self._currentId(), self.switchPolicy,
                                    self.reactor.seconds())

    # -- what the operator asks over the admin socket (mnigsctl) -------------
    def gateways(self):
        "C{mnigsctl gateways}: the ranking with each score's parts."
        status = self.describe()
        return {key: status[key] for key in ("state", "better", "gateways", "switch", "chosen",
                                             "blocked_now")} | {
            "current": self._currentId(), "margin": self.switchPolicy.margin,
            "hold": self.switchPolicy.hold}

    def why(self):
        "C{mnigsctl why}: why this gateway, and what would make the client move."
        status = self.describe()
        gid = self._currentId()
        current = next((r for r in self.core.ranked if r.gatewayId == gid), None)
        others = [r for r in self.core.ranked if r.gatewayId != gid]
        chosen = self.effects.policy.chosen
        pending = status["switch"]
        answer = {"state": status["state"], "better": explain.BETTER, "switch": pending,
                  "margin": self.switchPolicy.margin, "hold": self.switchPolicy.hold,
                  "chosen": chosen, "current": None,
                  "summary": explain.summary(current if gid else None, pending, others, chosen)}
        if gid is not None:
            step = self.core.session.step
            answer["current"] = {"gateway": gid, "name": step.seen.offer.name,
                                 "method": step.method,
                                 "score": None if current is None else round(current.score, 4),
                                 "score_parts": None if current is None else explain.parts(current)}
            if current is None:
                answer["summary"] += " (the last scan did not see the current gateway)"
        answer["others"] = [{
            "gateway": r.gatewayId, "name": r.seen.offer.name, "score": round(r.score, 4),
            "score_parts": explain.parts(r), "usable": r.usable,
            "verdict": explain.verdict(r, current, self.switchPolicy, pending, chosen)}
            for r in others]
        return answer

    def events(self):
        "C{mnigsctl events}: the last transitions and decisions, oldest first."
        return {"state": self.machine.describe()["state"], "events": self.core.trace.events()}

    def rescanNow(self):
        "C{mnigsctl rescan}: scan now (online: a rescan; waiting: search at once)."
        self.core.trace.note("rescan", "asked for with mnigsctl rescan")
        if self.core.session is not None:
            if self.rescanning is not None:
                return {"rescan": "a rescan is already under way"}
            self.rescan()
            return {"rescan": "started: the ranking is renewed when every candidate has answered"}
        self.machine.retry()
        return {"rescan": "asked: a client that is waiting searches at once; one that is "
                          "searching or connecting scans when that ends",
                "state": self.machine.describe()["state"]}

    def find(self, name: str, unlisted: bool = False):
        """
        The id of gateway C{name} (its id, an unambiguous start of its id,
        or its name) among the last scan's, and how to call it; with
        C{unlisted}, also one the quality history knows, or any full id.
        """
        ranked = self.core.ranked
        byId = {r.gatewayId: r for r in ranked}
        if name in byId:
            return name, _label(byId[name])
        named = [r for r in ranked if r.seen.offer.name == name]
        started = [r for r in ranked if r.gatewayId.startswith(name)
                   or r.gatewayId.partition(":")[2].startswith(name)]
        for matches in (named, started):
            if len(matches) == 1:
                return matches[0].gatewayId, _label(matches[0])
            if len(matches) > 1:
                raise ValueError(f"{name!r} names {len(matches)} gateways: "
                                 + ", ".join(r.gatewayId for r in matches))
        if unlisted and (name in self.history or name.startswith("ed25519:")):
            return name, name
        raise ValueError(f"no gateway {name!r} in the last scan (mnigsctl gateways lists them; "
                         "mnigsctl rescan looks again)")

    def use(self, name: str):
        """
        C{mnigsctl use GATEWAY}: move to it for this run, with the usual
        checks (its offer was verified by the scan; the policy and fee
        rules; it must grant a lease).  The session goes on until it
        grants one; if it refuses, the answer is the error and the client
        stays.  C{-} gives the choice back to the ranking.
        """
        if name in ("-", "--auto", "auto"):
            self._steer(chosen=None)
            self.core.trace.note("use -", "the ranking chooses again (mnigsctl use -)")
            return {"chosen": None, "note": "the ranking chooses the gateway again"}
        gid, label = self.find(name)
        ranked = next(r for r in self.core.ranked if r.gatewayId == gid)
        if not ranked.usable:
            self.core.trace.note(f"use {label} refused", ranked.whyNot)
            raise ValueError(f"{label} is not usable: {ranked.whyNot}")
        session = self.core.session
        if session is None:
            self._steer(chosen=gid)
            self.core.trace.note(f"use {label}", "not online: it is tried first")
            self.machine.retry()
            return {"chosen": gid, "name": ranked.seen.offer.name,
                    "note": "the client is not online: this gateway is tried first"}
        if session.step.gatewayId == gid:
            self._steer(chosen=gid)
            self.core.trace.note(f"use {label}", "already on it: the client stays on it")
            return {"chosen": gid, "name": ranked.seen.offer.name,
                    "note": "already on this gateway: the client stays on it"}
        self.core.trace.note(f"use {label}", "asked for with mnigsctl use")
        return self._move(session, ranked)

    def _move(self, session, ranked):
        gid, label = ranked.gatewayId, _label(ranked)
        others = [r for r in self.core.ranked if r.gatewayId != gid]
        attempt = self.effects.plan([ranked] + others, frozenset())
        if attempt is None or attempt.step.gatewayId != gid:
            return defer.fail(ValueError(f"{label} offers no method this client can use here"))
        reply = defer.Deferred()

        def granted(answer):
            self._steer(chosen=gid)
            self.core.trace.note(f"use {label}", f"lease granted over {answer['method']}: moving")
            return dict(answer, chosen=gid)

        def refused(failure):
            failure.trap(ValueError)
            self.core.trace.note(f"use {label} failed", failure.getErrorMessage())
            return failure

        reply.addCallbacks(granted, refused)
        self._plannedMove(session, attempt, "mnigsctl use", reply)
        return reply

    def block(self, name: str):
        """
        C{mnigsctl block GATEWAY}: never use it for this run (not written
        to the configuration); the client leaves it at once if it is the
        current one.
        """
        gid, label = self.find(name, unlisted=True)
        policy = self.effects.policy
        self.core.trace.note(f"block {label}", "mnigsctl block, until unblock or a restart")
        self.effects.policy = replace(policy, blockedNow=policy.blockedNow | {gid},
                                      chosen=None if policy.chosen == gid else policy.chosen)
        leaving = self._currentId() == gid
        self.policyChanged()
        return {"blocked": gid, "name": label, "persisted": False, "left": leaving,
                "note": "blocked until unblock or a restart (not written to the configuration)"}

    def unblock(self, name: str):
        "C{mnigsctl unblock GATEWAY}: undo a block made with C{mnigsctl block}."
        policy = self.effects.policy
        gid = name if name in policy.blockedNow else self.find(name)[0]
        if gid not in policy.blockedNow:
            raise ValueError(f"{name!r} is not blocked at run time"
                             + (" (policy.blocked in the configuration blocks it)"
                                if gid in policy.blocked else ""))
        self.core.trace.note(f"unblock {gid}", "mnigsctl unblock")
        self.effects.policy = replace(policy, blockedNow=policy.blockedNow - {gid})
        self.policyChanged()
        return {"unblocked": gid, "persisted": False}

    def _steer(self, **changes):
        self.effects.policy = replace(self.effects.policy, **changes)
        self.core.ranked = self.effects.rerank()

    def adminCommands(self) -> dict:
        "The admin socket's client commands (L{mnigs.daemon.admin})."
        return {"status": self.describe, "gateways": self.gateways, "why": self.why,
                "events": self.events, "rescan": self.rescanNow, "use": self.use,
                "block": self.block, "unblock": self.unblock}


def _label(ranked) -> str:
    "A gateway as the operator reads it: its name, or its id."
    return ranked.seen.offer.name or ranked.gatewayId
