"""
Startup benchmark: from the start of the mnigs-client process to the
first packet that reaches the internet host through a gateway, on a mesh
whose routes have converged (babeld with its default timers, hello 4 s).

Topology (as bench/failover.py, without the plain node)::

              /-- gwA -- inet
    client -- r1
              \\-- gwB -- inet2      (both internet hosts 198.51.100.1)

  - gwA and gwB run real twistd mnigs-servers (WireGuard and forward),
    each its own pool; their default routes are announced into babel, so
    the client's node has a mesh default route, but the gateways forward
    only lease holders: a packet the client sends before it holds a lease
    and has its tunnel up is dropped at the gateway.
  - Before each run: babel has routes between all nodes and a default
    route on the client's node (tests.mesh.harness.Mesh.waitConverged),
    and both gateways serve.

One unmeasured warm-up run first compiles the client's bytecode into a
cache (PYTHONPYCACHEPREFIX under the mesh's temporary directory), as an
installed package has it (its figure is "warm_up_s").  Each run:
bench/_pinger.py in the client's node sends an echo request to
198.51.100.1 every 10 ms (started first, and seen sending: its
namespace's ICMP OutEchos counter grows, and no answer comes back); then
a fresh real `twistd mnigs-client` (a new state directory: first start,
key made) with the shipped defaults (etc/mnigs-client.toml, as
bench/failover.py) is spawned in the client's node.  Measured from just
before the spawn (process start, not machine start: `ip netns exec`,
the interpreter and its imports count) to the receive time of the first
answer; also to the client's "online via" log line.  The client's log has
microsecond timestamps (bench/_timedlog.py): each run is taken apart
(twistd's first log line, after the imports and makeService; the
service starting; scanned; registered; wireguard-go spawned and ready;
tunnel up; connected; online).  Then the client
stops (releasing its lease) and the next run waits until the gateways
hold no lease for it.

Progress on stderr; the last line of stdout is one JSON object:
{"start_to_first_packet_s": <median>, "p95_s": .., "max_s": .., "min_s": ..,
 "spread_s": .., "start_to_online_median_s": .., "runs": [..]}
and, with --baseline DIR, the same figures of DIR's client under
"baseline" (its runs alternate with this checkout's on the same mesh, so
that a busy machine weighs on both alike).

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/startup.py [--runs 5] [--keep-logs DIR]
        [--profile FILE]     # one more run under cProfile (imports included)
        [--baseline DIR]     # A/B: another checkout's client, runs alternating
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

from bench._common import progress, runOnMesh
from bench.failover import (
    CLIENT_SETTINGS,
    INTERNET,
    PINGER,
    PingStream,
    TimedClient,
    TimedGateway,
    clientGateway,
    logEvents,
    withTimedLog,
)
from tests.mesh.gatewayproc import twistdArgv
from tests.mesh.harness import missingForNamespaces, waitUntil

PING_INTERVAL = 0.01
PROFILED_TWISTD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_profiledtwistd.py")
FIRST_PACKET_TIMEOUT = 60.0
TARGET_S = 1.0


class FastPingStream(PingStream):
    """bench/_pinger.py at C{PING_INTERVAL}, its answers read as L{PingStream}'s."""

    def __init__(self, node, label):
        self.node = node
        self.label = label
        self.path = os.path.join(node.tmp, f"ping-{label}-{time.time_ns()}.log")
        self.process = node.spawn([sys.executable, PINGER, INTERNET,
                                   "--interval", str(PING_INTERVAL)], log=self.path)

    def echoesSent(self):
        """
        The ICMP OutEchos counter of the pinger's network namespace
        (/proc/PID/net is the namespace of PID).
        """
        with open(f"/proc/{self.process.pid}/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Icmp:")]
        names, values = lines[0], lines[1]
        return int(values[names.index("OutEchos")])


