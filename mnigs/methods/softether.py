# -*- test-case-name: tests.unit.test_softether,tests.mesh.test_softether -*-
"""
The C{softether} method, both sides.

Gateway: a SoftEther vpnserver (L{mnigs.softether.server}) with one hub
bridged to a kernel tap that holds the pool's first address; the kernel
routes and the nftables gate NATs, so a lease gets through exactly while
its inner address is admitted from the tap, as for WireGuard.  Each lease
is a hub user with a random password and access rules pinning it to its
inner address (L{mnigs.softether.hub}): the hub discards IPv4 from a
session whose source is not its lease's address, so one session cannot
send as another through the shared tap (tests/mesh/test_gate.py shows it
with traffic).  When the lease ends, the address is denied, the user
deleted and its session disconnected.  The offer carries the endpoint, the hub and the SHA-256 of
the server certificate; the lease carries the user, its password, the
certificate and the inner address with the pool's prefix (the tap is an
Ethernet segment, the gateway is on it).

While the vpnserver is being relaunched (after a crash) a registration
waits for it a little and is then answered 1005, temporarily unavailable;
a revoke closes the gate and leaves the hub user to the relaunch, which
configures the hub with the live leases' users only.

Client: a vpnclient per connection (L{mnigs.softether.client}) with one
virtual NIC, the lease's address on it, the certificate pinned, and the
default route via the gateway's tap address in mnigs's table.  The
connection is lost when the vpnclient dies or the NIC loses its carrier
(SoftEther takes it down when the session ends).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import ssl

from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.system.admission import Admission
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.forward import accessAddress
from mnigs.methods.loss import Loss
from mnigs.methods.traffic import Traffic
from mnigs.methods.pool import AddressPool
from mnigs.protocol import (INTERNAL_ERROR, UNAVAILABLE, RPCError, formatEndpoint,
                            invalidParams, parseEndpoint)
from mnigs.softether.client import OFFLINE, VpnClient, nicInterface
from mnigs.softether.hub import HUB_NAME, USER_NAME, HubUser, userName
from mnigs.softether.hubsync import NotReady
from mnigs.softether.server import certificateFingerprint
from mnigs.softether.vpncmd import VpncmdError, VpncmdFailed
from mnigs.methods import resolversFor

log = Logger()

MAX_CERTIFICATE = 8192
LINK_CHECK_INTERVAL = 0.25
# While connecting: the NIC's carrier is cheap to look at (netlink) and
# comes up with the session; the account's status (a vpncmd run, about a
# quarter of a second) is only asked now and then, to fail early when the
# session was refused.
CARRIER_INTERVAL = 0.02
STATUS_INTERVAL = 0.5


def newPassword() -> str:
    return secrets.token_urlsafe(24)


@implementer(IGatewayMethod)
class SoftEtherGateway:
    name = "softether"

    def __init__(self, server, access, pool, endpoints=(), dns=(), password=newPassword):
        self.server = server
        self.access = access
        self.pool = pool
        self._addresses = AddressPool(pool)
        self.gatewayAddress = self._addresses.gateway
        self.endpoints = [ipaddress.ip_address(e) for e in endpoints]
        self.dns = list(dns)
        self.newPassword = password
        self.leases = {}

    def _endpoint(self, localHost):
        local = ipaddress.ip_address(localHost)
        if self.endpoints and local not in self.endpoints:
            sameFamily = [e for e in self.endpoints if e.version == local.version]
            local = (sameFamily or self.endpoints)[0]
        return formatEndpoint(local, self.server.port)

    def tunnelPools(self):
        return ((self.pool, self.server.tap),)

    def udpPorts(self):
        return ()  # TCP

    def tunnelInterfaces(self):
        return (self.server.tap,)

    def admissions(self, lease):
        return (self._admission(lease),)  # one source address per lease

    def _admission(self, lease):
        return Admission(accessAddress(lease), self.server.tap)

    def offerEntry(self, localHost):
        if not self.server.certificate:
            return None  # nothing to pin yet: not offered until the server is up
        return {"type": "softether", "endpoint": self._endpoint(localHost),
                "hub": self.server.hub,
                "cert_sha256": certificateFingerprint(self.server.certificate)}

    def checkParams(self, params):
        if params:
            raise invalidParams("softether takes no method params")
        return {}

    def checkClient(self, clientHost, localHost):
        return None

    def allocate(self, lease, others, localHost):
        address = self._addresses.takeOrRecount(lease.id, lambda: self._rebuild(others), "SoftEther")
        return {"address": f"{address}/{self.pool.prefixlen}",
                "gateway_address": str(self.gatewayAddress),
                "endpoint": self._endpoint(localHost),
                "hub": self.server.hub,
                "username": userName(lease.id),
                "password": self.newPassword(),
                "server_cert": self.server.certificate,
                "dns": resolversFor(self.dns, self.gatewayAddress)}

    def _rebuild(self, leases):
        self._addresses.reset()
        for lease in leases:
            self._addresses.reserve(accessAddress(lease), lease.id)

    @staticmethod
    def _user(lease):
        return HubUser(userName(lease.id), lease.config["password"], accessAddress(lease))

    @defer.inlineCallbacks
    def start(self, leases):
        leases = list(leases)
        self._rebuild(leases)
        self.leases = {lease.id: lease for lease in leases}
        self.server.onDeath = self._serverDied
        self.server.setUsers([self._user(lease) for lease in leases])
        yield self.server.start()

    def _serverDied(self, reason):
        log.warn("vpnserver of hub {hub} died ({reason}); it is being restarted, "
                 "its clients connect again", hub=self.server.hub,
                 reason=reason.getErrorMessage())

    @defer.inlineCallbacks
    def grant(self, lease):
        """
        Fails with an L{RPCError}: 1005 while the vpnserver is being
        launched again (or stops answering), -32603 when it refuses a
        command.
        """
        self.leases[lease.id] = lease
        try:
            yield self.server.addUser(self._user(lease))
        except NotReady as e:
            raise RPCError(UNAVAILABLE, f"temporarily unavailable: {e}") from None
        except VpncmdError as e:
            log.error("vpnserver {hub}: could not add the user of lease {lease}: {error}",
                      hub=self.server.hub, lease=lease.id, error=str(e))
            raise RPCError(INTERNAL_ERROR, "internal error: could not set up access") from None
        yield self.access.allow(self._admission(lease))

    @defer.inlineCallbacks
    def revoke(self, lease):
        self.leases.pop(lease.id, None)
        self._addresses.release(accessAddress(lease), lease.id)
        yield self.access.deny(self._admission(lease))
        try:
            yield self.server.removeUser(userName(lease.id))
        except (VpncmdFailed, VpncmdError) as e:
            # The gate is closed: what is left is a hub user no longer
            # wanted, which the vpnserver's next configuring removes.
            log.error("vpnserver {hub}: could not remove the user of lease {lease} ({error}); "
                      "its traffic is denied at the gate", hub=self.server.hub,
                      lease=lease.id, error=str(e))

    def stop(self):
        return self.server.stop()

    def leave(self):
        # vpnserver dies with us (its launcher's parent-death signal): its
        # clients reconnect to the next start with the same lease.
        return self.server.stop()

    def unconfirmed(self):
        return []  # no handshake to watch: a lease lives its time

    def traffic(self):
        """
        The hub's sessions' data sizes (vpncmd C{SessionGet}): a lease's
        bytes are those of its user's sessions on the hub now, so a
        session that ended (the client reconnected) no longer counts, and
        a lease with no session counts nothing.
        """
        if not self.leases:
            return defer.succeed({})

        def byLease(counted):
            result = {}
            for lease in self.leases.values():
                toClient, fromClient = counted.get(userName(lease.id), (0, 0))
                result[lease.id] = Traffic(toClient, fromClient)
            return result

        return self.server.sessionTraffic().addCallback(byLease)

    def describe(self):
        return dict(self.server.describe(), pool=str(self.pool), leases=len(self.leases))


# -- client side ---------------------------------------------------------

def checkLeaseConfig(config) -> dict:
    """
    The lease's config comes from the network: check every field before
    any of it reaches vpncmd, a file or a route.
    """
    if not isinstance(config, dict):
        raise ValueError("lease config is not an object")
    address = ipaddress.ip_interface(config.get("address"))
    if address.version != 4 or address.network.prefixlen > 30:
        raise ValueError("softether lease address must be IPv4 with a prefix of /30 or shorter")
    gateway = ipaddress.ip_address(config.get("gateway_address"))
    if gateway not in address.network or gateway == address.ip:
        raise ValueError("softether gateway address must be another host of the lease's subnet")
    endpoint = parseEndpoint(config.get("endpoint"))
    hub = config.get("hub")
    if not isinstance(hub, str) or not HUB_NAME.match(hub):
        raise ValueError("softether hub name malformed")
    username = config.get("username")
    if not isinstance(username, str) or not USER_NAME.match(username):
        raise ValueError("softether user name malformed")
    password = config.get("password")
    if (not isinstance(password, str) or not 16 <= len(password) <= 128
            or not password.isprintable() or password != password.strip()):
        raise ValueError("softether password malformed")
    certificate = config.get("server_cert")
    if not isinstance(certificate, str) or len(certificate) > MAX_CERTIFICATE:
        raise ValueError("softether server certificate missing or too big")
    try:
        certificate = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(certificate))
    except ValueError:
        raise ValueError("softether server certificate is not a PEM certificate") from None
    return {"address": address, "gateway_address": gateway, "endpoint": endpoint, "hub": hub,
            "username": username, "password": password, "server_cert": certificate}


class CertificateMismatch(Exception):
    """The lease's server certificate is not the one the signed offer names."""


