"""
Traffic accounting, C{mnigsctl --server leases/release} and the server's
hooks with real daemons in network namespaces (babeld, mnigs-server with
wireguard-go and nftables, mnigs-client)::

    client --- gw === inet (198.51.100.1)

The traffic is real TCP through the client's WireGuard tunnel to the
internet host.  Nothing is mocked.
"""

import json
import os
import time

from mnigs.protocol import REFUSED
from tests.mesh.bulk import download, upload
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.gatewayproc import rpc
from tests.mesh.harness import INTERNET_HOST, waitUntil

MB = 1000 * 1000


def writeHook(node, name, body):
    """
    An executable hook script under C{node.tmp}: C{body} after a shebang.
    """
    path = os.path.join(node.tmp, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def argvWriter(node, name):
    """
    A hook that writes its argv, one argument a line, to a file; returns
    (hook path, output path).
    """
    out = os.path.join(node.tmp, f"{name}.argv")
    return writeHook(node, name, f"printf '%s\\n' \"$0\" \"$@\" > {out}.tmp && mv {out}.tmp {out}"), out


def readArgv(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


class TrafficTests(DaemonMeshTestCase):

    def leases(self, gateway):
        answer = gateway.ctl("leases")
        self.assertNotIn("error", answer)
        return answer["leases"]

    def onlyLease(self, gateway):
        leases = self.leases(gateway)
        self.assertEqual(len(leases), 1, leases)
        return leases[0]

    def assertNear(self, measured, sent, what):
        """
        Within 10 % above what was sent: the counters include the
        tunnel's or the packets' overhead, never less than the payload.
        """
        self.assertGreaterEqual(measured, sent, what)
        self.assertLessEqual(measured, sent * 1.10, what)

    def test_wireguardLeaseBytesFollowATransfer(self):
        """
        Issue 14, acceptance 3: 8 MB down and 4 MB up through a WireGuard
        lease show on the gateway (C{mnigsctl --server leases --json},
        read fresh, and the status, counted every second here) within
        10 %, with the lease's age and last handshake; the client's history
        records the session's bytes when it ends.
        """
        client, gw = self.mesh.clientNextToGateway()
        g = self.gateway(gw, server={"traffic_interval": 1})
        c = self.clientProcess(client).start()
        gatewayId = c.waitState("online", 30)["current"]["gateway"]
        first = self.onlyLease(g)
        self.assertEqual((first["method"], first["name"]), ("wireguard", "client"))
        self.assertIsNotNone(first["last_handshake_ago"])
        self.assertLess(first["last_handshake_ago"], 130)  # WireGuard rekeys every 120 s
        self.assertGreaterEqual(first["age_s"], 0)

        down, up = 8 * MB, 4 * MB
        self.assertEqual(download(client, gw.internet, INTERNET_HOST, down), down)
        afterDown = self.onlyLease(g)
        self.assertNear(afterDown["bytes_in"] - first["bytes_in"], down, "bytes in (down)")
        self.assertEqual(upload(client, gw.internet, INTERNET_HOST, up), up)
        afterUp = self.onlyLease(g)
        self.assertNear(afterUp["bytes_out"] - afterDown["bytes_out"], up, "bytes out (up)")
        self.assertEqual(afterUp["id"], first["id"])

        # The status (and so the status page and the metrics) has them too.
        def statusCounted():
            lease = g.status()["leases"][0]
            return lease["bytes_in"] is not None and lease["bytes_in"] >= first["bytes_in"] + down
        waitUntil(statusCounted, 10, message="the status to show the bytes")
        self.assertGreaterEqual(g.status()["uptime_s"], first["age_s"])

        c.stop()
        with open(os.path.join(c.dir, "state", "history.json")) as f:
            quality = json.load(f)["gateways"][gatewayId]
        self.assertEqual(quality["sessions"], 1)
        # The client counts the packets inside its tunnel (headers and
        # probes included).
        self.assertNear(quality["bytes_in"], down, "history bytes in")
        self.assertNear(quality["bytes_out"], up, "history bytes out")

    def test_releaseEndsTheLeaseAndTheClientRegistersAgain(self):
        """
        C{mnigsctl --server release LEASE}: the lease is gone, its tunnel
        passes nothing (the client notices and registers again), and the
        release hook ran with the client's id and name, its bytes and its
        duration.
        """
        client, gw = self.mesh.clientNextToGateway()
        hook, out = argvWriter(gw, "release-hook")
        g = self.gateway(gw, hooks={"release": hook})
        c = self.clientProcess(client).start()
        c.waitState("online", 30)
        self.assertEqual(download(client, gw.internet, INTERNET_HOST, 1 * MB), 1 * MB)
        lease = self.onlyLease(g)
        answer = g.ctl("release", lease["id"][:8])  # a unique prefix is enough
        self.assertEqual(answer["released"], lease["id"])
        self.assertNotIn(lease["id"], [entry["id"] for entry in self.leases(g)])
        waitUntil(lambda: os.path.exists(out), 10, message="the release hook to run")
        argv = readArgv(out)
        self.assertEqual(argv[:4], [hook, "release", lease["id"], "wireguard"])
        self.assertEqual(argv[5:8], [lease["address"], lease["client"], "client"])
        self.assertGreaterEqual(int(argv[8]), 1 * MB)  # bytes in
        self.assertGreater(int(argv[9]), 0)  # bytes out
        self.assertGreaterEqual(int(argv[10]), lease["age_s"])  # duration
        self.assertEqual(argv[11], "released by the operator")
        # The client notices (its probes go unanswered) and registers again.
        waitUntil(lambda: [entry["id"] for entry in self.leases(g)] not in ([], [lease["id"]]),
                  30, interval=0.2, message="the client to register again")
        c.waitState("online", 30)
        self.assertEqual(download(client, gw.internet, INTERNET_HOST, 1 * MB), 1 * MB)
        unknown = g.ctl("release", "0123456789abcdef")
        self.assertEqual(unknown, {"error": "no lease '0123456789abcdef'"})

    def test_forwardLeaseBytesFromTheGate(self):
        """
        A forward lease's bytes come from the gate's nft element counters
        (IP packets, headers included): 4 MB down and 2 MB up within 10 %.
        """
        client, gw = self.mesh.clientNextToGateway()
        g = self.gateway(gw)
        gwOnLink = gw.interfaceAddresses["m0"].split("/")[0]
        kind, value = rpc(client, gwOnLink, "gateway.register",
                          {"client": {"name": "neighbour"}, "method": "forward", "params": {}},
                          key="neighbour")
        self.assertEqual(kind, "result", value)
        source = value["lease"]["config"]["address"].split("/")[0]
        first = self.onlyLease(g)
        self.assertEqual((first["method"], first["last_handshake_ago"]), ("forward", None))
        down, up = 4 * MB, 2 * MB
        self.assertEqual(download(client, gw.internet, INTERNET_HOST, down, source=source), down)
        afterDown = self.onlyLease(g)
        self.assertNear(afterDown["bytes_in"] - first["bytes_in"], down, "bytes in (down)")
        self.assertEqual(upload(client, gw.internet, INTERNET_HOST, up, source=source), up)
        afterUp = self.onlyLease(g)
        self.assertNear(afterUp["bytes_out"] - afterDown["bytes_out"], up, "bytes out (up)")

    def assertNothingLeftFor(self, g, gw):
        self.assertEqual(self.leases(g), [])
        peers = gw.run(["wg", "show", g.wgInterface, "peers"]).stdout.split()
        self.assertEqual(peers, [])
        for name in ("tunnel4", "clients4"):
            answer = json.loads(gw.run(["nft", "-j", "list", "set", "inet", "mnigs", name]).stdout)
            sets = [item["set"] for item in answer["nftables"] if "set" in item]
            self.assertEqual(sets[0].get("elem", []), [], name)

    def registerWireGuard(self, client, gw):
        from mnigs.wireguard.uapi import generatePrivateKey, publicKey
        return rpc(client, gw.address, "gateway.register",
                   {"client": {"name": "hand"}, "method": "wireguard",
                    "params": {"public_key": publicKey(generatePrivateKey())}},
                   key="hand", timeout=10)

    def test_aRegisterHookRefusesAndTimesOut(self):
        """
        A register hook that exits 1 refuses the lease: the client gets
        1008 and the gateway keeps no lease, no WireGuard peer and no gate
        element.  One that takes longer than hooks.register_timeout is
        killed and the lease refused (the default) within that time.
        """
        client, gw = self.mesh.clientNextToGateway()
        hook, out = argvWriter(gw, "register-args")
        refusing = writeHook(gw, "refuse", f"{hook} \"$@\"; exit 1")
        g = self.gateway(gw, hooks={"register": refusing, "register_timeout": 1.0})
        self.assertEqual(self.registerWireGuard(client, gw), ("error", REFUSED))
        argv = readArgv(out)
        self.assertEqual(len(argv), 8, argv)
        self.assertEqual((argv[1], argv[3]), ("register", "wireguard"))
        self.assertRegex(argv[5], r"^100\.64\.0\.[0-9]+/32$")
        self.assertTrue(argv[6].startswith("ed25519:"), argv)
        self.assertEqual(argv[7], "hand")
        self.assertNothingLeftFor(g, gw)

        pidFile = os.path.join(gw.tmp, "slow.pid")
        slow = writeHook(gw, "slow", f"echo $$ > {pidFile}; exec sleep 30")
        g.stop()
        g.rewrite(hooks={"register": slow})
        g.start()
        started = time.monotonic()
        self.assertEqual(self.registerWireGuard(client, gw), ("error", REFUSED))
        self.assertLess(time.monotonic() - started, 5)
        self.assertNothingLeftFor(g, gw)
        with open(pidFile) as f:
            pid = int(f.read())
        waitUntil(lambda: not os.path.exists(f"/proc/{pid}"), 5,
                  message="the slow hook to be killed")
