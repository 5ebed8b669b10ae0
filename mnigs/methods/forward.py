"""
The C{forward} method: no tunnel at all.  A direct neighbour on a mesh
link points its default route at the gateway, and the gateway forwards
and NATs its traffic to the uplink while its lease lives.
"""

from __future__ import annotations

import ipaddress

from zope.interface import implementer

from mnigs.interfaces import IGatewayMethod
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
                "gateway_address": str(ipaddress.ip_address(localHost)), "dns": []}

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

    def describe(self):
        return {"mesh_interfaces": self.meshInterfaces}
