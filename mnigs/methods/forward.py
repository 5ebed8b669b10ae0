"""
The C{forward} method: no tunnel at all.  A direct neighbour on a mesh
link points its default route at the gateway, and the gateway forwards
and NATs its traffic to the uplink while its lease lives.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from zope.interface import implementer

from mnigs.interfaces import IClientMethod, IGatewayMethod
from mnigs.methods.loss import Loss
from mnigs.protocol import METHOD_UNAVAILABLE, RPCError, invalidParams


def accessAddress(lease):
    """
    The source address the data path admits for C{lease}.
    """
    return ipaddress.ip_interface(lease.config["address"]).ip


@implementer(IGatewayMethod)
class ForwardGateway:
    name = "forward"

    def __init__(self, access, netlink, meshInterfaces=()):
        self.access = access
        self.netlink = netlink
        self.meshInterfaces = list(meshInterfaces)

    def udpPorts(self):
        return ()

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
        return {"address": f"{address}/{address.max_prefixlen}",
                "gateway_address": str(self._ourAddressFacing(address) or localHost), "dns": []}

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
        return None

    def grant(self, lease):
        return self.access.allow(accessAddress(lease))

    def revoke(self, lease):
        return self.access.deny(accessAddress(lease))

    def stop(self):
        return None

    def leave(self):
        return None  # the access list stays, and nothing else is ours

    def describe(self):
        return {"mesh_interfaces": self.meshInterfaces}


class ForwardConnection:
    def __init__(self, routing, interface, gateway):
        self.routing = routing
        self.interface = interface
        self.gateway = gateway
        self._loss = Loss()  # plain forwarding has no daemon to die

    def disconnect(self):
        self._loss.end()
        self.routing.clear()
        return defer.succeed(None)

    def whenLost(self):
        return self._loss.when()

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

    def __init__(self, netlink, routing):
        self.netlink = netlink
        self.routing = routing

    def registerParams(self, offerEntry):
        return {}

    def checkAgainstOffer(self, offerEntry, config):
        return None  # no tunnel: nothing in the offer to pin

    def connect(self, step, lease):
        return defer.maybeDeferred(self._connect, lease)

    def _connect(self, lease):
        config = lease["config"]
        gateway = ipaddress.ip_address(config["gateway_address"])
        source = ipaddress.ip_interface(config["address"]).ip
        interface = self.netlink.connectedInterface(gateway)
        if interface is None:
            raise ConnectFailed(f"{gateway} is not on any of our links")
        self.routing.install(interface, gateway=str(gateway), source=str(source))
        return ForwardConnection(self.routing, interface, str(gateway))


class ConnectFailed(Exception):
    pass
