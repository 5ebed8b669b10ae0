# -*- test-case-name: tests.unit.test_openvpn.test_method,tests.mesh.test_openvpn -*-
"""
The C{openvpn} method (OpenVPN 2.6).

Gateway side: one supervised C{openvpn} server (tun, UDP by default) whose
every connection is decided live by mnigs through the management interface
(C{--management-client-auth}): the client's username and password must be
the id and token of a live openvpn lease, and the answer gives it exactly
the lease's inner address (C{ifconfig-push}, and C{ifconfig-ipv6-push}
for its C{address6} with IPv6 egress); anything else is denied.
When the lease ends, its sessions are killed (C{client-kill CID HALT}) and
the access list stops admitting its address.  The gate admits a lease's
address only from the server's tun; inside it, openvpn (tun mode, no
C{iroute}) drops a client's packet whose source is not the address it
pushed to that client ("bad source address from client"), so one client
cannot send as another (tests/mesh/test_gate.py shows it with traffic).  The server's CA and
certificate are made on first start (L{mnigs.openvpn.pki}).

Client side: one C{openvpn} client process per connection, online when its
management interface says C{CONNECTED,SUCCESS}, with mnigs's default route
through its tun; lost as soon as the process ends or its tunnel restarts.

Wire: the offer entry is C{{"type": "openvpn", "endpoint": "ADDR:PORT",
"proto": "udp", "ca_sha256": "<hex SHA-256 of the CA, DER>"}}; the lease config is C{{"address", "gateway_address",
"endpoint", "proto", "ca", "dns"}}.  The credentials are the lease's own
id and token, which the lease already carries: they are not repeated in
the config, so the token is in exactly one place.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.system.admission import Admission
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.forward import accessAddress
from mnigs.methods.inet6 import LeasePool6, leaseAddresses6, takeAddress6
from mnigs.methods.loss import Loss
from mnigs.methods.traffic import Traffic
from mnigs.methods.slots import MAX_SLOTS, Slots
from mnigs.methods.pool import AddressPool
from mnigs.methods.wireguard import kernelHasIPv6, poolHosts
from mnigs.openvpn import management as m
from mnigs.openvpn.config import (
    checkCredentials,
    checkInterfaceName,
    checkLeaseConfig,
    clientConfig,
    credentialsFile,
)
from mnigs.openvpn.daemon import OpenVPNDaemon
from mnigs.protocol import certificateSHA256, formatEndpoint, invalidParams
from mnigs.system.statefile import atomicWrite
from mnigs.methods import resolversFor

log = Logger()

DENIED = "no live lease for these credentials"
COMMAND_TIMEOUT = 5.0


def _printable(text: str, limit: int = 64) -> str:
    """A username from the network, safe for a log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@implementer(IGatewayMethod)
