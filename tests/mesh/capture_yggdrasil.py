"""
Regenerate C{tests/unit/data/ygg_*.json} from real yggdrasil 0.4 daemons
(needs root and yggdrasil)::

    python -m tests.mesh.capture_yggdrasil

The overlay (L{tests.mesh.yggdrasilnet}, peered over veths, no
multicast)::

    a - b - c - d - f
        |   |
        +-e-+

Everything is asked on a's admin socket.  Files, each holding the answers
exactly as the daemon sent them (its indented JSON, C{"request": null}
included):

  - C{ygg_getself.json}, C{ygg_getpeers.json}, C{ygg_getdht.json},
    C{ygg_getsessions.json}, C{ygg_getpaths.json}: one answer each, the
    last three taken after the remote calls below (which open sessions);
  - C{ygg_remotegetpeers.json}: C{{key: answer text}} of
    C{debug_remoteGetPeers} for every other node, plus one for a key no
    node has (a C{"timeout"} error after 6 s);
  - C{ygg_errors.json}: C{{what: answer text}} for an unknown request, a
    key that is not hex, no key at all;
  - C{ygg_mesh.json}: each node's name, key, address (from its own
    getSelf) and true hop count from a, and the links;
  - C{ygg_addresses.json}: C{[[key, address], ...]} for chosen keys (all
    zeros, all ones, many leading zeros...) and random ones, each address
    as C{yggdrasil -useconf -address} prints it for a config holding that
    public key (0.4 takes it from the private key's second half).

Keys are random at each run: the unit tests read them from ygg_mesh.json.
"""

import json
import os
import random
import subprocess
import time
from collections import deque

from tests.mesh.harness import Mesh, missingForNamespaces
from tests.mesh.yggdrasilnet import YggdrasilOverlay, rawAdminCall

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "unit", "data")
LINKS = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "f"), ("b", "e"), ("c", "e")]
NOBODY = "7" * 64


def hopsFrom(start, links):
    neighbours = {}
    for x, y in links:
        neighbours.setdefault(x, set()).add(y)
        neighbours.setdefault(y, set()).add(x)
    hops, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for other in sorted(neighbours[node]):
            if other not in hops:
                hops[other] = hops[node] + 1
                queue.append(other)
    return hops


def write(name, text):
    with open(os.path.join(DATA, name), "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def chosenKeys(seed=5):
    rng = random.Random(seed)
    keys = [bytes(32), b"\xff" * 32, bytes(31) + b"\x01", bytes(20) + b"\x80" + bytes(11),
            bytes(3) + b"\x01" + bytes(28), b"\x7f" + bytes(31)]
    keys += [bytes(zeros) + bytes([rng.randint(1, 255)]) + rng.randbytes(31 - zeros)
             for zeros in range(0, 31, 3)]
    return keys + [rng.randbytes(32) for _ in range(20)]


def captureAddresses():
    pairs = []
    for key in chosenKeys():
        config = {"PrivateKey": (os.urandom(32) + key).hex(), "PublicKey": key.hex()}
        result = subprocess.run(["yggdrasil", "-useconf", "-address"], input=json.dumps(config),
                                capture_output=True, text=True, check=True, timeout=30)
        pairs.append([key.hex(), result.stdout.strip()])
    write("ygg_addresses.json", json.dumps(pairs, indent=1))


def capture():
    missing = missingForNamespaces("yggdrasil")
    if missing:
        raise SystemExit(missing)
    with Mesh(None) as mesh:
        for name in "abcdef":
            mesh.node(name)
        overlay = YggdrasilOverlay(mesh)
        for x, y in LINKS:
            overlay.link(x, y)
        overlay.start()
        a = mesh.nodes["a"]
        for name in "bcdef":
            overlay.waitReachable(a, name)
        sock = overlay.socketPath(a)
        write("ygg_getself.json", rawAdminCall(sock, "getSelf"))
        write("ygg_getpeers.json", rawAdminCall(sock, "getPeers"))
        remote = {}
        for name in "bcdef":
            key = overlay.key(name)
            remote[key] = rawAdminCall(sock, "debug_remoteGetPeers", key=key)
        started = time.monotonic()
        remote[NOBODY] = rawAdminCall(sock, "debug_remoteGetPeers", key=NOBODY)
        print(f"debug_remoteGetPeers of nobody answered after {time.monotonic() - started:.1f} s")
        write("ygg_remotegetpeers.json", json.dumps(remote, indent=2))
        for request in ("getDHT", "getSessions", "getPaths"):
            write(f"ygg_{request.lower()}.json", rawAdminCall(sock, request))
        errors = {
            "unknown request": rawAdminCall(sock, "getTunnelRouting"),
            "key not hex": rawAdminCall(sock, "debug_remoteGetPeers", key="zz"),
            "no key": rawAdminCall(sock, "getNodeInfo"),
        }
        write("ygg_errors.json", json.dumps(errors, indent=2))
        hops = hopsFrom("a", LINKS)
        nodes = [{"name": name, "key": overlay.key(name), "address": overlay.address(name),
                  "coords": overlay.call(name, "getSelf")["coords"], "hops": hops[name]}
                 for name in "abcdef"]
        write("ygg_mesh.json", json.dumps({"asked_on": "a", "nodes": nodes,
                                           "links": [list(link) for link in LINKS]}, indent=2))
        print(json.dumps(nodes, indent=1))


if __name__ == "__main__":
    captureAddresses()
    capture()
