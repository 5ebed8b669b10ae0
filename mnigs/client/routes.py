"""
The client's routing changes, and nothing else: a default route in mnigs's
own table, reached through policy rules (L{ruleSpecs})::

    PRIORITY      lookup main suppress_prefixlength 0   # every mesh route but a default
    PRIORITY + 1  iif lo lookup TABLE                   # then mnigs's default route,
    PRIORITY + 1  from LAN-PREFIX lookup TABLE          #   for the client's own traffic
    PRIORITY + 1  iif LAN-INTERFACE lookup TABLE        #   and the shared LAN's only

so mesh destinations, the gateway's own mesh address included, stay on
the mesh (the tunnel never carries itself) and only what would have taken
a default route takes mnigs's: the client's own traffic (C{iif lo}) and
what comes from a shared prefix or interface (C{[share]},
L{mnigs.client.datapath}).  Nothing forwarded from elsewhere uses the
tunnel.  Removing the rules and flushing the table leaves the routing
exactly as it was.

With a lease's inner IPv6 address (IPv6 egress) the same table holds
C{::/0} through the tunnel for IPv6 too, from that address, with
C{throw} routes for the mesh's own IPv6 space (Yggdrasil 200::/7, cjdns
fc00::/8): those fall through to the rules after ours even when the main
table has no route for them, never into the tunnel.  IPv6's rules are
IPv4's: the client's own traffic, each shared IPv6 prefix and each shared
interface; the shared LAN's IPv6 is translated to the lease's inner IPv6
address (NAT66, L{mnigs.client.datapath}), the only IPv6 source the
gateway admits.  Without IPv6 egress mnigs has no IPv6 rule at all.

Fail closed (C{routing.fail_closed}): when a connection goes, its
default route is replaced by C{unreachable default} (L{PolicyRouting.withdraw})
and the rules stay, so that while the client switches nothing that would
take a default route falls through to the main table's (a mesh default);
mesh destinations still match the first rule.  The same holds for IPv6
when the connection that went had it (C{unreachable ::/0}, the throw
routes kept).  (pyroute2, never `ip` output.)
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Optional

from mnigs.methods.inet6 import MESH_PREFIXES6
from mnigs.system.pyroute import IPRoute, NetlinkError
from twisted.logger import Logger

log = Logger()

FAMILIES = (socket.AF_INET, socket.AF_INET6)
#: Route type "throw": the lookup goes on with the next rule.
RTN_THROW = 9
#: The routes' C{type} for a default route that answers "unreachable".
UNREACHABLE = "unreachable"


def ruleSpecs(table: int, priority: int, prefixes=(), interfaces=(),
              family: int = 4) -> list[dict]:
    """
    The policy rules of one address family, as pyroute2 C{rule()} keyword
    arguments (see the module docstring): C{prefixes} (L{ipaddress}
    networks; those of another family are left out) and C{interfaces}
    (names) are the shared LAN's.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    rules = [{"family": af, "priority": priority, "table": 254, "suppress_prefixlen": 0},
             {"family": af, "priority": priority + 1, "table": table, "iifname": "lo"}]
    for prefix in prefixes:
        if prefix.version == family:
            rules.append({"family": af, "priority": priority + 1, "table": table,
                          "src": str(prefix.network_address), "src_len": prefix.prefixlen})
    for name in interfaces:
        rules.append({"family": af, "priority": priority + 1, "table": table, "iifname": name})
    return rules


def openIPRoute(netns: str | None = None) -> IPRoute:
    """A pyroute2 rtnetlink socket, in the named network namespace if given."""
    return IPRoute(netns=netns) if netns else IPRoute()


