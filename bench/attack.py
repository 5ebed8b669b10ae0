"""
Attack benchmark: does a legitimate client still get served while another
node on the mesh attacks the gateway, and can a node without a lease get
packets to the internet with a leased address as source?

Topology (babel, the harness's filtered announcements)::

    legit ----\\
               gw === inet (198.51.100.1)
    attacker -/

  - gw runs a real twistd mnigs-server (forward and WireGuard) with the
    shipped defaults for everything this benchmark is about: rpc caps,
    timeouts and rate limit, terms.max_clients 32, lease caps.
  - legit (bench/_legit.py) calls gateway.info and gateway.register
    (forward, the same client key throughout) alternately, each on a fresh
    connection, 10 calls a second, during each phase.
  - attacker (bench/_attacker.py), from its own address:
      baseline: nothing (legit alone, for comparison; not in the totals)
      idle:     holds 1,000 idle connections (re-opening what is closed)
      loris:    600 slow-loris connections, a byte a second each
      flood:    registers as fast as it can, 16 workers, a new client key
                and WireGuard key each time
    and the gateway's lease list is read during and after the flood:
    attacker_leases is the most leases held by the attacker's address
    at any reading.
  - spoofing: legit holds a forward lease (its mesh address) and a fresh
    WireGuard lease (an inner address it never uses); the attacker, with
    no lease, sends UDP to the internet host from each of those addresses
    (a raw socket, its own route towards the gateway); the packets that
    arrive are counted at the internet node.

Targets: legit_ok_ratio >= 0.99 and legit_p99_ms <= 1000 over the three
attack phases (a failed call counts with the time it took, at most the
5 s call timeout), attacker_leases <= terms.max_leases_per_address (2),
spoofed_packets_delivered == 0.

Progress on stderr; the last line of stdout is one JSON object:
{"legit_ok_ratio": .., "legit_p99_ms": .., "attacker_leases": ..,
 "spoofed_packets_delivered": .., ...details}

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/attack.py [--seconds 15] [--keep [DIR]]
"""

import argparse
import ipaddress
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

from nacl.signing import SigningKey

from bench._common import keepLogs, progress, unwindOnSignals
from bench._rpcwire import clientId
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment
from tests.mesh.harness import Mesh, missingForNamespaces
from tests.mesh.spoof import datagram

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
PORT = 8150
LEGIT_RATE = 10.0
CALL_TIMEOUT = 5.0
ATTACKS = (("idle", 1000), ("loris", 600), ("flood", 16))
RAMP_SECONDS = 2.0           # the attacker gets going before legit starts
SPOOF_PACKETS = 200
SPOOF_PORT = 9999
LEASE_CAP = 2                # terms.max_leases_per_address, shipped default

TARGETS = {"legit_ok_ratio": 0.99, "legit_p99_ms": 1000, "attacker_leases": LEASE_CAP,
           "spoofed_packets_delivered": 0}

# The shipped defaults, except what a namespace test needs (state and
# sockets under the node's directory, a sweep every 0.5 s).
GATEWAY_SETTINGS = {
    "rpc": {"listen": ["0.0.0.0"], "rate_limit": 20.0},
    "terms": {"max_clients": 32},
}


def python(script, *args):
    return ["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}", sys.executable,
            os.path.join(HERE, script), *map(str, args)]


def lastJSON(text):
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"no JSON in: {text[-2000:]!r}")
    return json.loads(lines[-1])


def attackerLeases(gateway, legitId):
    """Live leases not held by legit's client id: the attacker's."""
    status = gateway.status()
    return sum(1 for lease in status.get("leases", []) if lease.get("client") != legitId)