class OpenVPNGateway:
    """
    @param daemonFactory: makes the L{OpenVPNDaemon} given
        C{onEvent}, C{onExit} and C{onReady} callbacks (so tests can
        replace the process).
    @param caPEM: the CA certificate that clients check the server against.
    """

    name = "openvpn"

    def __init__(self, daemonFactory, access, caPEM: str, pool, port: int, proto: str = "udp",
                 interface: str = "", endpoints=(), dns=(), pool6=None):
        self.access = access
        self.caPEM = caPEM
        self.caSHA256 = certificateSHA256(caPEM)
        self.pool = ipaddress.IPv4Network(pool)
        self.gatewayAddress, _ = poolHosts(self.pool)
        self.port = port
        self.proto = proto
        self.interface = interface
        self.endpoints = [ipaddress.ip_address(e) for e in endpoints]
        self.dns = list(dns)
        self._addresses = AddressPool(self.pool)
        # IPv6 egress (mnigs.methods.inet6): an inner /128 per lease too.
        self.pool6 = pool6
        self._inner6 = LeasePool6(pool6) if pool6 is not None else None
        self.leases = {}
        self.sessions = {}  # cid -> lease id, for every client we admitted
        # cid -> (bytes received from it, bytes sent to it), as openvpn's
        # BYTECOUNT_CLI says; and per lease what its ended sessions carried.
        self.counts = {}
        self.carried: dict[str, tuple[int, int]] = {}
        self.daemon = daemonFactory(onEvent=self._managementEvent, onExit=self._daemonDied,
                                    onReady=self._daemonReady)

    # -- offer and allocation (pure) ----------------------------------------
    def _endpointHost(self, localHost):
        local = ipaddress.ip_address(localHost)
        if not self.endpoints or local in self.endpoints:
            return local
        sameFamily = [e for e in self.endpoints if e.version == local.version]
        return (sameFamily or self.endpoints)[0]

    def _endpoint(self, localHost) -> str:
        return formatEndpoint(self._endpointHost(localHost), self.port)

    def tunnelPools(self):
        if self.pool6 is None:
            return ((self.pool, self.interface),)
        return ((self.pool, self.interface), (self.pool6, self.interface))

    def udpPorts(self):
        return (self.port,) if self.proto.startswith("udp") else ()

    def tunnelInterfaces(self):
        return (self.interface,)

    def _address6(self, lease):
        return self._inner6.of(lease) if self._inner6 is not None else None

    def admissions(self, lease):
        address6 = self._address6(lease)
        return ((Admission(accessAddress(lease), self.interface),)
                + ((Admission(address6, self.interface),) if address6 is not None else ()))

    def offerEntry(self, localHost):
        entry = {"type": "openvpn", "endpoint": self._endpoint(localHost), "proto": self.proto,
                 "ca_sha256": self.caSHA256}
        if self.pool6 is not None:
            entry["pool6"] = str(self.pool6)
        return entry

    def checkParams(self, params):
        if params:
            raise invalidParams("openvpn takes no method params")
        return {}

    def checkClient(self, clientHost, localHost):
        return None

    def allocate(self, lease, others, localHost):
        address = self._addresses.takeOrRecount(lease.id, lambda: self._rebuild(others), "OpenVPN")
        config = {"address": f"{address}/32",
                  "gateway_address": str(self.gatewayAddress),
                  "endpoint": self._endpoint(localHost),
                  "proto": self.proto,
                  "ca": self.caPEM,
                  "dns": resolversFor(self.dns, self.gatewayAddress)}
        config.update(takeAddress6(self._inner6, lease, others,
                                   lambda: self._addresses.release(address, lease.id)))
        return config

    def _rebuild(self, leases):
        leases = list(leases)
        self._addresses.reset()
        for lease in leases:
            self._addresses.reserve(accessAddress(lease), lease.id)
        if self._inner6 is not None:
            self._inner6.rebuild(leases)

    # -- the data path ----------------------------------------------------------
    def start(self, leases):
        self.leases = {lease.id: lease for lease in leases}
        self._rebuild(self.leases.values())
        return self.daemon.start()

    @defer.inlineCallbacks
    def grant(self, lease):
        self.leases[lease.id] = lease
        self._addresses.reserve(accessAddress(lease), lease.id)
        for admission in self.admissions(lease):
            yield self.access.allow(admission)

    @defer.inlineCallbacks
    def revoke(self, lease):
        self.leases.pop(lease.id, None)
        self.carried.pop(lease.id, None)
        self._addresses.release(accessAddress(lease), lease.id)
        if self._inner6 is not None:
            self._inner6.release(lease)
        for admission in self.admissions(lease):
            yield self.access.deny(admission)
        for cid in [cid for cid, leaseId in self.sessions.items() if leaseId == lease.id]:
            try:
                yield self.daemon.command(m.clientKill(cid, "HALT"), timeout=COMMAND_TIMEOUT)
            except Exception as e:
                # Gone already (it disconnected, or openvpn is restarting).
                log.info("openvpn: could not kill session {cid} of lease {lease}: {why}",
                         cid=cid, lease=lease.id, why=e)
            self._sessionEnded(cid)

    def traffic(self):
        """
        Each lease's bytes from openvpn's C{BYTECOUNT_CLI} (every second):
        its sessions' bytes sent to the client are its bytes in, those
        received from it its bytes out; a lease's earlier sessions (the
        client reconnected) count too.
        """
        counted = {leaseId: list(self.carried.get(leaseId, (0, 0))) for leaseId in self.leases}
        for cid, leaseId in self.sessions.items():
            if leaseId in counted and cid in self.counts:
                fromClient, toClient = self.counts[cid]
                counted[leaseId][0] += toClient
                counted[leaseId][1] += fromClient
        return defer.succeed({leaseId: Traffic(bytesIn, bytesOut)
                              for leaseId, (bytesIn, bytesOut) in counted.items()})

    def _sessionEnded(self, cid):
        leaseId = self.sessions.pop(cid, None)
        fromClient, toClient = self.counts.pop(cid, (0, 0))
        if leaseId in self.leases:
            bytesIn, bytesOut = self.carried.get(leaseId, (0, 0))
            self.carried[leaseId] = (bytesIn + toClient, bytesOut + fromClient)

    def _allSessionsEnded(self):
        for cid in list(self.sessions):
            self._sessionEnded(cid)
        self.counts.clear()

    def stop(self):
        return self.daemon.stop()

    def leave(self):
        # openvpn cannot outlive its management connection: its clients
        # reconnect to the next start with the same lease.
        return self.daemon.stop()

    def unconfirmed(self):
        return []  # no handshake to watch: a lease lives its time

    def describe(self):
        described = {"interface": self.interface, "port": self.port, "proto": self.proto,
                     "pool": str(self.pool), "leases": len(self.leases),
                     "sessions": len(self.sessions), "pid": self.daemon.pid}
        if self.pool6 is not None:
            described["pool6"] = str(self.pool6)
        return described

    # -- what openvpn tells us ---------------------------------------------
    def _managementEvent(self, event):
        if isinstance(event, (m.ClientConnect, m.ClientReauth)):
            self._decide(event)
        elif isinstance(event, m.ClientDisconnect):
            self._sessionEnded(event.cid)
        elif isinstance(event, m.ClientByteCount):
            self.counts[event.cid] = (event.bytesIn, event.bytesOut)

    def _leaseFor(self, env):
        """The live lease these credentials name, or None."""
        lease = self.leases.get(env.get("username", ""))
        password = env.get("password", "")
        if lease is None or not hmac.compare_digest(lease.token.encode("utf-8"),
                                                     password.encode("utf-8", "replace")):
            return None
        return lease

    def _decide(self, event):
        lease = self._leaseFor(event.env)
        if lease is not None and self.sessions.get(event.cid, lease.id) != lease.id:
            lease = None  # a session cannot move to another lease
        if lease is None:
            log.info("openvpn: denied client {cid} (username {user!r}, from {ip})",
                     cid=event.cid, user=_printable(event.env.get("username", "")),
                     ip=_printable(event.env.get("untrusted_ip", "")))
            command = m.clientDeny(event.cid, event.kid, DENIED, DENIED)
        elif isinstance(event, m.ClientReauth):
            command = m.clientAuthNoConfig(event.cid, event.kid)
        else:
            address = accessAddress(lease)
            self.sessions[event.cid] = lease.id
            log.info("openvpn: admitted client {cid} for lease {lease} as {address}",
                     cid=event.cid, lease=lease.id, address=address)
            pushed = [m.ifconfigPush(address, self.pool.netmask)]
            address6 = self._address6(lease)
            if address6 is not None:
                pushed.append(m.ifconfigPush6(address6, self._inner6.gateway,
                                              self.pool6.prefixlen))
            command = m.clientAuth(event.cid, event.kid, pushed)
        self.daemon.command(command).addErrback(
            lambda f: log.warn("openvpn: answer to client {cid} failed: {why}",
                               cid=event.cid, why=f.getErrorMessage()))

    def _daemonDied(self, reason):
        self._allSessionsEnded()
        log.warn("openvpn server died ({reason}); it is being restarted",
                 reason=reason.getErrorMessage())

    def _daemonReady(self):
        # A relaunched server has no sessions; clients reconnect and are
        # decided against the lease book as it is now.
        self._allSessionsEnded()


