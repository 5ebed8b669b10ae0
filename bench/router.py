"""
Mesh-router benchmark (issue 15): a mnigs client as a router with a LAN
behind it, on one namespace mesh with real daemons (babeld with its
default timers, hello 4 s; mnigs-servers with wireguard-go and nftables;
dnsmasq; an mnigs-client), checking LAN sharing, IPv6, DNS, a 1280-byte
mesh link and failing closed.

Topology (one mesh for every point)::

    lan   192.168.77.0/24 (shared)   \\
                                      client --(MTU 1280)-- r1 -- gwA === inet
    other 192.168.78.0/24 (unshared) /                       |
                                                            r2 -- gwB === inet2

  - The client-r1 link has MTU 1280 at both ends, and r1 sends no ICMP
    "fragmentation needed" or "packet too big" (as routers that filter
    ICMP do; tests.mesh.router.narrowPath): both gateways' paths to the
    client cross it, so a packet that does not fit is lost silently.
  - Both uplinks carry IPv6 (the internet's IPv6 host 2001:db8:ffff::1);
    gwA offers IPv6 egress from fd64:a::/64, gwB from fd64:b::/64 (NAT66),
    both over WireGuard.  Each internet node runs dnsmasq on 198.51.100.1
    answering test.mnigs, which each gateway offers in its WireGuard
    leases (tests.mesh.resolver.DNSCheck); each runs a 10 MB bulk server
    (tests.mesh.bulkproc).
  - The gateways' default routes are announced into babel, so the
    client's main table has a mesh default route via r1: what leaks while
    switching leaves by it, and r1 counts it.
  - The gateways run with uplink.check_interval 1 s and probe
    198.51.100.1, the client with the shipped defaults
    (etc/mnigs-client.toml, as bench/failover.py) plus what each phase
    sets below.

Phases, in order, on that one mesh:

  1. "router": the client with share.prefixes = [the lan's], dns.mode =
     "file" (on its namespace's own resolv.conf), routing.fail_closed and
     the default MTU settings (set_tunnel_mtu, clamp_mss), online through
     gwA:
       - lan_ok: the LAN host pings the internet host and fetches 10 MB
         from it through the tunnel, its packets reaching gwA from the
         lease's address (nft counters on gwA: some from the lease, none
         from the LAN prefix), every connection seen from the same address
         at the internet host; the unshared host's ping and fetch fail and
         none of its packets leave by the tunnel (counter on the client);
         after the client stops, its routing (rules, routes, links), nft
         ruleset and ip_forward are what they were before it started.
       - IPv6: the client's lease has an inner IPv6 address; it pings the
         internet's IPv6 host and connects to it over TCP, seen from the
         gateway's uplink address (NAT66).
       - DNS: test.mnigs resolves through the client's system resolver
         (getent) while online.
       - MTU: 10 MB downloads by the client and by the LAN host through
         the 1280 path (mtu1280_download_s is the client's).
       - fail closed: pings every 10 ms from the client and the LAN host
         while gwA goes silent (an nft drop-everything table) and the
         client moves to gwB (tests.mesh.router.leakWhileSwitching):
         leaked_packets, what r1 forwarded to the internet host bare.
       - after the failover: IPv6 again (ping and TCP through gwB, an
         address of gwB's pool), DNS again (gwB's resolver), and a new
         ping from the LAN host.  Whether the LAN host's ping train (one
         ICMP flow, begun through gwA) is answered again is reported, not
         part of lan_ok: lan_flow_kept_across_failover, with the client's
         conntrack entries for the LAN host when it is not.
       - stop: the routing snapshot as before; dns_ok also needs the
         resolv.conf byte for byte as before.
  2. "no MTU": the client again (gwA still silent: through gwB), with
     mtu.set_tunnel_mtu = false (TCP MSS clamping alone): 10 MB by the
     client and the LAN host, for contrast.  (In phase 1 the tunnel's MTU
     is 1280, not 1216: a tunnel carrying IPv6 is never set below IPv6's
     minimum, and TCP is clamped to what fits the path; here it stays
     wireguard-go's 1420.)
  3. "open" (contrast, skipped with --no-contrast): gwA revived (and
     answering the client's node), the client with fail_closed off,
     online through the gateway it picks (normally gwA, the nearer); the
     same leak count as in phase 1 while that one goes silent and the
     client moves to the other (expected above 0).

ipv6_ok needs the IPv6 checks of phase 1 before and after the failover;
that the gate drops forged IPv6 sources is tests.mesh.test_gate's
IPv6Tests, not measured here.  IPv6 for a shared LAN host (NAT66 to the
lease's IPv6 address) is shown by tests.mesh.test_ipv6's SharedLANIPv6Tests,
not measured here.

Progress on stderr; the last line of stdout is one JSON object:
{"lan_ok": .., "ipv6_ok": .., "dns_ok": .., "mtu1280_download_s": ..,
 "leaked_packets": .., ...details}
A check that failed says why under "failures".

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/router.py [--no-contrast] [--keep [DIR]]
"""

