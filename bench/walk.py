"""
Walk benchmark: how long the client's cjdns route source takes to walk a
synthetic cjdns overlay of 10,000 nodes (and 100,000) and find its 5
gateways, how many admin queries it keeps in flight at most, and the
walking process's peak memory.  No namespaces, no root.

What is REAL:
  - the walk: mnigs.routing.cjdns.CjdnsRouteSource and its
    mnigs.routing.cjdnswalk.MeshWalk (breadth first, at most --concurrency
    RouterModule_getPeers calls at once, spliced labels), as the client
    builds it, with max_nodes set to the overlay's size;
  - the admin client, mnigs.cjdns.admin.CjdnsAdmin, over a real UDP
    socket on 127.0.0.1, with a password (cookie, then a signed call);
  - the scan that follows: mnigs.client.discovery.Discovery ordering the
    candidates, asking each for gateway.info and verifying the offers.

What is SIMULATED (cjdns cannot be installed here):
  - cjdns: the FAKE admin endpoint of tests/unit/fakecjdns.py (which says
    which cjdns source files each function follows: Admin.c's auth and
    limits, NodeStore_dumpTable, InterfaceController_peerStats,
    RouterModule_getPeers with labels relative to the node asked and 8
    peers a page, NodeStore_getRouteLabel), in its own process
    (bench/_walkserver.py), for node 0 of
  - the overlay: tests/unit/syntheticmesh.py, seeded: a bushy tree (2-4
    children a node, breadth first) plus size/4 random cross links, at
    most 7 peers a node (cjdns's 4-bit label form: interfaces 1-7);
    10,000 nodes come out about 9 hops deep with a mean degree near 2.5,
    a small world as Hyperboria is (a long-haul mesh would not fit cjdns's
    59-bit labels either).  Keys are valid cjdns keys (their addresses are
    derived as cjdns derives them, in fc00::/8) drawn from a counter, not
    at random, to build 100,000 in under a minute (minutes on a busy
    machine);
  - the mesh's round trips: every RouterModule_getPeers is answered after
    --rtt-ms (50 ms by default), what a real cjdns waits for the remote
    node; other functions answer at once;
  - the gateways: 5 nodes at distinct hop counts from 2 to the overlay's
    deepest level (so "the nearest 5" is one set and order, and the walk
    must reach its last level); the probe is a STUB JSON-RPC client that
    answers gateway.info for their addresses with signed offers and
    refuses every other address at once (bench/_walker.py).

Measured in the walking process (bench/_walker.py), one fresh process a
walk, --repeats walks of the last size against the same endpoint (its
line has the median walk; walk_s_runs lists them all): walk_s, from asking
for candidates to having them all (the gateways among them at their true
hop counts: checked); scan_s, the probe stage; peak_inflight, the most
admin exchanges awaiting an answer at any send (the walk's cap is
--concurrency, 200 by default); rss_mb, the process's VmHWM at the end
of the walk (rss_with_scan_mb: after the scan too).  Since
both processes are Python on a shared 2-core machine, the line also has
the CPU seconds each used during the walk (walk_cpu_s, fake_cpu_s) and
the load average: walk_s much above walk_cpu_s + fake_cpu_s means other
work was competing for the cores.

Progress on stderr; stdout has one JSON line per size, the 10,000-node
one last: {"nodes": .., "walk_s": .., "peak_inflight": .., "rss_mb": ..,
...}.  From the root of a checkout:

    PYTHONPATH=. .venv/bin/python bench/walk.py [--sizes 100000,10000]
"""

import argparse
import ipaddress
import json
import os
import select
import subprocess
import sys
import time

from bench._common import progress, unwindOnSignals

HERE = os.path.dirname(os.path.abspath(__file__))


def startServer(size, options):
    """The fake endpoint's process, and the line it printed once listening."""
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_walkserver.py"), "--size", str(size),
         "--seed", str(options.seed), "--gateways", str(options.gateways),
         "--rtt-ms", str(options.rtt_ms)],
        stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    deadline = time.monotonic() + options.build_timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([server.stdout], [], [], left)[0]:
            server.kill()
            server.wait()
            raise RuntimeError(f"the fake endpoint did not start within {options.build_timeout} s")
        chunk = os.read(server.stdout.fileno(), 65536)
        if not chunk:
            server.wait()
            raise RuntimeError(f"the fake endpoint exited ({server.returncode})")
        line += chunk
    return server, line.decode().strip()


