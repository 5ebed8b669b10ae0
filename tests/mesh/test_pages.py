"""
The status pages of real daemons in network namespaces, as Debian's
headless Chromium renders them and as a text browser reads them:
client - r1 - gwA, r1 - r2 - gwB (babeld, mnigs-server with wireguard-go
and nftables, an mnigs-client), each daemon with its [web] listener on
loopback, and Chromium run inside the daemon's namespace.  Nothing is
mocked.  Screenshots are kept under the test's temporary directory.
"""

import html
import json
import os
import re
import sys

from tests.htmlview import PageView
from tests.mesh.chromium import Chromium, missingChromium
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.gatewayproc import daemonEnvironment
from tests.mesh.harness import skipOrFail, waitUntil

CLIENT_PAGE = "http://127.0.0.1:8152/"
#: Printable, so a valid name in a signed offer; it sets the document's
#: title if it ever runs.
HOSTILE_NAME = "<script>document.title='pwned'</script>"
GATEWAY_PAGE = "http://127.0.0.1:8151/"

#: Fetch a URL with the standard library from inside a node: the raw page
#: as served (status, body), or (code, "") for an HTTP error.
FETCH = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], method=sys.argv[2], data=None if sys.argv[2] in ("GET", "HEAD") else b"x=1")
try:
    with urllib.request.urlopen(request, timeout=10) as answer:
        print(answer.status); sys.stdout.write(answer.read().decode("utf-8"))
except urllib.error.HTTPError as e:
    print(e.code)
