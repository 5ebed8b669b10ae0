"""
Failover benchmark: how long the internet is gone for a mnigs client, and
for a plain babel node next to it, when the gateway both use dies
silently.  babeld runs with its default timers (hello 4 s), as deployed
meshes do.

Topology (the two gateways equally far from everyone, so that babel and
the client can share a gateway and keep sharing it after a revival)::

    client --\\          /-- gwA -- inet
              r1 ------<
    plain  --/          \\-- gwB -- inet2

  - client runs a real twistd mnigs-client with the shipped defaults
    (etc/mnigs-client.toml), plus health.beyond = ["198.51.100.1"]; the
    default hot standby (standby.count = 1: a failover is a route change)
    unless --standby 0.  Every death waits for the standby to be ready.
  - plain runs no mnigs client: it reaches 198.51.100.1 only through
    babel's announced default route, from its node address.
  - gwA and gwB run real twistd mnigs-servers (WireGuard and forward).
    They admit only lease holders by design: BENCH-ONLY SHORTCUT, plain is
    let through by rules inserted into mnigs's own nft table (forward both
    ways, masquerade in postrouting) after each server started.  No real
    deployment would do this; it only makes the babel comparison possible.

Each death: both nodes send 20 echo requests a second to 198.51.100.1
(bench/_pinger.py, started before the death, stopped after both recovered);
the gateway both use is silenced with an nft drop-everything table (as in
tests/mesh/test_client.py: no link goes down, babel only notices by its
timers); outage = time from the last reply before the death to the first
reply after it.  Then the gateway is revived (table deleted), and the next
death waits until babel has routes through both gateways again and the
client ranks both usable; no death comes before babel has run 64 s (a
full 16-hello history per neighbour, as on a mesh that has been running:
a fresh one gives up on a silent neighbour sooner).  When babel and the
client disagree on the gateway, one unmeasured "steering" death of
babel's gateway brings them together first; every death, steering or not,
is listed under "deaths".

The client's and gateways' logs are written with microsecond timestamps
(bench/_timedlog.py) and each measured death is taken apart:
last reply -> loss declared -> the standby promoted (or: lease granted by
the other gateway -> old tunnel removed -> new tunnel up) -> online ->
first reply.

Progress on stderr; the last line of stdout is one JSON object:
{"mnigs_outage_s": [..], "babel_outage_s": [..], "mnigs_median_s": ..,
 "mnigs_p95_s": .., "mnigs_max_s": .., "babel_median_s": .., "ratio": ..,
 "promotions": .., ...}

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/failover.py [--deaths 10] [--standby 1]
"""

import argparse
import datetime
import ipaddress
import json
import os
import re
import statistics
import sys
import time

from bench._common import keepLogs, progress, unwindOnSignals
from mnigs.cli.ctl import ask
from tests.mesh.clientproc import ClientProcess
from tests.mesh.commands import terminate
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment, twistdArgv
from tests.mesh.harness import PROTO_BABEL, Mesh, missingForNamespaces, waitUntil

INTERNET = "198.51.100.1"
PING_INTERVAL = 0.05
HERE = os.path.dirname(os.path.abspath(__file__))
PINGER = os.path.join(HERE, "_pinger.py")
LOGGER = "bench._timedlog.observer"
LOG_TIME = "%Y-%m-%dT%H:%M:%S.%f"

# The ClientProcess test harness shortens several settings for fast tests;
# a benchmark puts the shipped defaults back (etc/mnigs-client.toml).
CLIENT_SETTINGS = {
    "discovery": {"timeout": 2.0, "rescan_interval": 60.0, "sources": ["babel", "kernel"]},
    "methods": {"order": ["wireguard", "forward"], "connect_timeout": 5.0,
                "wireguard": {"keepalive": 5}},
    "policy": {"switch_hold": 60.0},
    "health": {"beyond": [INTERNET]},
    "standby": {"count": 1},
}

RECOVERY_TIMEOUT = 90.0    # per death, for both pingers to get answers again
STABLE_TIMEOUT = 180.0     # after a revival (the failure cooldown is 30 s)
SETTLE = 5.0               # agreement must hold this long before a death
# babeld judges a neighbour by its last 16 hellos: before they are all in
# (16 x 4 s), a freshly started mesh gives up on a silent neighbour sooner
# than a mesh that has run for a while, which is what a deployed one has.
WARMUP = 64.0
MAX_STEERING = 4