def cpuSecondsOf(pid):
    """User and system CPU seconds process C{pid} has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def walkOnce(line, size, options):
    walker = subprocess.run(
        [sys.executable, os.path.join(HERE, "_walker.py"), line,
         "--concurrency", str(options.concurrency), "--budget", str(options.budget),
         "--max-nodes", str(size)],
        capture_output=True, text=True, timeout=options.budget + 120,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    lines = walker.stdout.strip().splitlines()
    if walker.returncode or not lines:
        raise RuntimeError(f"the walker failed ({walker.returncode}): {walker.stderr[-2000:]}")
    return json.loads(lines[-1])


def measure(size, options, repeats):
    progress(f"{size} nodes: building the overlay and starting the fake endpoint")
    server, line = startServer(size, options)
    try:
        overlay = json.loads(line)
        progress(f"{size} nodes: built in {overlay['build_s']} s, depth {overlay['depth']}, "
                 f"mean degree {overlay['mean_degree']}; walking")
        runs = []
        for run in range(repeats):
            serverCpu = cpuSecondsOf(server.pid)
            loadBefore = os.getloadavg()[0]
            walked = walkOnce(line, size, options)
            walked["fake_cpu_s"] = round(cpuSecondsOf(server.pid) - serverCpu, 2)
            walked["load_avg_1m"] = round(max(loadBefore, os.getloadavg()[0]), 2)
            progress(f"{size} nodes, run {run + 1}/{repeats}: walk {walked['walk_s']} s "
                     f"(walker CPU {walked['walk_cpu_s']} s, fake endpoint CPU "
                     f"{walked['fake_cpu_s']} s, load {walked['load_avg_1m']})")
            runs.append(walked)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    runs.sort(key=lambda r: r["walk_s"])
    walked = runs[len(runs) // 2]  # the median run
    expected = [[ipaddress.ip_address(a), float(hops)] for a, hops in overlay["gateways"]]
    found = [[ipaddress.ip_address(a), d] for a, d in walked["gateways_found"]]
    result = {"nodes": size, "walk_s": walked["walk_s"], "peak_inflight": walked["peak_inflight"],
              "rss_mb": walked["rss_mb"], "nodes_found": walked["nodes_found"],
              "walk_s_runs": [r["walk_s"] for r in runs],
              "gateways": len(expected),
              "nearest_found_in_order": found == expected and all(
                  [[ipaddress.ip_address(a), d] for a, d in r["gateways_found"]] == expected
                  for r in runs),
              "gateways_at_true_hops": walked["gateways_at_true_hops"],
              "gateway_hops": [hops for _, hops in overlay["gateways"]],
              "scan_s": walked["scan_s"], "found_s": walked["found_s"],
              "rss_with_scan_mb": walked["rss_with_scan_mb"],
              "concurrency": options.concurrency, "rtt_ms": options.rtt_ms,
              "depth": overlay["depth"], "mean_degree": overlay["mean_degree"],
              "walk_cpu_s": walked["walk_cpu_s"], "fake_cpu_s": walked["fake_cpu_s"],
              "load_avg_1m": walked["load_avg_1m"], "build_s": overlay["build_s"]}
    progress(f"{size} nodes: walked in {result['walk_s']} s, {result['peak_inflight']} in flight "
             f"at most, {result['rss_mb']} MB peak; gateways nearest first: "
             f"{result['nearest_found_in_order']}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,10000",
                        help="overlay sizes, the one for the last line last")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--gateways", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--budget", type=float, default=600.0,
                        help="the walk's time budget, seconds (the source's default is 30)")
    parser.add_argument("--build-timeout", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=5,
                        help="walks of the last size (its figures: the median walk)")
    options = parser.parse_args()
    unwindOnSignals()
    results = []
    try:
        sizes = [int(s) for s in options.sizes.split(",")]
        for n, size in enumerate(sizes):
            results.append(measure(size, options, options.repeats if n == len(sizes) - 1 else 1))
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e)}))
        raise
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["nearest_found_in_order"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
