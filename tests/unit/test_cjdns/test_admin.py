"""
Tests for L{mnigs.cjdns.admin}.  No cjdns here: every exchange is with
the FAKE admin endpoint of L{tests.unit.fakecjdns} (which checks requests
the way admin/Admin.c does), in memory for the synchronous tests and over
loopback UDP for the real-reactor ones.
"""

import hashlib
import json
import os
import socket

from twisted.internet import reactor as realReactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mnigs.cjdns import bencode
from mnigs.cjdns.admin import (
    MAX_REPLY,
    RECEIVE_BUFFER,
    AdminConfig,
    CjdnsAdmin,
    CjdnsAuthError,
    CjdnsConfigError,
    CjdnsError,
    CjdnsTimeout,
    loadAdminConfig,
    signedRequest,
)
from tests.unit.fakecjdns import TOO_BIG, FakeCjdns
from tests.unit.fakeudp import FakeCjdnsProtocol, LoopbackUDPReactor
from tests.unit.syntheticmesh import SyntheticMesh

MESH = SyntheticMesh(seed=3, size=40, gateways=2)
NOW = 1_700_000_000


def fakeSetup(password="NONE", adminPassword=None, timeout=5.0, **fakeArgs):
    reactor = LoopbackUDPReactor()
    fake = FakeCjdns(MESH, password=password, **fakeArgs)
    reactor.addEndpoint(fake)
    reactor.advance(NOW)
    admin = CjdnsAdmin(reactor, password=password if adminPassword is None else adminPassword,
                       timeout=timeout)
    return reactor, fake, admin


def sent(reactor):
    return [bencode.decode(data) for port in reactor.ports for data in port.written]


