"""
Churn benchmark: how much of the time a mnigs client stays online on a
babel mesh (babeld's default timers, hello 4 s) whose two gateways are also
transit routers and fail now and then, one at a time, silently.

Topology (a ring: each gateway carries the other side's transit traffic,
so a dead gateway breaks paths through it until babel routes around it)::

               /-- gwA -- \\
    client -- r1           r2
               \\-- gwB -- /

    gwA === inet, gwB === inet2 (both 198.51.100.1)

  - client runs a real twistd mnigs-client with the shipped defaults
    (etc/mnigs-client.toml; the hot standby, standby.count = 1, included),
    plus health.beyond = ["198.51.100.1"].
  - gwA and gwB run real twistd mnigs-servers (WireGuard and forward),
    both with the same (default-like) WireGuard pool, uplink.check_interval
    1 s (shipped) and uplink.probe = ["198.51.100.1"].
  - babeld filters as the harness's (only node addresses, link subnets and
    the gateways' default routes are announced), or, with
    --redistribute-local, babeld's own default of announcing every local
    address (tunnel addresses included).

The client pings 198.51.100.1 at 20/s (bench/_pinger.py) for the whole run.
After babel has run 64 s (a full hello history) and the client ranks both
gateways usable:

  1. churn, --minutes long: silent deaths (an nft drop-everything table, as
     in bench/failover.py) of a random gateway, one at a time, lasting
     3-20 s, starting on average about once a minute.  Measured: the
     online fraction (50 ms ping slots answered), the outage of every
     death of the serving gateway (last reply before -> first reply after),
     every gap in the replies with the deaths it overlaps, and connect
     attempts that failed against a gateway that was up (client log +
     death schedule).
  2. back to back: --series deaths of the serving gateway, each 3-6 s
     after the previously killed gateway came back.
  3. uplink cut (once every gateway reaches the client again: babel's routes
     can exist and still lead through a gateway that only just came back):
     the serving gateway's up0 goes down (mesh fine): outage
     until the client is online through the other gateway.

For the post-mortem the daemons log with microsecond timestamps
(bench/_timedlog.py), wireguard-go logs verbosely (LOG_LEVEL=verbose, into
state_dir/IFNAME.log, second resolution), bench/_wgwatch.py records every
WireGuard handshake message on client, gwA and gwB, and the client's
status and WireGuard device (UAPI) are sampled into timeline.log.

Progress on stderr; the last line of stdout is one JSON object:
{"online_fraction": .., "serving_deaths": .., "mean_outage_s": ..,
 "longest_outage_s": .., "failed_connects_to_live": ..,
 "back_to_back_median_s": .., "back_to_back_max_s": ..,
 "uplink_outage_s": .., ...details}

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/churn.py [--minutes 10] [--seed N] [--keep [DIR]]
"""

import argparse
import ipaddress
import json
import os
import random
import re
import socket
import statistics
import sys
import time

from bench._common import keepLogs, progress, unwindOnSignals
from bench.failover import (
    CLIENT_SETTINGS,
    INTERNET,
    PING_INTERVAL,
    WARMUP,
    PingStream,
    TimedClient,
    TimedGateway,
    breakdown,
    checkDaemons,
    clientGateway,
    firstAfter,
    logEvents,
    outage,
    revive,
    silence,
    steady,
    waitStable,
)
from tests.mesh.harness import PROTO_BABEL, Mesh, missingForNamespaces, waitUntil

HERE = os.path.dirname(os.path.abspath(__file__))
WGWATCH = os.path.join(HERE, "_wgwatch.py")

DEATH_SECONDS = (3.0, 20.0)
DEATHS_PER_MINUTE = 1.0
BACK_TO_BACK_DELAY = (3.0, 6.0)
RECOVERY_TIMEOUT = 90.0
GAP = 0.3                  # a pause between replies longer than this is a gap
POLL = 0.1
# The shipped client gives a tunnel this long (etc/mnigs-client.toml).
CONNECT_TIMEOUT = CLIENT_SETTINGS["methods"]["connect_timeout"]
GATEWAY_SETTINGS = {"uplink": {"check_interval": 1.0, "probe": [INTERNET]}}

