"""
The C{openvpn} method with real daemons in network namespaces: babeld
(hello 0.5 s), mnigs-server with its openvpn server and nftables, an
internet namespace behind the gateway, and either a hand-made openvpn
client (gateway tests) or a real mnigs-client (client tests)::

    client --- r1 --- gw === inet (198.51.100.1)
                      |
                      thief   (an unregistered node next to the gateway)

Interface names are unique per run (C{mo}/C{mp} + hex).  Nothing is
mocked.
"""

import os
import secrets
import signal
import sys
import time

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from mnigs.client.routes import routingSnapshot
from mnigs.openvpn.config import checkLeaseConfig, clientConfig, credentialsFile
from mnigs.protocol import certificateSHA256
from tests.mesh.clientproc import ClientProcess
from tests.mesh.commands import pidsInNamespaces
from tests.mesh.gatewayproc import GatewayProcess, rpc
from tests.mesh.commands import withMargin
from tests.mesh.harness import INTERNET_HOST6, Mesh, requireNamespaces, waitUntil
from tests.mesh.pingtrain import PingTrain

log = Logger()

INTERNET = "198.51.100.1"
POOL = "100.65.0.0/24"


def openvpnPids(node, marker):
    """openvpn processes in C{node} whose command line holds C{marker}."""
    found = []
    for pid in pidsInNamespaces([node.ns]):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"openvpn" and marker.encode() in b" ".join(argv):
            found.append(pid)
    return found


def gatewayOverrides(**openvpn):
    settings = {"interface": "mo" + secrets.token_hex(4), "pool": POOL, "port": 1194}
    settings.update(openvpn)
    return {"methods": {"openvpn": settings}}