class CallTests(SynchronousTestCase):
    def test_plainFormWithoutPassword(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): with
        password NONE the call is the plain C{q} form with a txid, and the
        answer comes back without it.
        """
        reactor, fake, admin = fakeSetup()
        d = admin.call("ping")
        reactor.advance(0)
        self.assertEqual(self.successResultOf(d), {"q": "pong"})
        [request] = sent(reactor)
        self.assertEqual(set(request), {b"q", b"args", b"txid"})
        self.assertEqual(request[b"q"], b"ping")
        self.assertEqual(reactor.ports[0].maxPacketSize, MAX_REPLY)

    def test_authenticatedCall(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a cookie,
        then C{q=auth} with C{aq}, the cookie and the hash, which the fake
        checks as admin/Admin.c authValid does.
        """
        reactor, fake, admin = fakeSetup(password="s3cret")
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.assertEqual(self.successResultOf(d), {"connections": [], "error": "none"})
        cookie, call = sent(reactor)
        self.assertEqual(cookie[b"q"], b"cookie")
        self.assertEqual((call[b"q"], call[b"aq"], call[b"cookie"]),
                         (b"auth", b"IpTunnel_listConnections", str(NOW).encode()))
        self.assertEqual(fake.calls, [("IpTunnel_listConnections", {})])
        self.assertEqual(fake.authFailures, 0)

    def test_wrongPassword(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a wrong
        password is cjdns's C{Auth failed.}, a L{CjdnsAuthError}.
        """
        reactor, fake, admin = fakeSetup(password="right", adminPassword="wrong")
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        error = self.failureResultOf(d, CjdnsAuthError).value
        self.assertEqual(error.error, "Auth failed.")
        self.assertIn("Auth failed.", str(error))
        self.assertEqual(fake.calls, [])

    def test_authFunctionWithoutPassword(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): calling a
        function that needs auth without it is "No functions matched".
        """
        reactor, fake, admin = fakeSetup(password="right", adminPassword="NONE")
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.assertIn("No functions matched", self.failureResultOf(d, CjdnsError).value.error)

    def test_staleCookieRefused(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a cookie
        that is more than 20 s old when the call arrives is refused.
        """
        reactor, fake, admin = fakeSetup(password="pw", timeout=60, latency={"cookie": 21})
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        reactor.advance(21)
        self.failureResultOf(d, CjdnsAuthError)
        self.assertEqual(fake.authFailures, 1)

    def test_cookieReusedForTenSeconds(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): calls
        within 10 s of a cookie use it (one exchange each); later ones ask
        for a fresh cookie.
        """
        reactor, fake, admin = fakeSetup(password="pw")
        for wait in (0, 9.5, 0.4, 0.2):
            reactor.advance(wait)
            d = admin.call("IpTunnel_listConnections")
            reactor.advance(0)
            self.successResultOf(d)
        self.assertEqual([r[b"q"] for r in sent(reactor)],
                         [b"cookie", b"auth", b"auth", b"auth", b"cookie", b"auth"])
        self.assertEqual([r[b"cookie"] for r in sent(reactor) if r[b"q"] == b"auth"],
                         [str(NOW).encode()] * 3 + [str(NOW + 10).encode()])
        self.assertEqual(fake.authFailures, 0)

    def test_refusedReusedCookieReplacedOnce(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): when cjdns
        refuses a reused cookie (its clock jumped 30 s ahead), the call is
        made again with a fresh cookie, and succeeds; a wrong password
        still fails, after that one more try.
        """
        reactor, fake, admin = fakeSetup(password="pw")
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.successResultOf(d)
        fake.clock = Clock()
        fake.clock.advance(NOW + 30)
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual([r[b"q"] for r in sent(reactor)], [b"cookie", b"auth", b"auth", b"cookie", b"auth"])
        self.assertEqual(fake.authFailures, 1)
        admin.password = "wrong"
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.failureResultOf(d, CjdnsAuthError)
        self.assertEqual([r[b"q"] for r in sent(reactor)][5:], [b"auth", b"cookie", b"auth"])

    def test_longPasswordTruncatedLikeAdminC(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): Admin.c
        hashes only the first 63 bytes of password+cookie; so do we.
        """
        password = "p" * 70
        reactor, fake, admin = fakeSetup(password=password)
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.successResultOf(d)

    def test_signedRequestAsFactsDescribe(self):
        """
        The hash is sha256hex(password + cookie), then sha256hex of the
        whole bencoded request with that first hash in place.
        """
        data = signedRequest("pw", "f", {"a": 1}, b"123", b"t1")
        first = hashlib.sha256(b"pw123").hexdigest()
        request = {"q": "auth", "aq": "f", "args": {"a": 1}, "cookie": b"123", "hash": first,
                   "txid": b"t1"}
        expected = hashlib.sha256(bencode.encode(request)).hexdigest()
        self.assertEqual(bencode.decode(data)[b"hash"], expected.encode())

    def test_cjdnsErrorAnswer(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): an answer
        whose C{error} is not C{none} fails the call with that error.
        """
        reactor, fake, admin = fakeSetup()
        d = admin.call("IpTunnel_removeConnection", connection=99)
        missing = admin.call("NodeStore_dumpTable")
        reactor.advance(0)
        error = self.failureResultOf(d, CjdnsError).value
        self.assertEqual((error.function, error.error), ("IpTunnel_removeConnection", "not_found"))
        self.assertEqual(self.failureResultOf(missing, CjdnsError).value.error,
                         "Entry [page] is required and must be of type [Int]")

    def test_paging(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): pages 0, 1,
        ... until an answer has no C{more} (4 entries a page, as
        NodeStore_admin.c).
        """
        reactor, fake, admin = fakeSetup()
        d = admin.callPaged("NodeStore_dumpTable")
        reactor.advance(0)
        pages = self.successResultOf(d)
        rows = [row for page in pages for row in page["routingTable"]]
        self.assertEqual(len(rows), len(fake.known))
        self.assertEqual([args["page"] for args in fake.callsOf("NodeStore_dumpTable")],
                         list(range(len(pages))))
        self.assertEqual(len(pages), len(fake.known) // 4 + 1)

    def test_repliesMatchedByTxid(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): answers that
        arrive out of order go to their own calls; strays and garbage are
        dropped.
        """
        reactor, fake, admin = fakeSetup(latency={"IpTunnel_listConnections": 2})
        slow = admin.call("IpTunnel_listConnections")
        fast = admin.call("ping")
        reactor.advance(0)
        self.assertEqual(self.successResultOf(fast), {"q": "pong"})
        self.assertNoResult(slow)
        protocol = reactor.ports[0].protocol
        protocol.datagramReceived(b"d4:txid3:xyz1:q4:ponge", None)
        protocol.datagramReceived(b"not bencode at all", None)
        protocol.datagramReceived(b"i5e", None)
        protocol.datagramReceived(TOO_BIG, None)
        self.assertNoResult(slow)
        reactor.advance(2)
        self.assertEqual(self.successResultOf(slow), {"connections": [], "error": "none"})

    def test_lostDatagramRetriedOnce(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a lost
        request is sent once more after the timeout.
        """
        reactor, fake, admin = fakeSetup(password="pw", timeout=3)
        fake.dropRequests = 1
        d = admin.call("IpTunnel_listConnections")
        reactor.advance(0)
        self.assertNoResult(d)
        reactor.advance(3)
        self.successResultOf(d)
        self.assertEqual([r[b"q"] for r in sent(reactor)], [b"cookie", b"cookie", b"auth"])

    def test_timeoutAfterOneRetry(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): no answer
        twice is a L{CjdnsTimeout}, and nothing is left scheduled.
        """
        reactor, fake, admin = fakeSetup(timeout=3)
        fake.dropRequests = 5
        d = admin.call("ping")
        reactor.advance(3)
        self.assertNoResult(d)
        reactor.advance(3)
        self.failureResultOf(d, CjdnsTimeout)
        self.assertEqual(len(sent(reactor)), 2)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_connectionMakingCallsNotRetried(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a lost
        answer to IpTunnel_connectTo is not asked again, since each call
        adds a connection.
        """
        reactor, fake, admin = fakeSetup(timeout=3)
        fake.dropRequests = 1
        d = admin.call("IpTunnel_connectTo", publicKeyOfNodeToConnectTo=MESH.nodes[1].key)
        reactor.advance(3)
        self.failureResultOf(d, CjdnsTimeout)
        self.assertEqual(len(sent(reactor)), 1)

    def test_requestTooBig(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): we never
        send more than 512 bytes (Admin_MAX_REQUEST_SIZE); cjdns would
        answer "Request too big." without a txid.
        """
        reactor, fake, admin = fakeSetup()
        d = admin.call("RouterModule_getPeers", path="x" * 600)
        self.assertIn("at most 512", str(self.failureResultOf(d, CjdnsError).value))
        self.assertEqual(sent(reactor), [])
        self.assertEqual(fake.handle(b"d1:q4:ping4:args" + b"0:" * 300 + b"e"), [(0, TOO_BIG)])

    def test_nothingListening(self):
        """
        Against the fake cjdns admin endpoint's absence: a refused
        datagram fails the call at once.
        """
        reactor, fake, admin = fakeSetup()
        reactor.endpoints.clear()
        d = admin.call("ping")
        reactor.advance(0)
        self.assertIn("nothing listens", str(self.failureResultOf(d, CjdnsError).value))

    def test_cancelForgetsTheCall(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): a cancelled
        call leaves no timer, and its late answer is dropped.
        """
        reactor, fake, admin = fakeSetup(latency={"ping": 1})
        d = admin.call("ping")
        reactor.advance(0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.func.__name__ == "_timedOut"], [])
        reactor.advance(1)
        self.assertEqual(admin._pending, {})

    def test_close(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): closing
        fails the calls in progress and releases the socket.
        """
        reactor, fake, admin = fakeSetup(latency={"ping": 1})
        d = admin.call("ping")
        admin.close()
        self.failureResultOf(d, CjdnsError)
        self.assertFalse(reactor.ports[0].listening)


class AdminConfigTests(SynchronousTestCase):
    def write(self, content):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(content)
        return path

    def test_cjdnsadminFile(self):
        path = self.write(json.dumps({"addr": "127.0.0.1", "port": 11235, "password": "pw",
                                      "config": "/etc/cjdroute.conf"}))
        self.assertEqual(loadAdminConfig(path), AdminConfig("127.0.0.1", 11235, "pw"))
        self.assertEqual(loadAdminConfig(self.write("{}")), AdminConfig())

    def test_defaultPathIsHome(self):
        home = self.mktemp()
        os.makedirs(home)
        with open(os.path.join(home, ".cjdnsadmin"), "w") as f:
            json.dump({"password": "fromhome"}, f)
        self.patch(os, "environ", dict(os.environ, HOME=home))
        self.assertEqual(loadAdminConfig().password, "fromhome")

    def test_unusableFiles(self):
        for content in ("not json", "[]", '{"port": "11234"}', '{"port": 0}',
                        '{"addr": "localhost"}', '{"password": ""}', '{"password": 5}'):
            self.assertRaises(CjdnsConfigError, loadAdminConfig, self.write(content))
        self.assertRaises(CjdnsConfigError, loadAdminConfig, self.mktemp())


class LoopbackUDPTests(TestCase):
    """
    Over a real loopback UDP socket with the real reactor, against the
    FAKE cjdns admin endpoint (no cjdns here).
    """

    def listen(self, password):
        fake = FakeCjdns(MESH, password=password, clock=realReactor)
        port = realReactor.listenUDP(0, FakeCjdnsProtocol(fake, realReactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return fake, port.getHost().port

    def client(self, port, password):
        admin = CjdnsAdmin(realReactor, "127.0.0.1", port, password, timeout=5)
        self.addCleanup(admin.close)
        return admin

    async def test_authenticatedRoundTrip(self):
        """Against the fake cjdns admin endpoint over loopback UDP: auth works."""
        fake, port = self.listen("pw")
        answer = await self.client(port, "pw").call("IpTunnel_listConnections")
        self.assertEqual(answer, {"connections": [], "error": "none"})
        self.assertEqual(fake.calls, [("IpTunnel_listConnections", {})])

    async def test_receiveBufferEnlarged(self):
        """
        Against the fake cjdns admin endpoint over loopback UDP: the
        client's socket asks for a receive buffer that holds a burst of
        answers (the kernel grants up to net.core.rmem_max, and reports
        twice what it grants).
        """
        fake, port = self.listen("NONE")
        admin = self.client(port, "NONE")
        await admin.call("ping")
        with open("/proc/sys/net/core/rmem_max") as f:
            granted = min(int(f.read()), RECEIVE_BUFFER) * 2
        self.assertEqual(admin._port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), granted)

    async def test_unauthenticatedRoundTrip(self):
        """Against the fake cjdns admin endpoint over loopback UDP: password NONE."""
        fake, port = self.listen("NONE")
        answer = await self.client(port, "NONE").call("ping")
        self.assertEqual(answer, {"q": "pong"})

    async def test_pagingRoundTrip(self):
        """Against the fake cjdns admin endpoint over loopback UDP: every page."""
        fake, port = self.listen("pw")
        pages = await self.client(port, "pw").callPaged("NodeStore_dumpTable")
        self.assertEqual(sum(len(p["routingTable"]) for p in pages), len(fake.known))

    async def test_badPassword(self):
        """Against the fake cjdns admin endpoint over loopback UDP: a clear error."""
        fake, port = self.listen("pw")
        try:
            await self.client(port, "not-pw").call("IpTunnel_listConnections")
        except CjdnsAuthError as e:
            self.assertEqual(str(e), "cjdns IpTunnel_listConnections: Auth failed.")
        else:
            self.fail("no CjdnsAuthError")
