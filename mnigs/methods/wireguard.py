"""
The C{wireguard} method, gateway side: one WireGuard interface (kernel or
wireguard-go), a peer per lease with its inner /32 from a pool, and the
inner address admitted by the access list, from that interface only,
while the lease lives.  Inside the interface, WireGuard itself pins each
inner address to its peer: a decrypted packet whose source is not in its
peer's allowed-ips is dropped (cryptokey routing), so one client cannot
send as another (tests/mesh/test_gate.py shows it with traffic).
"""

from __future__ import annotations

import collections
import importlib
import ipaddress
import os

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.system.admission import Admission
from mnigs.system.backoff import Backoff
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.forward import accessAddress
from mnigs.methods.inet6 import LeasePool6, gatewayAddress6, leaseAddresses6, takeAddress6
from mnigs.methods.loss import Loss
from mnigs.methods.pool import AddressPool
from mnigs.methods.slots import MAX_SLOTS, Slots
from mnigs.protocol import (
    METHOD_UNAVAILABLE,
    RPCError,
    checkBase64Key,
    formatEndpoint,
    invalidParams,
)
from mnigs.methods.traffic import Traffic
from mnigs.system.statefile import atomicWrite
from mnigs.wireguard.uapi import Peer, checkKey, generatePrivateKey, publicKey
from mnigs.methods import resolversFor

KEY_FILE = "wireguard.key"
IMPLEMENTATIONS = {"auto": "auto", "kernel": "kernel", "wireguard-go": "userspace"}


def loadOrCreateWireGuardKey(stateDir: str) -> tuple[str, str]:
    """
    (private, public) base64 keys, the private one kept in the state
    directory so that a restart keeps the gateway's WireGuard identity.
    """
    path = os.path.join(stateDir, KEY_FILE)
    try:
        with open(path) as f:
            private = checkKey(f.read().strip())
    except FileNotFoundError:
        private = generatePrivateKey()
        atomicWrite(path, private.encode("ascii") + b"\n")
    return private, publicKey(private)

log = Logger()


def poolHosts(pool):
    """
    (gateway address, client addresses): the gateway takes the first host.
    """
    hosts = pool.hosts()
    gateway = next(hosts)
    return gateway, hosts


