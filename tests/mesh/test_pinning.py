"""
Make-before-break in the kernel (L{mnigs.client.pinning} with the
client's real table, L{mnigs.client.datapath.ClientDataPath}, and its
policy routing, L{mnigs.client.routes.PolicyRouting}), without daemons:
two links from the client stand for two gateways' tunnels, and each
gateway admits only its own lease's address and masquerades to one shared
internet host, which tells by source address which gateway a connection
came through::

    client m0 100.64.0.2 --- m0 gwA m1 203.0.113.2 --- inet (198.51.100.1)
           m1 100.64.1.2 --- m0 gwB m1 192.0.2.2   ---/

Nothing is mocked; the links are veth pairs with next hops rather than
tunnels (the rules and marks do not care which).  The daemons' whole
move is tests.mesh.test_moves.
"""

import ipaddress
import time
import types

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.client.datapath import ClientDataPath, Forwarding, Forwarding6, Passage
from mnigs.client.pinning import ConntrackCounter, PinRouting, pinMark
from mnigs.client.routes import PolicyRouting, openIPRoute
from tests.mesh.bulk import BackgroundDownload
from tests.mesh.harness import INTERNET_HOST, Mesh, requireNamespaces, waitUntil
from tests.mesh.ipv6net import seenFrom, serveSeen

LEASE_A, LEASE_B = "100.64.0.2", "100.64.1.2"
UPLINK_A, UPLINK_B = "203.0.113.2", "192.0.2.2"
SEEN_PORT = 8080
#: Four seconds of traffic at tests.mesh.bulk's pace.
SIZE = 16 * 1000 * 1000


class NodeNft:
    "An nft runner for the data path, synchronous, inside a node."

    def __init__(self, node):
        self.node = node

    def apply(self, script):
        self.node.run(["nft", "-f", "-"], input=script)
        return defer.succeed(None)


class PinningTests(TestCase):
    timeout = 120

    def setUp(self):
        requireNamespaces(self, "nft")
        self.mesh = Mesh(self)

    def gateway(self, gw, lease, client, uplink):
        "C{gw} routes C{lease} to C{client}, admits only it and masquerades."
        gw.run(["ip", "route", "add", f"{lease}/32", "via", client])
        gw.run(["ip", "route", "add", "default", "via", uplink])
        gw.run(["nft", "-f", "-"], input=f"""
table inet gate {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "m0" ip saddr != {lease} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "m1" masquerade
    }}
}}
""")

    def topology(self):
        m = self.mesh
        client, gwA, gwB, inet = (m.node(n) for n in ("client", "gwA", "gwB", "inet"))
        m.link(client, gwA, "10.98.1.2/24", "10.98.1.1/24")
        m.link(client, gwB, "10.98.2.2/24", "10.98.2.1/24")
        m.link(gwA, inet, f"{UPLINK_A}/24", "203.0.113.1/24")
        m.link(gwB, inet, f"{UPLINK_B}/24", "192.0.2.1/24")
        inet.run(["ip", "addr", "add", f"{INTERNET_HOST}/32", "dev", "lo"])
        client.run(["ip", "addr", "add", f"{LEASE_A}/32", "dev", "m0"])
        client.run(["ip", "addr", "add", f"{LEASE_B}/32", "dev", "m1"])
        self.gateway(gwA, LEASE_A, "10.98.1.2", "203.0.113.1")
        self.gateway(gwB, LEASE_B, "10.98.2.2", "192.0.2.1")
        return client, gwA, gwB, inet

    def clientSide(self, client, prefixes=()):
        paths = []
        for _ in range(2):
            paths.append(self.mktemp())
            with open(paths[-1], "w") as f:
                f.write("0\n")
        # The flows' bookkeeping runs in this process's namespace: the
        # LAN's translations are not forgotten here (tests.unit.test_pinning).
        data = ClientDataPath(NodeNft(client), "mnigs_client", prefixes, clamp=False,
                              forwarding=Forwarding(paths[0]), forwarding6=Forwarding6(paths[1]),
                              flows=types.SimpleNamespace(forget=lambda addresses: 0),
                              pinning=True)
        routing = PolicyRouting(8150, 8150, netns=client.ns,
                                prefixes=[ipaddress.ip_network(p) for p in prefixes])
        pins = PinRouting(8150, 8150, ipRoute=lambda: openIPRoute(client.ns))
        self.addCleanup(pins.clear)
        self.addCleanup(routing.clear)
        return data, routing, pins

    def test_aTransferThroughAKeepsGoingAfterTheMoveToBNewConnectionsTakeB(self):
        """
        A download from the internet host to the client runs through gwA;
        the client moves to gwB the way a planned move does (retire gwA's
        session, pin its slot, point mnigs's route at gwB, gwB's session
        in the table).  The download completes, every byte, without a
        reset; a connection made after the move reaches the internet host
        from gwB's address; once the download is over connection tracking
        holds none of gwA's flows.
        """
        client, gwA, gwB, inet = self.topology()
        self.moveDuringADownload(client, client, inet)

    def test_aSharedLANsTransferKeepsItsTranslationThroughA(self):
        """
        The same for a host on the client's shared LAN (192.168.7.0/24,
        translated to the lease's address): its download through gwA,
        translated to gwA's lease address, goes on through gwA after the
        move; its next connection is translated to gwB's and goes
        through gwB.
        """
        client, gwA, gwB, inet = self.topology()
        lan = self.mesh.node("lan")
        self.mesh.link(lan, client, "192.168.7.2/24", "192.168.7.1/24")
        lan.run(["ip", "route", "add", "default", "via", "192.168.7.1"])
        self.moveDuringADownload(client, lan, inet, prefixes=["192.168.7.0/24"])

    def moveDuringADownload(self, client, host, inet, prefixes=()):
        data, routing, pins = self.clientSide(client, prefixes)
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("m0", ipaddress.ip_address(LEASE_A))))
        routing.install("m0", gateway="10.98.1.1", source=LEASE_A)
        serveSeen(inet, INTERNET_HOST, SEEN_PORT)
        self.assertEqual(waitUntil(lambda: seenFrom(host, INTERNET_HOST, SEEN_PORT), 10,
                                   message="the internet host through gwA"), UPLINK_A)

        downloading = BackgroundDownload(host, inet, INTERNET_HOST, SIZE)
        self.addCleanup(downloading.join, 60)
        result = downloading.result
        counter = ConntrackCounter(client.ns)
        waitUntil(lambda: downloading.received() > 2_000_000, 10,
                  message="the download under way through gwA")
        self.assertGreater(counter.count(pinMark(1)), 0)

        moved = time.monotonic()
        slot = data.retire()
        self.assertEqual(slot, 1)
        pins.pin(slot, "m0")
        routing.install("m1", gateway="10.98.2.1", source=LEASE_B)
        self.successResultOf(data.online(Passage("m1", ipaddress.ip_address(LEASE_B))))

        self.assertEqual(seenFrom(host, INTERNET_HOST, SEEN_PORT), UPLINK_B)
        downloading.join(60)
        self.assertNotIn("error", result)
        self.assertEqual(result["received"], SIZE)
        self.assertGreater(result["ended"] - moved, 1.0, "the download ran on after the move")
        waitUntil(lambda: counter.count(pinMark(1)) == 0, 10, message="gwA's flows gone")
        self.assertEqual(seenFrom(host, INTERNET_HOST, SEEN_PORT), UPLINK_B)

        pins.unpin(slot)
        self.successResultOf(data.release(slot))
        self.successResultOf(data.stop())