def withTimedLog(argv, logPath):
    """
    twistd argv with the microsecond log observer inserted before the
    plugin name, and the environment that points it at C{logPath}.
    """
    plugin = next(i for i, arg in enumerate(argv) if arg.startswith("mnigs-"))
    env = dict(daemonEnvironment(), MNIGS_BENCH_LOG=logPath)
    return argv[:plugin] + ["--logger", LOGGER] + argv[plugin:], env


class TimedGateway(GatewayProcess):
    def start(self, wait=True, timeout=30):
        argv, env = withTimedLog(
            twistdArgv("mnigs-server", self.configPath, self.logPath,
                       os.path.join(self.dir, "twistd.pid")), self.logPath)
        self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"), env=env)
        if wait:
            self.waitServing(timeout)
        return self


class TimedClient(ClientProcess):
    def start(self):
        argv, env = withTimedLog(
            twistdArgv("mnigs-client", self.configPath, self.logPath,
                       os.path.join(self.dir, "twistd.pid")), self.logPath)
        self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"), env=env)
        return self

    def quickStatus(self):
        # The admin socket is a path, not namespaced: ask it directly
        # instead of spawning mnigsctl in the namespace every poll.
        try:
            return ask(self.config["admin"]["socket"], "status", timeout=2.0)
        except (OSError, ValueError) as e:
            return {"state": None, "error": str(e)}


# -- faults ---------------------------------------------------------------

CHAOS = """
table inet mnigs_chaos {
  chain input { type filter hook input priority -300; policy drop; }
  chain forward { type filter hook forward priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
"""


def silence(node):
    node.run(["nft", "-f", "-"], input=CHAOS)


def revive(node):
    node.run(["nft", "delete", "table", "inet", "mnigs_chaos"])


def admitPlainNode(gateway, address, uplink="up0"):
    """
    The bench-only shortcut (see the module docstring): let C{address}
    through mnigs's gate without a lease.
    """
    table = gateway.run(["nft", "list", "table", "inet", "mnigs"]).stdout
    for chain in ("chain forward", "chain postrouting"):
        if chain not in table:
            raise RuntimeError(f"mnigs's nft table on {gateway.name} has no {chain}:\n{table}")
    base = ["nft", "insert", "rule", "inet", "mnigs", "forward"]
    gateway.run(base + ["ip", "saddr", address, "accept"])
    gateway.run(base + ["ip", "daddr", address, "accept"])
    gateway.run(["nft", "add", "rule", "inet", "mnigs", "postrouting",
                 "oifname", uplink, "ip", "saddr", address, "masquerade"])


# -- measuring ------------------------------------------------------------

class PingStream:
    """bench/_pinger.py running in a node; its answers read from its log."""

    def __init__(self, node, label, source=None):
        self.node = node
        self.label = label
        self.path = os.path.join(node.tmp, f"ping-{label}-{time.time_ns()}.log")
        argv = [sys.executable, PINGER, INTERNET, "--interval", str(PING_INTERVAL)]
        if source:
            argv += ["--source", source]
        self.process = node.spawn(argv, log=self.path)

    def replies(self):
        """Receive times of every answer so far, oldest first."""
        times = []
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 4 and parts[0] == "R":
                        times.append(float(parts[3]))
        except FileNotFoundError:
            pass
        return times

    def errors(self):
        with open(self.path) as f:
            return [line.strip() for line in f if line.startswith("E ")]

    def stop(self):
        terminate([self.process])


def outage(replies, died):
    """
    (last answer before C{died}, first answer after it): the outage is
    their difference.  C{None} if either is missing.
    """
    before = [t for t in replies if t <= died]
    after = [t for t in replies if t > died]
    if not before or not after:
        return None
    return before[-1], after[0]


def pingFrom(node, source):
    # Without -I ping would pick the link address; only the node address is
    # admitted on the gateways.
    result = node.run(["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", source, INTERNET],
                      check=False, timeout=10)
    return result.returncode == 0


def steady(stream, window=1.5):
    now = time.time()
    recent = [t for t in stream.replies() if t > now - window]
    return len(recent) >= 0.8 * window / PING_INTERVAL


# -- who uses which gateway ------------------------------------------------

def babelGateway(r1, gateways):
    """The gateway r1's babel default route goes to (r1 decides for both)."""
    for destination, via, proto in r1.routes(PROTO_BABEL):
        if destination != "0.0.0.0/0":
            continue
        for gw in gateways:
            if via in {str(ipaddress.ip_interface(a).ip) for a in gw.interfaceAddresses.values()}:
                return gw.name
    return None