class ConnectFailed(Exception):
    pass


@implementer(IClientConnection)
class SoftEtherConnection:
    def __init__(self, reactor, vpnclient, routing, netlink, ifname, config):
        self.vpnclient = vpnclient
        self.routing = routing
        self.netlink = netlink
        self.ifname = ifname
        self.config = config
        self._loss = Loss()
        self._carrier = LoopingCall(self._checkCarrier)
        self._carrier.clock = reactor

    @property
    def device(self):
        return self.ifname

    def watch(self):
        self._carrier.start(LINK_CHECK_INTERVAL, now=False)

    def _checkCarrier(self):
        if not self.netlink.linkIsUp(self.ifname):
            self.lost(f"SoftEther session ended ({self.ifname} lost its carrier)")

    def lost(self, reason):
        if self._loss.happened(reason) and self._carrier.running:
            self._carrier.stop()

    def whenLost(self):
        return self._loss.when()

    def traffic(self):
        # The NIC's counters: the frames inside the tunnel.
        return self.netlink.linkStats(self.ifname)

    @defer.inlineCallbacks
    def disconnect(self):
        self._loss.end()
        if self._carrier.running:
            self._carrier.stop()
        self.routing.withdraw(self.ifname)
        yield self.vpnclient.stop()

    def activate(self):
        self.routing.install(self.ifname, gateway=str(self.config["gateway_address"]),
                             source=str(self.config["address"].ip))

    def describe(self):
        return {"interface": self.ifname, "endpoint": formatEndpoint(*self.config["endpoint"]),
                "hub": self.config["hub"], "address": str(self.config["address"]),
                "pid": self.vpnclient.pid}


