"""
Putting the gateway together: config in, a running service out.

Start-up order matters for "a restart cuts no client": leases are restored
from the state file first, the access list is then atomically replaced by
one admitting exactly the restored leases, the methods adopt or start their
daemons and re-add their peers, and only then does the machine serve.
"""

from __future__ import annotations

import os

from twisted.application.internet import TCPServer
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.daemon.admin import makeAdminService
from mnigs.daemon.hooks import Hooks
from mnigs.daemon.identity import loadOrCreateKey
from mnigs.methods import METHODS, GatewayContext
from mnigs.system.netlink import Netlink
from mnigs.system.nft import NftAccess, NftRunner
from mnigs.server.poolroutes import PoolRouting
from mnigs.server.arrival import ReplyByArrival, neighbourMonitor, replyMarkSwitches
from mnigs.server.hoproutes import HopRouting
from mnigs.system.nftnetlink import NftSetElements
from mnigs.rpc.server import makeSite
from mnigs.server.config import routedPools6
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit, LeaseFile
from mnigs.server.machine import GatewayCore, makeGateway
from mnigs.server.meshaddresses import MeshAddresses
from mnigs.server.offer import OfferMaker, termsFromConfig
from mnigs.server.ratelimit import RateLimiter
from mnigs.server.registry import Registry
from mnigs.server.traffic import TrafficMeter
from mnigs.server.rpcapi import makeResource
from mnigs.server.uplink import DefaultRouteCheck, LinkCheck, PingCheck, UplinkMonitor
from mnigs.system.statefile import StateFileCorrupt, ensureStateDir

log = Logger()


def arrivalTable(gateTable: str) -> str:
    """The nftables table of the replies by arrival, named after the gate's."""
    return f"{gateTable}_hops"

# Connections waiting to be accepted.  Twisted's default of 50 overflows
# when one address opens connections faster than the per-address cap
# closes them, and a legitimate client's SYN dropped there waits a second
# for its retransmission (the kernel caps this at net.core.somaxconn).
LISTEN_BACKLOG = 1024


