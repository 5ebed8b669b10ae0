"""
DNS from the lease (issue 15) with real daemons: babeld, mnigs-server
gateways with wireguard-go, an mnigs-client, and Debian's dnsmasq as the
resolver the gateways offer.  The client's /etc/resolv.conf is the one
C{ip netns exec} binds over it for the client's namespace
(L{tests.mesh.resolver}); the host's is never touched.  Names are
resolved by the system resolver (C{getent}) inside the client's
namespace.  Nothing is mocked.  systemd-resolved and resolvconf cannot
run here (no systemd as PID 1; installing resolvconf rewrites the host's
/etc/resolv.conf): their argument vectors are unit tests
(tests.unit.test_resolvers).
"""

import json
import os
import signal
import stat

from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import requireNamespaces, waitUntil
from tests.mesh.resolver import (
    DNSMASQ,
    DNSCheck,
    dnsWorks,
    query,
    resolvConfState,
    setResolvConf,
    startResolver,
    systemLookup,
)
from tests.mesh.test_client import silence

NAME = "test.mnigs"
#: The resolver behind gwA (on its internet node's host address) and the
#: one behind gwB, each giving its own answer for NAME.
RESOLVER_A, ANSWER_A = "198.51.100.1", "198.51.100.7"
RESOLVER_B, ANSWER_B = "198.51.100.2", "198.51.100.8"
#: The client's own resolv.conf: a mesh resolver that does not exist, and
#: options that make glibc give up on it quickly.
ORIGINAL = (b"# the mesh's own resolver\nnameserver 10.99.250.1\nsearch mesh.example\n"
            b"options timeout:1 attempts:1\n")