import argparse
import ipaddress
import json
import sys
import time

from bench._common import progress, runOnMesh
from bench.failover import CLIENT_SETTINGS, revive
from mnigs.client.routes import routingSnapshot
from tests.mesh.clientproc import ClientProcess
from tests.mesh.gatewayproc import GatewayProcess, merge
from tests.mesh.harness import INTERNET_HOST, missingForNamespaces, waitUntil
from tests.mesh.ipv6net import UPLINK6, addresses6, ipv6Gateway, ping6, seenFrom, serveSeen
from tests.mesh.pingtrain import PingTrain
from tests.mesh.resolver import DNSCheck, startResolver
from tests.mesh.router import (
    BulkServer,
    PacketCounter,
    TransferFailed,
    fetch,
    lanHost,
    narrowLink,
    nftRuleset,
    sendNoTooBig,
    sysctl,
)
from tests.mesh.test_client import silence

MB = 2**20
SIZE = 10 * MB
MTU = 1280
BULK_PORT = 5001
# Each gateway its own pools, so that the client's inner address changes
# when it fails over, as between independent gateways.
POOL = {"gwA": "100.64.0.0/24", "gwB": "100.64.1.0/24"}
POOL6 = {"gwA": "fd64:a::/64", "gwB": "fd64:b::/64"}
LEAK_INTERVAL = 0.01
GATEWAY_SETTINGS = {"uplink": {"check_interval": 1.0, "probe": [INTERNET_HOST]}}
ONLINE_TIMEOUT = 90.0
FETCH_TIMEOUT = 60.0


class Checks:
    """
    What each point's checks found: C{ok(name, value, why)} records a
    check (C{why} is said when it fails); C{holds(prefix)} is whether
    every check whose name starts with C{prefix} held.
    """

    def __init__(self):
        self.results = {}
        self.failures = {}

    def ok(self, name, value, why=""):
        value = bool(value)
        self.results[name] = value
        progress(f"  {name}: {'yes' if value else 'NO'}{'' if value or not why else f' ({why})'}")
        if not value:
            self.failures[name] = why
        return value

    def attempt(self, name, f, *args, **kwargs):
        """
        Run C{f}; a wait that timed out or a transfer that failed makes the
        check fail (with the reason) instead of ending the benchmark.
        """
        try:
            value = f(*args, **kwargs)
        except (AssertionError, TransferFailed) as e:
            self.ok(name, False, str(e).splitlines()[0][:300])
            return None
        self.ok(name, True)
        return value

    def holds(self, prefix):
        found = [v for k, v in self.results.items() if k.startswith(prefix)]
        return bool(found) and all(found)


# -- the mesh --------------------------------------------------------------

def build(mesh):
    nodes = {name: mesh.node(name) for name in ("client", "r1", "r2", "gwA", "gwB")}
    narrow, _ = mesh.link(nodes["client"], nodes["r1"])
    for a, b in (("r1", "gwA"), ("r1", "r2"), ("r2", "gwB")):
        mesh.link(nodes[a], nodes[b])
    for gw in ("gwA", "gwB"):
        mesh.internet(nodes[gw], ipv6=True)
    narrowLink(nodes["client"], narrow, MTU)
    narrowLink(nodes["r1"], nodes["r1"].meshInterfaces[0], MTU)
    sendNoTooBig(nodes["r1"])
    nodes["lan"] = lanHost(mesh, nodes["client"], "lan", "192.168.77.0/24")
    nodes["other"] = lanHost(mesh, nodes["client"], "other", "192.168.78.0/24")
    progress(f"mesh {mesh.prefix}: starting babeld (default timers)")
    mesh.startBabel()
    progress(f"babel converged in {mesh.waitConverged(timeout=120):.1f} s")
    return nodes


def startGateways(nodes, dns):
    """
    Both gateways, each offering IPv6 egress and the resolver on its
    internet node; a bulk server and a TCP "seen from" server behind each.
    """
    servers = {}
    for name in ("gwA", "gwB"):
        gw = nodes[name]
        if name != dns.gateway.name:  # DNSCheck.prepare started gwA's
            startResolver(gw.internet, dns.resolver, {dns.NAME: dns.ANSWER})
        overrides = merge(merge(GATEWAY_SETTINGS, ipv6Gateway(POOL6[name], pool=POOL[name])),
                          {"methods": dns.gatewayMethods})
        servers[name] = GatewayProcess(gw, overrides, name=name).start(timeout=60)
        BulkServer(gw.internet, port=BULK_PORT, size=SIZE)
        serveSeen(gw.internet)
    return servers


