# -*- test-case-name: tests.mesh.test_netlink -*-
"""
A thin, synchronous view of links, addresses and routes over pyroute2's
C{IPRoute} (rtnetlink; never the output of C{ip}).

pyroute2 0.9's C{IPRoute} blocks; each call is one short netlink exchange,
fine to make from the reactor thread in the default epoll reactor.  Under
the asyncio reactor it fails ("event loop is already running"): that one
would need pyroute2's C{AsyncIPRoute}.
"""

from __future__ import annotations

import errno
import ipaddress
from socket import AF_INET, AF_INET6, AF_UNSPEC
from typing import NamedTuple, Optional, Union

from mnigs.system.pyroute import IPRoute, NetlinkError

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
ARPHRD_ETHER = 1
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
RTN_UNICAST = 1
MAIN_TABLE = 254

_FAMILIES = {4: AF_INET, 6: AF_INET6, None: AF_UNSPEC}


class Route(NamedTuple):
    dst: IPNetwork
    metric: int
    proto: int
    oif: Optional[str]
    gateway: Optional[IPAddress]
    table: int


def _family(family: Optional[int]) -> int:
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(f"family must be 4, 6 or None, not {family!r}") from None


class Netlink:
    """
    Links, addresses and routes of one network namespace (ours when
    C{netns} is C{None}).  A named namespace must exist: pyroute2 would
    otherwise create it.
    """

    def __init__(self, netns: Optional[str] = None) -> None:
        self.netns = netns
        if netns is None:
            self._ipr = IPRoute()
        else:
            self._ipr = IPRoute(netns=netns, flags=0)

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links -------------------------------------------------------------

    def _link(self, name: str):
        try:
            links = self._ipr.get_links(ifname=name)
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return links[0] if links else None

    def linkIndex(self, name: str) -> Optional[int]:
        """The link's index, or C{None} if there is no such link."""
        link = self._link(name)
        return None if link is None else link["index"]

    def linkKind(self, name: str) -> Optional[str]:
        """
        The link's kind (C{"veth"}, C{"tun"}, C{"wireguard"}, ...), C{""}
        for a link without one (loopback, hardware), C{None} if missing.
        """
        link = self._link(name)
        if link is None:
            return None
        return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""

    def linkIsUp(self, name: str) -> bool:
        """
        Whether the link can carry traffic: operational state UP, or (for
        tun, WireGuard and loopback, which report UNKNOWN) administratively
        up with carrier.
        """
        link = self._link(name)
        if link is None:
            return False
        operstate = link.get("IFLA_OPERSTATE")
        if operstate == "UP":
            return True
        flags = link["flags"]
        return operstate == "UNKNOWN" and bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)

    def linkStats(self, name: str) -> Optional[tuple[int, int]]:
        """
        C{(rx bytes, tx bytes)} the link counted (its 64-bit counters), or
        C{None} if there is no such link or it reports none.
        """
        link = self._link(name)
        if link is None:
            return None
        stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS")
        if not stats:
            return None
        return int(stats["rx_bytes"]), int(stats["tx_bytes"])

    def isEthernet(self, name: str) -> bool:
        """
        Whether the link's neighbours have Ethernet (MAC) addresses: veth,
        bridges, Wi-Fi, taps; not tun, WireGuard or other point-to-point
        links.
        """
        link = self._link(name)
        return link is not None and link["ifi_type"] == ARPHRD_ETHER

    def _index(self, name: str) -> int:
        index = self.linkIndex(name)
        if index is None:
            raise LookupError(f"no link named {name!r}")
        return index

    def _names(self) -> dict[int, str]:
        return {link["index"]: link.get("IFLA_IFNAME") for link in self._ipr.get_links()}

    def addLink(self, name: str, kind: str) -> None:
        """Create a link of a kind that needs no further arguments."""
        self._ipr.link("add", ifname=name, kind=kind)

    def setLinkUp(self, name: str) -> None:
        self._ipr.link("set", index=self._index(name), state="up")

    def deleteLink(self, name: str) -> None:
        """Delete the link; a link already gone is fine."""
        index = self.linkIndex(name)
        if index is None:
            return
        try:
            self._ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise

    # -- addresses ---------------------------------------------------------

    def addAddress(self, name: str, address: Union[str, IPInterface]) -> None:
        """Add C{address} (e.g. C{"100.64.0.1/24"}); already there is fine."""
        iface = ipaddress.ip_interface(address)
        try:
            self._ipr.addr("add", index=self._index(name), address=str(iface.ip),
                           prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise

    def _addrs(self, **match):
        for msg in self._ipr.get_addr(**match):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            peer = msg.get("IFA_ADDRESS") or local
            yield msg["index"], ipaddress.ip_address(local), ipaddress.ip_address(peer), msg["prefixlen"]

    def addresses(self, name: str) -> list[IPInterface]:
        """The link's addresses, with their prefix lengths."""
        return [ipaddress.ip_interface(f"{local}/{prefixlen}")
                for _, local, _, prefixlen in self._addrs(index=self._index(name))]

    def linkAddresses(self) -> list[tuple[str, IPInterface]]:
        """Every address of every link, as C{(link name, address/prefix)}."""
        names = self._names()
        return [(names.get(index, ""), ipaddress.ip_interface(f"{local}/{prefixlen}"))
                for index, local, _, prefixlen in self._addrs()]

    def localAddresses(self) -> set[IPAddress]:
        """Every address of every link in the namespace."""
        return {local for _, local, _, _ in self._addrs()}

    def connectedInterface(self, addr: Union[str, IPAddress]) -> Optional[str]:
        """
        The name of the link whose connected prefix (shorter than a host
        prefix) contains C{addr}, or C{None}.
        """
        addr = ipaddress.ip_address(addr)
        for index, _, peer, prefixlen in self._addrs():
            if peer.version != addr.version or prefixlen >= peer.max_prefixlen:
                continue
            if addr in ipaddress.ip_network(f"{peer}/{prefixlen}", strict=False):
                return self._names().get(index)
        return None

    # -- neighbours --------------------------------------------------------

    def neighbourLinkAddress(self, addr: Union[str, IPAddress], name: str) -> Optional[str]:
        """
        The link-layer address (C{"02:00:5e:..."}) the neighbour table of
        link C{name} has for C{addr}, or C{None} when it has none (never
        resolved, or resolution failed).
        """
        addr = ipaddress.ip_address(addr)
        for msg in self._ipr.get_neighbours(family=_family(addr.version), ifindex=self._index(name),
                                            dst=str(addr)):
            lladdr = msg.get("NDA_LLADDR")
            if lladdr and not msg["state"] & (NUD_INCOMPLETE | NUD_FAILED):
                return lladdr
        return None

    # -- routes ------------------------------------------------------------

    def routes(self, table: Optional[int] = None, proto: Optional[int] = None,
               family: Optional[int] = 4) -> list[Route]:
        """
        Unicast routes of C{table} (all tables when C{None}), optionally only
        those of protocol C{proto}, for IPv4 (4), IPv6 (6) or both (C{None}).
        """
        match = {"family": _family(family)}
        if table is not None:
            match["table"] = table
        names = self._names()
        result = []
        for msg in self._ipr.get_routes(**match):
            if msg["type"] != RTN_UNICAST or (proto is not None and msg["proto"] != proto):
                continue
            result.append(_route(msg, names))
        return result

    def _defaultRoutes(self, family: int, table: int) -> list[Route]:
        return sorted((r for r in self.routes(table=table, family=family)
                       if r.dst.prefixlen == 0), key=lambda r: r.metric)

    def hasDefaultRoute(self, family: int = 4, table: int = MAIN_TABLE) -> bool:
        return bool(self._defaultRoutes(family, table))

    def defaultRouteVia(self, family: int = 4, table: int = MAIN_TABLE) -> Optional[Route]:
        """The preferred (lowest metric) default route, or C{None}."""
        routes = self._defaultRoutes(family, table)
        return routes[0] if routes else None


def _route(msg, names: dict[int, str]) -> Route:
    family = msg["family"]
    zero = "0.0.0.0" if family == AF_INET else "::"
    dst = ipaddress.ip_network(f"{msg.get('RTA_DST') or zero}/{msg['dst_len']}")
    oif = msg.get("RTA_OIF")
    gateway = msg.get("RTA_GATEWAY")
    if oif is None and msg.get("RTA_MULTIPATH"):
        first = msg.get("RTA_MULTIPATH")[0]
        oif = first["oif"]
        gateway = first.get("RTA_GATEWAY")
    via = msg.get("RTA_VIA")
    if gateway is None and via:
        gateway = via.get("addr") if isinstance(via, dict) else None
    return Route(dst=dst, metric=msg.get("RTA_PRIORITY") or 0, proto=msg["proto"],
                 oif=names.get(oif) if oif is not None else None,
                 gateway=ipaddress.ip_address(gateway) if gateway else None,
                 table=msg.get("RTA_TABLE") or msg["table"])
