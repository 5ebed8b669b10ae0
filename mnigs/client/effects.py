"""
What the client machine does to the world (L{IClientEffects}): scanning
and ranking, the RPC calls, tunnels and routes, and the watchers of an
online session, which report back (L{ISessionReports}) to the agent that
L{mnigs.client.agent.wire} connected.
"""

from __future__ import annotations

import ipaddress
import weakref

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.routing.candidates import Candidate
from mnigs.client.dns import leaseResolvers
from mnigs.client.health import ProbeTargets, firstAnswer
from mnigs.client.machine import IClientEffects, ISessionReports, Session
from mnigs.client.plan import LeaseRejected, buildPlan
from mnigs.client.reasons import LEASE, ROUTE, SAYS_UNAVAILABLE, TUNNEL, UNAVAILABLE, Reason
from mnigs.client.ranking import rank
from mnigs.protocol import (
    BAD_PROOF,
    UNKNOWN_LEASE,
    WRONG_TOKEN,
    OfferRejected,
    RPCError,
    checkLeaseSignature,
    keyId,
    signRegistration,
    verifyOffer,
)

log = Logger()

#: The client's hook events ([hooks] keys); docs/operations.md has their
#: argument vectors.
CLIENT_HOOK_EVENTS = ("online", "offline", "failover", "degraded")

#: Seconds between probe rounds while a new tunnel is verified.
VERIFY_INTERVAL = 0.1


