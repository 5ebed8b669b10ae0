"""
The gateway server with real daemons in network namespaces: babeld mesh,
wireguard-go, nftables, and an "internet" namespace behind the gateway.

Topology (hello 0.5 s)::

    client --- r1 --- gw === inet (198.51.100.1)
                      |
                      n1   (a direct neighbour, for the forward method)

The WireGuard peer on the client is set up by the test itself with
wireguard-go and wg; the mnigs client is not involved.  Nothing is mocked.
"""

import os
import secrets
import signal
import time

from twisted.trial.unittest import TestCase

from mnigs.wireguard.uapi import generatePrivateKey, publicKey
from tests.mesh.gatewayproc import GatewayProcess, rpc
from tests.mesh.commands import withMargin
from tests.mesh.harness import INTERNET_HOST6, Mesh, requireNamespaces, waitUntil

INTERNET = "198.51.100.1"


class HandMadeWireGuard:
    """
    A WireGuard client made by hand on a node: wireguard-go, wg and ip.
    """

    def __init__(self, node):
        self.node = node
        self.ifname = "mc" + secrets.token_hex(4)
        self.private = node.run(["wg", "genkey"]).stdout.strip()
        self.public = node.run(["wg", "pubkey"], input=self.private + "\n").stdout.strip()
        node.run(["wireguard-go", self.ifname])
        keyFile = os.path.join(node.tmp, f"{self.ifname}.key")
        with open(keyFile, "w") as f:
            f.write(self.private + "\n")
        os.chmod(keyFile, 0o600)
        node.run(["wg", "set", self.ifname, "private-key", keyFile])
        node.run(["ip", "link", "set", self.ifname, "up"])

    def use(self, lease):
        """
        Bring the tunnel up for C{lease} and route the internet host into
        it; with an inner IPv6 address (C{address6}), the internet's IPv6
        host too.
        """
        config = lease["config"]
        self.node.run(["ip", "addr", "add", config["address"], "dev", self.ifname])
        allowed = [f"{INTERNET}/32"]
        if "address6" in config:
            self.node.run(["ip", "addr", "add", config["address6"], "dev", self.ifname])
            allowed.append(f"{INTERNET_HOST6}/128")
        self.node.run(["wg", "set", self.ifname, "peer", config["peer_public_key"],
                       "endpoint", config["endpoint"], "allowed-ips", ",".join(allowed),
                       "persistent-keepalive", "1"])
        self.node.run(["ip", "route", "replace", f"{INTERNET}/32", "dev", self.ifname])
        if "address6" in config:
            self.node.run(["ip", "-6", "route", "replace", f"{INTERNET_HOST6}/128",
                           "dev", self.ifname])


