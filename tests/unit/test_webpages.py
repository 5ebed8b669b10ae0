"""
The status pages rendered from made-up status dicts (the keys the
daemons' describe() give, those the other parts of issue 14 add, and
hostile strings from the network), read as a text browser would
(L{tests.htmlview}), and the mesh drawing.
"""

import copy
import re
import xml.etree.ElementTree as ElementTree

from twisted.trial.unittest import SynchronousTestCase

from mnigs.web.clientpage import renderClientPage
from mnigs.web.gatewaypage import renderGatewayPage
from mnigs.web.meshsvg import meshSVG
from tests.htmlview import PageView

HOSTILE = "<script>alert(1)</script>\u202egw"
SHOWN_HOSTILE = "<script>alert(1)</script>\\u202egw"  # as the reader sees it


def node(nodeId, kind, label=None, distance=None, gateway=None, usable=None, current=False):
    return {"id": nodeId, "kind": kind, "label": label or nodeId, "distance": distance,
            "gateway": gateway, "usable": usable, "current": current}


def edge(start, end, distance=None, interface=None):
    return {"from": start, "to": end, "distance": distance, "interface": interface}


def sampleMesh(hostileName="gwC"):
    """client - fe80::1%m0 - {r1, gwA (current), r2, gwB, gwC}, as in the mesh tests."""
    return {
        "nodes": [node("self", "self", "this client", 0.0),
                  node("fe80::1%m0", "hop"),
                  node("10.251.0.2", "node", distance=96.0),
                  node("10.251.0.3", "gateway", "gwA", 192.0, "ed25519:AAA", True, True),
                  node("10.251.0.4", "node", distance=192.0),
                  node("10.251.0.5", "gateway", "gwB", 288.0, "ed25519:BBB", True),
                  node("10.251.0.9", "gateway", hostileName, 288.0, "ed25519:CCC", False)],
        "edges": [edge("self", "fe80::1%m0", interface="m0"),
                  edge("fe80::1%m0", "10.251.0.2", 96.0),
                  edge("fe80::1%m0", "10.251.0.3", 192.0),
                  edge("fe80::1%m0", "10.251.0.4", 192.0),
                  edge("fe80::1%m0", "10.251.0.5", 288.0),
                  edge("fe80::1%m0", "10.251.0.9", 288.0)],
    }


def clientStatus(hostile="gwC"):
    parts = {"distance": 0.43, "rtt": 0.01, "load": 0.06, "fee": 0.0, "history": 0.12}
    return {
        "state": "online", "reason": "", "state_for_s": 125.3,
        "current": {
            "gateway": "ed25519:AAA", "name": "gwA", "host": "10.251.0.3", "port": 8150,
            "method": "wireguard", "lease_expires_in": 540, "online_for": 60,
            "address": "100.64.0.2/32", "device": "mc01",
            "health": {"state": "probing", "targets": ["198.51.100.1", "100.64.0.1"],
                       "missed": 0, "outstanding": 1,
                       "answers": [{"target": "198.51.100.1", "kind": "internet",
                                    "rtt_ms": 1.2, "answered_ago": 0.1},
                                   {"target": "100.64.0.1", "kind": "gateway",
                                    "rtt_ms": None, "answered_ago": None}]}},
        "transitions": [{"at": 1, "ago": 70.0, "transition": "idle --start--> searching"},
                        {"at": 9, "ago": 61.0, "transition": "verifying --answered--> online"}],
        "events": [{"ago": 61.0, "event": "online", "reason": f"via {hostile}"}],
        "switch": {"gateway": "ed25519:BBB", "name": "gwB", "better_by": 0.25,
                   "better_by_fraction": 0.3, "margin": 0.2, "hold_left_s": 65.0},
        "gateways": [
            {"rank": 1, "gateway": "ed25519:AAA", "name": "gwA", "host": "10.251.0.3",
             "score": 0.62, "usable": True, "why_not": "", "cooling": "", "distance": 192.0,
             "rtt_ms": 2.1, "load": "1/8", "fee": None, "methods": ["wireguard", "forward"],
             "quality": {"sessions": 1, "failures": 0}, "score_parts": parts},
            {"rank": 2, "gateway": "ed25519:BBB", "name": "gwB", "host": "10.251.0.5",
             "score": 0.9, "usable": True, "why_not": "", "cooling": "", "distance": 288.0,
             "rtt_ms": 3.4, "load": "0/8", "fee": None, "methods": ["wireguard"],
             "quality": {}, "score_parts": dict(parts, distance=0.7)},
            {"rank": None, "gateway": "ed25519:CCC", "name": hostile, "host": "10.251.0.9",
             "score": 10.5, "usable": False, "why_not": f"fee refused ({hostile})",
             "cooling": "", "distance": 288.0, "rtt_ms": None, "load": "8/8",
             "fee": "2 EUR/month", "methods": ["wireguard"], "quality": {}},
        ],
        "history": {"ed25519:DDD": {"sessions": 2, "failures": 1,
                                    "last_failure_reason": f"lost ({hostile})"}},
        "mesh": sampleMesh(hostile),
    }