def clientGateway(client):
    status = client.quickStatus()
    if status.get("state") not in ("online", "degraded"):
        return None
    return (status.get("current") or {}).get("name")


def babelHasBothDefaults(r1, interfaces):
    """r1's babel has a feasible default route through each gateway."""
    live = set()
    for line in r1.babelDump().splitlines():
        if not line.startswith("add route ") or " prefix 0.0.0.0/0 " not in line:
            continue
        metric = re.search(r" metric (\d+) ", line)
        ifname = re.search(r" if (\S+)", line)
        if metric and ifname and int(metric.group(1)) < 0xFFFF:
            live.add(ifname.group(1))
    return set(interfaces) <= live


def standbyReady(client):
    status = client.quickStatus()
    return any(entry.get("state") == "ready"
               for entry in (status.get("standby") or {}).get("standbys", []))


def clientRanksAllUsable(client, names):
    status = client.quickStatus()
    if status.get("state") != "online":
        return False
    usable = {g["name"] for g in status.get("gateways", []) if g.get("usable")}
    return set(names) <= usable


def checkDaemons(mesh, client, servers):
    """
    Fail loudly if a daemon of ours is gone: the machine is shared, and a
    babeld killed from outside would be measured as a very slow babel.
    """
    gone = [f"babeld on {n.name} (exit {n.babeld.returncode})" for n in mesh.nodes.values()
            if n.babeld is not None and n.babeld.poll() is not None]
    gone += [f"mnigs-server on {s.node.name}" for s in servers if s.process.poll() is not None]
    if client.process.poll() is not None:
        gone.append("mnigs-client")
    if gone:
        raise RuntimeError(f"daemons died under the benchmark: {', '.join(gone)}")


def waitStable(mesh, r1, client, gateways, r1Interfaces):
    started = time.monotonic()
    waitUntil(lambda: babelHasBothDefaults(r1, r1Interfaces), STABLE_TIMEOUT, interval=0.5,
              message="babel routes through both gateways")
    mesh.waitConverged(timeout=STABLE_TIMEOUT)
    waitUntil(lambda: clientRanksAllUsable(client, [g.name for g in gateways]),
              STABLE_TIMEOUT, interval=0.5, message="the client to rank both gateways usable")
    if client.config["standby"]["count"]:
        waitUntil(lambda: standbyReady(client), STABLE_TIMEOUT, interval=0.5,
                  message="the client's standby to be ready")
    agreement = (clientGateway(client), babelGateway(r1, gateways))
    time.sleep(SETTLE)
    again = (clientGateway(client), babelGateway(r1, gateways))
    if again != agreement:  # something moved: give it one more settle period
        time.sleep(SETTLE)
    return time.monotonic() - started


# -- the client's and gateways' logs ---------------------------------------

_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}) \[[^\]]*\] (.*)$")


def logEvents(path):
    events = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _LINE.match(line.rstrip("\n"))
                if m:
                    when = datetime.datetime.strptime(m.group(1), LOG_TIME).timestamp()
                    events.append((when, m.group(2)))
    except FileNotFoundError:
        pass
    return events


def firstAfter(events, after, pattern):
    rx = re.compile(pattern)
    for when, message in events:
        if when > after and rx.search(message):
            return when, message
    return None


def breakdown(client, gatewayLogs, wgInterface, died, lastReply, firstReply, newGateway):
    """
    Where a failover's time went, in seconds after the last answer.
    """
    events = logEvents(client.logPath)
    # The standbys' devices are the configured one's slots (mc...0, mc...1).
    device = re.escape(wgInterface.rstrip("0123456789")) + r"\d+"
    marks = {
        "loss_declared": firstAfter(events, died, r"^gateway lost: "),
        "failover_started": firstAfter(events, died, r"^leaving .+?: "),
        "standby_promoted": firstAfter(events, died, r"takes over \(a route change\)$"),
        "old_tunnel_removed": firstAfter(events, died, rf"^{device}: removed"),
        "new_daemon_spawned": firstAfter(events, died, r"spawned pid \d+"),
        "new_daemon_ready": firstAfter(events, died, r": ready \(pid"),
        "new_tunnel_up": firstAfter(events, died, rf"^{device}: up$"),
        "online": firstAfter(events, died, r"^online via "),
    }
    if newGateway in gatewayLogs:
        marks["lease_granted"] = firstAfter(logEvents(gatewayLogs[newGateway]), died,
                                            r"^lease \S+ granted: ")
    result = {name: (None if mark is None else round(mark[0] - lastReply, 3))
              for name, mark in marks.items()}
    promoted = marks["standby_promoted"] is not None
    if result.get("lease_granted") is None and newGateway in gatewayLogs and not promoted:
        result["lease_note"] = ("no grant logged: the gateway still held the client's lease "
                                "(the release sent to the silenced gateway was lost) and "
                                "extended it")
    online = marks["online"]
    result["promoted"] = promoted and online is not None and "took over" in online[1]
    result["first_reply"] = round(firstReply - lastReply, 3)
    result["died_after_last_reply"] = round(died - lastReply, 3)
    return dict(sorted(result.items(),
                       key=lambda kv: kv[1] if isinstance(kv[1], float) else float("inf")))


