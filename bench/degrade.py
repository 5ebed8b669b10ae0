"""
Degradation benchmark: does a mnigs client leave a gateway that works
badly, and only that one?

Topology (as bench/failover.py, without the plain node)::

              /-- gwA -- inet
    client -- r1
              \\-- gwB -- inet2     (both 198.51.100.1)

babeld with its default timers; a real twistd mnigs-client with the
shipped defaults plus health.beyond = ["198.51.100.1"] (bench/failover.py's
CLIENT_SETTINGS); real mnigs-servers on gwA and gwB.

Once the client is online and ranks both gateways usable, (b) runs,
then (a): before (a) the client is sent to the other gateway and back
(mnigsctl use, then use -), because without a hot standby what the
client knows of another gateway is the quality history of a session
less than degrade.history_age (30 s) ago; a gateway never used, or used
longer ago, is not "measurably better" (mnigs/client/degrade.py).  So
in (b) only gateways the client was online with during (b) itself can
be moved to for degradation.

  (a) the serving gateway drops 30 % of the packets it receives from the
      mesh (nftables ``numgen random mod 100 < 30 drop`` in prerouting on
      its mesh interfaces; babel's own packets, UDP 6696, are spared, so
      that babel does not drop the routes and the client's move is its
      own doing).  Measured: seconds from the drop to the client's
      "switching to" (decision) and to being online through the other
      gateway (degrade_move_s).  Target 5 s.
  (b) every mesh link drops 10 % (``numgen``
      in postrouting on every mesh interface of every node, babel
      included) for --minutes (5) with both gateways healthy.  Counted:
      every move the client makes (log lines "leaving ..." and
      "switching to ...": false_failovers), and apart: those the health
      probes declared (b_probe_loss_failovers), the degradation moves
      and those babel caused by withdrawing the route to the gateway
      (b_babel_route_losses: with type wired interfaces, babeld drops a
      neighbour that missed two of its last three hellos, which 10 %
      loss does about every 36 hellos per link direction; --link-quality
      uses babel's ETX instead, as a wireless mesh does).  Target 0.

Progress on stderr; the last line of stdout is one JSON object:
{"degrade_move_s": .., "false_failovers": .., ...}

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/degrade.py [--minutes 5] [--keep-logs DIR]
"""

import argparse
import json
import re
import sys
import time

from bench._common import progress, runOnMesh
from bench.failover import (
    CLIENT_SETTINGS,
    TimedClient,
    TimedGateway,
    clientGateway,
    clientRanksAllUsable,
    logEvents,
)
from mnigs.cli.ctl import ask
from tests.mesh.harness import missingForNamespaces, waitUntil

MOVES = r"^(leaving |switching to )"


def _dropOnMesh(node, table, hook, rules):
    """
    A table C{table} with one C{hook} chain on C{node}: C{rules}, each
    given its mesh interfaces' set (C{{ifs}}).
    """
    ifs = ", ".join(f'"{i}"' for i in node.meshInterfaces)
    body = "\n".join("    " + rule.format(ifs=f"{{ {ifs} }}") for rule in rules)
    node.run(["nft", "-f", "-"], input=f"""
table inet {table} {{
  chain {hook.replace("routing", "")} {{
    type filter hook {hook} priority -300; policy accept;
{body}
  }}
}}
""")


def degradeTable(node, percent):
    "Drop C{percent} % of what C{node} receives from the mesh, babel spared."
    _dropOnMesh(node, "mnigs_degrade", "prerouting",
                ["iifname {ifs} udp dport 6696 accept",
                 f"iifname {{ifs}} numgen random mod 100 < {percent} drop"])


def lossyLinks(node, percent):
    "Drop C{percent} % of everything C{node} sends on its mesh links."
    _dropOnMesh(node, "mnigs_lossy", "postrouting",
                [f"oifname {{ifs}} numgen random mod 100 < {percent} drop"])


def removeTable(node, name):
    node.run(["nft", "delete", "table", "inet", name], check=False)


def admin(client, command):
    return ask(client.config["admin"]["socket"], command, timeout=5.0)


def waitOnline(client, name=None, timeout=60):
    waitUntil(lambda: clientGateway(client) is not None
              and (name is None or clientGateway(client) == name),
              timeout, interval=0.1, message=f"the client online via {name or 'a gateway'}")


def visitBoth(client, names):
    "Send the client to the other gateway and back, so its history knows both."
    first = clientGateway(client)
    other = next(n for n in names if n != first)
    for name in (other, first):
        admin(client, f"use {name}")
        waitOnline(client, name)
        time.sleep(6.0)  # a quality window's worth of probes
    admin(client, "use -")
    return first


def moves(client, since):
    return [(round(t - since, 3), m) for t, m in logEvents(client.logPath)
            if t > since and re.search(MOVES, m)]