class DNSMeshTests(DaemonMeshTestCase):
    def setUp(self):
        super().setUp()
        requireNamespaces(self, DNSMASQ, "getent")

    def test_fileModeAppliesReplacesOnFailoverAndRestoresByteForByte(self):
        """
        client - r1 - gwA, r1 - r2 - gwB, each gateway offering a resolver
        on its internet side: online through gwA the client resolves
        through gwA's resolver, after gwA dies through gwB's (the new
        lease's resolvers replace the old, the originals never come back
        in between), and once stopped its resolv.conf is what it was,
        bytes and mode.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        startResolver(gwA.internet, RESOLVER_A, {NAME: ANSWER_A})
        startResolver(gwB.internet, RESOLVER_B, {NAME: ANSWER_B})
        self.gateway(gwA, methods={"wireguard": {"dns": [RESOLVER_A]}})
        self.gateway(gwB, methods={"wireguard": {"dns": [RESOLVER_B]}})
        before = setResolvConf(client, ORIGINAL, 0o640)
        self.assertIsNone(systemLookup(client, NAME))

        c = self.clientProcess(client, dns={"mode": "file"}).start()
        c.waitState("online", 30, gateway="gwA")
        self.assertTrue(dnsWorks(client, NAME, ANSWER_A), c.logTail())
        data, mode, kind = resolvConfState(client)
        self.assertEqual((mode, kind), (0o640, "file"))
        self.assertIn(f"nameserver {RESOLVER_A}\n".encode(), data)
        self.assertIn(b"search mesh.example\n", data)
        self.assertNotIn(b"10.99.250.1", data)
        self.assertEqual(c.status()["dns"]["servers"], [RESOLVER_A])

        silence(gwA)
        c.waitState("online", 30, gateway="gwB")
        self.assertTrue(dnsWorks(client, NAME, ANSWER_B), c.logTail())
        data = resolvConfState(client)[0]
        self.assertIn(f"nameserver {RESOLVER_B}\n".encode(), data)
        self.assertNotIn(RESOLVER_A.encode(), data)
        with open(c.logPath) as f:
            dnsLines = [line.split("dns: ", 1)[1] for line in f if "] dns: " in line]
        self.assertEqual([line.split(" (")[0] for line in dnsLines],
                         [f"resolvers {RESOLVER_A} in force", f"resolvers {RESOLVER_B} in force"],
                         dnsLines)

        c.stop()
        self.assertEqual(resolvConfState(client), before)
        self.assertFalse(os.path.exists(os.path.join(c.config["client"]["state_dir"], "dns.json")))
        self.assertIsNone(systemLookup(client, NAME))

    def test_hookGetsTheGatewaysOwnResolverInsideTheTunnel(self):
        """
        client - gw, the gateway offering its own resolver inside the
        tunnel (dns = ["tunnel"]: its inner address, where dnsmasq
        listens): the client's hook is run with the device and that
        address as arguments, the resolver answers through the tunnel, and
        the hook is told to restore on stop.
        """
        client, gw = self.mesh.clientNextToGateway()
        startResolver(gw, "100.64.0.1", {NAME: ANSWER_A}, dynamic=True)
        self.gateway(gw, methods={"forward": {"enabled": False},
                                  "wireguard": {"dns": ["tunnel", RESOLVER_A]}})
        calls = os.path.join(client.tmp, "hook-calls")
        hook = os.path.join(client.tmp, "dns-hook")
        with open(hook, "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n')
        os.chmod(hook, stat.S_IRWXU)
        before = setResolvConf(client, ORIGINAL)

        c = self.clientProcess(client, dns={"mode": "hook", "hook": hook}).start()
        c.waitState("online", 30, gateway="gw")
        waitUntil(lambda: os.path.exists(calls), 10, message="the hook ran")
        with open(calls) as f:
            self.assertEqual(f.read(), f"apply {c.wgInterface} 100.64.0.1 {RESOLVER_A}\n")
        waitUntil(lambda: query(client, "100.64.0.1", NAME) == [ANSWER_A], 10,
                  message="the gateway's resolver answering through the tunnel")
        self.assertEqual(resolvConfState(client), before)  # the hook's business, not ours
        c.stop()
        with open(calls) as f:
            self.assertEqual(f.read().splitlines()[1:], [f"restore {c.wgInterface}"])

    def test_forwardInFileModeUsesItsLeasesResolvers(self):
        """
        client - gw over forward only: no tunnel device, so the device is
        the mesh interface; file mode applies the lease's resolvers (the
        gateway's address on the shared link, "tunnel", where dnsmasq
        listens, and the internet one) and restores the original on stop.
        """
        client, gw = self.mesh.clientNextToGateway()
        [gwSide] = [address.split("/")[0] for address in gw.interfaceAddresses.values()
                    if address.startswith("10.99.")]
        startResolver(gw, gwSide, {NAME: ANSWER_B})
        startResolver(gw.internet, RESOLVER_A, {NAME: ANSWER_A})
        self.gateway(gw, methods={"forward": {"dns": ["tunnel", RESOLVER_A]},
                                  "wireguard": {"enabled": False}})
        before = setResolvConf(client, ORIGINAL)
        c = self.clientProcess(client, dns={"mode": "file"},
                               methods={"order": ["forward"]}).start()
        status = c.waitState("online", 30, gateway="gw")
        self.assertEqual(status["current"]["method"], "forward")
        self.assertTrue(dnsWorks(client, NAME, ANSWER_B), c.logTail())
        self.assertEqual(c.status()["dns"], {"mode": "file", "servers": [gwSide, RESOLVER_A],
                                             "device": status["current"]["device"]})
        c.stop()
        self.assertEqual(resolvConfState(client), before)

    def test_aRestartAfterACrashRestoresTheOriginal(self):
        """
        A client killed (SIGKILL) while its resolvers are in force leaves
        its record in the state directory; the next start puts the
        original back from there, byte for byte, whatever its own
        dns.mode (here: off).  (Set up by L{DNSCheck}, as bench/router.py
        does.)
        """
        client, gw = self.mesh.clientNextToGateway()
        check = DNSCheck(client, gw)
        check.prepare(mode=0o604)
        self.gateway(gw, methods=check.gatewayMethods)

        crashed = self.clientProcess(client, name="crashed", **check.clientConfig).start()
        crashed.waitState("online", 30, gateway="gw")
        self.assertTrue(check.online(), crashed.logTail())
        stateDir = crashed.config["client"]["state_dir"]
        with open(os.path.join(stateDir, "dns.json")) as f:
            self.assertEqual(json.load(f)["servers"], [check.resolver])
        os.kill(crashed.process.pid, signal.SIGKILL)
        crashed.process.wait(10)
        self.assertFalse(check.restored())

        restarted = self.clientProcess(client, name="restarted", dns={"mode": "off"},
                                       client={"state_dir": stateDir})
        restarted.start()
        waitUntil(check.restored, 20, message="the original resolv.conf back")
        self.assertFalse(os.path.exists(os.path.join(stateDir, "dns.json")))
        # Online again (mode off: the resolv.conf stays the original) before
        # the cleanup stops it: a client stopped while its babeld monitor
        # still awaits babeld's greeting logs a critical line from
        # ClientService (a race of its own, not DNS's).
        restarted.waitState("online", 30, gateway="gw")
        self.assertTrue(check.restored())
        with open(restarted.logPath) as f:
            self.assertIn("dns: a previous run left resolvers in force (file, through", f.read())