class GatewayMeshTests(TestCase):
    timeout = 120

    def setUp(self):
        requireNamespaces(self, "babeld", "wireguard-go", "wg", "nft", "ping")
        self.mesh = Mesh(self)
        self.client = self.mesh.node("client")
        self.r1 = self.mesh.node("r1")
        self.gw = self.mesh.node("gw")
        self.n1 = self.mesh.node("n1")
        self.mesh.link(self.client, self.r1)
        self.mesh.link(self.r1, self.gw)
        self.mesh.link(self.n1, self.gw)
        self.mesh.internet(self.gw)
        self.mesh.startBabel()
        self.mesh.waitConverged()

    def startGateway(self, **overrides):
        self.gateway = GatewayProcess(self.gw, overrides)
        self.addCleanup(self.gateway.stop)
        return self.gateway.start()

    def register(self, node, method, params=None, clientId=None, host=None):
        kind, value = rpc(node, host or self.gw.address, "gateway.register",
                          {"client": {"name": node.name}, "method": method,
                           "params": params or {}},
                          key=clientId or node.name)
        return kind, value

    def lease(self, node, method, params=None, **kw):
        kind, value = self.register(node, method, params, **kw)
        self.assertEqual(kind, "result", value)
        return value["lease"]

    def reaches(self, node):
        return node.ping(INTERNET, timeout=1)

    def test_wireguardLeaseIsTheOnlyWayThrough(self):
        """
        An unleased node routing via the gateway gets nothing; a WireGuard
        lease gets through; unregistering cuts it.
        """
        self.startGateway()
        self.assertFalse(self.reaches(self.client), "unleased traffic got through")
        wg = HandMadeWireGuard(self.client)
        lease = self.lease(self.client, "wireguard", {"public_key": wg.public})
        self.assertEqual(lease["config"]["gateway_address"], "100.64.0.1")
        wg.use(lease)
        waitUntil(lambda: self.reaches(self.client), 15, message="ping through the tunnel")
        kind, value = rpc(self.client, self.gw.address, "gateway.unregister",
                          {"lease": lease["id"], "token": lease["token"]})
        self.assertEqual((kind, value), ("result", {"released": True}))
        self.assertFalse(self.reaches(self.client), "traffic still flows after unregister")
        status = self.gateway.status()
        self.assertEqual(status["clients"], 0)

    def test_expiryCutsAccessWithinOneSweep(self):
        self.startGateway(terms={"lease_seconds": 10}, server={"sweep_interval": 0.5})
        wg = HandMadeWireGuard(self.client)
        lease = self.lease(self.client, "wireguard", {"public_key": wg.public})
        expiresAt = time.monotonic() + lease["expires_in"]
        wg.use(lease)
        waitUntil(lambda: self.reaches(self.client), 8, message="ping through the tunnel")
        waitUntil(lambda: not self.client.ping(INTERNET, timeout=0.3), 20, interval=0.1,
                  message="the expired lease to be cut")
        late = time.monotonic() - expiresAt
        # One sweep (0.5 s) plus the 0.3 s ping that noticed, plus rounding
        # of expires_in to whole seconds.
        self.assertLess(late, withMargin(0.5 + 0.3 + 1.0), f"cut {late:.2f} s after expiry")
        kind, code = rpc(self.client, self.gw.address, "gateway.renew",
                         {"lease": lease["id"], "token": lease["token"]})
        self.assertEqual((kind, code), ("error", 1003))

    def test_sigkillAndRestartLosesNoLease(self):
        self.startGateway()
        wg = HandMadeWireGuard(self.client)
        lease = self.lease(self.client, "wireguard", {"public_key": wg.public})
        wg.use(lease)
        waitUntil(lambda: self.reaches(self.client), 15, message="ping through the tunnel")
        self.gateway.kill(signal.SIGKILL)
        self.assertTrue(self.reaches(self.client), "a crashed server cut the client")
        self.gateway.start()
        kind, value = rpc(self.client, self.gw.address, "gateway.renew",
                          {"lease": lease["id"], "token": lease["token"]})
        self.assertEqual(kind, "result", value)
        self.assertTrue(self.reaches(self.client), "the restarted server cut the client")
        again = self.lease(self.client, "wireguard", {"public_key": wg.public})
        self.assertEqual((again["id"], again["token"]), (lease["id"], lease["token"]))

    def test_uplinkDownMakesGatewayUnavailable(self):
        self.startGateway()
        self.gw.run(["ip", "link", "set", "up0", "down"])
        # Checks every 0.5 s: the deadline is a margin, not a target.
        waitUntil(lambda: self.gateway.info(self.client, self.gw.address)["available"] is False,
                  withMargin(3.0), interval=0.1, message="available: false")
        kind, code = self.register(self.client, "wireguard", {"public_key": publicKey(generatePrivateKey())})
        self.assertEqual((kind, code), ("error", 1005))
        self.gw.run(["ip", "link", "set", "up0", "up"])
        self.gw.run(["ip", "route", "replace", "default", "via", "203.0.113.1", "dev", "up0",
                     "proto", "static"])
        waitUntil(lambda: self.gateway.info(self.client, self.gw.address)["available"] is True,
                  5, interval=0.1, message="available again")

    def test_forwardOnlyForLeasedDirectNeighbours(self):
        self.startGateway()
        self.assertFalse(self.reaches(self.n1), "unleased neighbour got through")
        gwOnN1Link = self.gw.interfaceAddresses["m1"].split("/")[0]
        kind, code = self.register(self.client, "forward", host=self.gw.address)
        self.assertEqual((kind, code), ("error", 1002), "forward offered two hops away")
        lease = self.lease(self.n1, "forward", host=gwOnN1Link)
        self.assertEqual(lease["config"]["gateway_address"], gwOnN1Link)
        self.assertEqual(lease["config"]["address"], self.n1.interfaceAddresses["m0"].split("/")[0] + "/32")
        waitUntil(lambda: self.reaches(self.n1), 5, message="the neighbour to get through")
        self.assertFalse(self.reaches(self.client), "the lease leaked to another node")
        rpc(self.n1, gwOnN1Link, "gateway.unregister", {"lease": lease["id"], "token": lease["token"]})
        self.assertFalse(self.reaches(self.n1), "forwarding continued after unregister")