def partA(nodes, client):
    serving = clientGateway(client)
    degradeTable(nodes[serving], 30)
    started = time.time()
    progress(f"(a) {serving} drops 30 % of what it receives from the mesh")
    try:
        waitUntil(lambda: clientGateway(client) not in (None, serving), 60, interval=0.05,
                  message="the client to leave the degraded gateway")
        online = time.time() - started
    except AssertionError:
        online = None
    finally:
        removeTable(nodes[serving], "mnigs_degrade")
    made = moves(client, started)
    decided = next((t for t, m in made if m.startswith("switching to")), None)
    progress(f"(a) decided after {decided} s, online elsewhere after {online} s; moves {made}")
    return {"degraded_gateway": serving, "degrade_decision_s": decided,
            "degrade_move_s": None if online is None else round(online, 3), "a_moves": made}


def partB(nodes, client, minutes):
    status = client.quickStatus()
    falseBefore = status.get("false_failovers") or 0
    serving = clientGateway(client)
    for node in nodes.values():
        if node.meshInterfaces:
            lossyLinks(node, 10)
    started = time.time()
    progress(f"(b) every mesh link drops 10 % for {minutes:g} min (client on {serving})")
    samples = []
    try:
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            time.sleep(10)
            st = client.quickStatus()
            samples.append({"t": round(time.time() - started), "state": st.get("state"),
                            "gateway": (st.get("current") or {}).get("name")})
            progress(f"(b) {samples[-1]}; moves so far {len(moves(client, started))}")
    finally:
        for node in nodes.values():
            removeTable(node, "mnigs_lossy")
    made = moves(client, started)
    status = client.quickStatus()
    losses = [m for t, m in logEvents(client.logPath) if t > started and m.startswith("gateway lost")]
    routeLost = [m for t, m in made if "the mesh no longer routes" in m]
    degraded = [m for t, m in made if ": degraded: " in m]
    return {"false_failovers": len(made),
            "b_probe_loss_failovers": len(losses), "b_degradation_moves": len(degraded),
            "b_babel_route_losses": len(routeLost),
            "false_failovers_counted_by_client": (status.get("false_failovers") or 0) - falseBefore,
            "b_moves": made, "b_probe_losses": losses, "b_minutes": minutes,
            "b_serving_at_start": serving, "b_samples": samples}


def run(mesh, minutes, linkQuality=False):
    nodes = {name: mesh.node(name) for name in ("client", "r1", "gwA", "gwB")}
    mesh.link(nodes["client"], nodes["r1"])
    for gw in ("gwA", "gwB"):
        mesh.link(nodes["r1"], nodes[gw])
        mesh.internet(nodes[gw])
    progress(f"mesh {mesh.prefix}: starting babeld (default timers"
             f"{', link quality (ETX) on' if linkQuality else ''})")
    extra = None
    if linkQuality:
        extra = {node: [f"interface {ifname} link-quality true" for ifname in node.meshInterfaces]
                 for node in nodes.values() if node.meshInterfaces}
    mesh.startBabel(extra=extra)
    progress(f"babel converged in {mesh.waitConverged(timeout=120):.1f} s")
    servers = {}
    for gw, pool in (("gwA", "100.64.0.0/24"), ("gwB", "100.64.1.0/24")):
        servers[gw] = TimedGateway(nodes[gw], {"methods": {"wireguard": {"pool": pool}}},
                                   name=gw).start(timeout=60)
    client = TimedClient(nodes["client"], CLIENT_SETTINGS).start()
    try:
        client.waitState("online", 90)
        waitUntil(lambda: clientRanksAllUsable(client, ["gwA", "gwB"]), 120, interval=0.5,
                  message="the client to rank both gateways usable")
        progress(f"client online via {clientGateway(client)}")
        result = partB(nodes, client, minutes)
        waitOnline(client, timeout=120)
        progress(f"client online via {clientGateway(client)}; visiting the other gateway")
        visitBoth(client, ["gwA", "gwB"])
        progress(f"back on {clientGateway(client)}")
        result.update(partA(nodes, client))
        result["client_health"] = (client.quickStatus().get("current") or {}).get("health")
        return result
    finally:
        client.stop()
        for server in servers.values():
            server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--keep-logs", metavar="DIR", default=None)
    parser.add_argument("--link-quality", action="store_true",
                        help="babel's link-quality estimation (ETX, as on wireless links) on every "
                             "mesh interface; without it, type wired: a neighbour that misses two "
                             "hellos of three is dropped, with its routes")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    result, wall = runOnMesh("degrade", lambda mesh: run(mesh, args.minutes, args.link_quality),
                             keep=args.keep_logs, hello=0)
    result["targets"] = {"degrade_move_s": 5.0, "false_failovers": 0}
    result["babel_link_quality"] = args.link_quality
    result["wall_s"] = wall
    print(json.dumps(result))


if __name__ == "__main__":
    main()