def clientProcess(node, name, **overrides):
    return ClientProcess(node, merge(CLIENT_SETTINGS, overrides), name=name)


def leaseAddress(status):
    return str(ipaddress.ip_interface(status["current"]["address"]).ip)


def tunnelMTU(node, client):
    return int(node.run(["cat", f"/sys/class/net/{client.wgInterface}/mtu"]).stdout)


def snapshot(node):
    return (routingSnapshot(node.ns), nftRuleset(node), sysctl(node, "net.ipv4.ip_forward"))


# -- the points --------------------------------------------------------------

def lanSharing(checks, nodes, c, status, figures):
    """Point 1 while online (the restore is checked after stop)."""
    client, gw, lan, other = nodes["client"], nodes["gwA"], nodes["lan"], nodes["other"]
    address = leaseAddress(status)
    asLease = PacketCounter(gw, f"ip saddr {address} tcp dport {BULK_PORT}", table="count_lease")
    asLan = PacketCounter(gw, f"ip saddr {lan.prefix}", table="count_lan")
    unshared = PacketCounter(client, f'oifname "{c.wgInterface}" ip saddr {other.prefix}',
                             table="count_unshared", hook="postrouting")
    peers = BulkServerPeers(gw.internet)
    figures["tunnel_mtu"] = tunnelMTU(client, c)
    seconds = checks.attempt("mtu_client_download", fetch, client, INTERNET_HOST, BULK_PORT,
                             SIZE, timeout=FETCH_TIMEOUT)
    figures["mtu1280_download_s"] = seconds
    fromClient = asLease.packets()
    checks.attempt("lan_ping", waitUntil, lambda: lan.node.ping(INTERNET_HOST, timeout=0.5), 10,
                   message="the LAN host's ping through the tunnel")
    seconds = checks.attempt("lan_download", fetch, lan.node, INTERNET_HOST, BULK_PORT, SIZE,
                             timeout=FETCH_TIMEOUT)
    figures["mtu1280_lan_download_s"] = seconds
    checks.ok("lan_from_lease_address", asLease.packets() > fromClient,
              f"gwA counted {asLease.packets() - fromClient} packets from {address}")
    checks.ok("lan_prefix_never_at_gateway", asLan.packets() == 0,
              f"gwA counted {asLan.packets()} packets from {lan.prefix}")
    seen = peers.since()
    checks.ok("lan_seen_as_the_client", len(seen) == 2 and len(set(seen)) == 1,
              f"the internet host saw {seen}")
    checks.ok("lan_unshared_ping_fails", not other.node.ping(INTERNET_HOST, timeout=1.0))
    try:
        fetch(other.node, INTERNET_HOST, BULK_PORT, SIZE, timeout=3)
        checks.ok("lan_unshared_fetch_fails", False, "the unshared host fetched")
    except TransferFailed:
        checks.ok("lan_unshared_fetch_fails", True)
    checks.ok("lan_unshared_not_in_tunnel", unshared.packets() == 0,
              f"{unshared.packets()} packets from {other.prefix} left by the tunnel")
    # Not in the snapshot compared after stop.
    client.run(["nft", "delete", "table", "inet", "count_unshared"])


class BulkServerPeers:
    """The connections a bulk server behind a gateway sees from now on."""

    def __init__(self, internet):
        self.path = f"{internet.tmp}/bulk-{BULK_PORT}.peers"
        self.start = len(self._read())

    def _read(self):
        with open(self.path) as f:
            return f.read().split()

    def since(self):
        return self._read()[self.start:]


def ipv6Works(checks, label, client, c, pool):
    status = c.status()
    address6 = (status.get("current") or {}).get("address6")
    inner = str(ipaddress.ip_interface(address6).ip) if address6 else None
    checks.ok(f"ipv6_{label}_address",
              inner is not None and ipaddress.ip_address(inner) in ipaddress.ip_network(pool),
              f"address6 {address6!r}, pool {pool}")
    onTunnel = addresses6(client, c.wgInterface)
    checks.ok(f"ipv6_{label}_on_tunnel", onTunnel == [inner], f"tunnel's IPv6 addresses {onTunnel}")
    checks.attempt(f"ipv6_{label}_ping", waitUntil, lambda: ping6(client, timeout=0.5), 10,
                   message=f"ping6 through {label}")
    seen = checks.attempt(f"ipv6_{label}_tcp", waitUntil, lambda: seenFrom(client), 10,
                          message=f"TCP over IPv6 through {label}")
    if seen is not None:
        checks.ok(f"ipv6_{label}_seen_from_uplink", seen == UPLINK6, f"seen from {seen}")