# -- one death -------------------------------------------------------------

def measuredDeath(nodes, client, gateways, gatewayLogs, silenced):
    plain = nodes["plain"]
    streams = {"mnigs": PingStream(nodes["client"], "client"),
               "babel": PingStream(plain, "plain", source=plain.address)}
    try:
        for label, stream in streams.items():
            waitUntil(lambda: steady(stream), 20, interval=0.2,
                      message=f"{label} pings answered steadily before the death")
        before = {"client": clientGateway(client), "babel": babelGateway(nodes["r1"], gateways)}
        silence(silenced)
        died = time.time()
        progress(f"silenced {silenced.name} (client on {before['client']}, "
                 f"babel on {before['babel']})")

        def recovered():
            return all(any(t > died for t in s.replies()) for s in streams.values())

        try:
            waitUntil(recovered, RECOVERY_TIMEOUT, interval=0.2, message="both to recover")
        except AssertionError:
            progress("not both recovered within the timeout")
        time.sleep(1.0)
    finally:
        for stream in streams.values():
            stream.stop()
    after = {"client": clientGateway(client), "babel": babelGateway(nodes["r1"], gateways)}
    record = {"silenced": silenced.name, "before": before, "after": after,
              "shared": before["client"] == before["babel"] == silenced.name}
    for label, stream in streams.items():
        span = outage(stream.replies(), died)
        record[f"{label}_outage_s"] = None if span is None else round(span[1] - span[0], 3)
        if label == "mnigs" and span is not None:
            record["mnigs_breakdown"] = breakdown(client, gatewayLogs, client.wgInterface, died,
                                                  span[0], span[1], after["client"])
        sendErrors = [e for e in stream.errors() if float(e.split()[2]) > died]
        if sendErrors:
            record[f"{label}_send_errors"] = len(sendErrors)
    return record


def steeringDeath(nodes, gateways, silenced, wanted):
    """
    Silence babel's gateway (the client is elsewhere) until r1 routes
    through C{wanted}; not measured.
    """
    silence(silenced)
    died = time.monotonic()
    try:
        waitUntil(lambda: babelGateway(nodes["r1"], gateways) == wanted, RECOVERY_TIMEOUT,
                  interval=0.2, message=f"babel to move to {wanted}")
    finally:
        revive(silenced)
    return time.monotonic() - died


# -- main ------------------------------------------------------------------