# -- client side -------------------------------------------------------------

@implementer(IClientConnection)
class OpenVPNConnection:
    """
    One client tunnel.  It is lost when its openvpn ends by itself or its
    tunnel restarts (RECONNECTING: the tun device and mnigs's route through
    it are gone); then the client machine moves on.
    """

    def __init__(self, routing, ifname, config, files, release=lambda: None):
        self.daemon = None  # set by OpenVPNClient.connect
        self.routing = routing
        self._release = release  # gives the device's slot back
        self.ifname = ifname
        self.config = config
        self.files = files
        self.bytesIn = 0
        self.bytesOut = 0
        self.tunnelAddress = None
        self.tunnelAddress6 = None
        self._loss = Loss()

    @property
    def device(self):
        return self.ifname

    def event(self, event):
        if isinstance(event, m.ByteCount):
            self.bytesIn, self.bytesOut = event.bytesIn, event.bytesOut
        elif isinstance(event, m.State) and event.connected:
            self.tunnelAddress = event.localAddress
            self.tunnelAddress6 = event.localAddress6 or None
        elif isinstance(event, m.State) and event.name in ("RECONNECTING", "EXITING"):
            self.lost(f"openvpn tunnel {event.name.lower()} ({event.description})")

    def died(self, reason):
        self.lost(f"openvpn exited: {reason.getErrorMessage()}")

    def lost(self, reason):
        self._loss.happened(reason)

    def whenLost(self):
        return self._loss.when()

    def activate(self):
        self.routing.install(self.ifname, source6=self.config.get("address6", "").split("/")[0]
                             or None)

    @defer.inlineCallbacks
    def disconnect(self):
        self._loss.end()
        self.routing.withdraw(self.ifname)
        try:
            yield self.daemon.stop()
        finally:
            removeFiles(self.files)
            self._release()

    def counters(self):
        return {"bytes_in": self.bytesIn, "bytes_out": self.bytesOut}

    def traffic(self):
        return self.bytesIn, self.bytesOut

    def describe(self):
        described = {"interface": self.ifname,
                     "endpoint": formatEndpoint(*self.config["endpoint"]),
                     "proto": self.config["proto"], "address": self.config["address"],
                     "pid": self.daemon.pid, **self.counters()}
        if "address6" in self.config:
            described["address6"] = self.config["address6"]
        return described


