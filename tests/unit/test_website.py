"""
The status listener's site as a browser meets it: the page at C{/}, the
JSON at C{/status.json}, 404 for anything else, 405 for any method but
GET and HEAD.  Whole HTTP requests through Twisted's HTTP channel over a
L{StringTransport}, with a Clock.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mnigs.web.gatewaypage import renderGatewayPage
from mnigs.web.pages import StatusJSON, StatusPage
from mnigs.web.site import makeWebSite
from tests.htmlview import PageView
from tests.unit.test_webpages import gatewayStatus


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        statusLine, *headerLines = head.decode("latin-1").split("\r\n")
        self.code = int(statusLine.split()[1])
        self.headers = {}
        for line in headerLines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()


def ask(site, method, path, body=b""):
    """One whole HTTP/1.1 request to C{site}; its L{Response}."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8151))
    channel.makeConnection(transport)
    channel.dataReceived(b"%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (method, path, len(body), body))
    channel.connectionLost(None)
    return Response(transport.value())


class StatusSiteTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.asked = 0

        def describe():
            self.asked += 1
            return gatewayStatus()

        self.site = makeWebSite({b"": StatusPage(describe, renderGatewayPage),
                                 b"status.json": StatusJSON(describe)}, self.clock)

    def request(self, method, path, body=b""):
        return ask(self.site, method, path, body)

    def test_thePageAtTheRoot(self):
        response = self.request(b"GET", b"/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", response.headers["content-security-policy"])
        self.assertEqual(response.headers["x-content-type-options"], "nosniff")
        self.assertEqual(response.headers["cache-control"], "no-store")
        view = PageView(response.body.decode("utf-8"))
        self.assertEqual(view.headings[0], ("h1", "mnigs gateway gwA: serving"))

    def test_theStatusAsJSON(self):
        response = self.request(b"GET", b"/status.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(json.loads(response.body)["name"], "gwA")

    def test_headAnswersWithoutABody(self):
        response = self.request(b"HEAD", b"/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b"")

    def test_nothingElseIsThere(self):
        for path in (b"/nothing", b"/status.json/more", b"/index.html", b"//", b"/../etc/passwd"):
            self.assertEqual(self.request(b"GET", path).code, 404, path)

    def test_onlyGetAndHead(self):
        """
        Every other method is refused with 405 and says what is allowed;
        the daemon's status is not even asked.
        """
        for method in (b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"):
            for path in (b"/", b"/status.json", b"/nothing"):
                response = self.request(method, path, body=b"state=stopped")
                self.assertEqual(response.code, 405, (method, path))
                self.assertEqual(response.headers["allow"], "GET, HEAD")
        self.assertEqual(self.asked, 0)