class CompiledClient(TimedClient):
    """
    L{TimedClient} with its bytecode cached under C{pycache} (Python's
    C{PYTHONPYCACHEPREFIX}), as an installed package has it compiled: the
    checkout's modules are otherwise compiled anew at every start when the
    environment says C{PYTHONDONTWRITEBYTECODE}, as ours does.
    """

    def __init__(self, node, overrides, name, pycache, profile=None, tree=None):
        super().__init__(node, overrides, name=name)
        self.pycache = pycache
        self.profile = profile
        self.tree = tree

    def start(self):
        argv, env = withTimedLog(
            twistdArgv("mnigs-client", self.configPath, self.logPath,
                       os.path.join(self.dir, "twistd.pid")), self.logPath)
        if self.profile is not None:
            argv = [argv[0], PROFILED_TWISTD, self.profile] + argv[3:]
        # An empty PYTHONDONTWRITEBYTECODE is as good as unset.
        env.update(PYTHONPYCACHEPREFIX=self.pycache, PYTHONDONTWRITEBYTECODE="")
        if self.tree is not None:  # its mnigs first; bench._timedlog from here
            env["PYTHONPATH"] = os.pathsep.join([self.tree, env["PYTHONPATH"]])
            # `python -c` would put the working directory (ours) first.
            env["PYTHONSAFEPATH"] = "1"
        self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"), env=env)
        return self


# -- one run ---------------------------------------------------------------

MARKS = {
    "twistd_logging": r"",  # the first line: imports and makeService done
    "client_starting": r"^mnigs client starting",
    "scanned": r"--scanned--> ",
    "registered": r"--registered--> ",
    "wireguard_spawned": r": spawned pid ",
    "wireguard_ready": r": ready \(pid ",
    "tunnel_up": r": up$",
    "connected": r"--connected--> ",
    "online": r"^online via ",
}


def breakdown(logPath, started):
    """Seconds after the spawn of the first log line matching each mark."""
    events = logEvents(logPath)
    result = {}
    for name, pattern in MARKS.items():
        rx = re.compile(pattern)
        for when, message in events:
            if rx.search(message):
                result[name] = round(when - started, 3)
                break
    return result


def gatewaysLeases(servers):
    """How many leases the gateways hold, from their status (admin socket)."""
    from mnigs.cli.ctl import ask

    held = 0
    for server in servers:
        status = ask(server.config["admin"]["socket"], "status", timeout=2.0)
        held += status.get("clients", 0)
    return held


def oneRun(index, client_node, servers, pycache, profile=None, tree=None):
    stream = FastPingStream(client_node, f"run{index}")
    client = None
    try:
        before = waitUntil(lambda: stream.echoesSent() > 0 and stream.echoesSent(), 10,
                           interval=0.01, message="the pinger to send")
        waitUntil(lambda: stream.echoesSent() >= before + 3, 10, interval=0.01,
                  message="the pinger to keep sending")
        if stream.replies():
            raise RuntimeError("answers came back before the client started: "
                               "the gateways let the client's node through without a lease")
        client = CompiledClient(client_node, CLIENT_SETTINGS, f"client{index}", pycache,
                                profile, tree)
        started = time.time()
        client.start()
        firstReply = waitUntil(lambda: client.process.poll() is None
                               and [t for t in stream.replies() if t > started][:1],
                               FIRST_PACKET_TIMEOUT, interval=0.005,
                               message="a first answer through a gateway")[0]
        waitUntil(lambda: client.quickStatus().get("state") == "online", 30, interval=0.05,
                  message="the client online")
        status = client.quickStatus()
        record = {
            "start_to_first_packet_s": round(firstReply - started, 3),
            "gateway": clientGateway(client),
            "method": (status.get("current") or {}).get("method"),
            "marks": breakdown(client.logPath, started),
        }
        record["start_to_online_s"] = record["marks"].get("online")
        return record
    finally:
        stream.stop()
        if client is not None:
            client.stop()
            waitUntil(lambda: gatewaysLeases(servers) == 0, 30, interval=0.1,
                      message="the gateways to hold no lease")