@implementer(IClientMethod)
class SoftEtherClient:
    """
    The client side of C{softether}.  Its vpnclient's directory is
    C{stateDir/softether-NIC/}, made afresh for each connection and removed
    on disconnect.
    """

    name = "softether"
    slots = 1  # one vpnclient per mount namespace (docs/operations.md)

    def __init__(self, reactor, nic, routing, netlink, stateDir, connectTimeout=5.0,
                 vpnclientFactory=VpnClient):
        if not (isinstance(nic, str) and nic.isalnum() and nic.isascii() and nic.islower()
                and 0 < len(nic) <= 11):
            raise ValueError(f"{nic!r} is not a usable SoftEther NIC name (1-11 of a-z 0-9)")
        self.reactor = reactor
        self.nic = nic
        self.ifname = nicInterface(nic)
        self.routing = routing
        self.netlink = netlink
        self.directory = os.path.join(stateDir, f"softether-{nic}")
        self.connectTimeout = connectTimeout
        self.vpnclientFactory = vpnclientFactory

    def registerParams(self, offerEntry):
        return {}

    def checkAgainstOffer(self, offerEntry, config):
        try:
            pin = certificateFingerprint(config["server_cert"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("its server certificate is not a PEM certificate") from None
        if pin != offerEntry.get("cert_sha256"):
            raise ValueError("its server certificate is not the one the signed offer names")

    @defer.inlineCallbacks
    def connect(self, step, lease, route=True):
        config = checkLeaseConfig(lease.get("config"))
        entry = step.offerEntry if step is not None else None
        pinned = entry.get("cert_sha256") if isinstance(entry, dict) else None
        if pinned is not None and certificateFingerprint(config["server_cert"]) != pinned:
            raise CertificateMismatch("the lease's server certificate is not the one the "
                                      "gateway's signed offer names")
        connection = None

        def died(reason):
            if connection is not None:
                connection.lost(f"vpnclient exited: {reason.getErrorMessage()}")

        vpnclient = self.vpnclientFactory(self.reactor, self.directory, onExit=died,
                                          launchTimeout=self.connectTimeout)
        try:
            yield vpnclient.start()
            yield vpnclient.connectAccount(formatEndpoint(*config["endpoint"]), config["hub"],
                                           config["username"], config["password"],
                                           config["server_cert"], self.nic)
            yield self._established(vpnclient)
            self.netlink.addAddress(self.ifname, config["address"])
            self.netlink.setLinkUp(self.ifname)
            if route:
                self.routing.install(self.ifname, gateway=str(config["gateway_address"]),
                                     source=str(config["address"].ip))
        except BaseException:  # CancelledError too (the connect timeout)
            self.routing.withdraw(self.ifname)
            yield vpnclient.stop()
            raise
        connection = SoftEtherConnection(self.reactor, vpnclient, self.routing, self.netlink,
                                         self.ifname, config)
        connection.watch()
        log.info("softether: {ifname} up as {address} via {endpoint} hub {hub}",
                 ifname=self.ifname, address=str(config["address"]),
                 endpoint=formatEndpoint(*config["endpoint"]), hub=config["hub"])
        return connection

    @defer.inlineCallbacks
    def _established(self, vpnclient):
        """
        Wait for the session: the vpnclient sets its NIC up when the session
        is established (and down when it ends).
        """
        now = self.reactor.seconds()
        deadline, nextStatus, status = now + self.connectTimeout, now + STATUS_INTERVAL, None
        while not self.netlink.linkIsUp(self.ifname):
            now = self.reactor.seconds()
            if now >= nextStatus:
                status = yield vpnclient.status()
                if status == OFFLINE:
                    raise ConnectFailed(f"SoftEther connection failed: {vpnclient.lastError()}")
                nextStatus = self.reactor.seconds() + STATUS_INTERVAL
            if now >= deadline:
                raise ConnectFailed(f"no SoftEther session within {self.connectTimeout} s "
                                    f"(status {status})")
            yield deferLater(self.reactor, CARRIER_INTERVAL)


# -- the registry's builders (mnigs.methods) -----------------------------

def buildGateway(context, section):
    from mnigs.softether.server import SoftEtherServer

    pool = section.pool
    tapAddress = ipaddress.ip_interface(f"{next(pool.hosts())}/{pool.prefixlen}")
    server = SoftEtherServer(context.reactor, os.path.join(context.stateDir, "softether"),
                             section.port, section.hub, section.bridge, tapAddress, context.netlink)
    return SoftEtherGateway(server, context.access, pool, section.endpoint, section.dns)


def buildClient(context, section):
    return SoftEtherClient(context.reactor, section.nic, context.routing, context.netlink,
                           context.stateDir, connectTimeout=context.config.methods.connect_timeout)