@implementer(IGatewayMethod)
class WireGuardGateway:
    name = "wireguard"

    def __init__(self, device, access, publicKey: str, pool, port: int,
                 endpoints=(), dns=(), clock=None, handshakeTimeout: float = 0, pool6=None):
        self.device = device
        self.access = access
        self.publicKey = publicKey
        self.pool = pool
        self.gatewayAddress, _ = poolHosts(pool)
        # IPv6 egress (mnigs.methods.inet6): an inner /128 per lease too.
        self.pool6 = pool6
        self._inner6 = LeasePool6(pool6) if pool6 is not None else None
        # Indexes of what allocate() handed out, so that a registration does
        # not scan every live lease; checked against the live leases
        # whenever they say "taken" or "full" (see _keyTaken, _rebuild).
        self._addresses = AddressPool(pool)
        self._keys = {}
        self.port = port
        self.endpoints = [ipaddress.ip_address(e) for e in endpoints]
        self.dns = list(dns)
        self.leases = {}
        self._peerUses, self._admissions = collections.Counter(), collections.Counter()
        # Leases granted by this run whose peer has not shaken hands yet:
        # lease id -> (lease, when granted).  Past handshakeTimeout they
        # are what unconfirmed() answers (0: never).
        self.clock = clock
        self.handshakeTimeout = handshakeTimeout
        self._unshaken: dict[str, tuple] = {}

    def _endpointHost(self, localHost):
        local = ipaddress.ip_address(localHost)
        if not self.endpoints or local in self.endpoints:
            return local
        sameFamily = [e for e in self.endpoints if e.version == local.version]
        return (sameFamily or self.endpoints)[0]

    def tunnelPools(self):
        pools = ((self.pool, self.device.ifname),)
        if self.pool6 is not None:
            pools += ((self.pool6, self.device.ifname),)
        return pools

    def udpPorts(self):
        return (self.port,)

    def tunnelInterfaces(self):
        return (self.device.ifname,)

    def _address6(self, lease):
        return self._inner6.of(lease) if self._inner6 is not None else None

    def admissions(self, lease):
        address6 = self._address6(lease)
        return ((Admission(accessAddress(lease), self.device.ifname),)
                + ((Admission(address6, self.device.ifname),) if address6 is not None else ()))

    def offerEntry(self, localHost):
        entry = {"type": "wireguard",
                 "endpoint": formatEndpoint(self._endpointHost(localHost), self.port),
                 "public_key": self.publicKey}
        if self.pool6 is not None:
            entry["pool6"] = str(self.pool6)
        return entry

    def checkParams(self, params):
        extra = set(params) - {"public_key"}
        if extra:
            raise invalidParams(f"unknown wireguard params {sorted(extra)}")
        if "public_key" not in params:
            raise invalidParams("wireguard needs params.public_key")
        return {"public_key": checkBase64Key(params["public_key"], "public_key")}

    def checkClient(self, clientHost, localHost):
        return None

    def allocate(self, lease, others, localHost):
        key = lease.params["public_key"]
        if key == self.publicKey or self._keyTaken(key, others, lease.clientId):
            raise RPCError(METHOD_UNAVAILABLE, "that WireGuard public key is already in use")
        address = self._addresses.takeOrRecount(lease.id, lambda: self._rebuild(others), "WireGuard")
        config = {"address": f"{address}/32",
                  "gateway_address": str(self.gatewayAddress),
                  "peer_public_key": self.publicKey,
                  "endpoint": formatEndpoint(self._endpointHost(localHost), self.port),
                  "dns": resolversFor(self.dns, self.gatewayAddress)}
        config.update(takeAddress6(self._inner6, lease, others,
                                   lambda: self._addresses.release(address, lease.id)))
        self._keys[key] = lease.id
        return config

    def _keyTaken(self, key, others, clientId):
        # The client's own lease being replaced (the same key from a new
        # address) does not count: it goes once the new one is granted.
        if key not in self._keys:
            return False
        if any(o.params.get("public_key") == key and o.clientId != clientId for o in others):
            return True
        del self._keys[key]  # a leftover: nobody live holds it
        return False

    def _rebuild(self, leases):
        leases = list(leases)
        self._addresses.reset()
        self._keys = {}
        for lease in leases:
            self._addresses.reserve(accessAddress(lease), lease.id)
            self._keys[lease.params["public_key"]] = lease.id
        if self._inner6 is not None:
            self._inner6.rebuild(leases)

    def _release(self, lease):
        self._addresses.release(accessAddress(lease), lease.id)
        if self._inner6 is not None:
            self._inner6.release(lease)
        key = lease.params["public_key"]
        if self._keys.get(key) == lease.id:
            del self._keys[key]

    def _peer(self, lease):
        # Cryptokey routing: the peer's packets may come only from these.
        allowed = [f"{accessAddress(lease)}/32"]
        address6 = self._address6(lease)
        if address6 is not None:
            allowed.append(f"{address6}/128")
        return Peer(public_key=lease.params["public_key"], allowed_ips=allowed)

    @defer.inlineCallbacks
    def start(self, leases):
        self.device.onDeath(self._daemonDied)
        self.device.onRestored(self._daemonRestored)
        self._rebuild(leases)
        yield self.device.start()
        self.leases = {lease.id: lease for lease in leases}
        self._peerUses, self._admissions = self._holding()
        yield self._addAllPeers()

    def _addAllPeers(self):
        peers = [self._peer(lease) for lease in self.leases.values()]
        if not peers:
            return defer.succeed(None)
        return self.device.setPeers(add=peers)

    def _daemonDied(self, reason):
        log.warn("WireGuard daemon of {ifname} died ({reason}); it is being restarted",
                 ifname=self.device.ifname, reason=reason.getErrorMessage())

    def _daemonRestored(self):
        # The device came back empty; the peers live in the lease book.
        self._addAllPeers().addErrback(lambda f: log.failure("could not re-add WireGuard peers", f))

    def _holding(self):
        # How many live leases use each WireGuard key and each admission:
        # a revoke takes away only what no other lease still uses, without
        # a walk over every lease (O(1) per revoke with 10,000 leases).
        keys, admissions = collections.Counter(), collections.Counter()
        for lease in self.leases.values():
            keys[lease.params["public_key"]] += 1
            admissions.update(self.admissions(lease))
        return keys, admissions

    @defer.inlineCallbacks
    def grant(self, lease):
        if lease.id not in self.leases:
            self._peerUses[lease.params["public_key"]] += 1
            self._admissions.update(self.admissions(lease))
        self.leases[lease.id] = lease
        if self.clock is not None and self.handshakeTimeout > 0:
            self._unshaken[lease.id] = (lease, self.clock.seconds())
        yield self.device.setPeers(add=[self._peer(lease)])
        for admission in self.admissions(lease):
            yield self.access.allow(admission)

    @defer.inlineCallbacks
    def revoke(self, lease):
        key, admissions = lease.params["public_key"], self.admissions(lease)
        if self.leases.pop(lease.id, None) is not None:
            self._peerUses[key] -= 1
            self._admissions.subtract(admissions)
        if self._unshaken.get(lease.id, (None,))[0] is lease:
            del self._unshaken[lease.id]
        self._release(lease)
        # A replacement granted first (the same key from a new address)
        # keeps what it shares with the lease it replaces.
        for admission in admissions:
            if self._admissions[admission] <= 0:
                self._admissions.pop(admission, None)
                yield self.access.deny(admission)
        if self._peerUses[key] <= 0:
            self._peerUses.pop(key, None)
            yield self.device.setPeers(remove=[key])

    def unconfirmed(self):
        """
        The leases granted at least C{handshakeTimeout} seconds ago whose
        peer the device shows no handshake for.  A lease granted with a
        key the client never uses would otherwise hold an address (and
        its address's share of leases) for its whole lease time.
        """
        if not self._unshaken:
            return defer.succeed([])
        cutoff = self.clock.seconds() - self.handshakeTimeout
        if not any(granted <= cutoff for _, granted in self._unshaken.values()):
            return defer.succeed([])

        def judge(device):
            shaken = {peer["public_key"] for peer in device.get("peers", [])
                      if peer.get("last_handshake_time_sec")}
            overdue = []
            for leaseId, (lease, granted) in list(self._unshaken.items()):
                if lease.params["public_key"] in shaken:
                    del self._unshaken[leaseId]  # confirmed for good
                elif granted <= cutoff:
                    overdue.append(lease)
            return overdue

        def failed(failure):
            log.failure("could not read WireGuard handshakes from {ifname}", failure,
                        ifname=self.device.ifname)
            return []

        return self.device.get().addCallbacks(judge, failed)

    def traffic(self):
        """
        The peers' counters from one UAPI C{get}: a peer's C{tx_bytes}
        (what the gateway sent it) is its lease's bytes in, C{rx_bytes}
        its bytes out; both count WireGuard's encrypted datagrams
        (handshakes and keepalives too).  A peer shared by a lease and its
        replacement counts for the newer one.
        """
        return self.device.get().addCallback(self.countPeers)

    def countPeers(self, device: dict) -> dict:
        byKey = {}
        for lease in sorted(self.leases.values(), key=lambda lease: lease.createdAt):
            byKey[lease.params["public_key"]] = lease.id
        counted = {}
        for peer in device.get("peers", []):
            leaseId = byKey.get(peer.get("public_key"))
            if leaseId is not None:
                counted[leaseId] = Traffic(peer.get("tx_bytes", 0), peer.get("rx_bytes", 0),
                                           peer.get("last_handshake_time_sec") or None)
        return counted

    def stop(self):
        return self.device.stop()

    def leave(self):
        return self.device.leave()

    def describe(self):
        described = {"interface": self.device.ifname, "port": self.port,
                     "pool": str(self.pool), "peers": len(self.leases)}
        if self.pool6 is not None:
            described["pool6"] = str(self.pool6)
        return described


