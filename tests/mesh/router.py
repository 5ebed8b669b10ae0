"""
Building blocks for mesh-router tests and benchmarks (issue 15): a LAN
host behind a node, a narrow mesh link, a bulk TCP transfer and nft
packet counters.  Synchronous, like L{tests.mesh.harness}; every
namespace and process belongs to the L{Mesh}, which removes them.

Used by tests.mesh.test_router; bench/router.py can call the same::

    host = lanHost(mesh, client, "lan", "192.168.77.0/24")   # LanHost
    host6 = lanHost(mesh, client, "lan6", "192.168.79.0/24", prefix6="fd77::/64")
    client, r1, gw = narrowPath(mesh, 1280)      # MTU 1280 at the last hop, no ICMP
    server = BulkServer(mesh.nodes["inet"], size=10 * 2**20)
    seconds = fetch(host.node, INTERNET_HOST, server.port, server.size)
    count = PacketCounter(r1, "ip daddr 198.51.100.1"); ...; count.packets()
    leaked = leakWhileSwitching([client, host.node], r1, clientProcess, gwA, "gwB")
"""

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Optional

from tests.mesh.commands import waitUntil
from tests.mesh.gatewayproc import daemonEnvironment


@dataclass
class LanHost:
    """
    A host on its own LAN behind C{router}: C{node} (its namespace),
    C{address} (its LAN address), C{interface} (the router's side of the
    LAN), C{prefix} (the LAN's network); with IPv6 on the LAN,
    C{address6} and C{prefix6} too.
    """
    node: object
    address: str
    interface: str
    prefix: str
    address6: Optional[str] = None
    prefix6: Optional[str] = None


def lanHost(mesh, router, name="lan", prefix="192.168.77.0/24", interface=None, prefix6=None):
    """
    A namespace C{name} whose only link goes to C{router} (a mesh node):
    the router takes the LAN's first address on C{interface} (default
    C{NAME0}), the host the second, with a default route via the router;
    with C{prefix6} (an IPv6 network) the same in IPv6.  The LAN is not
    announced into the mesh (babeld's configuration only announces node
    addresses and mesh subnets).
    """
    network = ipaddress.ip_network(prefix)
    first, second = list(network.hosts())[:2]
    interface = interface or f"{name}0"
    host = mesh._addNode(name, str(second))
    mesh._veth(router, interface, f"{first}/{network.prefixlen}",
               host, "eth0", f"{second}/{network.prefixlen}")
    host.run(["ip", "route", "add", "default", "via", str(first), "dev", "eth0"])
    lan = LanHost(host, str(second), interface, str(network))
    if prefix6 is not None:
        network6 = ipaddress.IPv6Network(prefix6)
        first6, second6 = network6[1], network6[2]
        router.run(["ip", "addr", "add", f"{first6}/{network6.prefixlen}", "dev", interface])
        host.run(["ip", "addr", "add", f"{second6}/{network6.prefixlen}", "dev", "eth0"])
        host.run(["ip", "-6", "route", "add", "default", "via", str(first6), "dev", "eth0"])
        lan.address6, lan.prefix6 = str(second6), str(network6)
    return lan


def narrowLink(node, interface, mtu):
    """Set C{node}'s C{interface} MTU (do both ends of a link)."""
    node.run(["ip", "link", "set", "dev", interface, "mtu", str(mtu)])


def sendNoTooBig(node):
    """
    Have C{node} send no ICMP "fragmentation needed" nor ICMPv6 "packet
    too big", as routers that filter ICMP do (a table of its own).
    """
    node.run(["nft", "-f", "-"], input=(
        "table inet mnigs_silent {\n"
        "  chain output { type filter hook output priority -300; policy accept;\n"
        "    icmp type destination-unreachable icmp code frag-needed drop\n"
        "    icmpv6 type packet-too-big drop\n  }\n}\n"))