def leak(checks, name, nodes, c, figures, dying="gwA", nextName="gwB"):
    """
    Point 5, as L{tests.mesh.router.leakWhileSwitching}: pings every
    10 ms from the client and the LAN host while C{dying} (serving the
    client) goes silent and the client moves to C{nextName}; how many packets for the internet host r1 (the
    client's next hop) forwarded bare, by the mesh default route.  Unlike
    there, a ping train that gets no answers after the switch is recorded
    (C{figures[name + "_answered_after"]}: sender -> whether its train
    was answered again, with the client's conntrack entries for the LAN
    host when it was not) instead of ending the count.
    """
    client, lan, r1 = nodes["client"], nodes["lan"], nodes["r1"]
    bare = PacketCounter(r1, f"ip daddr {INTERNET_HOST}", table=f"count_bare_{name}")
    trains = {sender.name: PingTrain(sender, count=int(30 / LEAK_INTERVAL), interval=LEAK_INTERVAL)
              for sender in (client, lan.node)}
    for train in trains.values():
        train.waitAnswered(20)
    silence(nodes[dying])
    started = time.monotonic()
    if checks.attempt(f"{name}_switch", c.waitState, "online", 30, gateway=nextName) is None:
        return None
    figures[f"{name}_switch_s"] = round(time.monotonic() - started, 2)
    answered = figures[f"{name}_answered_after"] = {}
    for sender, train in trains.items():
        try:
            train.cut()
            answered[sender] = True
        except AssertionError:
            answered[sender] = False
            answered[f"{sender}_conntrack"] = [
                line for line in client.run(["cat", "/proc/net/nf_conntrack"]).stdout.splitlines()
                if f"src={lan.address} " in line]
    return bare.packets()


# -- the phases ----------------------------------------------------------------

def routerPhase(checks, nodes, dns, figures):
    client, lan = nodes["client"], nodes["lan"]
    # mnigs turns forwarding on for the LAN and must turn it back off.
    client.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    before = snapshot(client)
    c = clientProcess(client, "router", share={"prefixes": [lan.prefix]},
                      routing={"fail_closed": True}, **dns.clientConfig)
    try:
        started = time.monotonic()
        status = c.start().waitState("online", ONLINE_TIMEOUT, gateway="gwA")
        figures["online_s"] = round(time.monotonic() - started, 1)
        progress(f"router: online through gwA after {figures['online_s']} s; checking")
        checks.ok("lan_forwarding_on", sysctl(client, "net.ipv4.ip_forward") == "1")
        lanSharing(checks, nodes, c, status, figures)
        ipv6Works(checks, "gwA", client, c, POOL6["gwA"])
        checks.ok("dns_online_gwA", dns.online())
        progress("router: silencing gwA, counting leaks (fail closed on)")
        figures["leaked_packets"] = leak(checks, "fail_closed", nodes, c, figures)
        with open(c.logPath) as f:
            checks.ok("fail_closed_logged", "routing: failing closed" in f.read())
        ipv6Works(checks, "gwB", client, c, POOL6["gwB"])
        checks.attempt("lan_new_flow_after_failover", waitUntil,
                       lambda: lan.node.ping(INTERNET_HOST, timeout=0.5), 10,
                       message="a new ping from the LAN host through gwB")
        checks.ok("dns_online_gwB", dns.online())
    finally:
        c.stop()
    after = snapshot(client)
    differ = [what for what, a, b in zip(("routing", "nft ruleset", "ip_forward"), before, after)
              if a != b]
    checks.ok("lan_stop_restores", not differ, f"{', '.join(differ)} differ after stop")
    checks.ok("dns_restored", dns.restored(), "resolv.conf differs after stop")


def noMTUPhase(checks, nodes, figures):
    client, lan = nodes["client"], nodes["lan"]
    c = clientProcess(client, "nomtu", share={"prefixes": [lan.prefix]},
                      mtu={"set_tunnel_mtu": False, "clamp_mss": True})
    try:
        status = c.start().waitState("online", ONLINE_TIMEOUT)
        progress(f"no MTU: online through {status['current']['name']}; downloading")
        figures["no_set_mtu_tunnel_mtu"] = tunnelMTU(client, c)
        for who, key in ((client, "mtu1280_no_set_mtu_download_s"),
                         (lan.node, "mtu1280_no_set_mtu_lan_download_s")):
            figures[key] = checks.attempt(f"mtu_{key}", fetch, who, INTERNET_HOST, BULK_PORT,
                                          SIZE, timeout=FETCH_TIMEOUT)
    finally:
        c.stop()


