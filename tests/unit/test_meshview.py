"""
The mesh as the client saw it (L{mnigs.client.meshview.meshView}): the
last scan's candidates and ranking in, nodes and edges out.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.meshview import meshView
from mnigs.client.ranking import Ranked, Seen
from mnigs.routing.candidates import Candidate
from tests.unit.test_agent import offer


def candidate(address, distance, via="fe80::1", interface="m0", source="babel"):
    return Candidate(ipaddress.ip_address(address), distance, source, via, interface)


def ranked(name, host, usable=True, distance=192.0):
    return Ranked(Seen(offer(name), host, 8150, distance, 0.01), 0.5, usable,
                  "" if usable else "full", ("wireguard",))


class MeshViewTests(SynchronousTestCase):

    def test_babelCandidatesHangOffTheirNextHop(self):
        """
        client - r1 - gwA, r1 - r2 - gwB: every route goes through r1's
        link-local address on m0; the gateways are the addresses that
        answered, the current one marked.
        """
        candidates = [candidate("10.251.0.5", 288.0), candidate("10.251.0.2", 96.0),
                      candidate("10.251.0.3", 192.0), candidate("10.251.0.4", 192.0)]
        view = meshView(candidates, [ranked("gwA", "10.251.0.3"), ranked("gwB", "10.251.0.5")],
                        currentGateway="gwA")
        self.assertEqual(view["nodes"], [
            {"id": "self", "kind": "self", "label": "this client", "distance": 0.0,
             "gateway": None, "usable": None, "current": False},
            {"id": "fe80::1%m0", "kind": "hop", "label": "fe80::1%m0", "distance": None,
             "gateway": None, "usable": None, "current": False},
            {"id": "10.251.0.2", "kind": "node", "label": "10.251.0.2", "distance": 96.0,
             "gateway": None, "usable": None, "current": False},
            {"id": "10.251.0.3", "kind": "gateway", "label": "gwA", "distance": 192.0,
             "gateway": "gwA", "usable": True, "current": True},
            {"id": "10.251.0.4", "kind": "node", "label": "10.251.0.4", "distance": 192.0,
             "gateway": None, "usable": None, "current": False},
            {"id": "10.251.0.5", "kind": "gateway", "label": "gwB", "distance": 288.0,
             "gateway": "gwB", "usable": True, "current": False}])
        self.assertEqual([(e["from"], e["to"], e["distance"], e["interface"]) for e in view["edges"]], [
            ("self", "fe80::1%m0", None, "m0"),
            ("fe80::1%m0", "10.251.0.2", 96.0, None),
            ("fe80::1%m0", "10.251.0.3", 192.0, None),
            ("fe80::1%m0", "10.251.0.4", 192.0, None),
            ("fe80::1%m0", "10.251.0.5", 288.0, None)])

    def test_sourcesWithoutANextHopJoinTheClient(self):
        """Overlay walks (hop counts, no next hop) and static addresses."""
        view = meshView([candidate("200:1::1", 192.0, via=None, interface=None,
                                   source="yggdrasil")], [])
        self.assertEqual([(e["from"], e["to"]) for e in view["edges"]], [("self", "200:1::1")])

    def test_aGatewayNoSourceListedStillShows(self):
        """One met lately and asked again, at an address no route lists."""
        view = meshView([], [ranked("gwA", "10.251.0.3", usable=False)])
        [gateway] = [n for n in view["nodes"] if n["kind"] == "gateway"]
        self.assertEqual((gateway["id"], gateway["usable"], gateway["distance"]),
                         ("10.251.0.3", False, None))
        self.assertEqual([(e["from"], e["to"]) for e in view["edges"]], [("self", "10.251.0.3")])

    def test_boundedWithEveryGatewayKept(self):
        """
        A big mesh: the gateways always, then the nearest other
        candidates; each next hop drawn once.
        """
        candidates = [candidate(f"10.1.{i // 250}.{i % 250 + 1}", float(i), via=f"10.0.0.{i % 3 + 1}")
                      for i in range(500)]
        view = meshView(candidates, [ranked("far", "10.1.1.249")], maxNodes=10)
        kinds = [n["kind"] for n in view["nodes"]]
        self.assertEqual((kinds.count("gateway"), kinds.count("node"), kinds.count("hop")),
                         (1, 10, 3))
        self.assertEqual(len(view["edges"]), 3 + 11)
        self.assertIn("10.1.1.249", [n["id"] for n in view["nodes"]])

    def test_aGlobalNextHopNeedsNoInterface(self):
        view = meshView([candidate("10.251.0.3", 2.0, via="10.99.1.2", interface="m0")], [])
        self.assertIn("10.99.1.2", [n["id"] for n in view["nodes"]])

    def test_aNextHopThatIsACandidateIsDrawnOnce(self):
        """
        Kernel routes: a host route through a neighbour that is listed
        (and answers as a gateway) itself; one node, one edge each way.
        """
        candidates = [candidate("10.251.0.5", 2.0, via="10.99.1.2"),
                      candidate("10.99.1.2", 1.0, via=None)]
        view = meshView(candidates, [ranked("gwN", "10.99.1.2")])
        self.assertEqual([(n["id"], n["kind"]) for n in view["nodes"]],
                         [("self", "self"), ("10.99.1.2", "gateway"), ("10.251.0.5", "node")])
        self.assertEqual([(e["from"], e["to"]) for e in view["edges"]],
                         [("self", "10.99.1.2"), ("10.99.1.2", "10.251.0.5")])

    def test_nothingScannedYet(self):
        self.assertEqual(meshView([], []), {"nodes": [
            {"id": "self", "kind": "self", "label": "this client", "distance": 0.0,
             "gateway": None, "usable": None, "current": False}], "edges": []})
