# -*- test-case-name: tests.unit.test_cjdns.test_method -*-
"""
The C{cjdns} method: cjdns's own IP tunnel (tunnel/IpTunnel.c) carries the
client's IPv4 traffic to the gateway over the cjdns mesh.

Gateway side: a client registers with its cjdns node key; the request must
come from that key's fc00::/8 address, so only the key's owner can claim
it.  The lease's inner IPv4 /32 comes from a pool, and granting it is
C{IpTunnel_allowConnection} for that key and address plus the access
list's allow of that address from cjdns's TUN interface (the same nft gate
and NAT as every method).  Inside the TUN, cjdns binds the address to the
connection: an IPv4 packet coming over a connection is dropped unless its
source is the address allowed to that connection's key (isValidAddress4
in tunnel/IpTunnel.c, with C{ip4Alloc} 32), so one client cannot send as
another.  cjdns is not installable on the test machines: that binding is cjdns's own
and is not shown with traffic; the unit tests check only that mnigs asks
for it and admits the address from the TUN alone.

Client side: C{IpTunnel_connectTo} the gateway's key; cjdns asks the
gateway for its addresses and puts the /32 on its TUN interface; once it
is there, mnigs's default route goes through that interface.

The address parameters, from tunnel/IpTunnel_admin.c and tunnel/IpTunnel.c:

  - C{ip4Alloc} is the prefix length cjdns puts on the client's TUN
    address (addAddress), and the mask with which the gateway admits the
    client's source addresses (isValidAddress4): 32, one address.
  - C{ip4Prefix} is the route cjdns itself installs on the client through
    its TUN when it is shorter than 32 (addAddress, RouteGen_addPrefix);
    0 would make cjdns route all IPv4 by itself.  mnigs keeps its own
    default route (policy rules that it can take away again), so it asks
    for 32: an address and no route.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.cjdns.admin import CjdnsError
from mnigs.cjdns.names import canonicalKey, ipForKey, isCjdnsAddress
from mnigs.system.admission import Admission
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.forward import ConnectFailed, accessAddress
from mnigs.methods.loss import Loss
from mnigs.methods.wireguard import poolHosts
from mnigs.protocol import GATEWAY_FULL, METHOD_UNAVAILABLE, RPCError, invalidParams
from mnigs.methods import resolversFor

log = Logger()

IP4_PREFIX = 32  # no route from cjdns: mnigs routes (see the module docstring)
IP4_ALLOC = 32


@implementer(IGatewayMethod)
class CjdnsGateway:
    """
    @param admin: the gateway's cjdns admin client (L{mnigs.cjdns.admin}).
    @param netlink: gives the gateway its pool address on cjdns's TUN
        interface (C{addAddress}), which also routes the pool through it.
    @param publicKey: the gateway's own cjdns node key.
    """

    name = "cjdns"

    def __init__(self, admin, access, netlink, publicKey: str, pool, tunInterface: str, dns=()):
        self.admin = admin
        self.access = access
        self.netlink = netlink
        self.publicKey = canonicalKey(publicKey)
        self.ownAddress = ipForKey(self.publicKey)
        self.pool = pool
        self.gatewayAddress, _ = poolHosts(pool)
        self.tunInterface = tunInterface
        self.dns = list(dns)
        self.leases = {}

    def tunnelPools(self):
        return ((self.pool, self.tunInterface),)

    def udpPorts(self):
        return ()  # cjdns carries the tunnel itself

    def tunnelInterfaces(self):
        return (self.tunInterface,)

    def admissions(self, lease):
        return (self._admission(lease),)  # one source address per lease

    def _admission(self, lease):
        return Admission(accessAddress(lease), self.tunInterface)

    def offerEntry(self, localHost):
        # Only a client that reached us over cjdns can use it.
        try:
            if ipaddress.ip_address(localHost) != self.ownAddress:
                return None
        except ValueError:
            return None
        return {"type": "cjdns", "public_key": self.publicKey}

    def checkParams(self, params):
        extra = set(params) - {"public_key"}
        if extra:
            raise invalidParams(f"unknown cjdns params {sorted(extra)}")
        if "public_key" not in params:
            raise invalidParams("cjdns needs params.public_key")
        try:
            key = canonicalKey(params["public_key"])
        except ValueError as e:
            raise invalidParams(f"public_key: {e}") from None
        return {"public_key": key}

    def checkClient(self, clientHost, localHost):
        if not isCjdnsAddress(clientHost):
            raise RPCError(METHOD_UNAVAILABLE, "cjdns is only for clients that come over cjdns")

    def allocate(self, lease, others, localHost):
        key = lease.params["public_key"]
        if ipForKey(key) != ipaddress.ip_address(lease.clientHost):
            raise RPCError(METHOD_UNAVAILABLE, "the request did not come from that key's cjdns address")
        if key == self.publicKey or any(o.params.get("public_key") == key for o in others):
            raise RPCError(METHOD_UNAVAILABLE, "that cjdns key already holds a lease")
        used = {accessAddress(o) for o in others}
        _, hosts = poolHosts(self.pool)
        for address in hosts:
            if address not in used:
                break
        else:
            raise RPCError(GATEWAY_FULL, "cjdns address pool exhausted")
        return {"address": f"{address}/32", "gateway_address": str(self.gatewayAddress),
                "peer_public_key": self.publicKey,
                "dns": resolversFor(self.dns, self.gatewayAddress)}

    @defer.inlineCallbacks
    def _incoming(self):
        """
        Our tunnels as cjdns has them: number -> showConnection answer, for
        the incoming connections that give out an address of our pool.
        """
        answer = yield self.admin.call("IpTunnel_listConnections")
        numbers = answer.get("connections")
        found = {}
        for number in numbers if isinstance(numbers, list) else ():
            if type(number) is not int:
                continue
            try:
                shown = yield self.admin.call("IpTunnel_showConnection", connection=number)
            except CjdnsError as e:
                log.info("cjdns connection {n} went away: {e}", n=number, e=str(e))
                continue
            try:
                inPool = ipaddress.ip_address(shown.get("ip4Address")) in self.pool
                key = canonicalKey(shown.get("key"))
            except (TypeError, ValueError):
                continue
            if shown.get("outgoing") == 0 and inPool:
                found[number] = (key, ipaddress.ip_address(shown["ip4Address"]))
        return found

    def _allow(self, lease):
        return self.admin.call("IpTunnel_allowConnection",
                               publicKeyOfAuthorizedNode=lease.params["public_key"],
                               ip4Address=str(accessAddress(lease)),
                               ip4Prefix=IP4_PREFIX, ip4Alloc=IP4_ALLOC)

    @defer.inlineCallbacks
    def _remove(self, number: int):
        try:
            yield self.admin.call("IpTunnel_removeConnection", connection=number)
        except CjdnsError as e:
            if e.error != "not_found":  # tunnel/IpTunnel_admin.c: already gone
                raise

    @defer.inlineCallbacks
    def start(self, leases):
        # The pool's route back to the clients goes through cjdns's TUN.
        self.netlink.addAddress(self.tunInterface,
                                f"{self.gatewayAddress}/{self.pool.prefixlen}")
        self.leases = {lease.id: lease for lease in leases}
        wanted = {(lease.params["public_key"], accessAddress(lease)): lease for lease in leases}
        existing = yield self._incoming()
        for number, tunnel in existing.items():
            if tunnel not in wanted:
                yield self._remove(number)  # left over from before a crash
        for tunnel, lease in wanted.items():
            if tunnel not in existing.values():
                yield self._allow(lease)

    @defer.inlineCallbacks
    def grant(self, lease):
        self.leases[lease.id] = lease
        yield self._allow(lease)
        yield self.access.allow(self._admission(lease))

    @defer.inlineCallbacks
    def revoke(self, lease):
        self.leases.pop(lease.id, None)
        yield self.access.deny(self._admission(lease))
        tunnel = (lease.params["public_key"], accessAddress(lease))
        existing = yield self._incoming()
        for number, found in existing.items():
            if found == tunnel:
                yield self._remove(number)

    @defer.inlineCallbacks
    def stop(self):
        existing = yield self._incoming()
        for number in existing:
            yield self._remove(number)

    def leave(self):
        # cjdns keeps its IpTunnel allowances; start() reconciles them.
        return None

    def unconfirmed(self):
        return []  # no handshake to watch: a lease lives its time

    def traffic(self):
        # cjdns's admin API counts bytes per peer (InterfaceController_peerStats),
        # not per IpTunnel connection: a lease's own bytes are not known.
        return defer.succeed({})

    def describe(self):
        return {"interface": self.tunInterface, "pool": str(self.pool),
                "public_key": self.publicKey, "tunnels": len(self.leases)}


# -- client side ---------------------------------------------------------

def checkLeaseConfig(config) -> dict:
    """The lease's config comes from the network: check what we use."""
    if not isinstance(config, dict):
        raise ValueError("lease config is not an object")
    address = ipaddress.ip_interface(config.get("address"))
    if address.version != 4 or address.network.prefixlen != 32:
        raise ValueError("lease address must be an IPv4 /32")
    gateway = ipaddress.ip_address(config.get("gateway_address"))
    return {"address": address, "gateway_address": gateway}


