"""
The C{forward} method: no tunnel at all.  A direct neighbour on a mesh
link points its default route at the gateway, and the gateway forwards
and NATs its traffic to the uplink while its lease lives.

The gate admits a forward lease's address only from the mesh interface
and the link-layer (MAC) address its registration came from: the gateway
reads them from its neighbour table when it allocates the lease (the
client's TCP connection has just resolved it) and keeps them in the
lease's C{origin}.  On a mesh link without link-layer addresses (a tun
or WireGuard link between two nodes) the interface alone is bound.  A
node on the same link that forges the client's MAC as well as its address
is not told apart; a tunnel method is for links shared with strangers.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from zope.interface import implementer

from mnigs.system.admission import Admission
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods import resolversFor
from mnigs.methods.loss import Loss
from mnigs.methods.traffic import Traffic
from mnigs.protocol import METHOD_UNAVAILABLE, RPCError, invalidParams


def accessAddress(lease):
    """
    The source address the data path admits for C{lease}.
    """
    return ipaddress.ip_interface(lease.config["address"]).ip


@implementer(IGatewayMethod)
class ForwardGateway:
    name = "forward"

    def __init__(self, access, netlink, meshInterfaces=(), dns=()):
        self.access = access
        self.netlink = netlink
        self.meshInterfaces = list(meshInterfaces)
        self.leases = {}  # id -> lease, for the counters
        self.dns = list(dns)  # resolvers for leases; "tunnel": our address facing the client

    def tunnelPools(self):
        return ()

    def udpPorts(self):
        return ()

    def tunnelInterfaces(self):
        return ()

    def admissions(self, lease):
        return (self._admission(lease),)  # one source address per lease

    def _admission(self, lease):
        return Admission(accessAddress(lease), lease.origin["interface"],
                         lease.origin.get("link_address"))

    def offerEntry(self, localHost):
        return {"type": "forward"}

    def checkParams(self, params):
        if params:
            raise invalidParams("forward takes no method params")
        return {}

    def checkClient(self, clientHost, localHost):
        interface = self.netlink.connectedInterface(ipaddress.ip_address(clientHost))
        if interface is None or (self.meshInterfaces and interface not in self.meshInterfaces):
            raise RPCError(METHOD_UNAVAILABLE,
                           "forward is only for direct neighbours on a mesh link")

    def allocate(self, lease, others, localHost):
        address = ipaddress.ip_address(lease.clientHost)
        if any(accessAddress(other) == address for other in others):
            raise RPCError(METHOD_UNAVAILABLE,
                           f"{address} already holds a forward lease under another client id")
        lease.origin = self._origin(address)
        gateway = self._ourAddressFacing(address) or localHost
        return {"address": f"{address}/{address.max_prefixlen}",
                "gateway_address": str(gateway), "dns": resolversFor(self.dns, gateway)}

    def _origin(self, address):
        """
        Where the client's packets come from: the link it shares with us
        and its MAC there.  A mesh link without link-layer addresses (a
        tun or WireGuard link between two nodes) binds the interface alone.
        """
        interface = self.netlink.connectedInterface(address)
        if interface is not None and not self.netlink.isEthernet(interface):
            return {"interface": interface}
        linkAddress = self.netlink.neighbourLinkAddress(address, interface) if interface else None
        if linkAddress is None:
            raise RPCError(METHOD_UNAVAILABLE,
                           f"no link-layer address known for {address} on a mesh link")
        return {"interface": interface, "link_address": linkAddress}

    def _ourAddressFacing(self, address):
        # The client routes its default via us on the link it shares with
        # us: our address there, not the one it happened to call.
        interface = self.netlink.connectedInterface(address)
        for ours in self.netlink.addresses(interface) if interface else ():
            if address in ours.network:
                return ours.ip
        return None

    def start(self, leases):
        # The access list is installed whole, for every method, by the
        # service before methods start; forward has nothing else to set up.
        self.leases = {lease.id: lease for lease in leases}
        return None

    def grant(self, lease):
        self.leases[lease.id] = lease
        return self.access.allow(self._admission(lease))

    def revoke(self, lease):
        self.leases.pop(lease.id, None)
        return self.access.deny(self._admission(lease))

    def stop(self):
        return None

    def leave(self):
        return None  # the access list stays, and nothing else is ours

    def unconfirmed(self):
        return []  # no handshake to watch: a lease lives its time

    def traffic(self):
        """
        The gate's element counters: what came back to the lease's
        address (its C{clients} element: the answers, plus the first
        packet of each connection it opens, which the masquerade rule
        looks up too) is its bytes in, what its C{link} element let out
        its bytes out.  IP packets, headers included.
        """
        if not self.leases:
            return defer.succeed({})
        return self.access.counters().addCallback(self._countLeases)

    def _countLeases(self, counted):
        # The gateway's nft module, not loaded into a client.
        from mnigs.system.nft import addressSet, boundSet

        result = {}
        for lease in self.leases.values():
            admission = self._admission(lease)
            bytesIn = counted.get((addressSet(admission.address), (admission.address,)))
            bytesOut = counted.get((boundSet(admission), admission.key()))
            result[lease.id] = Traffic(bytesIn, bytesOut)
        return result

    def describe(self):
        return {"mesh_interfaces": self.meshInterfaces}


@implementer(IClientConnection)
class ForwardConnection:
    def __init__(self, routing, interface, gateway, source=None):
        self.routing = routing
        self.interface = interface
        self.gateway = gateway
        self.source = source
        self._loss = Loss()  # plain forwarding has no daemon to die

    @property
    def device(self):
        return self.interface

    def disconnect(self):
        self._loss.end()
        self.routing.withdraw(self.interface)
        return defer.succeed(None)

    def activate(self):
        self.routing.install(self.interface, gateway=self.gateway, source=self.source)

    def whenLost(self):
        return self._loss.when()

    def traffic(self):
        return None  # not counted

    def describe(self):
        return {"interface": self.interface, "via": self.gateway}


@implementer(IClientMethod)
class ForwardClient:
    """
    The client side of C{forward}: only to a direct neighbour, whose
    address on the shared link the lease names.  The server refuses (1002)
    a client that is not one.
    """

    name = "forward"
    slots = 1  # the mesh interface is the device: one route through it at a time

    def __init__(self, netlink, routing):
        self.netlink = netlink
        self.routing = routing

    def registerParams(self, offerEntry):
        return {}

    def checkAgainstOffer(self, offerEntry, config):
        return None  # no tunnel: nothing in the offer to pin

    def connect(self, step, lease, route=True):
        return defer.maybeDeferred(self._connect, lease, route)

    def _connect(self, lease, route):
        config = lease["config"]
        gateway = ipaddress.ip_address(config["gateway_address"])
        source = ipaddress.ip_interface(config["address"]).ip
        interface = self.netlink.connectedInterface(gateway)
        if interface is None:
            raise ConnectFailed(f"{gateway} is not on any of our links")
        connection = ForwardConnection(self.routing, interface, str(gateway), str(source))
        if route:
            connection.activate()
        return connection


class ConnectFailed(Exception):
    pass


# -- the registry's builders (mnigs.methods) -----------------------------

def buildGateway(context, section):
    return ForwardGateway(context.access, context.netlink, context.config.mesh.interfaces,
                          section.dns)


def buildClient(context, section):
    return ForwardClient(context.netlink, context.routing)