def checkLease(answer, now, offer, clientId: str, method: str, agrees=None) -> dict:
    """
    The register answer from the network: signed by the key of C{offer}
    (the verified offer we registered from), naming that gateway and
    C{clientId}, for C{method}, sane in shape, and (C{agrees(config)},
    the client method's L{checkAgainstOffer} for the offer's entry) pinned
    to what the offer says.  Adds C{expires_at} on our clock.
    """
    try:
        checkLeaseSignature(answer, offer.gatewayId, clientId)
    except ValueError as e:
        raise LeaseRejected(f"lease refused: {e}") from None
    lease = answer.get("lease")
    if not isinstance(lease, dict):
        raise LeaseRejected("answer has no lease")
    for key in ("id", "token"):
        if not isinstance(lease.get(key), str) or not 0 < len(lease[key]) <= 128:
            raise LeaseRejected(f"lease {key} malformed")
    expires = lease.get("expires_in")
    if type(expires) is not int or not 0 < expires <= 7 * 24 * 3600:
        raise LeaseRejected("lease expires_in out of range")
    if lease.get("method") != method:
        raise LeaseRejected(f"lease refused: it is not for {method}")
    if not isinstance(lease.get("config"), dict):
        raise LeaseRejected("lease config malformed")
    if agrees is not None:
        try:
            agrees(lease["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise LeaseRejected(f"lease refused: {e}") from None
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


def verifyDeadline(config, rpcRTT) -> float:
    """
    How long a new tunnel has to pass a probe:
    C{min(methods.connect_timeout, health.timeout + 4 * rpcRTT)}, with
    C{rpcRTT} the gateway.info round trip discovery measured (unknown:
    C{connect_timeout}).  A probe through the tunnel crosses about the
    same mesh path as that call, so a few of its round trips on top of a
    probe's own timeout is plenty for a gateway that passes traffic.
    """
    connectTimeout = config.methods.connect_timeout
    if rpcRTT is None:
        rpcRTT = connectTimeout
    return min(connectTimeout, config.health.timeout + 4 * rpcRTT)


def _pinger(reactor):
    from mnigs.system.icmp import Pinger

    return lambda device: Pinger(reactor, device=device)


@implementer(IClientEffects)
class ClientEffects:
    """
    @param healthFactory: C{healthFactory(session, reports)} -> a health
        monitor for an online session, probing C{session.targets} through
        C{session.pinger} and reporting to C{reports} (L{ISessionReports}).
    @param pingerFactory: C{pingerFactory(device)} -> an L{IPinger} bound
        to C{device}; one per session, closed when it ends.
    @param resolvers: the L{mnigs.client.dns.ResolverKeeper} that puts an
        online session's resolvers in force (C{None}: none is).
    @param kept: the sessions planned moves left, kept until their
        connections end (L{mnigs.client.pinning.KeptSessions}; C{None}:
        C{routing.keep_old} is 0, moves break them).
    @param dataPath: the client's nft table (a
        L{mnigs.client.datapath.ClientDataPath}): told each connection's
        tunnel, lease address and MTU (L{fitPath}), and when it goes;
        C{None}: no table.
    """

    def __init__(self, reactor, config, sources, discovery, rpc, methods, policy, history,
                 routing, healthFactory, hooks, clientKey, pingerFactory=None, resolvers=None,
                 dataPath=None, kept=None):
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
        self.clientKey = clientKey
        self.clientId = keyId(clientKey.verify_key)
        self.pingerFactory = pingerFactory or _pinger(reactor)
        self.resolvers = resolvers
        self.dataPath = dataPath
        self.kept = kept
        self.reports: ISessionReports | None = None  # see wire()
        self.teardown = defer.succeed(None)
        #: each connection's passage (fitted when it came up), and the
        #: connection whose passage the client's table holds now
        self.passages = weakref.WeakKeyDictionary()
        self.carrying = None
        self.lastSeen = []
        self.lastCandidates = []  # what the route sources listed for the last scan
        self.recent = {}  # gateway id -> (when a scan last heard it, [(host, port), ...])

    def wire(self, reports: ISessionReports) -> None:
        """
        Where the watchers of an online session report (the agent; see
        L{mnigs.client.agent.wire}).
        """
        self.reports = reports

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
        d.addCallback(self._noteCandidates)
        if early:
            d.addCallback(self.discovery.scan, settle=self.config.discovery.settle,
                          usable=self._usable, hot=self.recentGateways())
        else:
            d.addCallback(self.discovery.scan)
        d.addCallback(self._remember)
        d.addCallback(self._rank)
        return d

    def _noteCandidates(self, candidates):
        self.lastCandidates = candidates
        return candidates

    def _usable(self, seen):
        return rank([seen], self.policy, self.history, self.reactor.seconds())[0].usable

    #: Gateways met in the last RECENT_SECONDS, at most RECENT_MAX of
    #: them, are asked again and again by an offline client's scans, at
    #: most RECENT_ADDRESSES addresses in all.
    RECENT_SECONDS = 600.0
    RECENT_MAX = 16
    RECENT_ADDRESSES = 48

    def recentGateways(self, gateways=None):
        """
        C{(host, port)} of the gateways scans met lately, latest first, and
        each at every address it answered on or its offer lists (nearest
        first): what an offline client keeps asking while the mesh relearns
        its routes (L{Discovery.scan}'s C{hot}).  A gateway that has just
        come back has no route to its node address for a few hello
        intervals, but its address on a neighbour's link is in that
        neighbour's connected subnet (L{mnigs.server.meshaddresses}).
        C{gateways}: only the latest that many gateways.
        """
        now = self.reactor.seconds()
        fresh = sorted(((when, gid, places) for gid, (when, places) in self.recent.items()
                        if now - when <= self.RECENT_SECONDS), reverse=True)[:self.RECENT_MAX]
        self.recent = {gid: (when, places) for when, gid, places in fresh}
        hot = list(dict.fromkeys(place for _, _, places in fresh[:gateways] for place in places))
        return hot[:self.RECENT_ADDRESSES]

    #: How many of the gateways met lately a waiting client keeps asking.
    WATCHED = 4

    def watchRecent(self):
        """
        While the client waits to scan again: the gateways met lately (the
        latest L{WATCHED}) asked every 0.5 s at each of their addresses;
        fires once one of them offers something usable.
        """
        return self.discovery.watch(self.recentGateways(self.WATCHED), self._usable)

    def watchGateway(self, gatewayId):
        """
        Fires (with its L{Seen}) once gateway C{gatewayId} offers something
        usable again, asked every 0.5 s at each address scans met it on;
        cancellable, never fails (never fires for a gateway not met lately).
        """
        _, places = self.recent.get(gatewayId, (None, []))
        return self.discovery.watch(places[:self.RECENT_ADDRESSES], lambda seen: (
            seen.offer.gatewayId == gatewayId and self._usable(seen)))

    def _remember(self, seen):
        now = self.reactor.seconds()
        for item in seen:
            places = [(place.host, place.port) for place in (item,) + item.others]
            places += [(address, item.port) for address in item.offer.addresses]
            self.recent[item.offer.gatewayId] = (now, list(dict.fromkeys(places)))
        return seen

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

    def planStandby(self, exclude, fresh=()):
        """
        A standby's plan: the last scan ranked as of now, without the
        gateways in C{exclude}, over the methods that hold a connection
        beside the serving one (C{IClientMethod.slots} above 1), nor
        those of the sessions kept after a planned move (a new lease there
        would replace the kept one, and break its connections).  C{fresh}:
        L{Seen}s heard since (a gateway that answers again, maybe at
        another address than the scan's), in place of the scan's.
        """
        if self.kept is not None:
            exclude = frozenset(exclude) | self.kept.gatewayIds()
        seen = {item.offer.gatewayId: item for item in self.lastSeen}
        seen.update((item.offer.gatewayId, item) for item in fresh)
        ranked = rank(list(seen.values()), self.policy, self.history, self.reactor.seconds())
        return buildPlan(ranked, lambda r, method: method in self.methods
                         and getattr(self.methods[method], "slots", 1) > 1, exclude)

    # -- one step ----------------------------------------------------------
    def register(self, step):
        """
        Register with the step's gateway, proving our id with the offer's
        nonce; a 1007 (the nonce went stale, say) gets one more try with a
        fresh offer from the same gateway.  The lease is used only if it is
        signed by the gateway of the offer and agrees with it.
        """
        d = self._register(step, step.seen.offer)
        return d.addErrback(self._badProof, step)

    def _register(self, step, offer):
        method = self.methods[step.method]
        entry = offer.method(step.method)
        if entry is None:
            return defer.fail(LeaseRejected(f"the gateway no longer offers {step.method}"))
        params = signRegistration({
            "client": {"id": self.clientId, "name": self.config.client.name},
            "gateway": offer.gatewayId, "nonce": offer.nonce,
            "method": step.method, "params": method.registerParams(entry)}, self.clientKey)
        d = self.rpc.call(step.host, step.port, "gateway.register", params)
        return d.addCallback(lambda answer: checkLease(
            answer, self.reactor.seconds(), offer, self.clientId, step.method,
            lambda config: method.checkAgainstOffer(entry, config)))

    def _badProof(self, failure, step):
        failure.trap(RPCError)
        if failure.value.code != BAD_PROOF:
            return failure
        log.info("{gateway} refused our registration proof ({why}): asking it for a fresh "
                 "offer and trying once more", gateway=step.gateway, why=failure.value.message)
        d = self.rpc.call(step.host, step.port, "gateway.info", {},
                          timeout=self.config.discovery.timeout)

        def fresh(answer):
            try:
                offer = verifyOffer(answer)
            except OfferRejected as e:
                log.info("the fresh offer from {gateway} is unusable: {why}",
                         gateway=step.gateway, why=str(e))
                return failure
            if offer.gatewayId != step.gatewayId:
                log.info("the fresh offer from {gateway} is signed by another gateway",
                         gateway=step.gateway)
                return failure
            return self._register(step, offer)

        def noOffer(infoFailure):
            infoFailure.trap(Exception)
            if infoFailure.check(defer.CancelledError):
                return infoFailure
            return failure

        return d.addCallbacks(fresh, noOffer)

    def connect(self, step, lease):
        # Never bring a tunnel up while the previous one is still going down.
        d = self._afterTeardown()
        d.addCallback(lambda _: self.methods[step.method].connect(step, lease))
        d.addTimeout(self.config.methods.connect_timeout, self.reactor)
        if self.dataPath is not None:
            d.addCallback(self.fitPath, step, lease)
        return d

    def connectStandby(self, step, lease):
        """
        A tunnel beside the serving one, without mnigs's default route
        (C{IClientMethod.connect(route=False)}, on a device of its own):
        sized to its path like any, its passage kept for L{activate}.  It
        does not wait for another connection's teardown: it takes no
        route, and its device is its own.
        """
        d = defer.maybeDeferred(self.methods[step.method].connect, step, lease, route=False)
        d.addTimeout(self.config.methods.connect_timeout, self.reactor)
        if self.dataPath is not None:
            d.addCallback(self._fit, step, lease)
        return d

    def activate(self, session):
        """
        Make a standby's connection the serving one: mnigs's default route
        through it (one route replaced: C{IClientConnection.activate}),
        then the client's table told its passage.  Raises (the route) or
        fires once the table is updated; what fails in the table is
        logged, as in L{fitPath}.
        """
        connection = session.connection
        connection.activate()
        if self.dataPath is None:
            return defer.succeed(None)
        return self._carry(connection)

    def fitPath(self, connection, step, lease):
        """
        A new connection's tunnel sized to the path to its gateway (the
        method's overhead off the mesh route's MTU; C{mtu.set_tunnel_mtu}),
        and the client's table told its device, lease address and MTU (NAT
        for a shared LAN, MSS clamping).  Fires with C{connection}; what
        fails here is logged and the connection used as it is.
        """
        self._fit(connection, step, lease)
        return self._carry(connection).addBoth(lambda _: connection)

    def _fit(self, connection, step, lease):
        try:
            passage = self._passage(connection, step, lease)
        except Exception:
            log.failure("could not fit the tunnel {device} to its path",
                        device=getattr(connection, "device", None))
        else:
            if passage is not None:
                self.passages[connection] = passage
        return connection

    def _carry(self, connection):
        "The client's table takes C{connection}'s passage (if it has one)."
        passage = self.passages.get(connection)
        if passage is None:
            return defer.succeed(None)
        self.carrying = connection
        return self.dataPath.online(passage)

    def _passage(self, connection, step, lease):
        from mnigs.client.datapath import Passage
        from mnigs.client.mtu import deviceMTU, tunnelMTU
        from mnigs.methods import METHODS

        address = ipaddress.ip_interface(lease["config"]["address"]).ip
        if address.version != 4:
            return None
        method = METHODS.get(step.method)
        overhead = method.overhead if method is not None else None
        outer = ipaddress.ip_address(step.host).version
        path = self.routing.pathMTU(step.host) if overhead is not None else None
        mtu = tunnelMTU(path, overhead, outer, method.padding if method is not None else 1)
        inner6 = (connection.describe() or {}).get("address6")  # IPv6 egress in use
        if mtu is not None and self.config.mtu.set_tunnel_mtu:
            self.routing.setMTU(connection.device, deviceMTU(mtu, bool(inner6)))
            log.info("{device}: MTU {set} (path to {gateway} {path} less {method}'s {overhead} "
                     "over IPv{outer}, to a multiple of its padding: {mtu}{six})", device=connection.device,
                     set=deviceMTU(mtu, bool(inner6)), mtu=mtu, gateway=step.gateway,
                     path=path, method=step.method, overhead=overhead[outer], outer=outer,
                     six="; at least 1280 with IPv6 inside, TCP clamped to the path"
                     if deviceMTU(mtu, bool(inner6)) != mtu else "")
        address6 = ipaddress.ip_interface(inner6).ip if inner6 else None
        return Passage(connection.device, address, mtu, address6=address6)

    def _afterTeardown(self):
        gate = defer.Deferred()

        def open(result):
            if not gate.called:
                gate.callback(None)
            return result

        self.teardown.addBoth(open)
        return gate

    # -- probes through the tunnel ----------------------------------------
    def probeTargets(self, session) -> ProbeTargets:
        """
        The gateway (C{health.targets}, or the lease's C{gateway_address}),
        the Internet beyond it (the offer's C{probe} list unless
        C{health.offer_probes} is off, then C{health.beyond}), through
        the session's device.
        """
        health = self.config.health
        gateway = [str(t) for t in health.targets] or [session.lease["config"].get("gateway_address")]
        internet = []
        if health.offer_probes:
            internet += list(session.step.seen.offer.probe)
        internet += [str(t) for t in health.beyond]
        return ProbeTargets.of(gateway, internet, device=session.connection.device)

    def _probing(self, session):
        if session.pinger is None:
            session.targets = self.probeTargets(session)
            session.pinger = self.pingerFactory(session.targets.device)
        return session

    def _stopProbing(self, session):
        pinger, session.pinger = session.pinger, None
        if pinger is not None:
            try:
                pinger.close()
            except Exception:
                log.failure("could not close the session's pinger")

    def verify(self, session):
        # A lease that leaves nothing to probe fails here like a silent one.
        return defer.maybeDeferred(self._verify, session)

    def _verify(self, session):
        self._probing(session)
        deadline = verifyDeadline(self.config, session.step.seen.rtt)
        return firstAnswer(self.reactor, session.pinger, session.targets,
                           interval=VERIFY_INTERVAL, deadline=deadline)

    def disconnect(self, session):
        self._stopWatching(session)
        self._stopProbing(session)
        return self._takeDown(session)

    def _takeDown(self, session):
        connection = session.connection
        d = defer.maybeDeferred(connection.disconnect)
        d.addErrback(lambda f: log.failure("could not take the connection down", f))
        if self.dataPath is not None and self.carrying is connection:
            # A standby, or a connection whose standby took over, leaves
            # the table to the serving one.
            self.carrying = None
            d.addCallback(lambda _: self.dataPath.offline())
        previous = self.teardown
        self.teardown = defer.gatherResults([previous, d], consumeErrors=True).addBoth(lambda _: None)
        return d

    def _checkInnerRoute(self, session):
        """
        Warn, once a session, when traffic to the gateway's inner address
        does not go through the tunnel: a mesh route to it, from a gateway
        announcing its tunnel pool into the mesh (babeld's default
        C{redistribute local}; see etc/babeld-mnigs.conf).  Probes are
        bound to the tunnel, so they are not fooled; everything else
        addressed to it is.
        """
        inner = session.lease["config"].get("gateway_address")
        device = session.connection.device
        if not inner or "inner route" in session.warned or session.step.method == "forward":
            return
        if getattr(self.routing, "installedOn", device) != device:
            return  # a standby: what is addressed to it goes through the serving tunnel
        try:
            leavesBy = self.routing.outgoingDevice(inner)
        except Exception:
            log.failure("could not look up the route to {address}", address=inner)
            return
        if leavesBy is not None and leavesBy != device:
            session.warned.add("inner route")
            log.warn("traffic to {gateway}'s inner address {address} leaves by {leavesBy}, not "
                     "through the tunnel {device}: a gateway announces its tunnel pool into the "
                     "mesh (babeld's default redistribute local?); see etc/babeld-mnigs.conf",
                     gateway=session.step.gateway, address=inner, device=device,
                     leavesBy=leavesBy)

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
    def startSession(self, session: Session) -> None:
        """
        An online session: its watchers (L{watch}; a promoted standby's
        run already), the quality history, the lease's resolvers and the
        C{online} hook.  L{endSession} stops them.
        """
        now = self.reactor.seconds()
        quality = self.history.get(session.step.gatewayId)
        quality.sessionStarted(now)
        self._saveHistory()
        if session.health is None:
            self.watch(session)
        if self.resolvers is not None:
            # forward's device is the mesh interface, not one of its own
            self.resolvers.online(session.connection.device, session.step.method != "forward",
                                  leaseResolvers(session.lease, session.step.gateway),
                                  session.step.gateway)
        self._hook("online", session, "")

    def watch(self, session: Session) -> None:
        """
        The watchers of a session, each reporting to C{self.reports}
        about it (the serving session and the standbys alike): the health
        monitor (probes through the tunnel), the lease renewal, the route
        check (every second and on route changes: L{checkSession}), the
        offer watch and the connection's own loss.  L{endSession} and
        L{disconnect} stop them.
        """
        reports = self.reports

        self._probing(session)
        health = session.health = self.healthFactory(session, reports)
        health.start()
        session.stoppers.append(health.stop)
        session.stoppers.append(lambda: self._stopProbing(session))
        self._checkInnerRoute(session)

        renewal = Renewal(self.reactor, self.rpc, session, reports)
        renewal.start()
        session.stoppers.append(renewal.stop)

        watch = LoopingCall(self.checkSession, session)
        watch.clock = self.reactor
        watch.start(1.0, now=False)
        session.stoppers.append(watch.stop)

        offers = LoopingCall(OfferWatch(self.rpc, session, reports,
                                        self.config.discovery.timeout).check)
        offers.clock = self.reactor
        offers.start(self.config.health.offer_interval, now=False)
        session.stoppers.append(offers.stop)

        lost = session.connection.whenLost()
        # endSession cancels the wait: a CancelledError then says only that
        # the session ended first.
        lost.addCallbacks(lambda reason: reports.lost(session, Reason(TUNNEL, reason)),
                          lambda failure: failure.trap(defer.CancelledError))
        session.stoppers.append(lost.cancel)

    @staticmethod
    def _stopWatching(session: Session) -> None:
        for stop in session.stoppers:
            try:
                stop()
            except Exception:
                pass
        session.stoppers = []

    def checkSession(self, session: Session) -> None:
        """
        Does the mesh still route to the session's gateway (a tunnel's
        packets cross it)?  And the inner route warning.
        """
        if session.step.method != "forward" and not self.routing.routedOnMesh(session.step.host):
            self.reports.lost(session, Reason(ROUTE, "the mesh no longer routes to "
                                                     f"{session.step.gateway}"))
            return
        self._checkInnerRoute(session)

    def offline(self):
        """
        Nothing online and nothing under way: the system's own resolvers
        come back (a failover keeps the old lease's until the new lease's
        replace them).
        """
        if self.resolvers is not None:
            self.resolvers.offline()

    def endSession(self, session):
        self._stopServing(session)
        return self._takeDown(session)

    def _stopServing(self, session):
        "The session serves no more: its watchers, its quality history, the offline hook."
        now = self.reactor.seconds()
        self._stopWatching(session)
        quality = self.history.get(session.step.gatewayId)
        # Tunnels that count their bytes (openvpn's bytecount) say how much
        # this session carried.
        try:
            traffic = session.connection.traffic()
        except Exception:
            log.failure("could not read the session's byte counters")
        else:
            if traffic is not None:
                quality.traffic(*traffic)
        quality.sessionEnded(now, now - session.startedAt)
        self._saveHistory()
        self._hook("offline", session, "")

    # -- planned moves, made before break ----------------------------------
    def canConnectBeside(self, session, step):
        """
        Make-before-break needs the old session's connections pinnable
        (C{routing.keep_old}, the client's table carrying its own tunnel:
        not C{forward}, whose device is the mesh's) and a method that can
        bring the new tunnel up on a device of its own (C{slots}).
        """
        return (self.kept is not None and self.carrying is session.connection
                and session.step.method != "forward"
                and getattr(self.methods.get(step.method), "slots", 1) > 1)

    def handOver(self, old, new):
        """
        The new session serves: C{old}'s flows are pinned to its tunnel
        (L{mnigs.client.pinning.KeptSessions.hold}) before mnigs's route
        moves to C{new}'s (L{activate}); C{old} then ends as a session
        and is kept, with its lease renewed, until its keeper lets it go
        (none of its connections left, C{routing.keep_old} over, its
        lease lost or its tunnel gone).  What cannot be kept ends now.
        Fires once the client's table carries C{new} (failures logged).
        """
        slot = self.kept.hold(old.connection.device) if self.kept is not None else None
        try:
            activated = self.activate(new)
        except Exception:
            log.failure("could not move mnigs's route to {device}", device=new.connection.device)
            activated = defer.succeed(None)
        self._stopServing(old)
        if slot is None:
            self._letGo(old)
            return activated
        keeper = self.kept.keep(slot, old.step.gateway, lambda why: self._letGo(old),
                                old.step.gatewayId)
        renewal = Renewal(self.reactor, self.rpc, old, _KeptReports(keeper))
        renewal.start()
        lost = old.connection.whenLost()
        lost.addCallbacks(lambda reason: keeper.end(f"its tunnel went ({reason})"),
                          lambda failure: failure.trap(defer.CancelledError))
        old.stoppers += [renewal.stop, lost.cancel]
        log.info("make-before-break: {gateway}'s connections stay on {device} until they end "
                 "(routing.keep_old {limit:g} s at most)", gateway=old.step.gateway,
                 device=old.connection.device, limit=self.kept.keepFor)
        return activated

    def _letGo(self, old):
        self._stopWatching(old)
        d = self._takeDown(old)
        self.unregister(old.step, old.lease)
        return d

    def announce(self, event, session, reason, nextStep=None):
        extra = () if nextStep is None else (nextStep.gatewayId, nextStep.seen.offer.name or "",
                                             nextStep.host, nextStep.method)
        self._hook(event, session, reason, *extra)

    def _hook(self, event, session, reason, *extra):
        """
        Run C{event}'s hook as C{HOOK EVENT GATEWAY_ID GATEWAY_HOST METHOD
        ADDRESS GATEWAY_NAME REASON [NEXT_ID NEXT_NAME NEXT_HOST NEXT_METHOD]}
        (docs/operations.md); the first five are what version 1 gave.
        """
        step = session.step
        self.hooks.run(event, step.gatewayId, step.host, step.method,
                       session.lease["config"].get("address", ""), step.seen.offer.name or "",
                       reason, *extra)


class _KeptReports:
    "What a kept session's renewal reports: a lost lease lets it go."

    def __init__(self, keeper):
        self.keeper = keeper

    def leaseLost(self, session, reason):
        self.keeper.end(f"its lease was lost ({reason})")


class OfferWatch:
    """
    Asks the gateway of an online session for its offer now and then: a
    verified offer that L{Session.saysUnavailable} believes is a reason
    to move.  What does not verify moves nobody: anyone on the mesh
    between us and the gateway could have said it.
    """

    def __init__(self, rpc, session: Session, reports: ISessionReports, timeout: float):
        self.rpc = rpc
        self.session = session
        self.reports = reports
        self.timeout = timeout

    def check(self):
        step = self.session.step
        d = self.rpc.call(step.host, step.port, "gateway.info", {}, timeout=self.timeout)
        return d.addCallbacks(self._answered, lambda f: None)

    def _answered(self, answer):
        step = self.session.step
        saysUnavailable = isinstance(answer, dict) and answer.get("available") is False
        try:
            offer = verifyOffer(answer)
        except OfferRejected as e:
            if saysUnavailable:
                log.info("ignoring an offer saying {gateway} is unavailable: {why}",
                         gateway=step.gateway, why=str(e))
            else:
                log.debug("ignoring an offer from {gateway}: {why}", gateway=step.gateway,
                          why=str(e))
            return
        if self.session.saysUnavailable(offer):
            self.reports.lost(self.session, Reason(UNAVAILABLE, SAYS_UNAVAILABLE))


class Renewal:
    """
    Renews the lease at half its lifetime; a 1003/1004 answer means the
    gateway forgot us: register again.  Transport failures are retried
    (the health probes decide whether the gateway is gone) after
    C{RETRY_SECONDS}.
    """

    RETRY_SECONDS = 5.0

    def __init__(self, reactor, rpc, session: Session, reports: ISessionReports):
        self.reactor = reactor
        self.rpc = rpc
        self.session = session
        self.reports = reports
        self.call = None
        self.pending = None

    def start(self):
        self._schedule(self.session.lease["expires_at"] - self.reactor.seconds())

    def _schedule(self, lifetime):
        self.call = self.reactor.callLater(max(1.0, lifetime / 2), self._renew)

    def _retry(self):
        self.call = self.reactor.callLater(self.RETRY_SECONDS, self._renew)

    def _renew(self):
        lease, step = self.session.lease, self.session.step
        self.pending = self.rpc.call(step.host, step.port, "gateway.renew",
                                     {"lease": lease["id"], "token": lease["token"]})
        self.pending.addCallbacks(self._renewed, self._failed)

    def _renewed(self, answer):
        expires = answer.get("expires_in") if isinstance(answer, dict) else None
        if type(expires) is not int or expires <= 0:
            return self._retry()
        self.session.lease["expires_at"] = self.reactor.seconds() + expires
        self._schedule(expires)

    def _failed(self, failure):
        if failure.check(defer.CancelledError):
            return
        if failure.check(RPCError) and failure.value.code in (UNKNOWN_LEASE, WRONG_TOKEN):
            self.reports.leaseLost(self.session, Reason(
                LEASE, f"the gateway no longer knows our lease ({failure.value.code})"))
            return
        self._retry()

    def stop(self):
        if self.call is not None and self.call.active():
            self.call.cancel()
        if self.pending is not None and not self.pending.called:
            self.pending.cancel()