def gatewayStatus(hostile="client"):
    return {
        "state": "serving", "gateway": "ed25519:AAA", "name": "gwA", "uptime_s": 3725.0,
        "terms": {"max_clients": 8, "lease_seconds": 600, "fee": None, "bandwidth_kbps": None,
                  "contact": "ops@example.org", "notes": f"test gateway {hostile}"},
        "clients": 1, "max_clients": 8,
        "leases": [{"id": "L1", "client": "ed25519:ZZZ", "name": hostile, "method": "wireguard",
                    "host": "10.251.0.1", "address": "100.64.0.2/32", "expires_in": 540,
                    "age_s": 60, "bytes_in": 123456, "bytes_out": 7890123,
                    "last_handshake_ago": 4.2}],
        "methods": {"wireguard": {"interface": "mw01", "port": 51820}, "forward": {}},
    }


class ReadOnlyMarkup:
    """Checks every page must pass: nothing runs, nothing comes from elsewhere."""

    def assertSelfContained(self, markup):
        view = PageView(markup)
        for tag in ("script", "img", "link", "iframe", "form", "input", "button", "object",
                    "embed"):
            self.assertNotIn(tag, view.tags)
        self.assertNotRegex(markup, r"(?i)\son[a-z]+\s*=")  # no event handlers
        references = re.findall(r'(?:href|src)="([^"]*)"', markup)
        self.assertEqual([r for r in references if r != "status.json"], [])
        return view

    def assertHostileShownHarmlessly(self, markup):
        view = self.assertSelfContained(markup)
        self.assertNotIn("\u202e", markup)
        self.assertNotIn("<script", markup.lower())
        self.assertIn(SHOWN_HOSTILE, view.text + " " + view.svgText)
        return view