class TunnelTimeout(ConnectFailed):
    pass


def netlinkAddresses(netns=None):
    """C{addresses(ifname)} through L{mnigs.system.netlink.Netlink}, a look at a time."""
    from mnigs.system.netlink import Netlink

    def addresses(ifname):
        with Netlink(netns) as netlink:
            return netlink.addresses(ifname)
    return addresses


@implementer(IClientConnection)
class CjdnsConnection:
    def __init__(self, client, number: int, address, gatewayKey: str):
        self.client = client
        self.number = number
        self.address = address
        self.gatewayKey = gatewayKey
        self._loss = Loss()
        self._watch = LoopingCall(self._check)
        self._watch.clock = client.reactor
        self._watch.start(client.watchInterval, now=False)

    @property
    def device(self):
        return self.client.tunInterface

    def _check(self):
        if not self.client._hasAddress(self.address):
            self._watch.stop()
            self._loss.happened(f"{self.address} left {self.client.tunInterface}")

    def whenLost(self):
        return self._loss.when()

    def traffic(self):
        return None  # not counted

    @defer.inlineCallbacks
    def disconnect(self):
        self._loss.end()
        if self._watch.running:
            self._watch.stop()
        self.client.routing.withdraw(self.device)
        yield self.client._remove(self.number)

    def activate(self):
        self.client.routing.install(self.device, source=str(self.address))

    def describe(self):
        return {"interface": self.client.tunInterface, "address": str(self.address),
                "gateway_key": self.gatewayKey, "connection": self.number}