def run(mesh, deaths):
    nodes = {name: mesh.node(name) for name in ("client", "plain", "r1", "gwA", "gwB")}
    mesh.link(nodes["client"], nodes["r1"])
    mesh.link(nodes["plain"], nodes["r1"])
    r1Interfaces = {}
    for gw in ("gwA", "gwB"):
        r1If, _ = mesh.link(nodes["r1"], nodes[gw])
        r1Interfaces[gw] = r1If
        mesh.internet(nodes[gw])
    gateways = [nodes["gwA"], nodes["gwB"]]
    progress(f"mesh {mesh.prefix}: starting babeld (default timers)")
    mesh.startBabel()
    babelStarted = time.monotonic()
    progress(f"babel converged in {mesh.waitConverged(timeout=120):.1f} s")

    servers = {}
    for gw, pool in (("gwA", "100.64.0.0/24"), ("gwB", "100.64.1.0/24")):
        servers[gw] = TimedGateway(nodes[gw], {"methods": {"wireguard": {"pool": pool}}},
                                   name=gw).start(timeout=60)
        admitPlainNode(nodes[gw], nodes["plain"].address)
    progress("gateways serving; plain node admitted on both (bench-only rules)")
    gatewayLogs = {gw: server.logPath for gw, server in servers.items()}

    client = TimedClient(nodes["client"], CLIENT_SETTINGS).start()
    try:
        client.waitState("online", 90)
        progress(f"client online via {clientGateway(client)}")
        waitUntil(lambda: pingFrom(nodes["plain"], nodes["plain"].address), 60, interval=0.5,
                  message="the plain node to reach the internet through babel")

        records, steering = [], 0
        while len([r for r in records if r.get("measured")]) < deaths:
            checkDaemons(mesh, client, servers.values())
            took = waitStable(mesh, nodes["r1"], client, gateways, r1Interfaces.values())
            clientGw = clientGateway(client)
            babelGw = babelGateway(nodes["r1"], gateways)
            progress(f"stable after {took:.1f} s: client on {clientGw}, babel on {babelGw}")
            if clientGw is None or babelGw is None:
                raise RuntimeError(f"no gateway in use (client {clientGw}, babel {babelGw})")
            if clientGw != babelGw and steering < MAX_STEERING:
                steering += 1
                target = nodes[babelGw]
                took = steeringDeath(nodes, gateways, target, clientGw)
                progress(f"steering: silenced {babelGw} for {took:.1f} s so babel moves "
                         f"to {clientGw}")
                records.append({"silenced": babelGw, "steering": True,
                                "before": {"client": clientGw, "babel": babelGw}})
                continue
            warm = WARMUP - (time.monotonic() - babelStarted)
            if warm > 0:
                progress(f"babel warm-up: {warm:.0f} s more before the first death")
                time.sleep(warm)
                continue  # and check again that nothing moved meanwhile
            record = measuredDeath(nodes, client, gateways, gatewayLogs, nodes[clientGw])
            checkDaemons(mesh, client, servers.values())
            record["measured"] = True
            records.append(record)
            progress(f"death {len([r for r in records if r.get('measured')])}: "
                     f"mnigs {record['mnigs_outage_s']} s, babel {record['babel_outage_s']} s"
                     f"{'' if record['shared'] else ' (babel was on the other gateway)'}"
                     f"; breakdown {record.get('mnigs_breakdown')}")
            revive(nodes[clientGw])
        return records, steering
    finally:
        client.stop()
        for server in servers.values():
            server.stop()


def percentile(values, p):
    "The C{p}th percentile (linear between the closest ranks), or None."
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 3)


def summary(records, steering):
    measured = [r for r in records if r.get("measured")]
    shared = [r for r in measured if r["shared"]]
    mnigs = [r["mnigs_outage_s"] for r in shared if r["mnigs_outage_s"] is not None]
    babel = [r["babel_outage_s"] for r in shared if r["babel_outage_s"] is not None]
    mnigsMedian = round(statistics.median(mnigs), 3) if mnigs else None
    babelMedian = round(statistics.median(babel), 3) if babel else None
    return {
        "mnigs_outage_s": mnigs,
        "babel_outage_s": babel,
        "mnigs_median_s": mnigsMedian,
        "mnigs_p95_s": percentile(mnigs, 95),
        "mnigs_max_s": max(mnigs) if mnigs else None,
        "babel_median_s": babelMedian,
        "ratio": (round(mnigsMedian / babelMedian, 3)
                  if mnigsMedian is not None and babelMedian else None),
        "promotions": sum(1 for r in shared if (r.get("mnigs_breakdown") or {}).get("promoted")),
        "standby_count": CLIENT_SETTINGS["standby"]["count"],
        "targets": {"mnigs_median_s": 0.5, "mnigs_p95_s": 1.0, "ratio": 0.05},
        "babel_hello_s": 4,
        "babel_warmup_s": WARMUP,
        "ping_interval_s": PING_INTERVAL,
        "measured_deaths": len(measured),
        "shared_deaths": len(shared),
        "steering_deaths": steering,
        "deaths": records,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deaths", type=int, default=10)
    parser.add_argument("--standby", type=int, default=1,
                        help="the client's standby.count (0: failovers register anew)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy every node's logs here before the mesh is removed")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    CLIENT_SETTINGS["standby"]["count"] = args.standby
    unwindOnSignals()
    started = time.monotonic()
    try:
        with Mesh(None, hello=0) as mesh:
            try:
                records, steering = run(mesh, args.deaths)
            finally:
                if args.keep_logs:
                    keepLogs(mesh.tmp, args.keep_logs)
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e)}))
        raise
    result = summary(records, steering)
    result["wall_s"] = round(time.monotonic() - started, 1)
    progress(f"done in {result['wall_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