class ClientPageTests(SynchronousTestCase, ReadOnlyMarkup):

    def test_everyPartOfTheStatusIsShown(self):
        view = self.assertSelfContained(renderClientPage(clientStatus()))
        self.assertEqual(view.headings, [
            ("h1", "mnigs client: online via gwA"), ("h2", "Connection"),
            ("h2", "Health probes"), ("h2", "Gateways"), ("h2", "Mesh"), ("h2", "Recent"),
            ("h2", "Not seen in the last scan")])
        self.assertEqual(view.fact("connection", "State"), "online")
        self.assertEqual(view.fact("connection", "In this state for"), "2m 05s")
        self.assertEqual(view.fact("connection", "Method"), "wireguard")
        self.assertEqual(view.fact("connection", "Lease expires in"), "9m 00s")
        self.assertEqual(view.tables["probes"][1:], [
            ["198.51.100.1", "internet", "1.2 ms", "0.1 s ago"],
            ["100.64.0.1", "gateway", "-", "none seen"]])
        self.assertEqual(view.column("gateways", "Gateway"),
                         ["gwA ed25519:AAA", "gwB ed25519:BBB", "gwC ed25519:CCC"])
        self.assertEqual(view.column("gateways", "Score (lower is better)"),
                         ["0.620", "0.900", "10.500"])
        for part, shown in (("Distance", ["0.430", "0.700", "-"]),
                            ("Rtt", ["0.010", "0.010", "-"]), ("Load", ["0.060", "0.060", "-"]),
                            ("Fee", ["0.000", "0.000", "-"]),
                            ("History", ["0.120", "0.120", "-"])):
            self.assertEqual(view.column("gateways", f"{part} part"), shown)
        self.assertEqual(view.column("gateways", "Why not"),
                         ["usable", "usable", "fee refused (gwC)"])
        self.assertIn("Lower scores are better", view.text)
        self.assertIn("Waiting to switch to gwB ed25519:BBB: it scores 0.250 lower (better), 30 % "
                      "of the current score; the switch margin is 0.200; the client moves in "
                      "1m 05s", view.text)
        self.assertEqual(view.tables["events"][1:], [["1m 01s ago", "online", "via gwC"]])
        self.assertEqual(view.column("transitions", "Transition (reason)"),
                         ["verifying --answered--> online", "idle --start--> searching"])
        self.assertEqual(view.column("mesh-list", "Node"),
                         ["10.251.0.2", "gwA", "10.251.0.4", "gwB", "gwC"])
        self.assertEqual(set(view.column("mesh-list", "Next hop")), {"fe80::1%m0"})
        self.assertEqual(view.tables["history"][1:], [["ed25519:DDD", "2", "1", "lost (gwC)"]])
        self.assertIn("gwA", view.svgText)
        self.assertIn("gwB", view.svgText)

    def test_hostileStringsAreShownHarmlessly(self):
        """
        A gateway named with markup and a right-to-left override, in the
        table, the reasons, the events, the history and the drawing.
        """
        markup = renderClientPage(clientStatus(HOSTILE))
        view = self.assertHostileShownHarmlessly(markup)
        self.assertIn(f"{SHOWN_HOSTILE} ed25519:CCC", view.column("gateways", "Gateway"))
        self.assertIn(f"fee refused ({SHOWN_HOSTILE})", view.column("gateways", "Why not"))
        self.assertIn(SHOWN_HOSTILE, view.svgText)

    def test_whatIsMissingShowsADash(self):
        """
        A status without the keys other parts add (score parts, the
        switch, events, probe answers, the mesh) still renders.
        """
        status = clientStatus()
        for key in ("switch", "events", "mesh", "state_for_s"):
            del status[key]
        for g in status["gateways"]:
            g.pop("score_parts", None)
        del status["current"]["health"]["answers"]
        view = self.assertSelfContained(renderClientPage(status))
        self.assertEqual(view.column("gateways", "Distance part"), ["-", "-", "-"])
        self.assertEqual(view.fact("connection", "In this state for"), "-")
        self.assertIn("No better gateway is waiting", view.text)
        self.assertNotIn("events", view.tables)
        self.assertEqual(view.tables["probes"][1:], [["198.51.100.1", "-", "-", "-"],
                                                     ["100.64.0.1", "-", "-", "-"]])
        self.assertIn("no scan yet", view.svgText)

    def test_theIPv6AddressOnlyWithIPv6Egress(self):
        view = self.assertSelfContained(renderClientPage(clientStatus()))
        self.assertRaises(KeyError, view.fact, "connection", "IPv6 address")
        status = clientStatus()
        status["current"]["address6"] = "fd64:6d6e:6967::2/128"
        view = self.assertSelfContained(renderClientPage(status))
        self.assertEqual(view.fact("connection", "IPv6 address"), "fd64:6d6e:6967::2/128")

    def test_searchingWithNothing(self):
        view = self.assertSelfContained(renderClientPage({"state": "searching"}))
        self.assertEqual(view.headings[0], ("h1", "mnigs client: searching"))
        self.assertEqual(view.fact("connection", "Gateway"), "none")
        self.assertEqual(view.tables["gateways"][1:], [["none"]])
        self.assertIn("No session: nothing is probed.", view.text)
        self.assertSelfContained(renderClientPage({}))

    def test_waitingSaysWhyAndWhen(self):
        view = PageView(renderClientPage({"state": "waiting", "reason": "no usable gateway found",
                                          "retry_in": 4.5, "state_for_s": 2.0}))
        self.assertEqual(view.fact("connection", "Why"), "no usable gateway found")
        self.assertEqual(view.fact("connection", "Next scan in"), "4.5 s")


