"""
IPv6 egress on a namespace mesh, for tests and benchmarks (issue 15):
a gateway's overrides that offer it, and what a node sees of the
internet's IPv6 host (L{tests.mesh.harness.INTERNET_HOST6}, present when
the mesh's internet nodes were made with C{ipv6=True}).

    client, gwA, gwB = mesh.nearAndFarGateway(ipv6=True)
    GatewayProcess(gwA, ipv6Gateway("fd64:a::/64"), name="gwA").start()
    serveSeen(gwA.internet)
    ... seenFrom(client) == UPLINK6   # NAT66: the gateway's uplink address
"""

import json
import socket
import sys

from tests.mesh.gatewayproc import daemonEnvironment
from tests.mesh.harness import INTERNET_HOST6, UPLINK_GATEWAY_ADDRESS6

#: Every gateway's uplink IPv6 address in the harness: what NAT66 shows.
UPLINK6 = UPLINK_GATEWAY_ADDRESS6.split("/")[0]
SEEN_PORT = 8080


def ipv6Gateway(pool6, **wireguard):
    """The overrides of a gateway that offers IPv6 egress from C{pool6}."""
    return {"methods": {"wireguard": {"pool6": pool6, **wireguard}}}


def _module(node, *argv, check=False):
    return node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}", sys.executable,
                     "-m", *argv], check=check)


def serveSeen(internet, address=INTERNET_HOST6, port=SEEN_PORT):
    """
    Run L{tests.mesh.tcpseen} on C{internet}, answering each caller with
    its source address (the mesh stops it).
    """
    return internet.spawn(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                           sys.executable, "-m", "tests.mesh.tcpseen", "serve", address,
                           str(port)])


def seenFrom(node, address=INTERNET_HOST6, port=SEEN_PORT):
    """
    The source address the internet host sees a TCP connection from
    C{node} come from, or C{None} when none gets through.
    """
    result = _module(node, "tests.mesh.tcpseen", "ask", address, str(port))
    return result.stdout.strip() if result.returncode == 0 else None


def ping6(node, address=INTERNET_HOST6, timeout=1.0):
    """One IPv6 ping from C{node}; C{True} if answered within C{timeout} s."""
    return node.run(["ping", "-6", "-n", "-q", "-c", "1", "-W", str(timeout), address],
                    check=False, timeout=timeout + 10).returncode == 0


def routeDevice(node, address):
    """The device C{node} sends C{address}'s traffic out of, or C{None}."""
    found = node.run(["ip", "-j", "route", "get", address], check=False)
    if found.returncode != 0:
        return None
    return json.loads(found.stdout)[0].get("dev")


def forwardedDevice(node, address, source, interface):
    """
    The device C{node} forwards C{address}'s traffic from C{source}
    arriving on C{interface} out of (a LAN host's), or C{None} when
    nothing routes it.
    """
    found = node.run(["ip", "-j", "route", "get", address, "from", source, "iif", interface],
                     check=False)
    if found.returncode != 0:
        return None
    return json.loads(found.stdout)[0].get("dev")


def addresses6(node, interface):
    """The global IPv6 addresses on C{interface} in C{node}."""
    ipr = node.ipr()
    index = ipr.link_lookup(ifname=interface)
    if not index:
        return []
    return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET6, index=index[0])
            if a["scope"] == 0]


def mnigsRules6(node, priority=8150):
    """mnigs's IPv6 policy rules in C{node} (at the client's default priority)."""
    return [rule for rule in node.ipr().get_rules(family=socket.AF_INET6)
            if rule.get_attr("FRA_PRIORITY") in (priority, priority + 1)]


def tableRoutes6(node, table=8150):
    """The IPv6 routes of mnigs's table in C{node}, as (destination, length)."""
    return [(r.get_attr("RTA_DST") or "::", r["dst_len"])
            for r in node.ipr().get_routes(family=socket.AF_INET6, table=table)
            if r.get_attr("RTA_TABLE") == table]


#: rtnetlink's route type "unreachable".
RTN_UNREACHABLE = 7


def unreachableDefault6(node, table=8150):
    """Whether mnigs's table in C{node} has an C{unreachable ::/0} (failing closed)."""
    return any(r["dst_len"] == 0 and r["type"] == RTN_UNREACHABLE
               for r in node.ipr().get_routes(family=socket.AF_INET6, table=table)
               if r.get_attr("RTA_TABLE") == table)