class HandMadeOpenVPN:
    """
    An openvpn client run by the test itself from a lease (no mnigs
    client), with a host route to the internet host through its tunnel
    (and to its IPv6 host, when the lease has an inner IPv6 address).
    """

    def __init__(self, node, lease):
        self.node = node
        self.ifname = "mq" + secrets.token_hex(4)
        self.dir = os.path.join(node.tmp, self.ifname)
        os.makedirs(self.dir)
        config = checkLeaseConfig(lease["config"])
        ca = os.path.join(self.dir, "ca.pem")
        credentials = os.path.join(self.dir, "credentials")
        with open(ca, "w") as f:
            f.write(config["ca"])
        with open(os.open(credentials, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(credentialsFile(lease["id"], lease["token"]))
        self.configPath = os.path.join(self.dir, "client.conf")
        self.ipv6 = "address6" in config
        with open(self.configPath, "w") as f:
            f.write(clientConfig(config, self.ifname, ca, credentials, ipv6=self.ipv6))
        self.process = None

    def start(self):
        self.process = self.node.spawn(["openvpn", "--config", self.configPath],
                                       log=os.path.join(self.dir, "openvpn.log"))
        return self

    def run(self, timeout=10):
        """Run to its end; (exit code, output)."""
        result = self.node.run(["openvpn", "--config", self.configPath], check=False,
                               timeout=timeout)
        return result.returncode, result.stdout + result.stderr

    def log(self):
        with open(os.path.join(self.dir, "openvpn.log"), errors="replace") as f:
            return f.read()

    def waitUp(self, timeout=10):
        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"openvpn exited:\n{self.log()}")
            return "Initialization Sequence Completed" in self.log()
        waitUntil(up, timeout, message="the hand-made openvpn tunnel")
        self.node.run(["ip", "route", "replace", f"{INTERNET}/32", "dev", self.ifname])
        if self.ipv6:
            self.node.run(["ip", "-6", "route", "replace", f"{INTERNET_HOST6}/128",
                           "dev", self.ifname])

    def reaches(self):
        return self.node.ping(INTERNET, timeout=1)


class OpenVPNMesh(TestCase):
    timeout = 180

    def setUp(self):
        requireNamespaces(self, "babeld", "openvpn", "wireguard-go", "wg", "nft", "ping")
        self.mesh = Mesh(self)
        self.client, self.r1, self.gw, self.thief = self.mesh.gatewayWithThief()

    def startGateway(self, **overrides):
        overrides = {**gatewayOverrides(), **overrides}
        self.gateway = GatewayProcess(self.gw, overrides)
        self.addCleanup(self.gateway.stop)
        self.gateway.start()
        self.tun = overrides["methods"]["openvpn"]["interface"]
        return self.gateway

    def serverPids(self):
        return openvpnPids(self.gw, self.tun)

    def register(self, node, clientId=None):
        kind, value = rpc(node, self.gw.address, "gateway.register",
                          {"client": {"name": node.name}, "method": "openvpn",
                           "params": {}},
                          key=clientId or node.name)
        self.assertEqual(kind, "result", value)
        return value["lease"]


class GatewayTests(OpenVPNMesh):
    """The gateway side, with hand-made openvpn clients."""

    def test_leaseGetsItsAddressAndUnregisterKillsTheSession(self):
        self.startGateway()
        offer = self.gateway.info(self.client, self.gw.address)
        entry = next(e for e in offer["methods"] if e["type"] == "openvpn")
        with open(os.path.join(self.gateway.dir, "state", "openvpn", "ca.pem")) as f:
            pin = certificateSHA256(f.read())
        self.assertEqual(entry, {"type": "openvpn", "endpoint": f"{self.gw.address}:1194",
                                 "proto": "udp", "ca_sha256": pin})
        self.assertNotIn("BEGIN", repr(offer))
        lease = self.register(self.client)
        config = lease["config"]
        self.assertEqual(config["gateway_address"], "100.65.0.1")
        self.assertEqual(config["address"], "100.65.0.2/32")
        self.assertNotIn(lease["token"], repr(config))
        self.assertEqual(certificateSHA256(config["ca"]), pin)
        vpn = HandMadeOpenVPN(self.client, lease).start()
        vpn.waitUp()
        waitUntil(vpn.reaches, 10, message="ping through the tunnel")
        addresses = self.client.run(["ip", "-4", "-o", "addr", "show", "dev", vpn.ifname]).stdout
        self.assertIn("100.65.0.2/24", addresses)
        released = time.monotonic()
        kind, value = rpc(self.client, self.gw.address, "gateway.unregister",
                          {"lease": lease["id"], "token": lease["token"]})
        self.assertEqual((kind, value), ("result", {"released": True}))
        vpn.process.wait(10)  # the gateway told it to HALT
        took = time.monotonic() - released
        log.info("unregister: hand-made openvpn exited {took:.2f} s later", took=took)
        self.assertLess(took, 5)
        self.assertFalse(vpn.reaches(), "traffic still flows after unregister")
        self.assertIn("server-pushed-halt", vpn.log())
        self.assertEqual(self.gateway.status()["clients"], 0)

    def test_leaseBytesFromTheManagementInterface(self):
        """
        An OpenVPN lease's bytes are openvpn's BYTECOUNT_CLI of its
        session (every second): 2 MB down and 1 MB up through a hand-made
        client show in C{mnigsctl --server leases}, within 10 %.
        """
        from tests.mesh.bulk import download, upload

        self.startGateway()
        lease = self.register(self.client)
        vpn = HandMadeOpenVPN(self.client, lease).start()
        vpn.waitUp()
        waitUntil(vpn.reaches, 10, message="ping through the tunnel")
        source = lease["config"]["address"].split("/")[0]

        def counted():
            [entry] = self.gateway.ctl("leases")["leases"]
            return entry

        def near(before, key, sent):
            # openvpn reports every second: wait for the count to pass
            # what was sent, then hold it to 10 % over.
            waitUntil(lambda: counted()[key] - before[key] >= sent, 5,
                      message=f"{key} to count {sent} bytes")
            after = counted()
            self.assertLessEqual(after[key] - before[key], sent * 1.1, key)
            return after

        first = counted()
        down, up = 2_000_000, 1_000_000
        self.assertEqual(download(self.client, self.gw.internet, INTERNET, down, source=source),
                         down)
        afterDown = near(first, "bytes_in", down)
        self.assertEqual(upload(self.client, self.gw.internet, INTERNET, up, source=source), up)
        near(afterDown, "bytes_out", up)

    def test_expiryKillsTheSession(self):
        self.startGateway(terms={"lease_seconds": 10}, server={"sweep_interval": 0.5})
        lease = self.register(self.client)
        expiresAt = time.monotonic() + lease["expires_in"]
        vpn = HandMadeOpenVPN(self.client, lease).start()
        vpn.waitUp()
        waitUntil(vpn.reaches, 10, message="ping through the tunnel")
        vpn.process.wait(20)
        late = time.monotonic() - expiresAt
        log.info("expiry: hand-made openvpn exited {late:.2f} s after expiry", late=late)
        self.assertLess(late, withMargin(0.5 + 1.0 + 1.0), f"session ended {late:.2f} s after expiry")
        self.assertIn("server-pushed-halt", vpn.log())
        self.assertFalse(vpn.reaches())

    def test_copiedConfigWithStaleOrMadeUpCredentialsGetsNothing(self):
        """
        The thief has the gateway's CA and a real lease's shape, but the
        lease was released (stale) or never existed (made up).
        """
        self.startGateway()
        lease = self.register(self.thief)
        rpc(self.thief, self.gw.address, "gateway.unregister",
            {"lease": lease["id"], "token": lease["token"]})
        live = self.register(self.client)
        madeUp = dict(lease, id=secrets.token_hex(8), token=secrets.token_urlsafe(24))
        wrongToken = dict(live, token=secrets.token_urlsafe(24))
        for name, credentials in (("stale", lease), ("made up", madeUp),
                                  ("live id, wrong token", wrongToken)):
            vpn = HandMadeOpenVPN(self.thief, credentials)
            code, output = vpn.run()
            self.assertIn("AUTH_FAILED", output, name)
            self.assertNotIn("Initialization Sequence Completed", output, name)
        self.assertFalse(self.thief.ping(INTERNET, timeout=1), "the thief got through")
        self.assertEqual(self.gateway.status()["clients"], 1)

    def test_sigkilledServerIsRestartedAndServesAgain(self):
        self.startGateway()
        lease = self.register(self.client)
        vpn = HandMadeOpenVPN(self.client, lease).start()
        vpn.waitUp()
        [pid] = self.serverPids()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        waitUntil(lambda: self.serverPids() and self.serverPids() != [pid], 10,
                  message="a new openvpn server")
        vpn.process.wait(15)  # its server is gone: ping-exit
        again = HandMadeOpenVPN(self.client, lease).start()
        again.waitUp()
        waitUntil(again.reaches, 10, message="ping through the restarted server")
        self.assertLess(time.monotonic() - killed, 15)


class ClientTests(OpenVPNMesh):
    """A real mnigs-client against a real mnigs-server."""

    def clientProcess(self, **overrides):
        overrides.setdefault("health", {"beyond": [INTERNET]})
        overrides.setdefault("methods", {"order": ["openvpn"], "connect_timeout": 5.0})
        self.clientTun = "mp" + secrets.token_hex(4)
        overrides.setdefault("methods", {})["openvpn"] = {"interface": self.clientTun}
        process = ClientProcess(self.client, overrides)
        self.addCleanup(process.stop)
        return process

    def clientPids(self):
        return openvpnPids(self.client, self.clientTun)

    def waitOnline(self, c, timeout, method="openvpn", exclude=()):
        """
        Wait until the client is online through C{method} with a tunnel
        process not in C{exclude} and the internet host answers.
        """
        def online():
            if method == "openvpn" and not set(self.clientPids()) - set(exclude):
                return False
            status = c.status()
            if status.get("state") != "online" or status["current"]["method"] != method:
                return False
            return self.client.ping(INTERNET, timeout=0.5)
        try:
            waitUntil(online, timeout, interval=0.05, message=f"online via {method}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nstatus: {c.status()}\n{c.logTail()}") from None

    def test_onlineThroughOpenVPNAndStopRestoresRouting(self):
        self.startGateway()
        before = routingSnapshot(self.client.ns)
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        status = c.status()
        self.assertEqual(status["current"]["address"], "100.65.0.2/32")
        self.assertEqual(self.gateway.status()["methods"]["openvpn"]["sessions"], 1)
        c.stop()
        self.assertEqual(self.clientPids(), [])
        self.assertEqual(routingSnapshot(self.client.ns), before)
        self.assertEqual(self.gateway.status()["clients"], 0)
        leftovers = os.listdir(os.path.join(c.dir, "state", f"openvpn-{self.clientTun}"))
        self.assertNotIn("credentials", leftovers)

    def test_onlineOverTCP(self):
        self.startGateway(**gatewayOverrides(proto="tcp", port=443))
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        [pid] = self.clientPids()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            config = f.read().split(b"\0")[2].decode()
        with open(config) as f:
            text = f.read()
        self.assertIn("proto tcp-client\n", text)
        self.assertIn(f"remote {self.gw.address} 443\n", text)

    def test_releasedLeaseKillsTheSessionAndTheClientComesBack(self):
        """
        The gateway ends the mnigs client's lease (unregistered with its
        own credentials, as an operator could): its openvpn is told to
        halt at once, the client notices from the process and registers
        again.
        """
        self.startGateway()
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        [pid] = self.clientPids()
        credentials = os.path.join(c.dir, "state", f"openvpn-{self.clientTun}", "credentials")
        with open(credentials) as f:
            leaseId, token = f.read().split()
        released = time.monotonic()
        kind, value = rpc(self.r1, self.gw.address, "gateway.unregister",
                          {"lease": leaseId, "token": token})
        self.assertEqual((kind, value), ("result", {"released": True}))
        waitUntil(lambda: pid not in self.clientPids(), 5, message="the halted openvpn to exit")
        log.info("released lease: client openvpn gone {took:.2f} s later",
                 took=time.monotonic() - released)
        self.waitOnline(c, 10, exclude=[pid])
        with open(credentials) as f:
            self.assertNotEqual(f.read().split()[0], leaseId)

    def test_blockedWireGuardFallsBackToOpenVPNWithin10s(self):
        """
        The first attempt is the wireguard registration: a register hook
        on the gateway stamps it (wall clock, with nanoseconds).
        """
        stamps = os.path.join(self.gw.tmp, "registered")
        hook = os.path.join(self.gw.tmp, "register-hook")
        with open(hook, "w") as f:
            f.write(f'#!/bin/sh\necho "$(date +%s.%N) $3" >> {stamps}\n')
        os.chmod(hook, 0o755)
        self.startGateway(hooks={"register": hook})
        self.gw.run(["nft", "-f", "-"], input="""
table inet mnigs_chaos {
  chain input { type filter hook input priority -300; udp dport 51820 drop; }
}
""")
        c = self.clientProcess(methods={"order": ["wireguard", "openvpn"],
                                        "connect_timeout": 3.0})
        started = time.time()
        c.start()
        self.waitOnline(c, 30)
        online = time.time()
        with open(stamps) as f:
            registrations = [line.split() for line in f]
        self.assertEqual([method for _, method in registrations][:2], ["wireguard", "openvpn"])
        took = online - float(registrations[0][0])
        log.info("fallback: online via openvpn {took:.2f} s after the first attempt "
                 "({fromStart:.2f} s after the client started)", took=took,
                 fromStart=online - started)
        self.assertLess(took, 10, f"online via openvpn {took:.1f} s after the first attempt")
        quality = c.status()["gateways"][0]["quality"]
        self.assertGreaterEqual(quality["failures"], 1)

    def test_sigkilledGatewayOpenVPNClientBackWithin10s(self):
        self.startGateway()
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        [serverPid] = self.serverPids()
        old = self.clientPids()
        os.kill(serverPid, signal.SIGKILL)
        killed = time.monotonic()
        self.waitOnline(c, 10, exclude=old)
        took = time.monotonic() - killed
        log.info("gateway openvpn SIGKILL: client back online in {took:.2f} s", took=took)
        self.assertNotEqual(self.serverPids(), [serverPid])
        self.assertLess(took, 10)

    def test_serverRestartCutIsShortAndMeasured(self):
        """
        SIGTERM + start of mnigs-server (a `systemctl restart`): openvpn
        cannot outlive its management connection, so the session is cut;
        the client's openvpn reconnects to the new server with the same
        lease.  The cut is measured with pings at 20/s (docs/operations.md).
        """
        self.startGateway()
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        lease = c.status()["current"]
        train = PingTrain(self.client, count=600)
        train.waitAnswered(20)
        self.gateway.stop()
        self.gateway.start()
        self.waitOnline(c, 25)
        sent, lost, seconds = train.cut()
        log.info("OpenVPN across a server restart: {lost} of {sent} pings lost ({seconds} s)",
                 lost=lost, sent=sent, seconds=seconds)
        sys.stderr.write(f"openvpn restart cut: {lost} of {sent} pings ({seconds} s)\n")
        self.assertLess(seconds, 10)
        self.assertEqual(c.status()["current"]["address"], lease["address"])

    def test_sigkilledClientOpenVPNBackWithin5s(self):
        self.startGateway()
        c = self.clientProcess().start()
        self.waitOnline(c, 30)
        [pid] = self.clientPids()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        self.waitOnline(c, 5, exclude=[pid])
        took = time.monotonic() - killed
        log.info("client openvpn SIGKILL: back online in {took:.2f} s", took=took)
        self.assertLess(took, 5)

