# -*- test-case-name: tests.mesh.test_reply_by_arrival,tests.unit.test_hoproutes -*-
"""
The kernel half of "answer a mesh peer by the way its packets came"
(L{mnigs.server.arrival}), over pyroute2 (never C{ip} output):

    PRIORITY  fwmark ID<<16/0xff0000 lookup FIRST+ID-1   # one rule per hop and family
    FIRST+ID-1:  default via NEIGHBOUR dev IF [onlink]   # IPv4; via inet6 fe80::.. when
                 default via fe80::.. dev IF              #  the hop has no IPv4 address

and what the neighbour tables say about the previous hops
(L{readNeighbours}).  A table without a route for the packet's family
falls through to the next rule, the main table.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Callable, Iterable, NamedTuple, Optional

from twisted.logger import Logger

from mnigs.server.prevhops import MAX_HOPS, Hop, Neighbour
from mnigs.system.arrivalnft import HOP_MASK, hopMark
from mnigs.system.netlink import ARPHRD_ETHER
from mnigs.system.pyroute import IPRoute, NetlinkError

log = Logger()

RTNH_F_ONLINK = 4
#: Neighbour states whose link-layer address can be used: REACHABLE, STALE,
#: DELAY, PROBE, PERMANENT (not INCOMPLETE, FAILED, NOARP, NONE).
_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80
_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class HopRoute(NamedTuple):
    """One default route of a hop's table, as pyroute2 keywords want it."""
    family: int
    table: int
    ifname: str
    gateway: Optional[ipaddress._BaseAddress]

    def keywords(self, index: int) -> dict:
        family = self.family
        words = {"family": family, "dst": "0.0.0.0/0" if family == socket.AF_INET else "::/0",
                 "table": self.table, "oif": index}
        if self.gateway is None:
            return words
        if self.gateway.version == 6 and family == socket.AF_INET:
            words["via"] = {"family": socket.AF_INET6, "addr": str(self.gateway)}
        else:
            words["gateway"] = str(self.gateway)
            if family == socket.AF_INET:
                words["flags"] = RTNH_F_ONLINK  # meshes often address links with /32s
        return words


def hopTable(firstTable: int, hopId: int) -> int:
    return firstTable + hopId - 1


def hopRoutes(firstTable: int, hop: Hop) -> list[HopRoute]:
    """The routes of C{hop}'s table: none for a family it cannot be reached by."""
    table = hopTable(firstTable, hop.id)
    if hop.mac is None:
        return [HopRoute(family, table, hop.ifname, None) for family in _FAMILIES]
    return [HopRoute(family, table, hop.ifname, via)
            for family, via in ((socket.AF_INET, hop.via4), (socket.AF_INET6, hop.via6))
            if via is not None]


def chooseInterfaces(configured: Iterable[str], links: dict[str, bool],
                     excluded: Iterable[str]) -> dict[str, bool]:
    """
    The interfaces whose packets are answered by arrival, each with whether
    it has link-layer addresses: the C{configured} ones that exist, or,
    when none are configured, every Ethernet-type link (C{links} maps name
    to that) but loopback and the C{excluded} ones (the uplink, the
    methods' tunnels).
    """
    configured = list(configured)
    if configured:
        return {name: links[name] for name in configured if name in links}
    excluded = set(excluded) | {"lo"}
    return {name: True for name, ethernet in links.items() if ethernet and name not in excluded}


def _usableMac(text: Optional[str]) -> Optional[bytes]:
    if not text:
        return None
    try:
        mac = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return None
    if len(mac) != 6 or mac[0] & 1 or not any(mac):
        return None
    return mac


def _usableAddress(text: Optional[str]):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        return None
    return address


