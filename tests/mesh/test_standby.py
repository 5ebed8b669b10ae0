"""
Hot standby with real daemons in network namespaces (babeld, two
mnigs-server gateways with wireguard-go and nftables, an internet behind
each): the client holds a standby tunnel to the second gateway; the
serving gateway dies silently (an nft drop-everything table, no link
down) and the standby takes over by a route change, with no registration
on the way; once the dead gateway is back a new standby is made with it.
Nothing is mocked.
"""

import re
import secrets
import time

from mnigs.methods.slots import slotName

from tests.mesh.commands import withMargin
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import requireNamespaces, waitUntil
from tests.mesh.test_client import INTERNET, silence


def revive(node):
    node.run(["nft", "delete", "table", "inet", "mnigs_chaos"])


def readyStandby(client):
    "(name, device) of the client's ready standby, or None."
    for entry in (client.status().get("standby") or {}).get("standbys", []):
        if entry.get("state") == "ready":
            return entry["standby"]["name"], entry["standby"]["device"]
    return None


def grants(gateway):
    with open(gateway.logPath) as f:
        return len(re.findall(r"lease \S+ granted: ", f.read()))


class StandbyMeshTests(DaemonMeshTestCase):

    def failOverToTheStandby(self, c, gwA, device):
        """
        Silence gwA (serving) and see the client online via gwB through
        the standby's C{device} by a promotion, within detection and a
        route change.
        """
        silence(gwA)
        died = time.monotonic()
        status = c.waitState("online", 15, gateway="gwB")
        moved = time.monotonic() - died
        self.assertEqual(status["current"]["device"], device)
        waitUntil(lambda: c.node.ping(INTERNET, timeout=0.5), 10, message="internet via gwB")
        # Detection (about 1.5 s) and a route change: no registration,
        # no tunnel to bring up, nothing to verify.
        self.assertLess(moved, withMargin(2.5))
        transitions = [t["transition"] for t in c.status()["transitions"]]
        self.assertTrue(any(t.startswith("online --promote--> promoting") or
                            t.startswith("degraded --promote--> promoting") for t in transitions),
                        transitions)
        self.assertIn("promoting --promoted--> online", transitions)

    def test_aSilentGatewayIsReplacedByItsStandby(self):
        """
        client - r1 - gwA, and r1 - r2 - gwB: online via the nearer gwA
        with a standby to gwB on the next device; gwA goes silent; the
        client is online via gwB through the standby's device, by a
        promotion (the trace and the log say so, and gwB granted no lease
        meanwhile); gwA comes back and becomes the standby.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA)
        serverB = self.gateway(gwB)
        c = self.clientProcess(client).start()
        c.waitState("online", 30, gateway="gwA")
        waitUntil(lambda: readyStandby(c) is not None, 30, message="a ready standby")
        name, device = readyStandby(c)
        self.assertEqual(name, "gwB")
        self.assertNotEqual(device, c.wgInterface)
        self.assertEqual(c.status()["current"]["device"], c.wgInterface)
        self.assertTrue(client.ping(INTERNET))
        granted = grants(serverB)
        before = len(open(c.logPath).read())

        self.failOverToTheStandby(c, gwA, device)
        self.assertEqual(grants(serverB), granted)
        after = open(c.logPath).read()[before:]
        self.assertRegex(after, r"the standby via gwB \([0-9.]+\) over wireguard takes over "
                                r"\(a route change\)")
        # (Afterwards the next standby is being made: with gwA, silent.)
        failover = after[:after.index("online via gwB")]
        self.assertNotRegex(failover, r"registration with|trying gwB|gateway.register")

        # gwA comes back: it becomes the standby.
        revive(gwA)
        waitUntil(lambda: readyStandby(c) is not None, withMargin(60),
                  message="a new standby once gwA is back")
        self.assertEqual(readyStandby(c)[0], "gwA")
        self.assertEqual(c.status()["current"]["name"], "gwB")
        self.assertTrue(client.ping(INTERNET))

    def test_usingTheStandbysGatewayMovesThereAndKeepsAStandby(self):
        """
        C{mnigsctl use gwB} while gwB is the standby's gateway: the client
        moves to gwB (gwB answers its registration with the standby's own
        lease, which the standby's release must leave alone) and the
        internet answers through gwB; then gwA becomes the standby.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA)
        self.gateway(gwB)
        c = self.clientProcess(client).start()
        c.waitState("online", 30, gateway="gwA")
        waitUntil(lambda: readyStandby(c) is not None, 30, message="a ready standby")
        self.assertEqual(readyStandby(c)[0], "gwB")
        moved = c.ctl("use", "gwB")
        self.assertEqual(moved.get("name"), "gwB", moved)
        c.waitState("online", 30, gateway="gwB")
        waitUntil(lambda: client.ping(INTERNET, timeout=0.5), 10, message="internet via gwB")
        waitUntil(lambda: readyStandby(c) is not None, 30, message="a standby with gwA")
        self.assertEqual(readyStandby(c)[0], "gwA")
        self.assertTrue(client.ping(INTERNET))

    def test_anOpenVPNStandbyTakesOver(self):
        """
        The same over OpenVPN: the standby's openvpn runs on the next tun
        name, and takes over when gwA goes silent.
        """
        requireNamespaces(self, "openvpn")
        from tests.mesh.test_openvpn import gatewayOverrides

        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA, **gatewayOverrides())
        self.gateway(gwB, **gatewayOverrides())
        tun = "mp" + secrets.token_hex(4) + "0"
        c = self.clientProcess(client, methods={"order": ["openvpn"], "connect_timeout": 5.0,
                                                "openvpn": {"interface": tun}}).start()
        c.waitState("online", 30, gateway="gwA")
        waitUntil(lambda: readyStandby(c) is not None, 30, message="a ready standby")
        self.assertEqual(readyStandby(c), ("gwB", slotName(tun, 1)))
        self.assertEqual(c.status()["current"]["device"], tun)
        self.failOverToTheStandby(c, gwA, slotName(tun, 1))
