"""
The FAKE cjdns admin endpoint of bench/walk.py, in a process of its own
(so that the walking process's time and memory are its own): a
SYNTHETIC overlay of SIZE nodes (tests.unit.syntheticmesh, keys from
manyKeys), the fake admin API of its node 0 (tests.unit.fakecjdns, which
says what it follows of cjdns's code) on a real UDP socket on 127.0.0.1,
every RouterModule_getPeers answered after --rtt-ms milliseconds (what a
real cjdns waits for the remote node's answer; the local functions answer
at once).

    python bench/_walkserver.py --size N [--seed S] [--gateways 5] [--rtt-ms 50]

Once listening it prints one JSON line on stdout: the port, the password,
the gateways (address and true hop count, nearest first), the overlay's
depth and degree, and how long building it took; then it serves until
killed.  The gateways are at distinct hop counts, the farthest at the
overlay's greatest depth: the walk must reach its last level to find
them all, and "the nearest 5" is the same set and order whatever the
order within a level.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time


def chooseGateways(mesh, count):
    """
    C{count} nodes at distinct hop counts spread from 2 hops to the
    deepest level (the deepest always included), each the lowest index
    at its level: deterministic for a mesh.
    """
    bfs = mesh.bfs(0)
    deepest = max(hops for hops, _ in bfs.values())
    levels = sorted({round(2 + (deepest - 2) * i / max(1, count - 1)) for i in range(count)})
    byLevel = {}
    for index, (hops, _) in sorted(bfs.items()):
        byLevel.setdefault(hops, index)
    return [byLevel[level] for level in levels]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--gateways", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--password", default="bench-walk")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    options = parser.parse_args()

    from twisted.internet import reactor

    from mnigs.cjdns.names import formatIp
    from tests.unit.fakecjdns import FakeCjdns
    from tests.unit.fakeudp import FakeCjdnsProtocol
    from tests.unit.syntheticmesh import SyntheticMesh, manyKeys

    started = time.monotonic()
    keys = manyKeys(options.seed, options.size, workers=options.workers)
    mesh = SyntheticMesh(seed=options.seed, size=options.size, gateways=0, keys=keys)
    mesh.gateways = chooseGateways(mesh, options.gateways)
    fake = FakeCjdns(mesh, password=options.password, clock=reactor,
                     latency={"RouterModule_getPeers": options.rtt_ms / 1000})
    bfs = mesh.bfs(0)
    port = reactor.listenUDP(0, FakeCjdnsProtocol(fake, reactor), interface="127.0.0.1",
                             maxPacketSize=65536)
    # Requests come in bursts of up to the walk's concurrency, as answers
    # do (mnigs.cjdns.admin says why the buffer).
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    degrees = [len(node.peers) for node in mesh.nodes]
    print(json.dumps({
        "port": port.getHost().port, "password": options.password,
        "gateways": [[formatIp(mesh.nodes[i].ip), bfs[i][0]] for i in mesh.gateways],
        "nodes": len(mesh), "reachable": len(bfs), "depth": max(h for h, _ in bfs.values()),
        "mean_degree": round(statistics.mean(degrees), 2), "max_degree": max(degrees),
        "build_s": round(time.monotonic() - started, 1)}), flush=True)
    sys.stdout.close()  # nothing more to say; the parent reads no further
    reactor.run()


if __name__ == "__main__":
    main()