TARGETS = {"online_fraction": 0.98, "longest_outage_s": 3.0, "mean_outage_s": 2.0,
           "failed_connects_to_live": 0, "back_to_back_median_s": 2.0,
           "back_to_back_max_s": 3.0, "uplink_outage_s": 2.5}


# -- what runs beside the daemons ---------------------------------------------

class Watchers:
    """
    The post-mortem's eyes: packet watchers in some nodes, and a timeline
    of the client's state and WireGuard device, sampled by L{poll}.
    """

    def __init__(self, nodes, client, path, routers, gateways, mesh):
        self.client = client
        self.routers = routers
        self.gatewayNodes = gateways
        self.gateways = {f"{gw.address}/32": gw.name for gw in gateways}
        # The way back: each gateway's next hop to the client's link subnet,
        # and any neighbour entry it made for the client's own address (a
        # reply sent "on link" where the client is not: see the report).
        clientLink = client.node.interfaceAddresses[client.node.meshInterfaces[0]]
        self.clientSubnet = str(ipaddress.ip_interface(clientLink).network)
        self.clientAddress = str(ipaddress.ip_interface(clientLink).ip)
        self.hopNames = {str(ipaddress.ip_interface(address).ip): node.name
                         for node in mesh.nodes.values()
                         for address in node.interfaceAddresses.values()}
        self.sniffers = {node.name: node.spawn([sys.executable, WGWATCH],
                                               log=os.path.join(node.tmp, "wgwatch.log"))
                         for node in nodes}
        self.timeline = open(path, "a", buffering=1)
        self.last = None

    def poll(self):
        status = self.client.quickStatus()
        state = status.get("state")
        gateway = (status.get("current") or status.get("attempt") or {}).get("name")
        wg = wgState(self.client.wgInterface)
        routes = " ".join([f"{node.name}>{self.meshRoutes(node)}" for node in self.routers]
                          + [self.wayBack(gw) for gw in self.gatewayNodes])
        now = time.time()
        line = (state, gateway, status.get("reason") or "", wg, routes)
        if line != self.last:
            self.timeline.write(f"{now:.6f} {state} {gateway} wg={wg} routes[{routes}] "
                                f"reason={line[2]!r}\n")
            self.last = line

    def meshRoutes(self, node):
        """The gateways C{node}'s kernel has a babel route to, e.g. C{gwA+gwB}."""
        have = {destination for destination, _, _ in node.routes(PROTO_BABEL)}
        return "+".join(name for prefix, name in sorted(self.gateways.items(), key=lambda i: i[1])
                        if prefix in have) or "-"

    def wayBack(self, gateway):
        hops = [self.hopNames.get(via, str(via)) for destination, via, _ in gateway.routes(PROTO_BABEL)
                if destination == self.clientSubnet]
        ipr = gateway.ipr()
        arp = [f"{NUD.get(n['state'], n['state'])}@{ipr.get_links(n['ifindex'])[0].get_attr('IFLA_IFNAME')}"
               for n in ipr.get_neighbours(family=socket.AF_INET)
               if n.get_attr("NDA_DST") == self.clientAddress]
        return f"{gateway.name}<{'+'.join(hops) or '-'}" + (f" {gateway.name}:arp={','.join(arp)}" if arp else "")

    def note(self, text):
        self.timeline.write(f"{time.time():.6f} -- {text}\n")
        progress(text)

    def close(self):
        from tests.mesh.commands import terminate

        terminate(list(self.sniffers.values()))
        self.timeline.close()


NUD = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
       0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}


