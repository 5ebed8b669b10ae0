"""
Putting the client together: config in, a running service out.
"""

from __future__ import annotations

import os
import resource

from twisted.application.service import MultiService, Service
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mnigs.daemon.admin import makeAdminService
from mnigs.client.agent import ClientAgent, wire
from mnigs.routing import SourceContext, chosen
from mnigs.client.discovery import Discovery
from mnigs.client.datapath import ClientDataPath, Forwarding, Forwarding6
from mnigs.client.dns import ResolverKeeper
from mnigs.client.effects import CLIENT_HOOK_EVENTS, ClientEffects
from mnigs.client.degrade import DegradeJudge, DegradeRules
from mnigs.client.falseloss import FalseLossCheck
from mnigs.client.health import HealthMonitor
from mnigs.client.pacing import Pacing
from mnigs.client.history import HistoryFile, QualityHistory
from mnigs.client.ranking import Policy, SwitchPolicy
from mnigs.client.pinning import ConntrackCounter, KeptSessions, PinRouting
from mnigs.client.routes import PolicyRouting
from mnigs.daemon.hooks import Hooks
from mnigs.daemon.identity import KEY_FILE, loadOrCreateKey
from mnigs.methods import METHODS, ClientContext
from mnigs.system.netlink import Netlink
from mnigs.system.nft import NftRunner
from mnigs.protocol import keyId
from mnigs.rpc.client import RPCClient
from mnigs.system.statefile import ensureStateDir

log = Logger()

#: Methods whose tunnel device receives only what the gateway sends
#: through the tunnel (decrypted and authenticated for WireGuard and
#: OpenVPN; the hub's frames for SoftEther): bytes it receives are the
#: gateway's life.  Not forward (the mesh interface carries everyone's
#: traffic) nor cjdns (its tun carries every cjdns peer's).
RX_EVIDENCE = frozenset({"wireguard", "openvpn", "softether"})

#: Says the client turned IPv4 forwarding on (for a shared LAN): a run
#: after a crash turns it back off on stop.
FORWARDING_MARKER = "ip_forward-turned-on"
#: The same for IPv6 forwarding (a shared LAN's IPv6 through the tunnel).
FORWARDING6_MARKER = "ipv6_forwarding-turned-on"

#: Where protocol version 1 kept the client's free-text id.
OLD_CLIENT_ID_FILE = "client-id"


def loadOrCreateClientKey(stateDir: str):
    """
    The client's ed25519 key (its id is the public half), made on first
    start and kept in C{stateDir/identity.pem}, mode 0600.  The version 1
    C{client-id} file, a free-text id anyone could claim, goes.
    """
    key = loadOrCreateKey(stateDir)
    old = os.path.join(stateDir, OLD_CLIENT_ID_FILE)
    try:
        os.unlink(old)
    except FileNotFoundError:
        pass
    else:
        log.info("removed {path}: a client's id is now the public half of its key ({key})",
                 path=old, key=os.path.join(stateDir, KEY_FILE))
    return key


def raiseFileLimit(wanted=8192):
    # A scan holds one socket per silent candidate until its timeout.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def buildSources(reactor, config):
    """
    The route sources C{config.discovery} turns on, as the registry
    (L{mnigs.routing}) builds them, in the order they are asked.
    """
    context = SourceContext(reactor, config)
    sources = []
    for source in chosen(config.discovery):
        built = source.buildSource(context, config.sources.get(source.name))
        if built is not None:
            sources.append(built)
    return sources


def policyFromConfig(config) -> Policy:
    policy = config.policy
    return Policy(
        methods=tuple(config.methods.order), acceptFees=policy.accept_fees,
        maxFee=policy.max_fee, currency=policy.currency or None,
        pinned=policy.pinned, blocked=policy.blocked,
        failureCooldown=policy.failure_cooldown)