"""


def fetch(node, url, method="GET"):
    result = node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}", sys.executable,
                       "-c", FETCH, url, method])
    code, _, body = result.stdout.partition("\n")
    return int(code), body


class StatusPageMeshTests(DaemonMeshTestCase):

    def setUp(self):
        why = missingChromium()
        if why is not None:
            skipOrFail(self, why)
        super().setUp()
        self.shots = os.path.abspath(self.mktemp())
        os.makedirs(self.shots)

    def test_bothPagesInChromium(self):
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        web = {"web": {"enabled": True}}
        a = self.gateway(gwA, **web)
        self.gateway(gwB, **web)
        c = self.clientProcess(client, **web).start()
        c.waitState("online", 30, gateway="gwA")

        def bothDrawn():
            status = c.status()
            drawn = {n["label"] for n in status.get("mesh", {}).get("nodes", [])
                     if n["kind"] == "gateway"}
            return status if drawn == {"gwA", "gwB"} and status["state"] == "online" else None

        status = waitUntil(bothDrawn, 30, message="a rescan that hears both gateways")
        gwAHost = status["current"]["host"]

        browser = Chromium(client, self.shots)
        dom = PageView(browser.dumpDOM(CLIENT_PAGE))
        self.assertEqual(dom.headings[0], ("h1", "mnigs client: online via gwA"))
        self.assertEqual(dom.fact("connection", "State"), "online")
        # Either may rank first (their RTTs decide); the client stays on gwA
        # (switch_hold), whose row is marked.
        names = [name.split()[0] for name in dom.column("gateways", "Gateway")]
        self.assertEqual(sorted(names), ["gwA", "gwB"])
        current = [attrs for tag, attrs in dom.elements
                   if tag == "tr" and attrs.get("class") == "current"]
        self.assertEqual(len(current), 1)
        self.assertEqual(dom.fact("connection", "Gateway").split()[0], "gwA")
        scores = [float(s) for s in dom.column("gateways", "Score (lower is better)")]
        self.assertEqual(scores, sorted(scores))
        self.assertIn("Lower scores are better", dom.text)
        probes = dict((row[0], row[2]) for row in dom.tables["probes"][1:])
        self.assertNotEqual(probes["198.51.100.1"], "-", "the Internet host answered")
        # The drawing: both gateways, and the thick path from the client
        # through its next hop to gwA.
        self.assertIn("gwA", dom.svgText)
        self.assertIn("gwB", dom.svgText)
        self.assertIn("this client", dom.svgText)
        path = [(attrs["data-from"], attrs["data-to"]) for tag, attrs in dom.elements
                if tag == "line" and attrs.get("class") == "path"]
        self.assertEqual(len(path), 2, path)
        self.assertEqual(path[0][0], "self")
        self.assertEqual(path[1], (path[0][1], gwAHost))
        self.assertTrue(path[0][1].endswith("%m0"), path)
        browser.screenshot(CLIENT_PAGE, os.path.join(self.shots, "client.png"))

        lease = a.status()["leases"][0]
        browser = Chromium(gwA, self.shots)
        dom = PageView(browser.dumpDOM(GATEWAY_PAGE))
        self.assertEqual(dom.headings[0], ("h1", "mnigs gateway gwA: serving"))
        self.assertEqual(dom.fact("overview", "Clients"), "1 / 8")
        self.assertEqual(dom.fact("overview", "Takes new clients"), "yes")
        self.assertNotEqual(dom.fact("overview", "Uptime"), "-")
        [row] = dom.tables["leases"][1:]
        self.assertEqual(row[0], "wireguard")
        self.assertEqual(row[1], f"client {lease['client'][:20]}\u2026")
        self.assertEqual(row[2], lease["host"])
        self.assertEqual(row[3], lease["address"])
        self.assertEqual(row[-1], lease["id"])
        self.assertEqual(dom.fact("terms-table", "Notes"), "test gateway")
        browser.screenshot(GATEWAY_PAGE, os.path.join(self.shots, "gateway.png"))

    def test_aHostileGatewayNameStaysText(self):
        """
        A gateway operator names the gateway with markup (printable, so
        the offer is valid): both pages show the name as text, and
        Chromium runs nothing.
        """
        client, gw = self.mesh.clientNextToGateway()
        self.gateway(gw, server={"name": HOSTILE_NAME}, web={"enabled": True})
        c = self.clientProcess(client, web={"enabled": True}).start()
        c.waitState("online", 30, gateway=HOSTILE_NAME)
        for node, url, heading in ((client, CLIENT_PAGE, f"mnigs client: online via {HOSTILE_NAME}"),
                                   (gw, GATEWAY_PAGE, f"mnigs gateway {HOSTILE_NAME}: serving")):
            markup = Chromium(node, self.shots).dumpDOM(url)
            dom = PageView(markup)
            self.assertNotIn("script", dom.tags)
            self.assertEqual(dom.headings[0], ("h1", heading))
            title = re.search(r"<head>.*?<title>(.*?)</title>", markup, re.S).group(1)
            self.assertEqual(html.unescape(title), heading, "the document's title was not rewritten")
        self.assertIn(HOSTILE_NAME, dom.text)
        self.assertIn(HOSTILE_NAME, PageView(Chromium(client, self.shots).dumpDOM(CLIENT_PAGE)).svgText)

    def test_thePagesReadWithoutCSSOrScripts(self):
        """
        What a text browser gets: the raw HTML as served holds the
        headings and tables; nothing to run, nothing from elsewhere; and
        the listener takes nothing but GET and HEAD.
        """
        client, gw = self.mesh.clientNextToGateway()
        g = self.gateway(gw, web={"enabled": True})
        c = self.clientProcess(client, web={"enabled": True}).start()
        c.waitState("online", 30, gateway="gw")

        code, body = fetch(client, CLIENT_PAGE)
        self.assertEqual(code, 200)
        page = PageView(body)
        self.assertEqual([text for tag, text in page.headings if tag == "h2"][:5],
                         ["Connection", "Health probes", "Gateways", "Mesh", "Recent"])
        self.assertEqual([row[1].split()[0] for row in page.tables["gateways"][1:]], ["gw"])
        self.assertIn("gw", page.column("mesh-list", "Node"))
        self.assertNotIn("script", page.tags)
        self.assertEqual(json.loads(fetch(client, CLIENT_PAGE + "status.json")[1])["state"],
                         "online")

        code, body = fetch(gw, GATEWAY_PAGE)
        page = PageView(body)
        self.assertEqual([text for tag, text in page.headings if tag == "h2"],
                         ["Gateway", "Leases", "Terms as offered", "Methods"])
        self.assertEqual(page.column("leases", "Client")[0].split()[0], "client")
        self.assertEqual(page.column("leases", "Lease"), [g.status()["leases"][0]["id"]])
        self.assertNotIn("script", page.tags)

        for node, url in ((client, CLIENT_PAGE), (gw, GATEWAY_PAGE)):
            self.assertEqual(fetch(node, url, "POST")[0], 405)
            self.assertEqual(fetch(node, url, "DELETE")[0], 405)
            self.assertEqual(fetch(node, url + "nothing")[0], 404)