@implementer(IClientMethod)
class CjdnsClient:
    """
    @param publicKey: our own cjdns node key (what the gateway admits).
    @param addresses: C{addresses(ifname)} -> the interface's addresses
        (L{ipaddress.IPv4Interface}...), pyroute2 by default.
    """

    name = "cjdns"
    slots = 1  # every connection shares cjdns's one TUN interface

    def __init__(self, reactor, admin, routing, publicKey: str, tunInterface: str,
                 addresses=None, connectTimeout: float = 30.0, pollInterval: float = 0.25,
                 watchInterval: float = 5.0):
        self.reactor = reactor
        self.admin = admin
        self.routing = routing
        self.publicKey = canonicalKey(publicKey)
        self.tunInterface = tunInterface
        self.addresses = addresses if addresses is not None else netlinkAddresses()
        self.connectTimeout = connectTimeout
        self.pollInterval = pollInterval
        self.watchInterval = watchInterval

    def registerParams(self, offerEntry):
        return {"public_key": self.publicKey}

    def checkAgainstOffer(self, offerEntry, config):
        # The tunnel goes to the offer's key whatever the lease says; a
        # lease naming another one is still a lease we did not ask for.
        peer = config.get("peer_public_key")
        if peer is not None and peer != offerEntry.get("public_key"):
            raise ValueError("its cjdns key is not the one the signed offer names")

    def _hasAddress(self, address) -> bool:
        try:
            return any(a.ip == address for a in self.addresses(self.tunInterface))
        except (LookupError, OSError):
            return False  # no TUN interface (yet): cjdns is not up

    @defer.inlineCallbacks
    def _remove(self, number: int):
        try:
            yield self.admin.call("IpTunnel_removeConnection", connection=number)
        except CjdnsError as e:
            log.info("cjdns tunnel {n} not removed: {e}", n=number, e=str(e))

    @defer.inlineCallbacks
    def connect(self, step, lease, route=True):
        try:
            gatewayKey = canonicalKey((step.offerEntry or {}).get("public_key"))
            config = checkLeaseConfig(lease.get("config"))
        except (TypeError, ValueError) as e:
            raise ConnectFailed(f"unusable cjdns offer or lease: {e}") from None
        if isCjdnsAddress(step.host) and ipForKey(gatewayKey) != ipaddress.ip_address(step.host):
            raise ConnectFailed("the offer's cjdns key is not the key of the gateway we asked")
        answer = yield self.admin.call("IpTunnel_connectTo", publicKeyOfNodeToConnectTo=gatewayKey)
        number = answer.get("connection")
        if type(number) is not int:
            raise ConnectFailed(f"cjdns gave no connection number: {answer!r}")
        address = config["address"].ip
        try:
            deadline = self.reactor.seconds() + self.connectTimeout
            while not self._hasAddress(address):
                if self.reactor.seconds() >= deadline:
                    raise TunnelTimeout(f"{address} did not appear on {self.tunInterface} "
                                        f"within {self.connectTimeout} s")
                yield deferLater(self.reactor, self.pollInterval)
            if route:
                self.routing.install(self.tunInterface, source=str(address))
        except Exception:  # a timeout, a routing failure, or cancellation
            yield self._remove(number)
            raise
        return CjdnsConnection(self, number, address, gatewayKey)


# -- the registry's builders (mnigs.methods) -----------------------------

def buildGateway(context, section):
    from mnigs.cjdns.settings import makeAdmin

    settings = context.config.cjdns
    return CjdnsGateway(makeAdmin(context.reactor, settings), context.access, context.netlink,
                        settings.public_key, section.pool, settings.tun_interface, section.dns)


def buildClient(context, section):
    from mnigs.cjdns.settings import makeAdmin

    settings = context.config.cjdns
    return CjdnsClient(context.reactor, makeAdmin(context.reactor, settings), context.routing,
                       settings.public_key, settings.tun_interface)