# -- client side ---------------------------------------------------------

def checkLeaseConfig(config) -> dict:
    """
    The lease's config comes from the network: check every field before
    any of it reaches a tunnel or a route.
    """
    from mnigs.protocol import parseEndpoint

    if not isinstance(config, dict):
        raise ValueError("lease config is not an object")
    if not isinstance(config.get("address"), str) or not isinstance(config.get("gateway_address"), str):
        raise ValueError("lease addresses must be text")  # ipaddress would also take integers
    address = ipaddress.ip_interface(config.get("address"))
    if address.version != 4 or address.network.prefixlen != 32:
        raise ValueError("lease address must be an IPv4 /32")
    gateway = ipaddress.ip_address(config.get("gateway_address"))
    endpoint = parseEndpoint(config.get("endpoint"))
    peer = checkKey(config.get("peer_public_key"))
    checked = {"address": str(address), "gateway_address": str(gateway),
               "endpoint": endpoint, "peer_public_key": peer}
    # IPv6 egress: the offer's pool6 was checked against it already
    # (WireGuardClient.checkAgainstOffer).
    if config.get("address6") is not None:
        checked["address6"] = f"{ipaddress.ip_interface(config['address6']).ip}/128"
        checked["gateway_address6"] = str(ipaddress.ip_address(config["gateway_address6"]))
    return checked


