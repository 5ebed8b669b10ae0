"""
The Yggdrasil case of bench/discovery.py: how fast the client walks a
real Yggdrasil 0.4 overlay, and how soon the first offer is in.

Set-up: 10 yggdrasil 0.4.7 daemons in namespaces (L{tests.mesh.yggdrasilnet}:
peered over veths, no multicast, no babeld), a spine from the client to the
gateway with two leaves::

    client - y1 - y2 - y3 - y4 - y5 - y6 - gw      (gw 7 overlay hops away)
                  |         |
                  l2        l4

gw runs a real twistd mnigs-server listening on "::" (forward method only:
an offer is all that is asked for) with an uplink.  Each run is a fresh
process in the client namespace (bench/_yggdrasilprobe.py): the client's
default [sources.yggdrasil] and discovery settings, a walk from the
client's admin socket, then the scan of what it found.

  - yggdrasil_nodes_per_s: nodes found by the walk / the walk's seconds
    (median over the warm runs);
  - yggdrasil_first_offer_s: seconds from the start of the walk to the
    first verified offer (median over the warm runs).

Warm runs start once the tree has settled and the client has pinged every
node (yggdrasil then has a path to each).  One cold run comes first, right
after the tree settled and before any traffic, reported apart: yggdrasil
0.4.7 may then time out on some nodes for a minute (see
L{tests.mesh.yggdrasilnet.YggdrasilOverlay.waitTreeSettled}).
"""

import json
import statistics
import sys

from bench._common import progress
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment
from tests.mesh.harness import Mesh, missingForNamespaces
from tests.mesh.yggdrasilnet import YggdrasilOverlay

SPINE = ["client", "y1", "y2", "y3", "y4", "y5", "y6", "gw"]
LEAVES = [("y2", "l2"), ("y4", "l4")]
PROBE = __file__.replace("_yggdrasilcase.py", "_yggdrasilprobe.py")


def runProbe(client, endpoint):
    result = client.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                         sys.executable, PROBE, endpoint], timeout=180)
    return json.loads(result.stdout.strip().splitlines()[-1])


def perSecond(run):
    return round(run["nodes"] / run["walk_s"], 1) if run.get("walk_s") else None


def measureYggdrasil(repeats=5):
    """
    Returns the keys bench/discovery.py adds to its JSON.
    """
    missing = missingForNamespaces("yggdrasil", "ping")
    if missing:
        return {"yggdrasil_nodes_per_s": None, "yggdrasil_first_offer_s": None,
                "yggdrasil_skipped": missing}
    with Mesh(None) as mesh:
        for name in SPINE + [leaf for _, leaf in LEAVES]:
            mesh.node(name)
        overlay = YggdrasilOverlay(mesh)
        for a, b in zip(SPINE, SPINE[1:]):
            overlay.link(a, b)
        for a, b in LEAVES:
            overlay.link(a, b)
        mesh.internet("gw")
        overlay.start(timeout=60)
        client = mesh.nodes["client"]
        progress(f"yggdrasil: {len(overlay.nodes())} daemons peered, tree settled")
        gateway = GatewayProcess(mesh.nodes["gw"], {
            "rpc": {"listen": ["::"]}, "methods": {"wireguard": {"enabled": False}},
            "nft": {"table": "mnigsbenchygg"}}, name="gw")
        try:
            gateway.start(timeout=60)
            endpoint = overlay.endpoint(client)
            cold = runProbe(client, endpoint)
            progress(f"yggdrasil cold run: walk {cold.get('walk_s')} s, {cold.get('nodes')} nodes, "
                     f"first offer {cold.get('first_offer_s')} s")
            overlay.waitAllReachable(client, timeout=60)
            warm = []
            for k in range(repeats):
                run = runProbe(client, endpoint)
                warm.append(run)
                progress(f"yggdrasil run {k + 1}: walk {run.get('walk_s')} s, {run.get('nodes')} nodes "
                         f"({perSecond(run)}/s), first offer {run.get('first_offer_s')} s "
                         f"at distance {run.get('first_offer_distance')}")
        finally:
            gateway.stop()

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    return {
        "yggdrasil_nodes_per_s": median(perSecond(r) for r in warm),
        "yggdrasil_first_offer_s": median(r.get("first_offer_s") for r in warm),
        "yggdrasil": {
            "nodes": len(SPINE) + len(LEAVES), "gateway_hops": len(SPINE) - 1,
            "walk_s": [r.get("walk_s") for r in warm],
            "nodes_found": [r.get("nodes") for r in warm],
            "nodes_per_s": [perSecond(r) for r in warm],
            "first_offer_s": [r.get("first_offer_s") for r in warm],
            "remote_calls": [r.get("remote_calls") for r in warm],
            "budget_s": warm[0].get("budget_s") if warm else None,
            "concurrency": warm[0].get("concurrency") if warm else None,
            "cold_run": {key: cold.get(key) for key in
                         ("walk_s", "nodes", "remote_calls", "remote_answered", "first_offer_s")},
            "setting": "10 yggdrasil 0.4.7 daemons, spine of 8 with 2 leaves, gateway 7 hops "
                       "away; warm runs after the client pinged every node",
        },
    }


if __name__ == "__main__":
    from bench._common import unwindOnSignals

    unwindOnSignals()
    print(json.dumps(measureYggdrasil(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
