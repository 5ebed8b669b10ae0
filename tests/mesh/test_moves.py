"""
Planned moves made before break, with real daemons in network namespaces
(babeld, two mnigs-server gateways with wireguard-go and nftables, an
mnigs-client): a TCP transfer running through gateway A while the client
moves to gateway B (C{mnigsctl use}) completes without a reset, and new
connections go through B, as the one internet host behind both sees by
their source address (issue 16, acceptance 3)::

    client --- r1 --- gwA  up0 203.0.113.2 ---\\
                |                              inet (198.51.100.1)
                r2 --- gwB  up0 203.0.114.2 ---/

Nothing is mocked.  The kernel's side alone is tests.mesh.test_pinning.
"""

import time

from tests.mesh.bulk import BackgroundDownload
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import INTERNET_HOST, waitUntil
from tests.mesh.ipv6net import seenFrom, serveSeen

SEEN_PORT = 8080
#: Five seconds of traffic at tests.mesh.bulk's pace.
SIZE = 20 * 1000 * 1000


class MoveTests(DaemonMeshTestCase):

    def topology(self):
        m = self.mesh
        client, r1, r2, gwA, gwB = (m.node(n) for n in ("client", "r1", "r2", "gwA", "gwB"))
        m.link(client, r1)
        m.link(r1, gwA)
        m.link(r1, r2)
        m.link(r2, gwB)
        internet, uplinks = m.sharedInternet(gwA, gwB)
        m.startBabel()
        m.waitConverged()
        return client, gwA, gwB, internet, uplinks

    def test_aTransferThroughASurvivesAHandOverToTheStandbyB(self):
        """
        A download from the internet host runs through gwA; halfway, the
        operator moves the client to gwB (C{mnigsctl use gwB}), its hot
        standby: gwB's tunnel, up and probed already, takes mnigs's route.
        The download goes on through gwA to its last byte without a
        reset, a connection made after the move reaches the internet host
        from gwB's address, no new standby is made with gwA while its
        lease is kept, and once the download is over the client lets
        gwA's tunnel go.
        """
        self.moveDuringADownload({}, "handingOver --promoted--> online")

    def test_aTransferThroughASurvivesAMoveToBWithoutStandby(self):
        """
        The same without a hot standby (C{standby.count = 0}): gwB is
        asked for a lease while the client stays on gwA, its tunnel comes
        up beside gwA's and serves once it answers.
        """
        self.moveDuringADownload({"standby": {"count": 0}}, "moving --answered--> online")

    def moveDuringADownload(self, overrides, transition):
        client, gwA, gwB, internet, (uplinkA, uplinkB) = self.topology()
        self.gateway(gwA)
        self.gateway(gwB)
        c = self.clientProcess(
            client, discovery={"timeout": 1.0, "rescan_interval": 3600.0, "sources": ["babel"]},
            policy={"switch_hold": 3600.0}, **overrides).start()
        onA = c.waitState("online", 30, gateway="gwA")["current"]
        serveSeen(internet, INTERNET_HOST, SEEN_PORT)
        self.assertEqual(waitUntil(lambda: seenFrom(client, INTERNET_HOST, SEEN_PORT), 10,
                                   message="the internet host through gwA"), uplinkA)

        downloading = BackgroundDownload(client, internet, INTERNET_HOST, SIZE)
        self.addCleanup(downloading.join, 60)
        result = downloading.result
        waitUntil(lambda: downloading.received() > 2_000_000, 10,
                  message="the download under way through gwA")

        moved = c.ctl("use", "gwB")
        self.assertEqual((moved.get("name"), moved.get("method")), ("gwB", "wireguard"), moved)
        onB = c.waitState("online", 30, gateway="gwB")["current"]
        switched = time.monotonic()
        [kept] = c.status()["kept"]
        self.assertEqual(kept["gateway"], onA["name"] + f" ({onA['host']})")
        self.assertNotIn("ended", result, "the download ended before the move: make it longer")
        self.assertEqual(seenFrom(client, INTERNET_HOST, SEEN_PORT), uplinkB)

        downloading.join(60)
        self.assertNotIn("error", result)
        self.assertEqual(result["received"], SIZE)
        self.assertGreater(result["ended"], switched)
        self.assertNotEqual(onB["device"], onA["device"])
        events = [e["event"] for e in c.ctl("events")["events"]]
        self.assertIn(transition, events)
        standbys = c.status()["standby"]["standbys"]
        self.assertNotIn(onA["gateway"], [(s.get("standby") or s.get("attempt") or {}).get("gateway")
                                          for s in standbys])

        # Nothing left on gwA: its tunnel goes, the new one stays.
        def gone(device):
            return not client.ipr().link_lookup(ifname=device)
        waitUntil(lambda: gone(onA["device"]), 20, interval=0.5, message="gwA's tunnel let go")
        self.assertFalse(gone(onB["device"]))
        self.assertEqual(seenFrom(client, INTERNET_HOST, SEEN_PORT), uplinkB)