def narrowPath(mesh, mtu=1280, silentRouter=True, ipv6=False):
    """
    A gateway two hops away whose path to the client narrows at the last
    hop, converged::

        client --(mtu)-- r1 ---- gw === internet

    With C{silentRouter}, r1 sends no "fragmentation needed" (as routers
    that filter ICMP do): the gateway cannot learn the path's MTU, and
    what does not fit is dropped at r1 -- a black hole unless the
    packets are made to fit.  C{ipv6}: the uplink carries IPv6 too
    (L{tests.mesh.harness.Mesh.internet}).  Returns the nodes (client, r1, gw).
    """
    client, r1, gw = (mesh.node(n) for n in ("client", "r1", "gw"))
    narrow, _ = mesh.link(client, r1)
    mesh.link(r1, gw)
    mesh.internet(gw, ipv6=ipv6)
    narrowLink(client, narrow, mtu)
    narrowLink(r1, r1.meshInterfaces[0], mtu)
    if silentRouter:
        sendNoTooBig(r1)
    mesh.startBabel()
    mesh.waitConverged()
    return client, r1, gw


def _python(node, *args):
    return ["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}", sys.executable,
            "-m", "tests.mesh.bulkproc", *map(str, args)]


class BulkServer:
    """
    L{tests.mesh.bulkproc} serving C{size} bytes per connection on C{node}'s
    C{port} (on C{address}: "::" for IPv6); L{peers} lists the source
    address of every connection.
    """

    def __init__(self, node, port=5001, size=10 * 2**20, address="0.0.0.0"):
        self.node, self.port, self.size = node, port, size
        self.peerLog = os.path.join(node.tmp, f"bulk-{port}.peers")
        open(self.peerLog, "w").close()
        self.process = node.spawn(_python(node, "serve", port, size, self.peerLog, address))
        waitUntil(lambda: node.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip(), 10,
                  message=f"bulk server on {node.name}:{port}")

    def peers(self):
        with open(self.peerLog) as f:
            return f.read().split()


class TransferFailed(AssertionError):
    pass


def fetch(node, host, port, size, timeout=60):
    """Fetch C{size} bytes from a L{BulkServer}: the seconds it took."""
    result = node.run(_python(node, "fetch", host, port, size, timeout), check=False,
                      timeout=timeout + 15)
    if result.returncode != 0:
        raise TransferFailed(f"{node.name}: {result.stdout.strip()} {result.stderr.strip()}")
    return float(result.stdout.strip())


class PacketCounter:
    """
    An nft counter on C{node} for what its forward hook sees matching
    C{match} (nft syntax, from the test itself, never from the network),
    in a table of its own.
    """

    def __init__(self, node, match, table="mnigs_count", hook="forward"):
        self.node, self.table = node, table
        node.run(["nft", "-f", "-"], input=(
            f"table inet {table} {{\n"
            f"  chain count {{ type filter hook {hook} priority -400; policy accept;\n"
            f"    {match} counter\n  }}\n}}\n"))

    def packets(self):
        import json
        listing = json.loads(self.node.run(["nft", "-j", "list", "table", "inet",
                                            self.table]).stdout)
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule:
                for expr in rule["expr"]:
                    if "counter" in expr:
                        return expr["counter"]["packets"]
        raise LookupError("no counter")


def nftRuleset(node):
    """
    C{nft -s list ruleset} on C{node} (without counters' values), for
    before/after comparisons.
    """
    return node.run(["nft", "-s", "list", "ruleset"]).stdout


def sysctl(node, name):
    return node.run(["sysctl", "-n", name]).stdout.strip()


def leakWhileSwitching(senders, neighbour, clientProcess, dying, nextName, interval=0.01):
    """
    Pings from each of C{senders} (the client's node, a LAN host behind
    it) to the internet host every C{interval} seconds while gateway node
    C{dying} goes silent (L{tests.mesh.test_client.silence}) and
    C{clientProcess} (online through it) moves to the gateway named
    C{nextName}: how many packets for the internet host C{neighbour} (the
    client's next hop on the mesh) forwarded bare, i.e. by a mesh default
    route rather than inside a tunnel.
    """
    from tests.mesh.harness import INTERNET_HOST
    from tests.mesh.pingtrain import PingTrain
    from tests.mesh.test_client import silence

    bare = PacketCounter(neighbour, f"ip daddr {INTERNET_HOST}", table="count_bare")
    trains = [PingTrain(sender, count=int(30 / interval), interval=interval)
              for sender in senders]
    for train in trains:
        train.waitAnswered(20)
    silence(dying)
    clientProcess.waitState("online", 30, gateway=nextName)
    for train in trains:
        train.cut()
    return bare.packets()