@implementer(IClientConnection)
class WireGuardConnection:
    def __init__(self, wg, routing, config, netlink=None, release=lambda: None):
        self.wg = wg  # the WireGuardDevice
        self.device = wg.ifname
        self.routing = routing
        self.config = config
        self.netlink = netlink
        self._release = release  # gives the device's slot back
        self._loss = Loss()
        wg.onDeath(self._died)

    def _died(self, reason):
        self._loss.happened(f"WireGuard daemon died: {reason.getErrorMessage()}")

    def whenLost(self):
        return self._loss.when()

    def traffic(self):
        # The tunnel device's counters: the packets inside the tunnel.
        return None if self.netlink is None else self.netlink.linkStats(self.device)

    def activate(self):
        address6 = self.config.get("address6")
        self.routing.install(self.device, source6=address6 and address6.split("/")[0])

    @defer.inlineCallbacks
    def disconnect(self):
        self._loss.end()
        self.routing.withdraw(self.device)
        try:
            yield self.wg.stop()
        finally:
            self._release()

    def counters(self):
        return self.wg.get()

    def describe(self):
        described = {"interface": self.device, "endpoint": self.config["endpoint"],
                     "address": self.config["address"]}
        if "address6" in self.config:
            described["address6"] = self.config["address6"]
        return described


@implementer(IClientMethod)
class WireGuardClient:
    """
    The client side of C{wireguard}: an interface (kernel or
    wireguard-go) per connection, each with a single peer (its gateway)
    for 0.0.0.0/0, up once the handshake is done, then mnigs's default
    route through it (or, for a standby, later: L{WireGuardConnection.activate}).
    Connections at once take the devices of L{mnigs.methods.slots} from
    C{ifname}; they share the client's WireGuard key.
    """

    name = "wireguard"
    slots = MAX_SLOTS

    def __init__(self, reactor, ifname, privateKey, routing, implementation="auto",
                 keepalive=5, handshakeTimeout=5.0, logPath=None, netlink=None, ipv6=True):
        self.reactor = reactor
        self.netlink = netlink
        #: Whether to use the IPv6 egress a lease carries (else ignore it,
        #: as a client from before IPv6 egress would).
        self.ipv6 = ipv6
        self.ifname = ifname
        self._slots = Slots(ifname, self.slots)
        self.privateKey = privateKey
        self.publicKey = publicKey(privateKey)
        self.routing = routing
        self.implementation = IMPLEMENTATIONS.get(implementation, implementation)
        self.keepalive = keepalive
        self.handshakeTimeout = handshakeTimeout
        self.logPath = logPath

    def registerParams(self, offerEntry):
        return {"public_key": self.publicKey}

    def checkAgainstOffer(self, offerEntry, config):
        if not isinstance(config, dict):
            raise ValueError("lease config is not an object")
        if config.get("peer_public_key") != offerEntry.get("public_key"):
            raise ValueError("its WireGuard key is not the one the signed offer names")
        pool6 = offerEntry.get("pool6")
        leaseAddresses6(config, ipaddress.ip_network(pool6) if pool6 else None)

    def _logPath(self, ifname):
        if self.logPath is None or ifname == self.ifname:
            return self.logPath
        return os.path.join(os.path.dirname(self.logPath), f"{ifname}.log")

    @defer.inlineCallbacks
    def connect(self, step, lease, route=True):
        from mnigs.protocol import formatEndpoint
        from mnigs.wireguard.device import WireGuardDevice

        config = checkLeaseConfig(lease.get("config"))
        address6 = config.get("address6") if self.ipv6 and kernelHasIPv6() else None
        if address6 is None:  # not used: not shown either
            config.pop("address6", None)
            config.pop("gateway_address6", None)
        slot, ifname = self._slots.take()
        device = WireGuardDevice(self.reactor, ifname, self.privateKey,
                                 address=config["address"], address6=address6,
                                 implementation=self.implementation, logPath=self._logPath(ifname))
        connection = WireGuardConnection(device, self.routing, config, self.netlink,
                                         release=lambda: self._slots.free(slot))
        try:
            yield device.start()
            yield device.setPeers(add=[Peer(public_key=config["peer_public_key"],
                                            allowed_ips=["0.0.0.0/0"] + (["::/0"] if address6 else []),
                                            endpoint=formatEndpoint(*config["endpoint"]),
                                            keepalive=self.keepalive or None)])
            yield self._handshake(device)
            if route:
                connection.activate()
        except BaseException:
            try:
                yield defer.maybeDeferred(device.stop).addErrback(lambda _: None)
            finally:
                self._slots.free(slot)
            raise
        return connection

    #: The device is asked whether the handshake is done after
    #: HANDSHAKE_POLL_FIRST seconds, then at doubling intervals up to
    #: HANDSHAKE_POLL_MAX: a mesh handshake takes a few milliseconds and
    #: the start waits for it, but a silent gateway must not be asked a
    #: hundred times a second (kernel WireGuard is asked by running wg).
    HANDSHAKE_POLL_FIRST = 0.01
    HANDSHAKE_POLL_MAX = 0.05

    @defer.inlineCallbacks
    def _handshake(self, device):
        deadline = self.reactor.seconds() + self.handshakeTimeout
        pause = Backoff(self.HANDSHAKE_POLL_FIRST, self.HANDSHAKE_POLL_MAX)
        while True:
            state = yield device.get()
            if any(peer.get("last_handshake_time_sec", 0) for peer in state.get("peers", [])):
                return
            if self.reactor.seconds() >= deadline:
                raise HandshakeTimeout(f"no WireGuard handshake response within "
                                       f"{self.handshakeTimeout} s")
            yield deferLater(self.reactor, pause.next())