class ClientService(MultiService):
    #: What SIGHUP may change while the client runs (mnigs.daemon.reload).
    LIVE_KEYS = ("policy", "health", "degrade", "log.level")

    def __init__(self, reactor, config, configPath=None, levelFilter=None, netlink=None,
                 routing=None, dataPath=None):
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.configPath = configPath
        self.levelFilter = levelFilter
        self.netlink = netlink
        self.routing = routing
        self.dataPath = dataPath

    def startService(self):
        # The state directory, keys, sockets and history are opened here,
        # not by the constructor: a service can be built with a Clock.
        self._wire()
        super().startService()

    def _wire(self):
        reactor, config = self.reactor, self.config
        raiseFileLimit()
        stateDir = ensureStateDir(config.client.state_dir)
        self.clientKey = loadOrCreateClientKey(stateDir)
        self.clientId = keyId(self.clientKey.verify_key)
        if self.netlink is None:
            self.netlink = Netlink()
        if self.routing is None:
            self.routing = PolicyRouting(config.routing.table, config.routing.rule_priority,
                                         prefixes=config.share.prefixes,
                                         interfaces=config.share.interfaces,
                                         failClosed=config.routing.fail_closed)
        if self.dataPath is None:
            self.dataPath = ClientDataPath(
                NftRunner(reactor), config.share.table, config.share.prefixes,
                config.share.interfaces, clamp=config.mtu.clamp_mss,
                forwarding=Forwarding(marker=os.path.join(stateDir, FORWARDING_MARKER)),
                forwarding6=Forwarding6(marker=os.path.join(stateDir, FORWARDING6_MARKER)),
                pinning=config.routing.keep_old > 0)
        self.kept = None
        if config.routing.keep_old > 0 and getattr(self.dataPath, "pinning", False):
            pins = PinRouting(config.routing.table, config.routing.rule_priority)
            self.kept = KeptSessions(reactor, self.dataPath, pins, ConntrackCounter(),
                                     config.routing.keep_old)
        self.history = QualityHistory(reactor, HistoryFile(stateDir))
        self.history.load()
        policyConfig = config.policy
        self.policy = policyFromConfig(config)
        self.methods = self._buildMethods(stateDir)
        self.resolvers = self._resolverKeeper(stateDir)
        # Counted only when someone can read them.
        self.metrics = self._metrics() if config.web.enabled else None
        self.discovery = Discovery(
            reactor, RPCClient(reactor, timeout=config.discovery.timeout, persistent=False),
            ports=config.discovery.ports, concurrency=config.discovery.concurrency,
            timeout=config.discovery.timeout, maxCandidates=config.discovery.max_candidates,
            ownAddresses=self.netlink.localAddresses,
            pinned=policyConfig.pinned or None, blocked=policyConfig.blocked,
            observer=self.metrics)
        rpc = RPCClient(reactor, timeout=config.discovery.timeout)
        self.effects = ClientEffects(
            reactor, config, buildSources(reactor, config), self.discovery,
            rpc, self.methods, self.policy,
            self.history, self.routing, self._health,
            Hooks(reactor, {event: config.hooks[event] for event in CLIENT_HOOK_EVENTS},
                  config.hooks.max_running),
            self.clientKey, resolvers=self.resolvers, dataPath=self.dataPath, kept=self.kept)
        self.agent = wire(ClientAgent(reactor, self.effects, self.history,
                                      SwitchPolicy(policyConfig.switch_margin,
                                                   policyConfig.switch_hold),
                                      config.discovery.rescan_interval,
                                      degrade=DegradeJudge(DegradeRules.fromConfig(config),
                                                           reactor),
                                      falseLosses=FalseLossCheck(reactor, rpc),
                                      standbys=self._standbys()), self.effects,
                          observers=[self.metrics] if self.metrics is not None else [])
        if self.metrics is not None:
            from mnigs.web.metrics import inReactorThread

            self.metrics.watchAgent(self.agent, inReactorThread(reactor))
        makeAdminService(reactor, config.admin.socket,
                         dict(self.agent.adminCommands(), status=self.describe)
                         ).setServiceParent(self)
        if config.web.enabled:
            self._webService().setServiceParent(self)
        if config.manhole.enabled:
            from mnigs.daemon.manhole import makeManholeService
            makeManholeService(reactor, config.manhole.socket,
                               {"service": self, "agent": self.agent, "history": self.history,
                                "effects": self.effects, "config": config}).setServiceParent(self)
        _Lifecycle(self).setServiceParent(self)

    def _standbys(self):
        "C{[standby]}: the hot standbys, or none (C{count = 0})."
        count = self.config.standby.count
        if count <= 0:
            return None
        from mnigs.client.standby import Standbys

        return Standbys(self.reactor, self.effects, count, self.effects.planStandby)

    def _resolverKeeper(self, stateDir):
        """
        C{[dns]}: the backend the mode names, or for C{auto} what this
        system uses (systemd-resolved, else resolvconf, else none).
        """
        from mnigs.system.resolvers import commandRunner, detectMode, makeBackend

        dns = self.config.dns
        run = commandRunner(self.reactor)
        mode = dns.mode
        if mode == "auto":
            mode = detectMode() or "off"
            log.info("dns: mode auto uses {mode}{why}", mode=mode,
                     why="" if mode != "off" else " (neither systemd-resolved nor resolvconf "
                     "here; dns.mode \"file\" would write /etc/resolv.conf)")
        backend = None if mode == "off" else makeBackend(mode, run, dns.file, dns.hook)
        return ResolverKeeper(backend, stateDir,
                              lambda recorded: makeBackend(recorded, run, dns.file, dns.hook))

    @staticmethod
    def _metrics():
        from mnigs.client.metrics import ClientMetrics

        return ClientMetrics()

    def _webService(self):
        from mnigs.web.clientpage import renderClientPage
        from mnigs.web.metrics import makeMetricsResource
        from mnigs.web.pages import StatusJSON, StatusPage
        from mnigs.web.site import makeWebService

        web = self.config.web
        return makeWebService(self.reactor, web.listen, web.port,
                              {b"": StatusPage(self.describe, renderClientPage),
                               b"status.json": StatusJSON(self.describe),
                               b"metrics": makeMetricsResource(self.metrics.registry)})

    def describe(self):
        "The status: the agent's, and the resolvers in force."
        return dict(self.agent.describe(), dns=self.resolvers.describe())

    def reloader(self):
        from mnigs.client.config import loadClientConfig
        from mnigs.daemon.reload import Reloader

        return Reloader(self.configPath, loadClientConfig, lambda: self.config,
                        self.applyConfig, self.LIVE_KEYS)

    def applyConfig(self, config, changed):
        """
        Put a reloaded config in force: only L{LIVE_KEYS} differ from the
        running one.  The session goes on; health settings apply from the
        next connection; a gateway the new policy forbids is left for the
        best one it allows.
        """
        self.config = config
        self.effects.config = config
        self.policy = policyFromConfig(config)
        self.discovery.pinned = config.policy.pinned or None
        self.discovery.blocked = config.policy.blocked
        self.agent.switchPolicy.margin = config.policy.switch_margin
        self.agent.switchPolicy.hold = config.policy.switch_hold
        self.agent.degrade.rules = DegradeRules.fromConfig(config)
        if self.levelFilter is not None:
            self.levelFilter.setLevel(config.log.level)
        self.agent.policyChanged(self.policy)  # keeps what mnigsctl use/block chose

    def _buildMethods(self, stateDir):
        context = ClientContext(self.reactor, self.config, stateDir, self.routing, self.netlink)
        return {name: METHODS[name].buildClient(context, self.config.methods.get(name))
                for name in self.config.methods.order}

    def _health(self, session, reports):
        # The session's targets and pinger (bound to its tunnel device) are
        # the ones its verification used (ClientEffects.verify).
        health = self.config.health
        pacing = received = None
        if health.pacing:
            pacing = Pacing(health.min_interval, health.interval, health.min_timeout,
                            health.timeout, health.dead_probes)
            received = tunnelReceived(self.netlink, session)
        return HealthMonitor(
            self.reactor, session.pinger, session.targets, interval=health.interval,
            timeout=health.timeout,
            misses=health.misses,
            onMissed=lambda count: reports.probeMissed(session, count),
            onAnswered=lambda rtt: reports.probeAnswered(session, rtt),
            onLost=lambda reason: reports.lost(session, reason),
            onSample=lambda rtt: reports.probeSample(session, rtt),
            pacing=pacing, received=received, qualityWindow=health.quality_window,
            echoes=health.echoes)



