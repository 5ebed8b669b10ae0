"""
The kernel's routing tables in plain terms, and the choice of candidate
gateways from them.

Pure: no I/O.  L{kernelRoutes} converts pyroute2's decoded C{rtmsg}
messages (it needs no socket); L{mnigs.routing.kernel} does the reading.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from mnigs.routing.candidates import (
    Candidate,
    IPAddress,
    mergeCandidates,
    usableAddress,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
RTN_LOCAL = 2
PROTO_STATIC = 4
PROTO_BABEL = 42


@dataclass(frozen=True)
class KernelRoute:
    """
    One route (one next hop of a multipath route), in plain terms.

    @ivar type: the kernel's route type (C{RTN_UNICAST}, C{RTN_LOCAL}, ...).
    @ivar priority: the route's metric (C{RTA_PRIORITY}), 0 when absent.
    @ivar interface: the outgoing interface's name, when known.
    """

    destination: IPNetwork
    table: int = RT_TABLE_MAIN
    protocol: int = PROTO_STATIC
    priority: int = 0
    type: int = RTN_UNICAST
    gateway: IPAddress | None = None
    interface: str | None = None


def kernelCandidates(
    routes: Iterable[KernelRoute],
    localAddresses: Collection[IPAddress] = (),
    tables: Collection[int] = (RT_TABLE_MAIN,),
    protocols: Collection[int] | None = None,
    interfaces: Collection[str] | None = None,
    nextHops: bool = False,
    source: str = "kernel",
) -> list[Candidate]:
    """
    Candidates from kernel routes: the destinations of unicast host routes
    in C{tables}, of a protocol in C{protocols} and out of an interface in
    C{interfaces} (C{None}: any), with distance the route's priority; with
    C{nextHops}, also the gateways of all such routes (the default route's
    included) at priority + 1.  The node's own addresses (C{localAddresses}
    and the local table's C{local} routes), link-local, multicast, loopback
    and unspecified addresses are left out.  One entry per address, the
    nearest; nearest first.
    """
    routes = list(routes)
    own = set(localAddresses)
    own.update(
        route.destination.network_address
        for route in routes
        if route.type == RTN_LOCAL and route.destination.prefixlen == route.destination.max_prefixlen
    )
    found = []
    for route in routes:
        if route.type != RTN_UNICAST or route.table not in tables:
            continue
        if protocols is not None and route.protocol not in protocols:
            continue
        if interfaces is not None and route.interface not in interfaces:
            continue
        destination = route.destination
        via = None if route.gateway is None else str(route.gateway)
        if destination.prefixlen == destination.max_prefixlen:
            found.append(
                Candidate(destination.network_address, float(route.priority), source, via, route.interface)
            )
        if nextHops and route.gateway is not None:
            found.append(Candidate(route.gateway, float(route.priority + 1), source, None, route.interface))
    return mergeCandidates([[c for c in found if c.address not in own and usableAddress(c.address)]])


def kernelRoutes(message, linkNames: dict[int, str]) -> list[KernelRoute]:
    """
    The L{KernelRoute}s of one pyroute2 C{rtmsg} (one per next hop of a
    multipath route); C{linkNames} maps interface indexes to names.
    """
    family = message["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return []
    destination = message.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    common = dict(
        destination=ipaddress.ip_network(f"{destination}/{message['dst_len']}", strict=False),
        table=message.get("table") or message["table"],
        protocol=message["proto"],
        priority=message.get("priority") or 0,
        type=message["type"],
    )
    hops = message.get("multipath")
    if not hops:
        hops = [message]
    routes = []
    for hop in hops:
        gateway = hop.get("gateway")
        oif = hop.get("oif") if hop is message else hop["oif"]
        routes.append(
            KernelRoute(
                gateway=None if gateway is None else ipaddress.ip_address(gateway),
                interface=linkNames.get(oif),
                **common,
            )
        )
    return routes