def wgState(ifname):
    """
    The client's WireGuard peer as its UAPI socket tells it (no wg spawn):
    "none" when there is no device, else endpoint, seconds since the last
    handshake and tx/rx bytes.
    """
    path = f"/var/run/wireguard/{ifname}.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(path)
            s.sendall(b"get=1\n\n")
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return "none"
    fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    if "public_key" not in fields:
        return "no-peer"
    handshake = int(fields.get("last_handshake_time_sec", "0"))
    age = "never" if not handshake else str(handshake)
    # tx/rx counters change every packet: only the handshake age bucket and
    # endpoint make a timeline line, the counters ride along.
    return f"{fields.get('endpoint')} hs={age} tx>0={int(fields.get('tx_bytes', 0)) > 0}"


# -- faults ----------------------------------------------------------------

def cutUplink(gateway):
    gateway.run(["ip", "link", "set", gateway.uplink, "down"])


def restoreUplink(gateway):
    gateway.run(["ip", "link", "set", gateway.uplink, "up"])
    gateway.run(["ip", "route", "replace", "default", "via", "203.0.113.1",
                 "dev", gateway.uplink, "proto", "static"])


# -- reading the results ---------------------------------------------------

def gaps(replies, start, end, threshold=GAP):
    """(last reply, next reply) pairs further apart than C{threshold}."""
    inside = [t for t in replies if start <= t <= end]
    return [(a, b) for a, b in zip(inside, inside[1:]) if b - a > threshold]


