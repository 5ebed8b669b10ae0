"""
Regenerate C{tests/unit/data/babel_dump.txt} and C{babel_monitor.txt} from a
real babeld (needs root)::

    python -m tests.mesh.capture_babel

The topology: a triangle a - b - c with a costly direct link a - c (so that
some prefixes have a second, not installed route), an IPv6 /128 next to
every node's IPv4 /32, and an internet uplink on c (a default route).

The dump is taken on a once the mesh has converged.  The monitor stream is
recorded on a while, in turn: c announces an extra address 10.251.0.33/32;
c withdraws it (a retraction, metric 65535); b's babeld stops (b's routes
are retracted, c's prefixes move to the direct link); a's link to b goes
down (neighbour and routes flushed).

Router ids, route ids and link-local addresses are random at each run, and
the unit tests pin some of them (C{ROUTER_B}, C{VIA_B}, ...): after a new
capture, update them.
"""

import os
import socket
import threading
import time

from tests.mesh.harness import (
    BABEL_LOCAL_PORT,
    Mesh,
    missingForNamespaces,
    waitUntil,
)

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "unit", "data")
EXTRA_ADDRESS = "10.251.0.33/32"


def ipv6Of(node):
    return "fd00:251::" + node.address.rsplit(".", 1)[1]


class MonitorRecorder:
    """
    Read a babeld monitor stream in a thread until told to stop.
    """

    def __init__(self, node):
        self.sock = node.openSocket(socket.AF_INET6)
        self.sock.settimeout(0.2)
        self.sock.connect(("::1", BABEL_LOCAL_PORT))
        self.sock.sendall(b"monitor\n")
        self.chunks = []
        self.running = True
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            self.chunks.append(data)

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()
        return b"".join(self.chunks).decode("utf-8")


def capture():
    reason = missingForNamespaces("babeld")
    if reason:
        raise SystemExit(reason)
    with Mesh(None, hello=0.5) as mesh:
        a, b, c = (mesh.node(name) for name in "abc")
        abA, abB = mesh.link(a, b)
        mesh.link(b, c)
        acA, acC = mesh.link(a, c)
        mesh.internet(c)
        extra = {}
        for node in (a, b, c):
            address = ipv6Of(node)
            node.run(["ip", "addr", "add", f"{address}/128", "dev", "lo"])
            extra[node] = [f"redistribute local ip {address}/128 allow"]
        extra[a].append(f"interface {acA} rxcost 400")
        extra[c].append(f"interface {acC} rxcost 400")
        extra[c].append(f"redistribute local ip {EXTRA_ADDRESS} allow")
        mesh.startBabel(extra=extra)
        mesh.waitConverged()
        far = ipv6Of(c)

        def dumpComplete():
            dump = a.babelDump()
            return (f"prefix {far}/128" in dump and "installed no" in dump
                    and "prefix 0.0.0.0/0" in dump) and dump

        dump = waitUntil(dumpComplete, 20, message="a complete dump on a")
        with open(os.path.join(DATA, "babel_dump.txt"), "w") as f:
            f.write(_greetingOf(a) + dump + "ok\n")

        recorder = MonitorRecorder(a)
        time.sleep(1.5)
        c.run(["ip", "addr", "add", EXTRA_ADDRESS, "dev", "lo"])
        waitUntil(lambda: "10.251.0.33/32" in a.babelDump(), 10,
                  message="the extra address to reach a")
        c.run(["ip", "addr", "del", EXTRA_ADDRESS, "dev", "lo"])
        time.sleep(1.5)
        mesh.stopBabel(b)
        time.sleep(1.5)
        a.run(["ip", "link", "set", abA, "down"])
        time.sleep(1.5)
        with open(os.path.join(DATA, "babel_monitor.txt"), "w") as f:
            f.write(recorder.stop())


def _greetingOf(node):
    with node.openSocket(socket.AF_INET6) as sock:
        sock.settimeout(5)
        sock.connect(("::1", BABEL_LOCAL_PORT))
        received = b""
        while not received.endswith(b"ok\n"):
            received += sock.recv(4096)
        return received.decode("utf-8")


if __name__ == "__main__":
    capture()