class GatewayService(MultiService):
    """
    The whole gateway.  C{self.gateway} is the machine; the rest is reachable
    from the manhole as attributes of this object.
    """

    #: What SIGHUP may change while the gateway runs (mnigs.daemon.reload).
    LIVE_KEYS = ("terms", "server.drain_timeout", "log.level")

    def __init__(self, reactor, config, netlink=None, nftRunner=None, configPath=None,
                 levelFilter=None, poolRouting=None, hopRouting=None):
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.configPath = configPath
        self.levelFilter = levelFilter
        self.netlink = netlink
        self.nftRunner = nftRunner
        self.poolRouting = poolRouting
        self.hopRouting = hopRouting

    def startService(self):
        # The state directory, keys, lease files and sockets are opened
        # here, not by the constructor: a service can be built with a Clock.
        self._wire()
        super().startService()

    def _wire(self):
        reactor, config = self.reactor, self.config
        self.stateDir = ensureStateDir(config.server.state_dir)
        if self.netlink is None:
            self.netlink = Netlink()
        self.key = loadOrCreateKey(self.stateDir)
        self.book = LeaseBook(config.terms.max_clients, config.terms.lease_seconds,
                              maxPerAddress=config.terms.max_leases_per_address)
        self.store = LeaseFile(self.stateDir)
        self.committer = GroupCommit(reactor, self.store, self.book.records, self.book.takeChanges)
        # Allow/deny over netlink, not one nft process each, unless a test
        # brought its own runner.
        self.nftElements = NftSetElements() if self.nftRunner is None else None
        runner = self.nftRunner or NftRunner(reactor)
        self.access = NftAccess(reactor, runner, config.uplink.interface, table=config.nft.table,
                                elements=self.nftElements)
        if self.poolRouting is None:
            self.poolRouting = PoolRouting(config.routing.table, config.routing.rule_priority)
        self.methods = self._buildMethods()
        self.arrival = self._replyByArrival(runner)
        self.hooks = Hooks(reactor, {"register": config.hooks.register,
                                     "release": config.hooks.release},
                           config.hooks.max_running)
        self.traffic = TrafficMeter(reactor, self.methods, config.server.traffic_interval)
        # Counted only when someone can read them.
        self.metrics = self._metrics() if config.web.enabled else None
        self.registry = Registry(reactor, self.book, self.methods, self.committer, self.hooks,
                                 traffic=self.traffic,
                                 registerTimeout=config.hooks.register_timeout,
                                 allowOnTimeout=config.hooks.on_register_timeout == "allow",
                                 observer=self.metrics)
        self.offers = OfferMaker(reactor, self.key, config.server.name,
                                 termsFromConfig(config.terms), list(self.methods.values()),
                                 probe=config.uplink.probe,
                                 addresses=MeshAddresses(reactor, self.netlink.linkAddresses,
                                                         self._notMesh, config.rpc.listen))
        self.gateway = makeGateway(GatewayCore(self.registry, self.offers, self._leave,
                                               self._clearDataPath, reactor,
                                               bornAt=reactor.seconds()))
        if self.metrics is not None:
            self._watch(self.metrics)
        self.rateLimiter = RateLimiter(reactor, config.rpc.rate_limit,
                                       maxHosts=config.rpc.rate_limit_addresses)
        self.uplink = UplinkMonitor(reactor, self._uplinkChecks(), config.uplink.check_interval,
                                    self.gateway)
        self.sweeper = LoopingCall(self._sweep)
        self.sweeper.clock = reactor
        # The RPC listeners start once the gateway serves: a restarting
        # gateway refuses connections for a moment rather than offering
        # "available: false", which would send its clients away.
        self.listeners = MultiService()
        self._addListeners()
        makeAdminService(reactor, config.admin.socket,
                         {"status": self.gateway.describe, "drain": self.drain,
                          "leases": self.registry.leases, "release": self.release}
                         ).setServiceParent(self)
        if config.web.enabled:
            self._webService().setServiceParent(self)
        if config.manhole.enabled:
            from mnigs.daemon.manhole import makeManholeService
            makeManholeService(reactor, config.manhole.socket,
                               {"service": self, "gateway": self.gateway,
                                "book": self.book, "registry": self.registry,
                                "methods": self.methods, "config": config,
                                "arrival": self.arrival}
                               ).setServiceParent(self)
        _Lifecycle(self).setServiceParent(self)

    def _replyByArrival(self, runner):
        config = self.config
        openMonitor, switches = None, ()
        if self.hopRouting is None:
            self.hopRouting = HopRouting(config.routing.reply_table,
                                         config.routing.reply_rule_priority)
            openMonitor = neighbourMonitor
            switches = replyMarkSwitches(self.stateDir)
        # Neither the uplink nor the methods' own tunnels are the mesh.
        return ReplyByArrival(self.reactor, runner, arrivalTable(config.nft.table),
                              self.hopRouting, config.mesh.interfaces, self._notMesh(),
                              openMonitor=openMonitor, switches=switches)

    def _metrics(self):
        from mnigs.server.metrics import GatewayMetrics
        from mnigs.web.metrics import inReactorThread

        return GatewayMetrics(self.reactor, call=inReactorThread(self.reactor))

    def _watch(self, metrics):
        from mnigs.system.tracing import setTrace

        setTrace(self.gateway, metrics)
        # Per-lease byte counts, once the registry keeps them.
        traffic = getattr(self.registry, "trafficByLease", None)
        metrics.watchBook(self.book, list(self.methods), traffic,
                          self.config.web.metrics_per_lease)

    def _webService(self):
        from mnigs.web.gatewaypage import renderGatewayPage
        from mnigs.web.metrics import makeMetricsResource
        from mnigs.web.pages import StatusJSON, StatusPage
        from mnigs.web.site import makeWebService

        web = self.config.web
        return makeWebService(self.reactor, web.listen, web.port,
                              {b"": StatusPage(self.gateway.describe, renderGatewayPage),
                               b"status.json": StatusJSON(self.gateway.describe),
                               b"metrics": makeMetricsResource(self.metrics.registry)})

    def _notMesh(self):
        """The interfaces whose addresses no client reaches: uplink, tunnels."""
        tunnels = [name for method in self.methods.values()
                   for name in method.tunnelInterfaces()]
        return [self.config.uplink.interface] + tunnels

    def _buildMethods(self):
        context = GatewayContext(self.reactor, self.config, self.stateDir, self.access,
                                 self.netlink)
        return {name: METHODS[name].buildGateway(context, section)
                for name, section in self.config.methods.items() if section.enabled}

    def _uplinkChecks(self):
        uplink = self.config.uplink
        checks = [LinkCheck(self.netlink, uplink.interface)]
        if uplink.require_default_route:
            checks.append(DefaultRouteCheck(self.netlink))
        if uplink.probe:
            checks.append(PingCheck(self.reactor, uplink.probe, uplink.probe_timeout))
        return checks

    def _addListeners(self):
        resource = makeResource(self.gateway, self.rateLimiter, self.offers, self.metrics)
        rpc = self.config.rpc
        for address in rpc.listen:
            site = makeSite(resource, self.reactor, rpc.max_connections, rpc.idle_timeout,
                            rpc.request_timeout, rpc.max_connections_per_address)
            TCPServer(rpc.port, site, LISTEN_BACKLOG, interface=str(address),
                      reactor=self.reactor).setServiceParent(self.listeners)

    def restoreLeases(self):
        try:
            stored = self.store.load()
        except StateFileCorrupt as e:
            log.error("{error}; starting with no leases", error=e)
            return
        if stored is None:
            return
        try:
            restored, dropped = self.book.restore(stored, self.reactor.seconds(), set(self.methods))
        except (KeyError, TypeError, ValueError) as e:
            log.error("lease file unusable ({error}); starting with no leases", error=e)
            return
        log.info("restored {n} leases ({d} expired or for methods no longer configured)",
                 n=len(restored), d=len(dropped))
        if dropped:
            self.committer.commit()

    def restoredAdmissions(self):
        """
        The gate's admissions for the restored leases, the same that their
        grants allowed.  A lease that cannot say where it lives (a forward
        lease stored before leases kept their origin, or a damaged record)
        is dropped: its client registers again.
        """
        admissions = []
        for lease in self.book.live():
            try:
                admissions.extend(self.methods[lease.method].admissions(lease))
            except (KeyError, TypeError, ValueError) as e:
                log.warn("dropping restored lease {lease} ({method}): no usable origin ({error!r})",
                         lease=lease.id, method=lease.method, error=e)
                self.book.remove(lease)
                self.committer.commit()
        return admissions

    @defer.inlineCallbacks
    def bringUp(self):
        self.restoreLeases()
        admissions = self.restoredAdmissions()
        replyPorts = [port for method in self.methods.values() for port in method.udpPorts()]
        tunnels = [name for method in self.methods.values() for name in method.tunnelInterfaces()]
        yield self.access.install(admissions, replyPorts, tunnels, routedPools6(self.config))
        yield self.registry.startMethods()
        pools = [pool for method in self.methods.values() for pool in method.tunnelPools()]
        self.poolRouting.install(pools)
        self._checkIPv6Uplink(pools)
        if self.config.routing.reply_by_arrival:
            yield self.arrival.start()
        else:  # what a run with it on left
            yield self.arrival.remove()
        self.gateway.started()
        self.listeners.setServiceParent(self)
        self.uplink.start()
        self.sweeper.start(self.config.server.sweep_interval, now=False)
        self.traffic.start()
        log.info("gateway {name} ({gid}) serving with methods {names}",
                 name=self.config.server.name, gid=self.offers.gatewayId,
                 methods=sorted(self.methods), names=", ".join(sorted(self.methods)))

    def _checkIPv6Uplink(self, pools):
        # IPv6 egress with no IPv6 way out: clients would route their IPv6
        # into the tunnel and get unreachables back.  Said, not refused:
        # the uplink's IPv6 may come later (router advertisements).
        if not any(network.version == 6 for network, _ in pools):
            return
        try:
            present = self.netlink.defaultRouteVia(6) is not None
        except Exception:
            log.failure("could not look for an IPv6 default route")
            return
        if not present:
            log.warn("an IPv6 pool (pool6) is offered but there is no IPv6 default route: "
                     "clients' IPv6 gets no further than this gateway until there is one")

    def reloader(self):
        from mnigs.daemon.reload import Reloader
        from mnigs.server.config import loadServerConfig

        return Reloader(self.configPath, loadServerConfig, lambda: self.config,
                        self.applyConfig, self.LIVE_KEYS)

    def applyConfig(self, config, changed):
        """
        Put a reloaded config in force: only L{LIVE_KEYS} differ from the
        running one.  Leases stay as they are; the next offer carries the
        new terms, and renewals from now on get the new lease time.
        """
        self.config = config
        self.book.maxClients = config.terms.max_clients
        self.book.leaseSeconds = config.terms.lease_seconds
        self.book.maxPerAddress = config.terms.max_leases_per_address
        self.offers.setTerms(termsFromConfig(config.terms))
        if self.levelFilter is not None:
            self.levelFilter.setLevel(config.log.level)

    def _sweep(self):
        return self.gateway.sweep().addErrback(lambda f: log.failure("lease sweep failed", f))

    def drain(self, timeout=None):
        """
        The admin socket's C{drain [SECONDS]}: offers go unavailable, and
        the data path goes once the last lease is gone or the time is up
        (C{server.drain_timeout} unless given).
        """
        from mnigs.server.config import SCHEMA

        if timeout is None:
            seconds = self.config.server.drain_timeout
        else:  # the same bounds as server.drain_timeout
            seconds = SCHEMA["server"]["drain_timeout"].check(float(timeout))
        return self.gateway.drain(seconds)

    def release(self, leaseId=None):
        """
        The admin socket's C{release LEASE}: end one lease now, as its
        client's unregister would (L{Registry.release}).
        """
        if leaseId is None:
            raise ValueError("release needs a lease id (mnigsctl --server leases lists them)")
        return self.registry.release(leaseId)

    @defer.inlineCallbacks
    def _clearDataPath(self):
        self.traffic.stop()
        yield self.registry.releaseAll("released: drained")
        yield self.registry.stopMethods()
        try:
            yield self.access.remove()
        except Exception:
            log.failure("could not remove the nftables table")
        try:
            self.poolRouting.clear()
        except Exception:
            log.failure("could not remove the pool routes")
        try:
            yield self.arrival.remove()
        except Exception:
            log.failure("could not remove the replies by arrival")

    @defer.inlineCallbacks
    def _leave(self):
        """
        Stop serving, leaving the data path (nftables table, WireGuard
        device, cjdns tunnels) for the next start to adopt: a restart cuts
        nobody whose method's daemon can outlive us.
        """
        self.uplink.stop()
        self.traffic.stop()
        if self.sweeper.running:
            self.sweeper.stop()
        self.committer.flushNow()
        self.store.close()
        self.arrival.leave()
        yield self.registry.leaveMethods()
        if self.nftElements is not None:
            self.nftElements.close()


class _Lifecycle(Service):
    """
    Starts the gateway once the listeners are up and stops it (tearing the
    data path down) before they close.  If the data path cannot be set up,
    the daemon exits with a non-zero status instead of serving a gateway
    that gets nobody anywhere.
    """

    restoreSIGHUP = None

    def __init__(self, gatewayService):
        self.gatewayService = gatewayService

    def startService(self):
        super().startService()
        service = self.gatewayService
        reactor = service.reactor
        self.restoreSIGHUP = None
        if service.configPath is not None:
            from mnigs.daemon.reload import handleSIGHUP
            self.restoreSIGHUP = handleSIGHUP(reactor, service.reloader().reload)
        d = service.bringUp()

        def failed(failure):
            log.failure("the gateway could not start", failure)
            # twistd has no way to set its exit status; leave with 1 once the
            # services (and their listeners and sockets) have stopped.
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()

        d.addErrback(failed)

    def stopService(self):
        super().stopService()
        if self.restoreSIGHUP is not None:
            self.restoreSIGHUP()
        return self.gatewayService.gateway.stop()