def answeredFraction(stream, start, end):
    """Ping slots of [start, end) whose echo was answered."""
    sent = set()
    with open(stream.path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "R" and start <= float(parts[2]) < end:
                sent.add(parts[1] + parts[2])
    return min(1.0, len(sent) / ((end - start) / PING_INTERVAL))


def overlapping(deaths, a, b):
    return [d["gateway"] for d in deaths if d["start"] < b and d["end"] > a - 1.0]


_CONNECT_FAILURE = re.compile(r"(\w+) to (\S+) did not come up: (.*?)(?:; trying |\); searching|$)")
_REGISTER_FAILURE = re.compile(r"(\w+) registration with (\S+) failed: (.*?)(?:; trying |\); searching|$)")


def connectFailures(events, hosts):
    """
    Every failed attempt the client logged: (time, gateway, method, stage,
    why).  The machine logs each failure once, in the tryNext or exhausted
    line.
    """
    failures = []
    for when, message in events:
        if not (message.startswith("every gateway failed") or "; trying {" in message):
            continue
        for stage, rx in (("tunnel", _CONNECT_FAILURE), ("register", _REGISTER_FAILURE)):
            m = rx.search(message)
            if m:
                failures.append({"time": when, "gateway": hosts.get(m.group(2), m.group(2)),
                                 "method": m.group(1), "stage": stage, "why": m.group(3)})
    return failures


_NAMED = re.compile(r"'name': '([^']*)'")


def sniffed(path):
    """The lines of bench/_wgwatch.py's log, split."""
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def tunnelAttempts(events, sniffPath, hosts):
    """
    Every tunnel the client started (a WireGuard device created or
    adopted): when, to which gateway, whether it went online, and what
    went over the wire meanwhile.  The client does not log a tunnel that
    fails when another step follows (connecting --tryNext--> registering
    is silent), so the outcome is read off the device's life: "online
    via" before the device is removed, or not.  The gateway is the one
    the first handshake initiation went to.  A standby's tunnel
    (standby.count, on by default) is one too: ready, or not.
    """
    packets = sniffed(sniffPath)
    attempts = []
    for when, message in events:
        m = re.search(r": (creating|adopting) (\S+) WireGuard$", message)
        if m:
            attempts.append({"time": when, "how": m.group(1)})
    for attempt, following in zip(attempts, attempts[1:] + [None]):
        limit = following["time"] if following else float("inf")
        # A hot standby's tunnel succeeds once it is ready (it goes online
        # only if it is promoted, maybe never).
        outcome = firstAfter(events, attempt["time"], r"^online via |^standby ready via |: removed$")
        attempt["ok"] = bool(outcome and outcome[0] < limit
                             and outcome[1].startswith(("online", "standby ready")))
        attempt["end"] = outcome[0] if outcome and outcome[0] < limit else attempt["time"]
        wire = [p for p in packets if len(p) >= 6 and attempt["time"] <= float(p[0]) <= attempt["end"]
                and p[5] in ("init", "resp", "cookie")]
        inits = [p for p in wire if p[5] == "init" and p[2] == "out"]
        attempt["inits_sent"] = len(inits)
        attempt["responses"] = len([p for p in wire if p[5] == "resp" and p[2] == "in"])
        named = _NAMED.search(outcome[1]) if attempt["ok"] else None
        if named:
            attempt["gateway"] = named.group(1)
        elif inits:
            attempt["gateway"] = hosts.get(inits[0][4].rsplit(":", 1)[0], inits[0][4])
        else:
            attempt["gateway"] = None
    return attempts


def wasUp(deaths, gateway, start, end):
    return not any(d["gateway"] == gateway and d["start"] < end and d["end"] > start
                   for d in deaths)


def tunnelsFailedAgainstLive(attempts, deaths, start, end):
    """Tunnel attempts in [start, end] that failed against a gateway no death touched."""
    return [a for a in attempts if not a["ok"] and start <= a["time"] <= end
            and a["gateway"] is not None
            and wasUp(deaths, a["gateway"], a["time"] - 1.0, a["end"])]


def failedAgainstLive(failures, deaths, start, end):
    """
    Failures inside [start, end] against a gateway that no death touched
    during the attempt (the connect timeout before the failure, plus a
    second for the registration).  A forward registration refused with
    1002 is the plan trying forward on a gateway that is not a neighbour:
    listed, not counted.
    """
    counted, refusedForward = [], []
    for f in failures:
        if not start <= f["time"] <= end:
            continue
        if not wasUp(deaths, f["gateway"], f["time"] - CONNECT_TIMEOUT - 1.0, f["time"]):
            continue
        if f["method"] == "forward" and f["stage"] == "register" and "(1002)" in f["why"]:
            refusedForward.append(f)
        else:
            counted.append(f)
    return counted, refusedForward


def clientEventsAround(client, a, b):
    return [f"{when - a:+.3f} {message}" for when, message in logEvents(client.logPath)
            if a - 1.0 <= when <= b + 0.5]


# -- the phases --------------------------------------------------------------

def churn(rng, minutes, nodes, gateways, client, stream, watchers, mesh, servers):
    deaths, active = [], None
    started = time.time()
    end = started + minutes * 60
    meanPause = max(3.0, 60.0 / DEATHS_PER_MINUTE - sum(DEATH_SECONDS) / 2)
    nextDeath = started + rng.expovariate(1 / meanPause)
    while True:
        now = time.time()
        if active is not None and now >= active["end"]:
            revive(nodes[active["gateway"]])
            active["end"] = time.time()
            watchers.note(f"revived {active['gateway']}")
            active = None
            nextDeath = time.time() + max(3.0, rng.expovariate(1 / meanPause))
        if now >= end and active is None:
            break
        if active is None and now >= nextDeath and now + DEATH_SECONDS[0] < end:
            victim = rng.choice(gateways)
            serving = clientGateway(client)
            duration = min(rng.uniform(*DEATH_SECONDS), end - now)
            silence(victim)
            active = {"gateway": victim.name, "start": time.time(),
                      "end": time.time() + duration, "serving": serving == victim.name,
                      "client_on": serving}
            deaths.append(active)
            watchers.note(f"churn: silenced {victim.name} for {duration:.1f} s "
                          f"(client on {serving}; {(end - now) / 60:.1f} min left)")
        watchers.poll()
        if int(now) % 10 == 0:
            checkDaemons(mesh, client, servers.values())
        time.sleep(POLL)
    for d in deaths:
        if d["serving"]:
            span = outage(stream.replies(), d["start"])
            d["outage_s"] = None if span is None else round(span[1] - span[0], 3)
            if span is not None:
                d["breakdown"] = breakdown(client, {g: s.logPath for g, s in servers.items()},
                                           client.wgInterface, d["start"], span[0], span[1],
                                           None)
        d["duration_s"] = round(d["end"] - d["start"], 1)
    return started, time.time(), deaths


def waitOnline(client, stream, watchers, timeout=RECOVERY_TIMEOUT):
    def ready():
        watchers.poll()
        return clientGateway(client) is not None and steady(stream)

    waitUntil(ready, timeout, interval=POLL, message="the client online, pings answered")


def outageUntilBack(stream, since, watchers):
    """
    Wait until pings are answered again after C{since}; the outage (last
    reply before -> first reply after), or C{None} if they never were.
    """
    def back():
        watchers.poll()
        return any(t > since for t in stream.replies())

    try:
        waitUntil(back, RECOVERY_TIMEOUT, interval=POLL, message="pings answered again")
    except AssertionError:
        progress("the client did not come back within the timeout")
    span = outage(stream.replies(), since)
    return None if span is None else round(span[1] - span[0], 3)


def backToBack(rng, count, nodes, client, stream, watchers):
    """
    Kill the serving gateway; once the client is back (and the victim has
    been dead 3-10 s), revive it; 3-6 s later kill whatever serves then.
    """
    outages, records, revivedAt = [], [], None
    for i in range(count):
        waitOnline(client, stream, watchers)
        if revivedAt is not None:
            delay = rng.uniform(*BACK_TO_BACK_DELAY)
            while time.time() < revivedAt + delay:
                watchers.poll()
                time.sleep(POLL)
            waitOnline(client, stream, watchers)
        victim = nodes[clientGateway(client)]
        silence(victim)
        died = time.time()
        watchers.note(f"back to back {i + 1}/{count}: silenced {victim.name}"
                      + ("" if revivedAt is None else f", {died - revivedAt:.1f} s after "
                         "the previous victim came back"))
        holdUntil = died + rng.uniform(3.0, 10.0)
        took = outageUntilBack(stream, died, watchers)
        while time.time() < holdUntil:
            watchers.poll()
            time.sleep(POLL)
        revive(victim)
        revivedAt = time.time()
        outages.append(took if took is not None else RECOVERY_TIMEOUT)
        records.append({"gateway": victim.name, "start": died, "end": revivedAt,
                        "outage_s": took})
        watchers.note(f"back to back {i + 1}: outage {took} s; revived {victim.name}")
    return outages, records


def pathsBothWays(clientNode, gateways, timeout=60.0):
    """
    Wait until every gateway reaches the client's node address (a ping from
    the gateway): babel's routes can exist and still lead through a
    gateway that has only just come back, and a measurement started then
    measures babel, not mnigs.
    """
    def reachable():
        return all(gw.run(["ping", "-n", "-c", "1", "-W", "1", clientNode.address],
                          check=False).returncode == 0 for gw in gateways)

    waitUntil(reachable, timeout, interval=0.5, message="every gateway reaching the client")


def uplinkCut(nodes, client, stream, watchers):
    pathsBothWays(nodes["client"], [nodes["gwA"], nodes["gwB"]])
    waitOnline(client, stream, watchers)
    victim = nodes[clientGateway(client)]
    cutUplink(victim)
    cut = time.time()
    watchers.note(f"uplink: up0 of {victim.name} down")
    took = outageUntilBack(stream, cut, watchers)
    time.sleep(1.0)
    restoreUplink(victim)
    watchers.note(f"uplink: outage {took} s; up0 of {victim.name} restored")
    return {"gateway": victim.name, "start": cut, "outage_s": took,
            "client_on_after": clientGateway(client)}


# -- main ------------------------------------------------------------------------

def build(mesh, redistributeLocal):
    nodes = {name: mesh.node(name) for name in ("client", "r1", "gwA", "r2", "gwB")}
    for a, b in (("client", "r1"), ("r1", "gwA"), ("gwA", "r2"), ("r2", "gwB"), ("gwB", "r1")):
        mesh.link(nodes[a], nodes[b])
    for gw in ("gwA", "gwB"):
        mesh.internet(nodes[gw])
    extra = None
    if redistributeLocal:
        # babeld's default: every local address, tunnel addresses included.
        extra = {node: ["redistribute local allow"] for node in nodes.values()}
    progress(f"mesh {mesh.prefix}: starting babeld (default timers"
             f"{', default local redistribution' if redistributeLocal else ''})")
    mesh.startBabel(extra=extra)
    return nodes


def run(mesh, args, rng, log):
    nodes = build(mesh, args.redistribute_local)
    babelStarted = time.monotonic()
    progress(f"babel converged in {mesh.waitConverged(timeout=120):.1f} s")
    gateways = [nodes["gwA"], nodes["gwB"]]
    hosts = {gw.address: gw.name for gw in gateways}
    servers = {gw.name: TimedGateway(gw, GATEWAY_SETTINGS, name=gw.name).start(timeout=60)
               for gw in gateways}
    client = TimedClient(nodes["client"], CLIENT_SETTINGS)
    watchers = Watchers([nodes["client"]] + gateways, client,
                        os.path.join(nodes["client"].tmp, "timeline.log"),
                        [nodes["client"], nodes["r1"]], gateways, mesh)
    stream = None
    try:
        clientStarted = time.time()
        client.start()
        stream = PingStream(nodes["client"], "client")
        client.waitState("online", 90)
        firstReply = waitUntil(lambda: (stream.replies() or [None])[0], 30, interval=POLL,
                               message="a first ping answer")
        log["startup_s"] = round(firstReply - clientStarted, 3)
        watchers.note(f"client online via {clientGateway(client)}; first reply "
                      f"{log['startup_s']} s after its start")
        # r1's links: m0 to the client, m1 to gwA, m2 to gwB.
        r1Interfaces = nodes["r1"].meshInterfaces[1:]
        warm = WARMUP - (time.monotonic() - babelStarted)
        if warm > 0:
            progress(f"babel warm-up: {warm:.0f} s")
            until = time.time() + warm
            while time.time() < until:
                watchers.poll()
                time.sleep(POLL)
        took = waitStable(mesh, nodes["r1"], client, gateways, r1Interfaces)
        watchers.note(f"stable after {took:.1f} s: client on {clientGateway(client)}")

        start, end, deaths = churn(rng, args.minutes, nodes, gateways, client, stream,
                                   watchers, mesh, servers)
        log["churn"] = (start, end, deaths)
        if args.series:
            waitStable(mesh, nodes["r1"], client, gateways, r1Interfaces)
            log["series"] = backToBack(rng, args.series, nodes, client, stream, watchers)
        waitStable(mesh, nodes["r1"], client, gateways, r1Interfaces)
        log["uplink"] = uplinkCut(nodes, client, stream, watchers)
        log["end"] = time.time()
        checkDaemons(mesh, client, servers.values())
        return client, stream, hosts
    finally:
        watchers.close()
        if stream is not None:
            stream.stop()
        client.stop()
        for server in servers.values():
            server.stop()


def summary(log, client, stream, hosts, outagesPath):
    start, end, deaths = log["churn"]
    replies = stream.replies()
    events = logEvents(client.logPath)
    failures = connectFailures(events, hosts)
    live, forward = failedAgainstLive(failures, deaths, start, end)
    attempts = tunnelAttempts(events, os.path.join(client.node.tmp, "wgwatch.log"), hosts)
    live += [dict(a, stage="tunnel", why="no online before the device was removed")
             for a in tunnelsFailedAgainstLive(attempts, deaths, start, end)]
    serving = [d for d in deaths if d["serving"]]
    outages = [d["outage_s"] if d.get("outage_s") is not None else end - d["start"]
               for d in serving]
    gapList = []
    with open(outagesPath, "w") as f:
        for a, b in gaps(replies, start, end):
            gap = {"from": round(a - start, 3), "s": round(b - a, 3),
                   "deaths": overlapping(deaths, a, b)}
            gapList.append(gap)
            f.write(f"=== gap {gap['s']} s at +{gap['from']} s (deaths: {gap['deaths']})\n")
            f.write("\n".join(clientEventsAround(client, a, b)) + "\n")
    seriesOutages, seriesRecords = log.get("series", ([], []))
    seriesLive = []
    if seriesRecords:
        window = (seriesRecords[0]["start"], log["uplink"]["start"])
        seriesLive = (failedAgainstLive(failures, seriesRecords, *window)[0]
                      + tunnelsFailedAgainstLive(attempts, seriesRecords, *window))
    firstReply = replies[0] if replies else start
    result = {
        "online_fraction": round(answeredFraction(stream, start, end), 4),
        "serving_deaths": len(serving),
        "mean_outage_s": round(statistics.mean(outages), 3) if outages else None,
        "longest_outage_s": round(max(outages), 3) if outages else None,
        "failed_connects_to_live": len(live),
        "back_to_back_median_s": (round(statistics.median(seriesOutages), 3)
                                  if seriesOutages else None),
        "back_to_back_max_s": round(max(seriesOutages), 3) if seriesOutages else None,
        "uplink_outage_s": log["uplink"]["outage_s"],
        "targets": TARGETS,
        "serving_outages_s": outages,
        "back_to_back_outages_s": seriesOutages,
        "online_fraction_whole_run": round(answeredFraction(stream, firstReply, log["end"]), 4),
        "startup_s": log["startup_s"],
        "churn_s": round(end - start, 1),
        "deaths": [{"gateway": d["gateway"], "at_s": round(d["start"] - start, 1),
                    "duration_s": d["duration_s"], "client_on": d["client_on"],
                    "serving": d["serving"], **({"outage_s": d.get("outage_s"),
                                                 "breakdown": d.get("breakdown")}
                                                if d["serving"] else {})}
                   for d in deaths],
        "gaps": gapList,
        "failed_connects_to_live_list": [dict(f, at_s=round(f["time"] - start, 3))
                                         for f in live],
        "failed_connects_to_live_back_to_back": len(seriesLive),
        "forward_refused_1002": len(forward),
        "failed_connects_to_live_before_churn": len(tunnelsFailedAgainstLive(attempts, [], 0, start)),
        "tunnel_attempts": len(attempts),
        "tunnel_attempts_failed": len([a for a in attempts if not a["ok"]]),
        "tunnel_attempts_adopting": len([a for a in attempts if a["how"] == "adopting"]),
        "back_to_back": [{"gateway": r["gateway"], "outage_s": r["outage_s"]}
                         for r in seriesRecords],
        "uplink": {k: v for k, v in log["uplink"].items() if k != "start"},
        "babel_hello_s": 4,
        "babel_redistribution": log["redistribution"],
        "ping_interval_s": PING_INTERVAL,
    }
    for f in result["failed_connects_to_live_list"]:
        for key in ("time", "end"):
            f.pop(key, None)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--series", type=int, default=7,
                        help="back-to-back deaths in phase 2 (0: skip)")
    parser.add_argument("--redistribute-local", action="store_true",
                        help="babeld announces every local address (its default)")
    parser.add_argument("--keep", nargs="?", const="", metavar="DIR",
                        help="keep every node's logs (in DIR, default /tmp/mnigs-churn-TIME)")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    progress(f"seed {seed}")
    # wireguard-go (spawned by the daemons, inheriting their environment)
    # then logs every handshake message into state_dir/IFNAME.log.
    os.environ["LOG_LEVEL"] = "verbose"
    unwindOnSignals()
    started = time.monotonic()
    log = {"redistribution": "default (local allow)" if args.redistribute_local else "harness"}
    try:
        with Mesh(None, hello=0) as mesh:
            try:
                client, stream, hosts = run(mesh, args, rng, log)
                result = summary(log, client, stream, hosts,
                                 os.path.join(mesh.tmp, "client", "outages.txt"))
            finally:
                if args.keep is not None:
                    keepLogs(mesh.tmp, args.keep or f"/tmp/mnigs-churn-{time.strftime('%H%M%S')}")
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e), "seed": seed}))
        raise
    result["seed"] = seed
    result["wall_s"] = round(time.monotonic() - started, 1)
    progress(f"done in {result['wall_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