def phase(name, n, nodes, gateway, gwHost, seconds, seed, legitId):
    """
    Run one attack (or none) while legit calls; legit's calls and what
    the attacker achieved.
    """
    legit, attacker = nodes["legit"], nodes["attacker"]
    attack = None
    leaseReadings = []
    if name != "baseline":
        log = open(os.path.join(attacker.tmp, f"attacker-{name}.out"), "w+")
        attack = subprocess.Popen(
            ["ip", "netns", "exec", attacker.ns]
            + python("_attacker.py", gwHost, PORT, seconds + RAMP_SECONDS + 1, name, n),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        attacker.mesh.track(attack)
        time.sleep(RAMP_SECONDS)
    stop = threading.Event()

    def readLeases():
        while not stop.wait(1.0):
            try:
                leaseReadings.append(attackerLeases(gateway, legitId))
            except Exception as e:  # the status socket is busy: a missed reading
                progress(f"lease reading failed: {e!r}")

    reader = threading.Thread(target=readLeases, daemon=True)
    if name == "flood":
        reader.start()
    try:
        result = legit.run(python("_legit.py", gwHost, PORT, seconds, LEGIT_RATE, seed),
                           timeout=seconds + 60)
        calls = lastJSON(result.stdout)["calls"]
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
    achieved = None
    if attack is not None:
        attack.wait(timeout=seconds + 60)
        log.seek(0)
        achieved = lastJSON(log.read())
        log.close()
    if name == "flood":
        leaseReadings.append(attackerLeases(gateway, legitId))
    return calls, achieved, leaseReadings


def percentile(values, fraction):
    """The nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarise(calls):
    ok = [c for c in calls if c["ok"]]
    latencies = [c["s"] for c in calls]
    failures = {}
    for c in calls:
        if not c["ok"]:
            key = f"{c['kind']}: {c.get('why')}"
            failures[key] = failures.get(key, 0) + 1
    return {"calls": len(calls), "ok": len(ok),
            "ok_ratio": round(len(ok) / len(calls), 4) if calls else None,
            "p50_ms": round(1000 * percentile(latencies, 0.5), 1) if calls else None,
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if calls else None,
            "max_ms": round(1000 * max(latencies), 1) if calls else None,
            "failures": failures}


# -- spoofing -------------------------------------------------------------------

def spoof(nodes, sources):
    """
    From the attacker (no lease), SPOOF_PACKETS UDP datagrams to the
    internet host from each address in C{sources}; how many of each
    arrived there.
    """
    from pyroute2 import netns

    inet, attacker = nodes["inet"], nodes["attacker"]
    receiver = netns.create_socket(inet.ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    receiver.bind(("0.0.0.0", SPOOF_PORT))
    receiver.setblocking(False)
    sender = netns.create_socket(attacker.ns, socket.AF_INET, socket.SOCK_RAW,
                                 socket.IPPROTO_RAW, flags=0)
    delivered = {}
    try:
        for label, source in sources.items():
            marker = f"spoof {label} {secrets.token_hex(4)}".encode()
            for _ in range(SPOOF_PACKETS):
                sender.sendto(datagram(source, inet.address, SPOOF_PORT, marker),
                              (inet.address, 0))
                time.sleep(0.002)
            time.sleep(0.5)
            count = 0
            while True:
                try:
                    data = receiver.recv(65536)
                except BlockingIOError:
                    break
                count += data == marker
            delivered[label] = count
            progress(f"spoofing from {source} ({label}): {count} of {SPOOF_PACKETS} arrived")
    finally:
        sender.close()
        receiver.close()
    return delivered


def counterAlive(nodes):
    """
    Whether a datagram from the gateway itself reaches a socket in the
    internet node: if not, a count of 0 spoofed packets would prove
    nothing.
    """
    from pyroute2 import netns

    inet, gw = nodes["inet"], nodes["gw"]
    receiver = netns.create_socket(inet.ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    receiver.bind(("0.0.0.0", SPOOF_PORT + 1))
    sender = netns.create_socket(gw.ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    try:
        receiver.settimeout(2.0)
        sender.sendto(b"alive", (inet.address, SPOOF_PORT + 1))
        return receiver.recv(100) == b"alive"
    except OSError:
        return False
    finally:
        sender.close()
        receiver.close()


# -- main ---------------------------------------------------------------------

def build(mesh):
    nodes = {name: mesh.node(name) for name in ("legit", "attacker", "gw")}
    mesh.link(nodes["legit"], nodes["gw"])
    mesh.link(nodes["attacker"], nodes["gw"])
    nodes["inet"] = mesh.internet(nodes["gw"])
    mesh.startBabel()
    progress(f"babel converged in {mesh.waitConverged(timeout=60):.1f} s")
    return nodes


def linkAddress(node):
    return str(ipaddress.ip_interface(node.interfaceAddresses[node.meshInterfaces[0]]).ip)


def run(mesh, args):
    nodes = build(mesh)
    gateway = GatewayProcess(nodes["gw"], GATEWAY_SETTINGS).start(timeout=60)
    try:
        gwHost = linkAddress(nodes["gw"])  # the gateway's address on legit's link
        seed = secrets.token_hex(32)
        legitId = clientId(SigningKey(bytes.fromhex(seed)))
        phases = {}
        for name, n in (("baseline", 0),) + ATTACKS:
            progress(f"phase {name}" + (f" ({n})" if n else "") + f": {args.seconds:g} s")
            calls, achieved, readings = phase(name, n, nodes, gateway, gwHost, args.seconds,
                                              seed, legitId)
            phases[name] = {"legit": summarise(calls), "attacker": achieved,
                            "calls": calls}
            if readings:
                phases[name]["attacker_lease_readings"] = readings
            progress(f"  legit: {json.dumps(phases[name]['legit'])}")
            if achieved:
                progress(f"  attacker: {json.dumps(achieved)}")
            time.sleep(1.0)
        attackCalls = [c for name, _ in ATTACKS for c in phases[name]["calls"]]
        spoofResult = spoofRun(nodes, gateway, seed, gwHost)
        return {
            "legit": summarise(attackCalls),
            "phases": {name: {k: v for k, v in p.items() if k != "calls"}
                       for name, p in phases.items()},
            "attacker_leases": max(phases["flood"].get("attacker_lease_readings", [0])),
            "spoof": spoofResult,
            "gateway_status_leases": len(gateway.status().get("leases", [])),
        }
    finally:
        gateway.stop()


def spoofRun(nodes, gateway, seed, gwHost):
    """
    Legit takes a forward lease (already held) and a fresh WireGuard
    lease; the attacker spoofs both addresses.
    """
    legit = nodes["legit"]
    code = (f"import json, sys; sys.path.insert(0, {TOP!r}); "
            "from nacl.signing import SigningKey; "
            "from bench._rpcwire import call, randomWireGuardKey, registerParams; "
            f"key = SigningKey(bytes.fromhex({seed!r})); "
            f"info = call({gwHost!r}, {PORT}, 'gateway.info'); "
            "offer = info[2]; "
            f"print(json.dumps([info, call({gwHost!r}, {PORT}, 'gateway.register', "
            "registerParams(key, offer, 'forward', {})), "
            f"call({gwHost!r}, {PORT}, 'gateway.register', registerParams(key, offer, "
            "'wireguard', {'public_key': randomWireGuardKey()}))]))")
    result = legit.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                        sys.executable, "-c", code])
    info, forwardLease, wgLease = json.loads(result.stdout)
    if not (forwardLease[0] and wgLease[0]):
        raise AssertionError(f"legit could not take its leases: {forwardLease} {wgLease}")
    sources = {"forward": forwardLease[2]["lease"]["config"]["address"].split("/")[0],
               "wireguard": wgLease[2]["lease"]["config"]["address"].split("/")[0]}
    alive = counterAlive(nodes)
    progress(f"legit's leased addresses {sources}; the internet counter "
             f"{'hears' if alive else 'does NOT hear'} the gateway")
    delivered = spoof(nodes, sources)
    return {"sources": sources, "sent_each": SPOOF_PACKETS, "delivered": delivered,
            "counter_alive": alive}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="legit's calls per phase (the attacker runs 2 s longer)")
    parser.add_argument("--keep", nargs="?", const="", metavar="DIR",
                        help="keep every node's logs (in DIR, default /tmp/mnigs-attack-TIME)")
    args = parser.parse_args()
    missing = missingForNamespaces("babeld", "wireguard-go", "wg", "nft")
    if missing:
        sys.exit(f"cannot run: {missing}")
    unwindOnSignals()
    started = time.monotonic()
    try:
        with Mesh(None) as mesh:
            try:
                details = run(mesh, args)
            finally:
                if args.keep is not None:
                    keepLogs(mesh.tmp, args.keep or f"/tmp/mnigs-attack-{time.strftime('%H%M%S')}")
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e)}))
        raise
    legit = details["legit"]
    result = {
        "legit_ok_ratio": legit["ok_ratio"],
        "legit_p99_ms": legit["p99_ms"],
        "attacker_leases": details["attacker_leases"],
        "spoofed_packets_delivered": sum(details["spoof"]["delivered"].values()),
        "targets": TARGETS,
        **details,
        "wall_s": round(time.monotonic() - started, 1),
    }
    progress(f"done in {result['wall_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