def openPhase(checks, mesh, nodes, servers, figures):
    client, lan = nodes["client"], nodes["lan"]
    revive(nodes["gwA"])
    progress("open: gwA revived; waiting until the client's node reaches it")
    mesh.waitConverged(timeout=120)
    waitUntil(lambda: servers["gwA"].info(fromNode=client, host=nodes["gwA"].address), 120,
              interval=0.5, message="gwA answering the client's node")
    c = clientProcess(client, "open", share={"prefixes": [lan.prefix]})
    try:
        serving = c.start().waitState("online", ONLINE_TIMEOUT)["current"]["name"]
        other = "gwB" if serving == "gwA" else "gwA"
        progress(f"open: online through {serving}; silencing it, counting leaks "
                 "(fail closed off)")
        figures["leaked_packets_fail_closed_off"] = leak(checks, "contrast", nodes, c, figures,
                                                         serving, other)
    finally:
        c.stop()


def run(mesh, args):
    checks, figures = Checks(), {}
    nodes = build(mesh)
    dns = DNSCheck(nodes["client"], nodes["gwA"])
    dns.prepare()
    servers = startGateways(nodes, dns)
    progress("phase 1: router (share, IPv6, DNS, MTU 1280, fail closed)")
    routerPhase(checks, nodes, dns, figures)
    progress("phase 2: the client not setting the tunnel MTU")
    noMTUPhase(checks, nodes, figures)
    if not args.no_contrast:
        progress("phase 3: contrast, fail closed off")
        openPhase(checks, mesh, nodes, servers, figures)
    gone = [n.name for n in mesh.nodes.values() if n.babeld is not None and n.babeld.poll() is not None]
    gone += [name for name, s in servers.items() if s.process.poll() is not None]
    if gone:
        raise RuntimeError(f"daemons died under the benchmark: {', '.join(gone)}")
    for server in servers.values():
        server.stop()
    return checks, figures


def summary(checks, figures):
    leaked = figures.get("leaked_packets")
    return {
        "lan_ok": checks.holds("lan_"),
        "ipv6_ok": checks.holds("ipv6_"),
        "dns_ok": checks.holds("dns_"),
        "mtu1280_download_s": figures.get("mtu1280_download_s"),
        "leaked_packets": leaked,
        "fail_closed_ok": leaked == 0 and checks.holds("fail_closed_"),
        "mtu1280_lan_download_s": figures.get("mtu1280_lan_download_s"),
        "tunnel_mtu": figures.get("tunnel_mtu"),
        "mtu1280_no_set_mtu_download_s": figures.get("mtu1280_no_set_mtu_download_s"),
        "mtu1280_no_set_mtu_lan_download_s": figures.get("mtu1280_no_set_mtu_lan_download_s"),
        "no_set_mtu_tunnel_mtu": figures.get("no_set_mtu_tunnel_mtu"),
        "leaked_packets_fail_closed_off": figures.get("leaked_packets_fail_closed_off"),
        "lan_flow_kept_across_failover": (figures.get("fail_closed_answered_after") or {}).get("lan"),
        "switch_s": figures.get("fail_closed_switch_s"),
        "switch_fail_closed_off_s": figures.get("contrast_switch_s"),
        # Whether each ping train (one ICMP flow each) was answered again
        # after the failover: the LAN host's flow keeps its translation.
        "pings_answered_after_failover": figures.get("fail_closed_answered_after"),
        "pings_answered_after_failover_fail_closed_off": figures.get("contrast_answered_after"),
        "online_s": figures.get("online_s"),
        "download_mb": SIZE // MB,
        "path_mtu": MTU,
        "babel_hello_s": 4,
        "checks": checks.results,
        "failures": checks.failures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-contrast", action="store_true",
                        help="skip phase 3 (the leak count with fail closed off)")
    parser.add_argument("--keep", nargs="?", const="", metavar="DIR",
                        help="keep every node's logs (in DIR, default /tmp/mnigs-router-TIME)")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft", "ping", "getent",
                                   "/usr/sbin/dnsmasq")
    if missing:
        sys.exit(f"cannot run: {missing}")
    # hello 0: babeld's default timers.
    (checks, figures), wall = runOnMesh("router", lambda mesh: run(mesh, args), args.keep, hello=0)
    result = summary(checks, figures)
    result["wall_s"] = wall
    progress(f"done in {result['wall_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