class HandshakeTimeout(Exception):
    pass


def kernelHasIPv6(proc="/proc/sys/net/ipv6/conf/default/disable_ipv6") -> bool:
    """
    Whether a new interface here gets IPv6: a kernel booted with
    C{ipv6.disable=1} has no such file, and C{disable_ipv6} may be set.
    A client without IPv6 uses a lease's IPv4 alone.
    """
    try:
        with open(proc) as f:
            return f.read().strip() == "0"
    except OSError:
        return False


# -- the registry's builders (mnigs.methods) -----------------------------

def buildGateway(context, section):
    from mnigs.wireguard.device import WireGuardDevice

    private, public = loadOrCreateWireGuardKey(context.stateDir)
    gatewayAddress = next(section.pool.hosts())
    pool6 = section.pool6
    device = WireGuardDevice(
        context.reactor, section.interface, private, listenPort=section.port,
        address=f"{gatewayAddress}/{section.pool.prefixlen}",
        address6=f"{gatewayAddress6(pool6)}/{pool6.prefixlen}" if pool6 is not None else None,
        implementation=IMPLEMENTATIONS[section.implementation],
        logPath=os.path.join(context.stateDir, f"{section.interface}.log"))
    return WireGuardGateway(device, context.access, public, section.pool, section.port,
                            section.endpoint, section.dns, clock=context.reactor,
                            handshakeTimeout=section.handshake_timeout, pool6=pool6)


def importDeviceMeanwhile(reactor) -> None:
    """
    Import L{mnigs.wireguard.device} in one of C{reactor}'s threads, if it
    has them.  A client imports it when it first connects (12 to 100 ms,
    as busy as the machine is: the device, the process supervisor and
    their Automat machines) and its start waits for that; imported from the start on in a thread, it
    is done while the first scan waits for answers (the import runs
    whenever the reactor's thread sleeps; the connect's own import waits
    for it if it is not done yet).
    """
    threads = IReactorThreads(reactor, None)
    if threads is not None:
        threads.callInThread(importlib.import_module, "mnigs.wireguard.device")


def buildClient(context, section):
    private, _ = loadOrCreateWireGuardKey(context.stateDir)
    importDeviceMeanwhile(context.reactor)
    return WireGuardClient(
        context.reactor, section.interface, private, context.routing,
        implementation=section.implementation, keepalive=section.keepalive,
        handshakeTimeout=context.config.methods.connect_timeout,
        logPath=os.path.join(context.stateDir, f"{section.interface}.log"),
        netlink=context.netlink, ipv6=section.ipv6)