class _Lifecycle(Service):
    restoreSIGHUP = None

    def __init__(self, clientService):
        self.clientService = clientService

    def startService(self):
        super().startService()
        service = self.clientService
        if service.configPath is not None:
            from mnigs.daemon.reload import handleSIGHUP
            self.restoreSIGHUP = handleSIGHUP(service.reactor, service.reloader().reload)
        service.routing.clear()  # whatever a crashed run left
        if service.kept is not None:
            service.kept.pins.clear()
        service.resolvers.recover()  # runs before any later change
        service.dataPath.start()  # replaces whatever table a crashed run left
        # The id stays out of info lines: it names this device to whoever
        # reads the log.
        log.info("mnigs client starting, methods {names}",
                 methods=list(service.methods), names=", ".join(service.methods))
        log.debug("mnigs client id {id}", id=service.clientId)
        service.agent.start()

    def stopService(self):
        super().stopService()
        if self.restoreSIGHUP is not None:
            self.restoreSIGHUP()
        service = self.clientService
        d = service.agent.stop()
        if service.kept is not None:
            d.addBoth(lambda result: service.kept.releaseAll("the client stops").addBoth(
                lambda _: result))

        def cleanUp(result):
            service.routing.clear()
            if service.kept is not None:
                service.kept.pins.clear()
            service.resolvers.offline()
            return service.resolvers.settled().addBoth(lambda _: saved(result))

        def saved(result):
            try:
                service.history.save()
            except Exception:
                log.failure("could not save the quality history")
            return service.dataPath.stop().addBoth(lambda _: result)

        d.addBoth(cleanUp)
        # Fire on a turn of our own: the stop often ends inside a child's
        # processEnded (wireguard-go's), which Twisted calls from its loop
        # over the processes to reap; finishing the stop there runs the
        # reactor's shutdown (closing every pipe) inside that loop, which
        # reaps a hook that ended meanwhile (the offline hook) a second
        # time: waitpid(None), an "Unhandled Error" in the log.
        return d.addBoth(lambda result: deferLater(service.reactor, 0, lambda: result))


def tunnelReceived(netlink, session):
    """
    C{received()}: the bytes the session's tunnel device has
    received, as evidence of the gateway's life (L{mnigs.client.health}),
    for the methods whose device carries only what the gateway sends
    (L{RX_EVIDENCE}); C{None} for the others.
    """
    if netlink is None or session.step.method not in RX_EVIDENCE:
        return None
    device = session.connection.device

    def received():
        stats = netlink.linkStats(device)
        return None if stats is None else stats[0]
    return received
