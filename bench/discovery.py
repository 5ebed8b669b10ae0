"""
Discovery benchmark: 1,000 candidate addresses, 10 of them real
mnigs-servers and 990 silent; how long until all 10 offers are in.  Plus
the mnigs client's idle resident memory.

Discovery set-up::

    client m0 10.98.0.1/24 <---> 10.98.0.2/24 m0 far up0 --- inet
      route 10.200.0.0/16 via 10.98.0.2        lo: 1,000 x 10.200.X.Y/32

  - far holds the 1,000 candidate addresses on its lo and runs 10 real
    twistd mnigs-servers, each listening only on one of them (rpc.listen),
    each with its own state_dir, admin socket and nft table, forward method
    only (no WireGuard interfaces needed).  An nft rule drops every TCP SYN
    to port 8150 for the other 990 addresses: they are silent (a dropped
    SYN, as on a mesh node without a gateway behind a firewall), not
    refusing (which would answer at once).
  - In the client namespace, bench/_discoveryprobe.py runs
    mnigs.client.discovery.Discovery with the client's DEFAULT discovery
    settings (timeout, concurrency, ports: what an empty config file gives)
    and a real RPCClient(persistent=False), after raiseFileLimit() as the
    client does.  Two candidate orders: "worst" (the 10 gateways are the 10
    farthest candidates, so they are asked last) and "random" (distances
    shuffled).  Each order runs --repeats times, each in a fresh process.

Idle RSS: a real twistd mnigs-client (shipped defaults) on a node of a
two-node babel mesh (default timers) with nothing to find (no gateway
anywhere: it scans, finds nothing, and waits), VmRSS of the twistd
process read from /proc after 10 s in that state.  For comparison, the
same for a client online through a real gateway (WireGuard; the
wireguard-go daemon is a separate process and not counted).

Progress on stderr; the last line of stdout is one JSON object:
{"candidates": 1000, "gateways": 10, "all_found_s": .., "client_idle_rss_mb": .., ...}
The Yggdrasil case (bench/_yggdrasilcase.py, which says how it is set up)
adds yggdrasil_nodes_per_s and yggdrasil_first_offer_s (--yggdrasil only
runs it alone, --yggdrasil no skips it).
all_found_s is the median over the worst-order runs.  --compare-direct
adds runs with a suggested RPCClient change (IP literals connected
directly, no thread-pool getaddrinfo), reported apart as *_direct;
--concurrency N is a what-if for the discovery.concurrency default;
--idle-only measures the idle RSS alone (and prints only those figures).

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/discovery.py [--repeats 3]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

from bench._common import keepLogs, progress, unwindOnSignals
from bench._yggdrasilcase import measureYggdrasil
from tests.mesh.clientproc import ClientProcess
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment
from tests.mesh.harness import Mesh, missingForNamespaces

CANDIDATES = 1000
GATEWAYS = 10
PORT = 8150
HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "_discoveryprobe.py")
IDLE_SECONDS = 10.0

# The ClientProcess harness shortens settings for fast tests; put the
# shipped defaults (etc/mnigs-client.toml) back.
CLIENT_SETTINGS = {
    "discovery": {"timeout": 2.0, "rescan_interval": 60.0, "sources": ["babel", "kernel"]},
    "methods": {"order": ["wireguard", "forward"], "connect_timeout": 5.0,
                "wireguard": {"keepalive": 5}},
    "policy": {"switch_hold": 60.0},
}


def candidateAddresses():
    return [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(CANDIDATES)]


class ListeningGateway(GatewayProcess):
    """A gateway that listens on one address only: ask it there."""

    def __init__(self, node, address, index):
        self.address = address
        super().__init__(node, {
            "rpc": {"listen": [address]},
            "nft": {"table": f"mnigsbench{index}"},
            "methods": {"wireguard": {"enabled": False}},
            "server": {"sweep_interval": 5.0},
        }, name=f"gw{index}")

    def info(self, fromNode=None, host=None):
        return super().info(fromNode, host or self.address)


def silenceAllBut(far, gateways):
    far.run(["nft", "-f", "-"], input=(
        "table inet mnigs_bench_silence {\n"
        "  set gateways { type ipv4_addr; elements = { " + ", ".join(gateways) + " } }\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    tcp dport {PORT} tcp flags & (syn | ack) == syn ip daddr != @gateways drop\n"
        "  }\n"
        "}\n"))


def buildDiscoveryMesh(mesh, gatewayAddresses):
    client, far = mesh.node("client"), mesh.node("far")
    mesh.link(client, far, "10.98.0.1/24", "10.98.0.2/24")
    mesh.internet(far)  # an uplink, so that the gateways offer access
    far.run(["ip", "-batch", "-"], input="".join(
        f"address add {a}/32 dev lo\n" for a in candidateAddresses()))
    client.run(["ip", "route", "add", "10.200.0.0/16", "via", "10.98.0.2"])
    silenceAllBut(far, gatewayAddresses)
    return client, far


def runProbe(client, gatewayAddresses, order, seed, direct=False, concurrency=None):
    rng = random.Random(seed)
    addresses = candidateAddresses()
    others = [a for a in addresses if a not in gatewayAddresses]
    if order == "worst":
        # Distinct distances, the gateways farthest of all.
        rng.shuffle(others)
        ranked = others + rng.sample(gatewayAddresses, len(gatewayAddresses))
        spec = [[a, 100 + i] for i, a in enumerate(ranked)]
    else:
        distances = list(range(100, 100 + len(addresses)))
        rng.shuffle(distances)
        spec = [[a, d] for a, d in zip(addresses, distances)]
    path = os.path.join(client.tmp, f"candidates-{order}-{seed}.json")
    with open(path, "w") as f:
        json.dump({"candidates": spec, "gateways": gatewayAddresses}, f)
    result = client.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                         sys.executable, PROBE, path]
                        + (["--direct-endpoints"] if direct else [])
                        + (["--concurrency", str(concurrency)] if concurrency else []),
                        timeout=180)
    return json.loads(result.stdout.strip().splitlines()[-1])


def vmRSS(pid):
    """
    VmRSS and VmHWM, plus PSS and USS (private pages only) from
    smaps_rollup: RSS also counts pages of shared libraries (libcrypto,
    cryptography's Rust extension) that other Python processes share.
    """
    def kB(path, keys):
        with open(path) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {key: int(fields[key].split()[0]) / 1024 for key in keys if key in fields}

    memory = kB(f"/proc/{pid}/status", ("VmRSS", "VmHWM"))
    rollup = kB(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
    memory["Pss"] = rollup.get("Pss")
    memory["Uss"] = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return memory


def idleRSS(client, state, timeout):
    client.waitState(state, timeout)
    time.sleep(IDLE_SECONDS)
    status = client.status()
    memory = vmRSS(client.process.pid)
    return {"state_after_idle": status.get("state"), "rss_mb": round(memory["VmRSS"], 1),
            "peak_rss_mb": round(memory["VmHWM"], 1),
            "pss_mb": None if memory["Pss"] is None else round(memory["Pss"], 1),
            "uss_mb": round(memory["Uss"], 1)}


def measureDiscovery(mesh, repeats, seed, compareDirect=False, concurrency=None):
    rng = random.Random(seed)
    gatewayAddresses = sorted(rng.sample(candidateAddresses(), GATEWAYS),
                              key=lambda a: tuple(map(int, a.split("."))))
    client, far = buildDiscoveryMesh(mesh, gatewayAddresses)
    progress(f"mesh {mesh.prefix}, far namespace: {CANDIDATES} addresses, "
             f"gateways on {gatewayAddresses}")
    servers = [ListeningGateway(far, address, k) for k, address in enumerate(gatewayAddresses)]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.waitServing(timeout=120)
        progress(f"{GATEWAYS} mnigs-servers serving")
        variants = [("worst", False), ("random", False)]
        if compareDirect:
            variants += [("worst", True), ("random", True)]
        runs = {f"{order}{'_direct' if direct else ''}": [] for order, direct in variants}
        for repeat in range(repeats):
            for order, direct in variants:
                outcome = runProbe(client, gatewayAddresses, order, seed + repeat, direct,
                                   concurrency)
                label = f"{order}{'_direct' if direct else ''}"
                runs[label].append(outcome)
                progress(f"{label} order #{repeat + 1}: all {GATEWAYS} offers in "
                         f"{outcome['all_found_s']} s (gateways at positions "
                         f"{outcome['gateway_positions'][0]}..{outcome['gateway_positions'][-1]}), "
                         f"scan done in {outcome.get('scan_done_s')} s, "
                         f"missing {outcome['missing']}")
        return runs
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as e:
                progress(f"stopping {server.node.name}/{server.address}: {e!r}")


def measureIdle(mesh):
    # Nothing to find: two babel nodes, no gateway anywhere.
    lone, peer = mesh.node("idle"), mesh.node("idlepeer")
    mesh.link(lone, peer)
    # Online: a client next to a real gateway.
    onlineNode, gw = mesh.node("online"), mesh.node("gw")
    mesh.link(onlineNode, gw)
    mesh.internet(gw)
    mesh.startBabel(nodes=[lone, peer, onlineNode, gw])
    gateway = GatewayProcess(gw, name="gw").start(timeout=60)
    idle = ClientProcess(lone, CLIENT_SETTINGS, name="idle").start()
    online = ClientProcess(onlineNode, CLIENT_SETTINGS, name="online").start()
    try:
        nothing = idleRSS(idle, "waiting", 90)
        progress(f"idle client (nothing to find): {nothing}")
        withGateway = idleRSS(online, "online", 120)
        progress(f"online client: {withGateway}")
        return nothing, withGateway
    finally:
        for process in (idle, online, gateway):
            try:
                process.stop()
            except Exception as e:
                progress(f"stopping {process.node.name}: {e!r}")


def summary(runs, nothing, withGateway):
    worst = [r["all_found_s"] for r in runs["worst"]]
    rand = [r["all_found_s"] for r in runs["random"]]

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    return {
        "candidates": CANDIDATES,
        "gateways": GATEWAYS,
        "all_found_s": None if None in worst else median(worst),
        "client_idle_rss_mb": nothing["rss_mb"],
        "targets": {"all_found_s": 3.0, "client_idle_rss_mb": 45},
        "all_found_worst_order_s": worst,
        "all_found_random_order_s": rand,
        "scan_done_worst_order_s": [r.get("scan_done_s") for r in runs["worst"]],
        "scan_done_random_order_s": [r.get("scan_done_s") for r in runs["random"]],
        "discovery_timeout_s": runs["worst"][0]["timeout_s"],
        "discovery_concurrency": runs["worst"][0]["concurrency"],
        "default_concurrency": runs["worst"][0]["default_concurrency"],
        "nofile_limit": runs["worst"][0]["nofile_limit"],
        "client_idle": dict(nothing, setting="babel mesh with no gateway: nothing to find"),
        "client_online": dict(withGateway, setting="online through a real gateway (WireGuard)"),
        "client_online_rss_mb": withGateway["rss_mb"],
        **{f"all_found_{label}_order_s": [r["all_found_s"] for r in outcomes]
           for label, outcomes in runs.items() if label.endswith("_direct")},
        "runs": runs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=8150)
    parser.add_argument("--compare-direct", action="store_true",
                        help="also run each order with IP-literal endpoints in the RPC "
                             "client's Agent (a suggested change; see _discoveryprobe.py)")
    parser.add_argument("--concurrency", type=int,
                        help="what-if: this discovery concurrency instead of the default")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy every node's logs here before the mesh is removed")
    parser.add_argument("--yggdrasil", choices=("also", "only", "no"), default="also",
                        help="the Yggdrasil overlay case (bench/_yggdrasilcase.py): run it "
                             "after the others (default), alone, or not at all")
    parser.add_argument("--yggdrasil-repeats", type=int, default=5)
    parser.add_argument("--idle-only", action="store_true",
                        help="only the idle-RSS measurement (prints its figures alone)")
    args = parser.parse_args()
    if args.yggdrasil == "only":
        unwindOnSignals()
        print(json.dumps(measureYggdrasil(args.yggdrasil_repeats)))
        return
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    unwindOnSignals()
    started = time.monotonic()
    if args.idle_only:
        with Mesh(None, hello=0) as mesh:
            nothing, withGateway = measureIdle(mesh)
        print(json.dumps({"client_idle_rss_mb": nothing["rss_mb"], "client_idle": nothing,
                          "client_online": withGateway}))
        return
    try:
        with Mesh(None, hello=0) as mesh:
            try:
                runs = measureDiscovery(mesh, args.repeats, args.seed, args.compare_direct,
                                        args.concurrency)
                nothing, withGateway = measureIdle(mesh)
            finally:
                if args.keep_logs:
                    keepLogs(mesh.tmp, args.keep_logs)
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e)}))
        raise
    result = summary(runs, nothing, withGateway)
    if args.yggdrasil == "also":
        result.update(measureYggdrasil(args.yggdrasil_repeats))
    result["wall_s"] = round(time.monotonic() - started, 1)
    progress(f"done in {result['wall_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