class GatewayPageTests(SynchronousTestCase, ReadOnlyMarkup):

    def test_everyPartOfTheStatusIsShown(self):
        view = self.assertSelfContained(renderGatewayPage(gatewayStatus()))
        self.assertEqual(view.headings, [
            ("h1", "mnigs gateway gwA: serving"), ("h2", "Gateway"), ("h2", "Leases"),
            ("h2", "Terms as offered"), ("h2", "Methods")])
        self.assertEqual(view.fact("overview", "Takes new clients"), "yes")
        self.assertEqual(view.fact("overview", "Uplink"), "up")
        self.assertEqual(view.fact("overview", "Uptime"), "1h 02m")
        self.assertEqual(view.fact("overview", "Clients"), "1 / 8")
        self.assertEqual(view.tables["leases"], [
            ["Method", "Client", "Client address", "Inner address", "Age", "Expires in",
             "Bytes in", "Bytes out", "Last handshake", "Lease"],
            ["wireguard", "client ed25519:ZZZ", "10.251.0.1", "100.64.0.2/32", "1m 00s",
             "9m 00s", "120.6 KiB", "7.5 MiB", "4.2 s ago", "L1"]])
        self.assertEqual(view.fact("terms-table", "Lease time"), "10m 00s")
        self.assertEqual(view.fact("terms-table", "Fee"), "none")
        self.assertEqual(view.fact("terms-table", "Notes"), "test gateway client")
        self.assertEqual(view.column("methods", "Method"), ["forward", "wireguard"])

    def test_leasesWithoutCountersShowDashes(self):
        status = gatewayStatus()
        for key in ("bytes_in", "bytes_out", "last_handshake_ago", "age_s"):
            del status["leases"][0][key]
        del status["uptime_s"], status["terms"]
        view = self.assertSelfContained(renderGatewayPage(status))
        self.assertEqual(view.tables["leases"][1][4:9], ["-", "9m 00s", "-", "-", "-"])
        self.assertEqual(view.fact("overview", "Uptime"), "-")
        self.assertSelfContained(renderGatewayPage({}))

    def test_anUplinkDownSaysWhy(self):
        status = dict(gatewayStatus(), state="unavailable", uplink_problem="uplink up0 is down")
        view = PageView(renderGatewayPage(status))
        self.assertEqual(view.fact("overview", "Takes new clients"), "no")
        self.assertEqual(view.fact("overview", "Uplink"), "down: uplink up0 is down")

    def test_feesAndBandwidthAsOffered(self):
        status = gatewayStatus()
        status["terms"].update(fee={"amount": "2.50", "currency": "EUR", "period": "month",
                                    "pay_to": "iban"}, bandwidth_kbps={"down": 8000, "up": 1000})
        view = PageView(renderGatewayPage(status))
        self.assertEqual(view.fact("terms-table", "Fee"), "2.50 EUR per month, to iban")
        self.assertEqual(view.fact("terms-table", "Bandwidth"),
                         "8000 kbit/s down, 1000 kbit/s up")

    def test_longIdsAreCutWithTheWholeInTheTooltip(self):
        status = gatewayStatus()
        longId = "ed25519:" + "A" * 43
        status["leases"][0]["client"] = longId
        view = PageView(renderGatewayPage(status))
        self.assertEqual(view.column("leases", "Client"), ["client ed25519:AAAAAAAAAAAA\u2026"])
        self.assertIn(("span", {"title": longId}), view.elements)

    def test_hostileStringsAreShownHarmlessly(self):
        status = gatewayStatus(HOSTILE)
        status["methods"]["wireguard"]["note"] = HOSTILE
        view = self.assertHostileShownHarmlessly(renderGatewayPage(status))
        self.assertEqual(view.column("leases", "Client"), [f"{SHOWN_HOSTILE} ed25519:ZZZ"])
        self.assertEqual(view.fact("terms-table", "Notes"), f"test gateway {SHOWN_HOSTILE}")


def parseSVG(svg):
    return ElementTree.fromstring(svg)


SVG = "{http://www.w3.org/2000/svg}"


