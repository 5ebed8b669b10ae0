"""
Two small candidate sources: the kernel's neighbour tables (ARP and ND:
nodes one link away, whatever routing protocol the mesh runs) and a static
list from the configuration.  Both report distance 0: they are the nearest
and the most explicit candidates there are.
"""

from __future__ import annotations

import ipaddress
import socket

from mnigs.system.pyroute import IPRoute
from twisted.internet import defer
from zope.interface import implementer

from mnigs.routing.candidates import Candidate, usableAddress
from mnigs.interfaces import IRouteSource

# NUD states worth asking: reachable, stale, delay, probe, permanent.
_LIVE_STATES = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


class _NoWatch:
    def stop(self):
        pass


def neighbourCandidates(messages, names, interfaces=None):
    """
    Pure: pyroute2 neighbour messages -> candidates.
    """
    out = []
    for msg in messages:
        if not msg.get("state", 0) & _LIVE_STATES:
            continue
        dst = msg.get_attr("NDA_DST")
        if dst is None:
            continue
        address = ipaddress.ip_address(dst)
        interface = names.get(msg.get("ifindex"))
        if not usableAddress(address) or (interfaces and interface not in interfaces):
            continue
        out.append(Candidate(address, 0.0, "neighbours", interface=interface))
    return out


@implementer(IRouteSource)
class NeighbourSource:
    name = "neighbours"

    def __init__(self, interfaces=None, netns=None):
        self.interfaces = set(interfaces or ())
        self.netns = netns

    def candidates(self):
        return defer.maybeDeferred(self._read)

    def _read(self):
        with IPRoute(netns=self.netns) if self.netns else IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            messages = list(ipr.get_neighbours(family=socket.AF_INET)) + \
                list(ipr.get_neighbours(family=socket.AF_INET6))
        return neighbourCandidates(messages, names, self.interfaces)

    def watch(self, onChange):
        return _NoWatch()  # the routes' watches cover the changes that matter


@implementer(IRouteSource)
class StaticSource:
    name = "static"

    def __init__(self, addresses):
        self.addresses = [ipaddress.ip_address(a) for a in addresses]

    def candidates(self):
        return defer.succeed([Candidate(a, 0.0, "static") for a in self.addresses])

    def watch(self, onChange):
        return _NoWatch()


def buildStatic(context, section):
    """The registry's builder (L{mnigs.routing}): C{discovery.static}, if any."""
    static = context.config.discovery.static
    return StaticSource(static) if static else None


def buildNeighbours(context, section):
    """The registry's builder (L{mnigs.routing}): C{mesh.interfaces}' neighbours."""
    return NeighbourSource(context.config.mesh.interfaces)