class HopRouting:
    """The hops' rules and tables, and the neighbour tables they come from."""

    def __init__(self, firstTable: int, priority: int, netns: Optional[str] = None) -> None:
        self.firstTable = firstTable
        self.priority = priority
        self.netns = netns
        self._installed: dict[int, list[HopRoute]] = {}

    def _ipr(self):
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _ours(self, table: int) -> bool:
        return self.firstTable <= table < self.firstTable + MAX_HOPS

    def readNeighbours(self, choose: Callable[[dict[str, bool]], dict[str, bool]]) -> list[Neighbour]:
        """
        Every usable neighbour entry on the interfaces C{choose} picks from
        all links (name -> has Ethernet addresses), and a L{Neighbour}
        without address for each picked interface without link-layer
        addresses.
        """
        with self._ipr() as ipr:
            links = {link["index"]: (link.get_attr("IFLA_IFNAME"), link["ifi_type"] == ARPHRD_ETHER)
                     for link in ipr.get_links()}
            chosen = choose(dict(links.values()))
            found = [Neighbour(name, None, None) for name, ethernet in chosen.items()
                     if not ethernet]
            for entry in ipr.get_neighbours():
                name, _ = links.get(entry["ifindex"], (None, False))
                if not chosen.get(name) or not entry["state"] & _USABLE:
                    continue
                mac = _usableMac(entry.get_attr("NDA_LLADDR"))
                address = _usableAddress(entry.get_attr("NDA_DST"))
                if mac is not None and address is not None:
                    found.append(Neighbour(name, mac, address))
        return found

    def installedHops(self) -> dict[int, tuple[str, Optional[ipaddress._BaseAddress]]]:
        """
        Hop id -> (interface, neighbour address or C{None}) of the tables a
        previous run left, for L{mnigs.server.prevhops.PreviousHops.adopt}.
        """
        found = {}
        with self._ipr() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            tables = {self._ruleTable(rule) for family in _FAMILIES
                      for rule in ipr.get_rules(family=family)
                      if rule.get_attr("FRA_PRIORITY") == self.priority}
            for table in sorted(t for t in tables if self._ours(t)):
                for family in _FAMILIES:
                    for route in ipr.get_routes(family=family, table=table):
                        name = names.get(route.get_attr("RTA_OIF"))
                        if name is None or route["dst_len"] != 0:
                            continue
                        gateway = route.get_attr("RTA_GATEWAY")
                        via = route.get_attr("RTA_VIA")
                        if via is not None:
                            gateway = via.get("addr")
                        hopId = table - self.firstTable + 1
                        if found.get(hopId, (None, None))[1] is None:
                            found[hopId] = (name, None if gateway is None else ipaddress.ip_address(gateway))
        return found

    @staticmethod
    def _ruleTable(rule) -> int:
        return rule.get_attr("FRA_TABLE") or rule["table"]

    def clear(self) -> None:
        """Remove every rule at our priority and flush the tables they and we used."""
        with self._ipr() as ipr:
            tables = set(hopTable(self.firstTable, hopId) for hopId in self._installed)
            for family in _FAMILIES:
                for rule in ipr.get_rules(family=family):
                    if rule.get_attr("FRA_PRIORITY") != self.priority:
                        continue
                    table = self._ruleTable(rule)
                    tables.add(table)
                    try:
                        ipr.rule("del", family=family, priority=self.priority, table=table,
                                 fwmark=rule.get_attr("FRA_FWMARK"),
                                 fwmask=rule.get_attr("FRA_FWMASK"))
                    except NetlinkError as e:
                        log.warn("could not remove rule: {e}", e=e)
            for table in sorted(t for t in tables if self._ours(t)):
                self._flush(ipr, table)
        self._installed = {}

    def takeOver(self) -> None:
        """
        Count the rules a previous run left at our priority as ours, so that
        L{install} replaces their routes in place and L{prune} removes those
        of hops gone: a restart leaves no moment without them.
        """
        with self._ipr() as ipr:
            for family in _FAMILIES:
                for rule in ipr.get_rules(family=family):
                    table = self._ruleTable(rule)
                    if rule.get_attr("FRA_PRIORITY") == self.priority and self._ours(table):
                        self._installed[table - self.firstTable + 1] = None

    def _flush(self, ipr, table: int, families=_FAMILIES) -> None:
        for family in families:
            try:
                ipr.flush_routes(table=table, family=family)
            except NetlinkError as e:
                log.warn("could not flush table {t}: {e}", t=table, e=e)

    def install(self, hops: Iterable[Hop]) -> None:
        """
        Make the rules and tables of C{hops} so; those of other hops stay
        until L{prune}.  A hop whose interface is gone is logged and left
        to the main table.
        """
        with self._ipr() as ipr:
            for hop in hops:
                routes = hopRoutes(self.firstTable, hop)
                if self._installed.get(hop.id) == routes:
                    continue
                table = hopTable(self.firstTable, hop.id)
                if self._installed.get(hop.id) is None:
                    self._addRules(ipr, hop.id)
                self._installed[hop.id] = routes
                wanted = {route.family: route for route in routes}
                for family in _FAMILIES:
                    if family not in wanted:
                        self._flush(ipr, table, (family,))
                        continue
                    route = wanted[family]
                    index = ipr.link_lookup(ifname=route.ifname)
                    try:
                        if not index:
                            raise LookupError(route.ifname)
                        ipr.route("replace", **route.keywords(index[0]))
                    except (LookupError, NetlinkError) as e:
                        log.warn("no route to previous hop {hop} ({error}): its replies follow "
                                 "the main table", hop=hop, error=e)

    def _addRules(self, ipr, hopId: int) -> None:
        for family in _FAMILIES:
            try:
                ipr.rule("add", family=family, priority=self.priority,
                         table=hopTable(self.firstTable, hopId), fwmark=hopMark(hopId),
                         fwmask=HOP_MASK)
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # left by a previous run: taken over
                    raise

    def prune(self, hops: Iterable[Hop]) -> None:
        """Remove the rules and tables of every installed hop not in C{hops}."""
        keep = {hop.id for hop in hops}
        gone = [hopId for hopId in self._installed if hopId not in keep]
        if not gone:
            return
        with self._ipr() as ipr:
            for hopId in gone:
                table = hopTable(self.firstTable, hopId)
                for family in _FAMILIES:
                    try:
                        ipr.rule("del", family=family, priority=self.priority, table=table,
                                 fwmark=hopMark(hopId), fwmask=HOP_MASK)
                    except NetlinkError as e:
                        log.warn("could not remove rule: {e}", e=e)
                self._flush(ipr, table)
                del self._installed[hopId]

    def describe(self) -> dict[int, list[HopRoute]]:
        return dict(self._installed)
