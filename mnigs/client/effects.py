"""
What the client machine does to the world (L{IClientEffects}): scanning
and ranking, the RPC calls, tunnels and routes, and the watchers of an
online session, which report back through the L{ClientAgent} facade.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.client.candidates import Candidate
from mnigs.client.machine import IClientEffects
from mnigs.client.plan import buildPlan
from mnigs.client.ranking import rank
from mnigs.protocol import UNKNOWN_LEASE, WRONG_TOKEN, RPCError

log = Logger()


class LeaseRejected(Exception):
    pass


def checkLease(answer, now) -> dict:
    """
    The register answer from the network, checked in shape; the method
    checks its own config.  Adds C{expires_at} on our clock.
    """
    lease = answer.get("lease") if isinstance(answer, dict) else None
    if not isinstance(lease, dict):
        raise LeaseRejected("answer has no lease")
    for key in ("id", "token"):
        if not isinstance(lease.get(key), str) or not 0 < len(lease[key]) <= 128:
            raise LeaseRejected(f"lease {key} malformed")
    expires = lease.get("expires_in")
    if type(expires) is not int or not 0 < expires <= 7 * 24 * 3600:
        raise LeaseRejected("lease expires_in out of range")
    if not isinstance(lease.get("config"), dict):
        raise LeaseRejected("lease config malformed")
    return dict(lease, expires_at=now + expires)


def firstSourceWins(lists) -> list[Candidate]:
    """
    Distances of different sources do not compare (babel metrics, kernel
    priorities): an address keeps the distance of the first source, in
    configuration order, that reports it.
    """
    seen = {}
    for candidates in lists:
        for c in candidates:
            seen.setdefault(c.address, c)
    return list(seen.values())


@implementer(IClientEffects)
class ClientEffects:
    def __init__(self, reactor, config, sources, discovery, rpc, methods, policy, history,
                 routing, healthFactory, hooks, clientId):
        self.reactor = reactor
        self.config = config
        self.sources = sources
        self.discovery = discovery
        self.rpc = rpc
        self.methods = methods
        self.policy = policy
        self.history = history
        self.routing = routing
        self.healthFactory = healthFactory
        self.hooks = hooks
        self.clientId = clientId
        self.agent = None  # set by the agent, which the watchers report to
        self.teardown = defer.succeed(None)
        self.lastSeen = []

    # -- discovery ---------------------------------------------------------
    @defer.inlineCallbacks
    def candidates(self):
        results = yield defer.DeferredList(
            [defer.maybeDeferred(source.candidates) for source in self.sources], consumeErrors=True)
        lists = []
        for source, (ok, value) in zip(self.sources, results):
            if ok:
                lists.append(value)
            else:
                log.info("route source {name} failed: {why}", name=source.name,
                         why=value.getErrorMessage())
        return firstSourceWins(lists)

    def scan(self, early=False):
        """
        Discover and rank.  C{early}: end the scan C{discovery.settle}
        seconds after the first usable offer (the client is offline and
        waiting; a rescan while online hears every candidate out).
        """
        d = self.candidates()
        if early:
            d.addCallback(self.discovery.scan, settle=self.config.discovery.settle,
                          usable=self._usable)
        else:
            d.addCallback(self.discovery.scan)
        d.addCallback(self._rank)
        return d

    def _usable(self, seen):
        return rank([seen], self.policy, self.history, self.reactor.seconds())[0].usable

    def _rank(self, seen):
        self.lastSeen = seen
        return rank(seen, self.policy, self.history, self.reactor.seconds())

    def rerank(self):
        """
        The last scan's offers ranked again with the history as it is now.
        """
        return self._rank(self.lastSeen)

    def plan(self, ranked, exclude):
        return buildPlan(ranked, lambda r, method: method in self.methods, exclude)

    # -- one step ----------------------------------------------------------
    def register(self, step):
        method = self.methods[step.method]
        params = {"client": {"id": self.clientId, "name": self.config.client.name},
                  "method": step.method, "params": method.registerParams(step.offerEntry)}
        d = self.rpc.call(step.host, step.port, "gateway.register", params)
        return d.addCallback(checkLease, self.reactor.seconds())

    def connect(self, step, lease):
        # Never bring a tunnel up while the previous one is still going down.
        d = self._afterTeardown()
        d.addCallback(lambda _: self.methods[step.method].connect(step, lease))
        d.addTimeout(self.config.methods.connect_timeout, self.reactor)
        return d

    def _afterTeardown(self):
        gate = defer.Deferred()

        def open(result):
            if not gate.called:
                gate.callback(None)
            return result

        self.teardown.addBoth(open)
        return gate

    def unregister(self, step, lease):
        d = self.rpc.call(step.host, step.port, "gateway.unregister",
                          {"lease": lease["id"], "token": lease["token"]}, timeout=1.0)
        d.addErrback(lambda f: log.debug("unregister from {gateway} failed: {why}",
                                         gateway=step.gateway, why=f.getErrorMessage()))
        return d

    def noteFailure(self, step, reason):
        self.history.get(step.gatewayId).failed(self.reactor.seconds(), reason)
        self._saveHistory()

    def _saveHistory(self):
        try:
            self.history.save()
        except Exception:
            log.failure("could not save the quality history")

    # -- an online session ------------------------------------------------
    def startSession(self, session):
        now = self.reactor.seconds()
        quality = self.history.get(session.step.gatewayId)
        quality.sessionStarted(now)
        self._saveHistory()
        agent = self.agent
        config = session.lease["config"]

        health = self.healthFactory(session, config)
        health.start()
        session.stoppers.append(health.stop)

        renewal = Renewal(self.reactor, self.rpc, session, agent)
        renewal.start()
        session.stoppers.append(renewal.stop)

        watch = LoopingCall(self._checkSession, session)
        watch.clock = self.reactor
        watch.start(1.0, now=False)
        session.stoppers.append(watch.stop)

        offers = LoopingCall(self._checkOffer, session)
        offers.clock = self.reactor
        offers.start(self.config.health.offer_interval, now=False)
        session.stoppers.append(offers.stop)

        lost = session.connection.whenLost()
        # endSession cancels the wait: a CancelledError then says only that
        # the session ended first.
        lost.addCallbacks(lambda reason: agent.lost(session, reason),
                          lambda failure: failure.trap(defer.CancelledError))
        session.stoppers.append(lost.cancel)
        self.hooks.run("online", session.step.gatewayId, session.step.host, session.step.method,
                       config.get("address", ""))

    def _checkSession(self, session):
        if session.step.method != "forward" and not self.routing.routedOnMesh(session.step.host):
            self.agent.lost(session, f"the mesh no longer routes to {session.step.gateway}")

    def _checkOffer(self, session):
        d = self.rpc.call(session.step.host, session.step.port, "gateway.info", {},
                          timeout=self.config.discovery.timeout)

        def check(offer):
            if isinstance(offer, dict) and offer.get("available") is False:
                self.agent.lost(session, "the gateway says it is unavailable")

        return d.addCallbacks(check, lambda f: None)

    def endSession(self, session):
        now = self.reactor.seconds()
        for stop in session.stoppers:
            try:
                stop()
            except Exception:
                pass
        session.stoppers = []
        quality = self.history.get(session.step.gatewayId)
        # Tunnels that count their bytes (openvpn's bytecount) say how much
        # this session carried.
        traffic = getattr(session.connection, "traffic", None)
        if traffic is not None:
            try:
                quality.traffic(*traffic())
            except Exception:
                log.failure("could not read the session's byte counters")
        quality.sessionEnded(now, now - session.startedAt)
        self._saveHistory()
        self.hooks.run("offline", session.step.gatewayId, session.step.host, session.step.method,
                       session.lease["config"].get("address", ""))
        d = defer.maybeDeferred(session.connection.disconnect)
        d.addErrback(lambda f: log.failure("could not take the connection down", f))
        previous = self.teardown
        self.teardown = defer.gatherResults([previous, d], consumeErrors=True).addBoth(lambda _: None)
        return d


class Renewal:
    """
    Renews the lease at half its lifetime; a 1003/1004 answer means the
    gateway forgot us: register again.  Transport failures are retried
    (the health probes decide whether the gateway is gone).
    """

    def __init__(self, reactor, rpc, session, agent):
        self.reactor = reactor
        self.rpc = rpc
        self.session = session
        self.agent = agent
        self.call = None
        self.pending = None

    def start(self):
        self._schedule(self.session.lease["expires_at"] - self.reactor.seconds())

    def _schedule(self, lifetime):
        self.call = self.reactor.callLater(max(1.0, lifetime / 2), self._renew)

    def _renew(self):
        lease, step = self.session.lease, self.session.step
        self.pending = self.rpc.call(step.host, step.port, "gateway.renew",
                                     {"lease": lease["id"], "token": lease["token"]})
        self.pending.addCallbacks(self._renewed, self._failed)

    def _renewed(self, answer):
        expires = answer.get("expires_in") if isinstance(answer, dict) else None
        if type(expires) is not int or expires <= 0:
            return self._schedule(5.0)
        self.session.lease["expires_at"] = self.reactor.seconds() + expires
        self._schedule(expires)

    def _failed(self, failure):
        if failure.check(defer.CancelledError):
            return
        if failure.check(RPCError) and failure.value.code in (UNKNOWN_LEASE, WRONG_TOKEN):
            self.agent.leaseLost(self.session, f"the gateway no longer knows our lease ({failure.value.code})")
            return
        self._schedule(5.0)

    def stop(self):
        if self.call is not None and self.call.active():
            self.call.cancel()
        if self.pending is not None and not self.pending.called:
            self.pending.cancel()