def removeFiles(paths):
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@implementer(IClientMethod)
class OpenVPNClient:
    """
    The client side of C{openvpn}.  Its files (configuration, CA,
    credentials, all 0600) and management socket live in
    C{stateDir/openvpn-IFNAME/} and are removed on disconnect.
    Connections at once (a standby) each run their own openvpn on the
    devices of L{mnigs.methods.slots} from C{ifname}.
    """

    name = "openvpn"
    slots = MAX_SLOTS

    def __init__(self, reactor, ifname, routing, stateDir, connectTimeout=5.0,
                 openvpn="openvpn", daemonFactory=OpenVPNDaemon, ipv6=True):
        self.reactor = reactor
        #: Whether to use the IPv6 egress a lease carries (else ignore it).
        self.ipv6 = ipv6
        self.ifname = checkInterfaceName(ifname)
        self._slots = Slots(self.ifname, self.slots)
        self.routing = routing
        self.stateDir = stateDir
        self.directory = self.directoryFor(self.ifname)  # slot 0's
        self.connectTimeout = connectTimeout
        self.openvpn = openvpn
        self.daemonFactory = daemonFactory

    def registerParams(self, offerEntry):
        return {}

    def checkAgainstOffer(self, offerEntry, config):
        try:
            pin = certificateSHA256(config["ca"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("its CA certificate is not a PEM certificate") from None
        if pin != offerEntry.get("ca_sha256"):
            raise ValueError("its CA certificate is not the one the signed offer names")
        pool6 = offerEntry.get("pool6")
        leaseAddresses6(config, ipaddress.ip_network(pool6) if pool6 else None)

    def directoryFor(self, ifname):
        return os.path.join(self.stateDir, f"openvpn-{ifname}")

    def _writeFiles(self, lease, config, ifname):
        directory = self.directoryFor(ifname)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        ca = os.path.join(directory, "ca.pem")
        credentials = os.path.join(directory, "credentials")
        path = os.path.join(directory, "client.conf")
        atomicWrite(ca, config["ca"].encode("ascii"), mode=0o600)
        atomicWrite(credentials, credentialsFile(lease["id"], lease["token"]), mode=0o600)
        atomicWrite(path, clientConfig(config, ifname, ca, credentials,
                                       ipv6="address6" in config).encode("ascii"),
                    mode=0o600)
        return path, [path, credentials, ca]

    @defer.inlineCallbacks
    def connect(self, step, lease, route=True):
        config = checkLeaseConfig(lease.get("config"))
        if not (self.ipv6 and kernelHasIPv6()):  # not used: not shown either
            config.pop("address6", None)
            config.pop("gateway_address6", None)
        checkCredentials(lease.get("id"), lease.get("token"))
        slot, ifname = self._slots.take()
        try:
            path, files = self._writeFiles(lease, config, ifname)
        except BaseException:
            self._slots.free(slot)
            raise
        connection = OpenVPNConnection(self.routing, ifname, config, files,
                                       release=lambda: self._slots.free(slot))
        daemon = connection.daemon = self.daemonFactory(
            self.reactor, [self.openvpn, "--config", path],
            os.path.join(self.directoryFor(ifname), "management.sock"), f"openvpn {ifname}",
            onEvent=connection.event, onExit=connection.died,
            releaseEveryHold=False, restart=False, launchTimeout=self.connectTimeout)
        try:
            yield daemon.start()
            expected = str(ipaddress.ip_interface(config["address"]).ip)
            if connection.tunnelAddress != expected:
                raise WrongAddress(f"openvpn got {connection.tunnelAddress!r} from the gateway, "
                                   f"the lease says {expected}")
            expected6 = config.get("address6", "").split("/")[0] or None
            if connection.tunnelAddress6 != expected6:
                raise WrongAddress(f"openvpn got IPv6 {connection.tunnelAddress6!r} from the "
                                   f"gateway, the lease says {expected6}")
            if route:
                connection.activate()
        except Exception:  # CancelledError too (the connect timeout)
            try:
                yield daemon.stop()
            finally:
                removeFiles(files)
                self._slots.free(slot)
            raise
        log.info("openvpn: {ifname} up as {address} via {endpoint}", ifname=ifname,
                 address=config["address"], endpoint=formatEndpoint(*config["endpoint"]))
        return connection


class WrongAddress(Exception):
    """The gateway pushed another inner address than the lease's."""


# -- the registry's builders (mnigs.methods) -----------------------------

def buildGateway(context, section):
    from mnigs.openvpn.config import serverArgv
    from mnigs.openvpn.pki import loadOrCreateServerPKI

    reactor = context.reactor
    directory = os.path.join(context.stateDir, "openvpn")
    pki = loadOrCreateServerPKI(directory)
    argv = serverArgv("openvpn", section.interface, section.proto, section.port, section.pool, pki,
                      maxClients=max(1024, context.config.terms.max_clients),
                      pool6=section.pool6)

    def daemon(onEvent, onExit, onReady):
        return OpenVPNDaemon(reactor, argv, os.path.join(directory, "management.sock"),
                             f"openvpn {section.interface}", onEvent=onEvent,
                             onExit=onExit, onReady=onReady)

    return OpenVPNGateway(daemon, context.access, pki.caPEM, section.pool, section.port,
                          section.proto, section.interface, section.endpoint, section.dns,
                          pool6=section.pool6)


def buildClient(context, section):
    return OpenVPNClient(context.reactor, section.interface, context.routing, context.stateDir,
                         connectTimeout=context.config.methods.connect_timeout, ipv6=section.ipv6)
