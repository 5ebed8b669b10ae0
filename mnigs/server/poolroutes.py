"""
The gateway's tunnel pools pinned to their tunnels::

    PRIORITY  to POOL lookup TABLE        # one rule per pool
    TABLE:    POOL dev TUNNEL             # one route per pool

A mesh routing protocol may carry routes into a pool: babeld's default
C{redistribute local} makes every client announce its own inner address
(100.64.0.2/32, say) into the mesh, and that /32 is more specific than the
tunnel's connected /24.  The gateway's answers to its clients would then
leave by the mesh and never reach them through their tunnel (a tunnel that
is up but passes no traffic: tests/mesh/test_client.py, default
redistribution).  The rules come before the main table, so a pool address
is always reached through its tunnel, whatever the mesh says.

Replaced whole at each start (what a previous run left is taken over),
kept across a restart with the data path, removed with it.  pyroute2,
never C{ip} output.
"""

from __future__ import annotations

import ipaddress
import socket

from twisted.logger import Logger

from mnigs.system.pyroute import IPRoute, NetlinkError

log = Logger()


def _family(network) -> int:
    return socket.AF_INET if network.version == 4 else socket.AF_INET6


class PoolRouting:
    def __init__(self, table: int, priority: int, netns: str | None = None):
        self.table = table
        self.priority = priority
        self.netns = netns

    def _ipr(self):
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def clear(self) -> None:
        """Remove every rule at our priority and flush our table."""
        with self._ipr() as ipr:
            for family in (socket.AF_INET, socket.AF_INET6):
                for rule in ipr.get_rules(family=family):
                    if rule.get_attr("FRA_PRIORITY") != self.priority:
                        continue
                    try:
                        ipr.rule("del", family=family, priority=self.priority,
                                 table=rule.get_attr("FRA_TABLE") or rule["table"],
                                 dst=rule.get_attr("FRA_DST"), dst_len=rule["dst_len"])
                    except NetlinkError as e:
                        log.warn("could not remove rule: {e}", e=e)
                try:
                    ipr.flush_routes(table=self.table, family=family)
                except NetlinkError as e:
                    log.warn("could not flush table {t}: {e}", t=self.table, e=e)

    def install(self, pools) -> None:
        """
        Pin each C{(network, interface)} of C{pools}, replacing whatever
        rules and routes of ours were there.  A missing interface is logged
        and skipped: the gateway still serves.
        """
        pools = [(ipaddress.ip_network(network), interface) for network, interface in pools]
        self.clear()
        with self._ipr() as ipr:
            for network, interface in pools:
                index = ipr.link_lookup(ifname=interface)
                if not index:
                    log.error("no interface {interface} for the pool {pool}: its answers follow "
                              "the main table", interface=interface, pool=str(network))
                    continue
                family = _family(network)
                ipr.route("replace", family=family, dst=str(network), table=self.table,
                          oif=index[0])
                ipr.rule("add", family=family, priority=self.priority, table=self.table,
                         dst=str(network.network_address), dst_len=network.prefixlen)
                log.info("pool {pool} pinned to {interface} (rule {priority}, table {table})",
                         pool=str(network), interface=interface, priority=self.priority,
                         table=self.table)

    def describe(self) -> list[dict]:
        with self._ipr() as ipr:
            return [{"pool": f"{rule.get_attr('FRA_DST')}/{rule['dst_len']}",
                     "table": rule.get_attr("FRA_TABLE") or rule["table"]}
                    for family in (socket.AF_INET, socket.AF_INET6)
                    for rule in ipr.get_rules(family=family)
                    if rule.get_attr("FRA_PRIORITY") == self.priority]