def places(svg):
    """data-id -> the (x, y) its shape is drawn at."""
    out = {}
    for group in parseSVG(svg).iter(f"{SVG}g"):
        shape = group.find(f"{SVG}circle")
        if shape is not None:
            out[group.get("data-id")] = (int(shape.get("cx")), int(shape.get("cy")))
        else:
            shape = group.find(f"{SVG}rect")
            out[group.get("data-id")] = (int(shape.get("x")) + 8, int(shape.get("y")) + 8)
    return out


class MeshSVGTests(SynchronousTestCase):

    def test_drawsEveryGatewayAndThePathToTheCurrentOne(self):
        svg = meshSVG(sampleMesh())
        root = parseSVG(svg)
        labels = {group.get("data-id"): group.find(f"{SVG}text").text
                  for group in root.iter(f"{SVG}g")}
        self.assertEqual(labels, {"self": "this client", "fe80::1%m0": "fe80::1%m0",
                                  "10.251.0.2": "10.251.0.2", "10.251.0.3": "gwA",
                                  "10.251.0.4": "10.251.0.4", "10.251.0.5": "gwB",
                                  "10.251.0.9": "gwC"})
        gateways = [g.get("data-id") for g in root.iter(f"{SVG}g") if "gateway" in g.get("class")]
        self.assertEqual(sorted(gateways), ["10.251.0.3", "10.251.0.5", "10.251.0.9"])
        path = [(line.get("data-from"), line.get("data-to")) for line in root.iter(f"{SVG}line")
                if line.get("class") == "path"]
        self.assertEqual(path, [("self", "fe80::1%m0"), ("fe80::1%m0", "10.251.0.3")])
        self.assertEqual(len(list(root.iter(f"{SVG}line"))), 6)

    def test_columnsFollowTheDistance(self):
        """
        The client, its next hop, then each address about as many
        columns further as it is hops away (96 a hop); nearest first
        down a column.
        """
        x = {nodeId: place[0] for nodeId, place in places(meshSVG(sampleMesh())).items()}
        self.assertLess(x["self"], x["fe80::1%m0"])
        self.assertLess(x["fe80::1%m0"], x["10.251.0.2"])
        self.assertEqual(x["10.251.0.2"], x["10.251.0.3"])
        self.assertLess(x["10.251.0.3"], x["10.251.0.5"])
        y = {nodeId: place[1] for nodeId, place in places(meshSVG(sampleMesh())).items()}
        self.assertLess(y["10.251.0.2"], y["10.251.0.3"])

    def test_theLayoutIsDeterministic(self):
        """
        The same data gives the same drawing, and the nodes' places do
        not depend on the order the nodes and edges come in.
        """
        mesh = sampleMesh()
        self.assertEqual(meshSVG(mesh), meshSVG(copy.deepcopy(mesh)))
        shuffled = {"nodes": list(reversed(mesh["nodes"])), "edges": list(reversed(mesh["edges"]))}
        self.assertEqual(places(meshSVG(shuffled)), places(meshSVG(mesh)))

    def test_hostileLabelsAreEscapedAndTheDrawingStaysWellFormed(self):
        svg = meshSVG(sampleMesh(hostileName='"><script>\u202e&'))
        self.assertNotIn("<script", svg)
        self.assertNotIn("\u202e", svg)
        texts = [t.text for t in parseSVG(svg).iter(f"{SVG}text")]
        self.assertIn('"><script>\\u202e&', texts)

    def test_longLabelsAreCut(self):
        mesh = sampleMesh(hostileName="g" * 100)
        texts = [t.text for t in parseSVG(meshSVG(mesh)).iter(f"{SVG}text")]
        self.assertIn("g" * 23 + "\u2026", texts)

    def test_nothingToDrawSaysSo(self):
        for mesh in (None, {}, {"nodes": [], "edges": []}):
            root = parseSVG(meshSVG(mesh))
            self.assertEqual(root.find(f"{SVG}text").text, "no scan yet")

    def test_edgesToUnknownNodesAreLeftOut(self):
        mesh = sampleMesh()
        mesh["edges"].append(edge("self", "10.9.9.9"))
        self.assertEqual(len(list(parseSVG(meshSVG(mesh)).iter(f"{SVG}line"))), 6)