class PolicyRouting:
    """
    mnigs's rules and default route.

    @param ipRoute: opens the rtnetlink socket each operation works
        through, used as a context manager (default: pyroute2's C{IPRoute}
        in C{netns}); tests give a fake.
    @param prefixes: the shared LAN's source prefixes (L{ipaddress} networks).
    @param interfaces: the shared LAN's interfaces.
    @param failClosed: L{withdraw} leaves an unreachable default route
        behind the rules instead of removing them.
    """

    def __init__(self, table: int, priority: int, netns: str | None = None,
                 ipRoute: Optional[Callable[[], IPRoute]] = None, prefixes=(),
                 interfaces=(), failClosed: bool = False):
        self.table = table
        self.priority = priority
        self.netns = netns
        self._ipr = ipRoute or (lambda: openIPRoute(netns))
        self.prefixes = tuple(prefixes)
        self.interfaces = tuple(interfaces)
        self.failClosed = failClosed
        #: the device mnigs's default route goes through (L{install}), or None
        self.installedOn: str | None = None

    def _ours(self, ipr, family=socket.AF_INET):
        return [rule for rule in ipr.get_rules(family=family)
                if rule.get_attr("FRA_PRIORITY") in (self.priority, self.priority + 1)]

    def clear(self) -> None:
        """
        Remove mnigs's rules and routes, IPv4 and IPv6: what a previous
        run left behind after a crash, or this run's on leaving.
        """
        self.installedOn = None
        with self._ipr() as ipr:
            for family in FAMILIES:
                self._clearFamily(ipr, family)

    def _clearFamily(self, ipr, family) -> None:
        for rule in self._ours(ipr, family):
            try:
                ipr.rule("del", family=family, priority=rule.get_attr("FRA_PRIORITY"),
                         table=rule.get_attr("FRA_TABLE") or rule["table"])
            except NetlinkError as e:
                log.warn("could not remove rule: {e}", e=e)
        try:
            ipr.flush_routes(table=self.table, family=family)
        except NetlinkError as e:
            log.warn("could not flush table {t}: {e}", t=self.table, e=e)

    def install(self, interface: str, gateway: str | None = None, source: str | None = None,
                source6: str | None = None) -> None:
        """
        Point mnigs's default route at C{interface} (a tunnel), or at
        C{gateway} on it (forward), from C{source}; with C{source6} (the
        lease's inner IPv6 address on C{interface}) IPv6's too, else
        mnigs has no IPv6 route or rule.  The route is replaced in one
        netlink call, so moving it from one connection to another (a
        standby taking over) leaves no moment without one.
        """
        with self._ipr() as ipr:
            index = ipr.link_lookup(ifname=interface)
            if not index:
                raise LookupError(f"no interface {interface}")
            route = {"dst": "0.0.0.0/0", "table": self.table, "oif": index[0]}
            if gateway:
                route["gateway"] = str(ipaddress.ip_address(gateway))
            if source:
                route["prefsrc"] = str(ipaddress.ip_address(source))
            if source6 is not None:
                source6 = str(ipaddress.IPv6Address(source6))
            ipr.route("replace", **route)
            self.installedOn = interface
            self._addRules(ipr, socket.AF_INET)
            if source6 is None:
                self._clearFamily(ipr, socket.AF_INET6)  # a previous gateway's
                return
            for mesh in MESH_PREFIXES6:
                ipr.route("replace", family=socket.AF_INET6, dst=str(mesh), table=self.table,
                          type=RTN_THROW)
            ipr.route("replace", family=socket.AF_INET6, dst="::/0", table=self.table,
                      oif=index[0], prefsrc=source6)
            self._addRules(ipr, socket.AF_INET6)

    def _addRules(self, ipr, family) -> None:
        if self._ours(ipr, family):
            return
        for rule in ruleSpecs(self.table, self.priority, self.prefixes, self.interfaces,
                              family=4 if family == socket.AF_INET else 6):
            ipr.rule("add", **rule)

    def withdraw(self, interface: str | None = None) -> None:
        """
        A connection went: remove mnigs's rules and routes (L{clear}), or,
        failing closed, replace its default route by an unreachable one
        and keep (or put back) the rules, so that what would take a
        default route goes nowhere until the next L{install} or L{clear};
        IPv6's too when the connection had IPv6 (mnigs's IPv6 rules are
        there).  With C{interface}, only when mnigs's default route goes
        through it: a connection that never held the route (a standby), or
        whose route another connection took over, leaves it alone.
        """
        if interface is not None and interface != self.installedOn:
            return
        if not self.failClosed:
            self.clear()
            return
        self.installedOn = None
        with self._ipr() as ipr:
            ipr.route("replace", dst="0.0.0.0/0", table=self.table, type=UNREACHABLE)
            self._addRules(ipr, socket.AF_INET)
            had6 = bool(self._ours(ipr, socket.AF_INET6))
            if had6:
                ipr.route("replace", family=socket.AF_INET6, dst="::/0", table=self.table,
                          type=UNREACHABLE)
        log.info("routing: failing closed: unreachable default{six} in table {table} until the "
                 "next gateway", table=self.table, six=" (IPv4 and IPv6)" if had6 else "")

    def routedOnMesh(self, host: str) -> bool:
        """
        Whether the main table still has a route other than a default one
        to C{host}: when the mesh withdraws it, the gateway is gone.
        """
        address = ipaddress.ip_address(host)
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        with self._ipr() as ipr:
            for route in ipr.get_routes(family=family, table=254):
                length = route["dst_len"]
                if length == 0 or route["type"] not in (1,):  # unicast only
                    continue
                dst = route.get_attr("RTA_DST")
                if dst and address in ipaddress.ip_network(f"{dst}/{length}", strict=False):
                    return True
        return False

    def outgoingDevice(self, host: str) -> str | None:
        """
        The device the kernel sends traffic for C{host} out of, as the
        policy rules and tables stand (a route lookup, like C{ip route
        get}); C{None} when nothing routes it.
        """
        with self._ipr() as ipr:
            route = _lookUp(ipr, host)
            index = route.get_attr("RTA_OIF") if route is not None else None
            if not index:
                return None
            links = ipr.get_links(index)
            return links[0].get_attr("IFLA_IFNAME") if links else None

    def pathMTU(self, host: str) -> int | None:
        """
        The MTU of the path to C{host} as routing knows it: the route's
        own MTU (C{mtu} metric) if it has one, else its outgoing
        interface's; C{None} when nothing routes it.
        """
        with self._ipr() as ipr:
            route = _lookUp(ipr, host)
            if route is None:
                return None
            metrics = route.get_attr("RTA_METRICS")
            mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
            if mtu:
                return int(mtu)
            index = route.get_attr("RTA_OIF")
            links = ipr.get_links(index) if index else []
            return int(links[0].get_attr("IFLA_MTU")) if links else None

    def setMTU(self, interface: str, mtu: int) -> None:
        """Set C{interface}'s MTU."""
        with self._ipr() as ipr:
            index = ipr.link_lookup(ifname=interface)
            if not index:
                raise LookupError(f"no interface {interface}")
            ipr.link("set", index=index[0], mtu=int(mtu))


def _lookUp(ipr, host: str):
    """
    The route the kernel takes to C{host} as the policy rules and tables
    stand (a route lookup, like C{ip route get}), or C{None}.
    """
    address = ipaddress.ip_address(host)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        [route] = ipr.route("get", dst=str(address), family=family)[:1]
    except (NetlinkError, ValueError):
        return None
    return route


def routingSnapshot(netns: str | None = None) -> dict:
    """
    Every rule, route and link, for checking that a client left the
    routing exactly as it found it.
    """
    with openIPRoute(netns) as ipr:
        rules = sorted((r.get_attr("FRA_PRIORITY") or 0, r.get_attr("FRA_TABLE") or r["table"],
                        r["family"]) for r in ipr.get_rules())
        routes = sorted((r["family"], r.get_attr("RTA_TABLE"), r.get_attr("RTA_DST") or "",
                         r["dst_len"], r.get_attr("RTA_GATEWAY") or "", r.get_attr("RTA_OIF") or 0)
                        for family in (socket.AF_INET, socket.AF_INET6)
                        for r in ipr.get_routes(family=family, table=0)
                        if r.get_attr("RTA_TABLE") != 255)
        links = sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
    return {"rules": rules, "routes": routes, "links": links}