def nearestRank(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(records):
    firsts = [r["start_to_first_packet_s"] for r in records]
    onlines = [r["start_to_online_s"] for r in records if r["start_to_online_s"] is not None]
    return {
        "start_to_first_packet_s": round(statistics.median(firsts), 3),
        "p95_s": nearestRank(firsts, 0.95),
        "max_s": max(firsts),
        "min_s": min(firsts),
        "spread_s": round(max(firsts) - min(firsts), 3),
        "start_to_online_median_s": round(statistics.median(onlines), 3) if onlines else None,
        "target_s": TARGET_S,
        "ping_interval_s": PING_INTERVAL,
        "runs": records,
    }


def run(mesh, runs, profile=None, baseline=None):
    nodes = {name: mesh.node(name) for name in ("client", "r1", "gwA", "gwB")}
    mesh.link(nodes["client"], nodes["r1"])
    for gw in ("gwA", "gwB"):
        mesh.link(nodes["r1"], nodes[gw])
        mesh.internet(nodes[gw])
    progress(f"mesh {mesh.prefix}: starting babeld (default timers)")
    mesh.startBabel()
    progress(f"babel converged in {mesh.waitConverged(timeout=120):.1f} s")
    servers = [TimedGateway(nodes[gw], {"methods": {"wireguard": {"pool": pool}}},
                            name=gw).start(timeout=60)
               for gw, pool in (("gwA", "100.64.0.0/24"), ("gwB", "100.64.1.0/24"))]
    progress("gateways serving")
    pycache = os.path.join(mesh.tmp, "pycache")
    trees = {"current": None}
    if baseline:
        trees["baseline"] = os.path.abspath(baseline)
    records = {label: [] for label in trees}
    warmUps = {}
    try:
        for label, tree in trees.items():
            mesh.waitConverged(timeout=120)
            warmUps[label] = oneRun(f"-warm-up-{label}", nodes["client"], servers, pycache,
                                    tree=tree)
            progress(f"{label}: warm-up run (bytecode compiled and cached, not counted): "
                     f"first packet {warmUps[label]['start_to_first_packet_s']} s; "
                     f"{warmUps[label]['marks']}")
        for index in range(runs):
            # Alternately first and second, so that neither is favoured by
            # what the machine is doing meanwhile.
            order = list(trees.items()) if index % 2 == 0 else list(trees.items())[::-1]
            for label, tree in order:
                mesh.waitConverged(timeout=120)
                record = oneRun(f"{index}-{label}", nodes["client"], servers, pycache,
                                tree=tree)
                records[label].append(record)
                progress(f"{label} run {index + 1}: first packet "
                         f"{record['start_to_first_packet_s']} s, online "
                         f"{record['start_to_online_s']} s via {record['gateway']} "
                         f"({record['method']}); {record['marks']}")
        if profile:
            record = oneRun("-profiled", nodes["client"], servers, pycache,
                            os.path.abspath(profile))
            progress(f"profiled run (not counted), statistics in {profile}: first packet "
                     f"{record['start_to_first_packet_s']} s; {record['marks']}")
        return records, warmUps
    finally:
        for server in servers:
            server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", metavar="FILE",
                        help="after the measured runs, one more (not counted) under cProfile, "
                        "its statistics written to FILE")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout (e.g. `git archive main | tar -x -C DIR`) whose "
                        "client runs alternately with this one's, on the same mesh; its "
                        "figures go under \"baseline\"")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy every node's logs here before the mesh is removed")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    (records, warmUps), wall = runOnMesh(
        "startup", lambda mesh: run(mesh, args.runs, args.profile, args.baseline),
        keep=args.keep_logs or None, hello=0)
    results = {label: dict(summary(runs), warm_up_s=warmUps[label]["start_to_first_packet_s"])
               for label, runs in records.items()}
    for label, figures in results.items():
        progress(f"{label}: median {figures['start_to_first_packet_s']} s, "
                 f"p95 {figures['p95_s']} s, max {figures['max_s']} s, "
                 f"spread {figures['spread_s']} s; online median "
                 f"{figures['start_to_online_median_s']} s")
    result = results["current"]
    if "baseline" in results:
        result["baseline"] = dict(results["baseline"], tree=os.path.abspath(args.baseline))
    result["wall_s"] = wall
    print(json.dumps(result))


if __name__ == "__main__":
    main()
