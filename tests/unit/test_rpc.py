"""
The JSON-RPC wrapper over a real loopback socket (IPv4 and IPv6): every
answer is a JSON-RPC 2.0 object, the body limit, the client's timeout and
bounded reads, and the hostile-input set of the gateway issue.
"""

import json
import socket

from twisted.internet import defer, reactor, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txjsonrpc_ng.jsonrpc import BaseSubhandler

from mnigs import protocol
from mnigs.rpc.client import CACHED_CONNECTION_TIMEOUT, RPCClient, RPCTimeout, RPCTransportError
from mnigs.rpc.server import JSONRPCResource, makeSite


class Echo(BaseSubhandler):
    def jsonrpc_echo(self, call):
        return {"params": call.params, "client": call.clientHost}

    def jsonrpc_fail(self, call):
        raise protocol.RPCError(protocol.GATEWAY_FULL, "full")

    def jsonrpc_crash(self, call):
        raise KeyError("secret internal detail")

    def jsonrpc_slow(self, call):
        return defer.Deferred()  # never answers; cancelled when the caller hangs up


def startServer(testcase, interface="127.0.0.1", maxConnections=512):
    resource = JSONRPCResource()
    resource.putSubHandler("test", Echo())
    port = reactor.listenTCP(0, makeSite(resource, reactor, maxConnections, 30), interface=interface)
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


def rawPost(port, body, host="127.0.0.1", path="/mnigs/v2", headers=b"", length=True):
    """
    A blocking raw HTTP exchange, to send what a proper client never would.
    """
    with socket.create_connection((host, port), timeout=5) as s:
        head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\n" + headers)
        if length and b"Content-Length" not in headers:
            head += b"Content-Length: %d\r\n" % len(body)
        s.sendall(head + b"\r\n" + body)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    return int(status.split()[1]), rest.partition(b"\r\n\r\n")[2]


class ServerAnswersTests(TestCase):
    def setUp(self):
        self.port = startServer(self)

    def post(self, body, **kw):
        return threads.deferToThread(rawPost, self.port, body, **kw)

    def assertError(self, result, code, status=200):
        got_status, body = result
        self.assertEqual(got_status, status)
        answer = json.loads(body)
        self.assertEqual(answer["jsonrpc"], "2.0")
        self.assertEqual(answer["error"]["code"], code)
        self.assertNotIn("Traceback", body.decode())
        return answer

    @defer.inlineCallbacks
    def test_parseError(self):
        self.assertError((yield self.post(b"{not json")), protocol.PARSE_ERROR)
        self.assertError((yield self.post(b"\xff\xfe\x00")), protocol.PARSE_ERROR)

    @defer.inlineCallbacks
    def test_deeplyNestedJSONIsAParseError(self):
        # Fits in 64 KiB but nests deeper than the json module recurses.
        for body in (b"[" * 60000, b'{"a":' * 12000):
            self.assertError((yield self.post(body)), protocol.PARSE_ERROR)

    @defer.inlineCallbacks
    def test_bugInTheWrapperStillAnswersJSON(self):
        resource = JSONRPCResource()
        resource.putSubHandler("test", Echo())

        def broken(parsed):
            raise ZeroDivisionError("secret internal detail")

        resource._resolve = broken
        port = reactor.listenTCP(0, makeSite(resource, reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        result = yield threads.deferToThread(
            rawPost, port.getHost().port, b'{"jsonrpc":"2.0","method":"test.echo","id":1}')
        answer = self.assertError(result, protocol.INTERNAL_ERROR, status=500)
        self.assertNotIn("secret", json.dumps(answer))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @defer.inlineCallbacks
    def test_formBodiesAreNotParsedAsForms(self):
        # twisted.web would parse these as forms (and answer a multipart
        # type without a boundary with a bare 400); to us a body is a body.
        def post(contentType, body):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"POST /mnigs/v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                          % (contentType, len(body), body))
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            status, _, rest = answer.partition(b"\r\n")
            return int(status.split()[1]), rest.partition(b"\r\n\r\n")[2]

        call = b'{"jsonrpc":"2.0","method":"test.echo","id":1}'
        for contentType in (b"multipart/form-data", b"multipart/form-data; boundary=x",
                            b"application/x-www-form-urlencoded"):
            status, body = yield threads.deferToThread(post, contentType, call)
            self.assertEqual((status, json.loads(body)["result"]["params"]), (200, {}))

    @defer.inlineCallbacks
    def test_invalidRequests(self):
        for body in (b"[]", b'[{"jsonrpc":"2.0","method":"test.echo","id":1}]', b'"x"', b"5",
                     b'{"method":"test.echo","id":1}', b'{"jsonrpc":"2.0","id":1}',
                     b'{"jsonrpc":"2.0","method":"test.echo","id":[1]}'):
            self.assertError((yield self.post(body)), protocol.INVALID_REQUEST)

    @defer.inlineCallbacks
    def test_unknownMethod(self):
        for method in ("test.nope", "nope.echo", "test", "test.__dir__", "__dir__", "test._x"):
            body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
            self.assertError((yield self.post(body)), protocol.METHOD_NOT_FOUND)

    @defer.inlineCallbacks
    def test_paramsMustBeObject(self):
        body = b'{"jsonrpc":"2.0","method":"test.echo","params":[1,2],"id":1}'
        self.assertError((yield self.post(body)), protocol.INVALID_PARAMS)

    @defer.inlineCallbacks
    def test_applicationErrorAndInternalError(self):
        answer = self.assertError((yield self.post(b'{"jsonrpc":"2.0","method":"test.fail","id":7}')), 1001)
        self.assertEqual(answer["id"], 7)
        answer = self.assertError((yield self.post(b'{"jsonrpc":"2.0","method":"test.crash","id":8}')),
                                  protocol.INTERNAL_ERROR)
        self.assertNotIn("secret", json.dumps(answer))
        self.flushLoggedErrors(KeyError)

    @defer.inlineCallbacks
    def test_noJSONP(self):
        status, body = yield self.post(b'{"jsonrpc":"2.0","method":"test.echo","id":1}',
                                       path="/mnigs/v2?callback=alert")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["result"]["params"], {})

    @defer.inlineCallbacks
    def test_wrongPath(self):
        self.assertError((yield self.post(b'{}', path="/other")), protocol.METHOD_NOT_FOUND, status=404)

    @defer.inlineCallbacks
    def test_bodyOverLimitRefusedWithoutReadingIt(self):
        # Announce 10 MB but send only 100 KB: the answer comes at once.
        status, body = yield self.post(b"x" * 100_000, headers=b"Content-Length: 10000000\r\n")
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(body)["error"]["code"], protocol.INVALID_REQUEST)

    @defer.inlineCallbacks
    def test_chunkedBodyOverLimit(self):
        chunk = b"x" * 60_000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
        status, _ = yield self.post(body, headers=b"Transfer-Encoding: chunked\r\n", length=False)
        self.assertEqual(status, 413)


class RequestDeadlineTests(SynchronousTestCase):
    """
    The per-request deadline, on a Clock and an in-memory transport: a
    client trickling bytes (which resets twisted.web's idle timeout every
    time) is still cut when its request is not whole by the deadline,
    counted from the connection's start or from the first byte of a
    request after an answer.
    """

    request = (b'POST /mnigs/v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 62\r\n\r\n'
               b'{"jsonrpc":"2.0","method":"test.echo","params":{},"id":1}     ')

    def setUp(self):
        self.request = self.request.replace(b"/mnigs/v1", protocol.RPC_PATH)
        self.clock = Clock()
        resource = JSONRPCResource()
        resource.putSubHandler("test", Echo())
        site = makeSite(resource, self.clock, 512, 30, requestTimeout=5)
        self.proto = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 4000),
                                         hostAddress=IPv4Address("TCP", "10.0.0.254", 8150))
        self.proto.makeConnection(self.transport)

    def trickle(self, data, every):
        for byte in data:
            self.proto.dataReceived(bytes([byte]))
            self.clock.advance(every)
            if self.transport.disconnected:
                return

    def test_trickledRequestIsCutAtTheDeadline(self):
        self.trickle(self.request, 1)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.clock.seconds(), 5)
        self.assertEqual(self.transport.value(), b"")

    def test_silentNewConnectionIsCutAtTheDeadline(self):
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)

    def test_idleKeepAliveConnectionIsLeftToTheIdleTimeout(self):
        """
        Between an answer and the next request a keep-alive connection is
        idle, not late: the deadline starts with the next request's first
        byte (a client may keep a connection for the next call).
        """
        for n in range(3):
            self.proto.dataReceived(self.request)
            self.assertIn(b'"result"', self.transport.value())
            self.transport.clear()
            self.clock.advance(20)
            self.assertFalse(self.transport.disconnected)
        self.trickle(self.request, 1)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"")

    def test_noDeadlineWhileTheAnswerIsBeingWorkedOut(self):
        slow = self.request.replace(b"test.echo", b"test.slow")
        self.proto.dataReceived(slow)
        self.clock.advance(300)
        self.assertFalse(self.transport.disconnected)

    def test_closedConnectionLeavesNoTimer(self):
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.proto.responseFinished()  # an answer finished after the peer left
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConnectionCapTests(SynchronousTestCase):
    """
    Open connections are capped in all and per client address group (an
    IPv4 address, an IPv6 /64): a connection over a cap is closed at once
    (buildProtocol answers None), and a closed one frees its slot.
    """

    def setUp(self):
        resource = JSONRPCResource()
        resource.putSubHandler("test", Echo())
        self.site = makeSite(resource, Clock(), 5, 30, requestTimeout=5, maxPerAddress=2)

    def connect(self, host):
        kind = IPv6Address if ":" in host else IPv4Address
        proto = self.site.buildProtocol(kind("TCP", host, 4000))
        if proto is not None:
            proto.makeConnection(StringTransport(peerAddress=kind("TCP", host, 4000)))
        return proto

    def test_perAddressCap(self):
        first, second = self.connect("10.0.0.1"), self.connect("10.0.0.1")
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        self.assertIsNone(self.connect("10.0.0.1"))
        self.assertIsNotNone(self.connect("10.0.0.2"))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.connect("10.0.0.1"))
        self.assertIsNone(self.connect("10.0.0.1"))

    def test_anIPv6SlashSixtyFourCountsAsOneAddress(self):
        self.assertIsNotNone(self.connect("2001:db8:0:1::a"))
        self.assertIsNotNone(self.connect("2001:db8:0:1::b"))
        self.assertIsNone(self.connect("2001:db8:0:1:ffff:1:2:3"))
        self.assertIsNotNone(self.connect("2001:db8:0:2::a"))

    def test_aMappedIPv4PeerCountsAsItsIPv4Address(self):
        self.assertIsNotNone(self.connect("10.0.0.1"))
        self.assertIsNotNone(self.connect("::ffff:10.0.0.1"))
        self.assertIsNone(self.connect("10.0.0.1"))

    def test_theOverallCapStillHolds(self):
        for n in range(5):
            self.assertIsNotNone(self.connect(f"10.0.0.{n + 1}"))
        self.assertIsNone(self.connect("10.0.0.99"))
        self.assertEqual(self.site.groups, {f"10.0.0.{n + 1}": 1 for n in range(5)})


class Recorder(BaseSubhandler):
    def __init__(self):
        super().__init__()
        self.calls = []

    def jsonrpc_note(self, call):
        self.calls.append(call.params)
        return {"noted": True}

    def jsonrpc_check(self, call):
        # What a lease check does with a token: encode it.
        call.params["token"].encode("utf-8")
        return {"ok": True}


class InMemoryCallTests(SynchronousTestCase):
    """
    Single calls through the whole site on an in-memory transport.
    """

    def setUp(self):
        self.recorder = Recorder()
        resource = JSONRPCResource()
        resource.putSubHandler("test", self.recorder)
        self.site = makeSite(resource, Clock(), 512, 30)

    def exchange(self, message):
        body = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
        proto = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 4000),
                                    hostAddress=IPv4Address("TCP", "10.0.0.254", 8150))
        proto.makeConnection(transport)
        proto.dataReceived(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (protocol.RPC_PATH, len(body), body))
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        status = int(head.split(b"\r\n")[0].split()[1])
        return status, head, rest

    def test_notificationIsCarriedOutAndGetsNoResponseObject(self):
        status, head, body = self.exchange({"jsonrpc": "2.0", "method": "test.note",
                                            "params": {"a": 1}})
        self.assertEqual((status, body), (204, b""))
        self.assertNotIn(b"content-type", head.lower())
        self.assertEqual(self.recorder.calls, [{"a": 1}])

    def test_notificationOfAnUnknownMethodGetsNoResponseObject(self):
        status, _, body = self.exchange({"jsonrpc": "2.0", "method": "test.nosuch"})
        self.assertEqual((status, body), (204, b""))

    def test_invalidNotificationIsStillAnswered(self):
        # Without a version it is not a JSON-RPC 2.0 request, notification or not.
        status, _, body = self.exchange({"method": "test.note"})
        self.assertEqual(json.loads(body)["error"]["code"], protocol.INVALID_REQUEST)
        self.assertEqual(self.recorder.calls, [])

    def test_nullIdIsNotANotification(self):
        status, _, body = self.exchange({"jsonrpc": "2.0", "method": "test.note", "id": None})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"jsonrpc": "2.0", "result": {"noted": True},
                                            "id": None})

    def test_loneSurrogateIsInvalidParams(self):
        body = b'{"jsonrpc":"2.0","method":"test.check","params":{"token":"\\ud800x"},"id":3}'
        status, _, answer = self.exchange(body)
        answer = json.loads(answer)
        self.assertEqual(answer["error"]["code"], protocol.INVALID_PARAMS)
        self.assertEqual(answer["id"], 3)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_escapedTextThatIsValidStillPasses(self):
        # A proper surrogate pair and other escapes are text.
        body = b'{"jsonrpc":"2.0","method":"test.check","params":{"token":"\\ud83d\\ude00\\u00e9"},"id":4}'
        status, _, answer = self.exchange(body)
        self.assertEqual(json.loads(answer)["result"], {"ok": True})


class ClientAnswerTests(SynchronousTestCase):
    """
    The client's reading of answers, on a MemoryReactorClock and an
    in-memory transport.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.client = RPCClient(self.reactor, timeout=5, persistent=False)

    def answer(self, body):
        d = self.client.call("10.0.0.1", 8150, "gateway.info")
        host, port, factory, timeout, bind = self.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("10.0.0.1", 8150))
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        proto.makeConnection(transport)
        self.assertIn(b"POST ", transport.value())
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return d

    def test_result(self):
        d = self.answer(b'{"jsonrpc":"2.0","result":{"a":1},"id":1}')
        self.assertEqual(self.successResultOf(d), {"a": 1})

    def test_deeplyNestedAnswerFailsAtOnce(self):
        """
        An answer nested deeper than the json module recurses fails the
        call at once with a clear error instead of hanging until the
        call's timeout.
        """
        for body in (b"[" * 100_000, b'{"jsonrpc":"2.0","result":' + b"[" * 100_000 + b',"id":1}'):
            d = self.answer(body)
            failure = self.failureResultOf(d, RPCTransportError)
            self.assertIn("nested too deeply", str(failure.value))
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])


class ClientTests(TestCase):
    def setUp(self):
        self.client = RPCClient(reactor, timeout=2)
        self.addCleanup(self.client.close)

    def test_idleConnectionsAreLetGoBeforeTheServerClosesThem(self):
        """
        A call on a keep-alive connection that a server is closing for
        idleness at that moment fails (POSTs are not retried): the client
        drops idle connections before a default server would.
        """
        self.assertEqual(self.client.pool.cachedConnectionTimeout, CACHED_CONNECTION_TIMEOUT)
        self.assertLess(CACHED_CONNECTION_TIMEOUT, protocol.DEFAULT_IDLE_TIMEOUT - 5)

    @defer.inlineCallbacks
    def test_roundTripIPv4(self):
        port = startServer(self)
        result = yield self.client.call("127.0.0.1", port, "test.echo", {"a": [1, "é"]})
        self.assertEqual(result, {"params": {"a": [1, "é"]}, "client": "127.0.0.1"})

    @defer.inlineCallbacks
    def test_roundTripIPv6(self):
        if not socket.has_ipv6:
            raise self.skipTest("no IPv6")
        port = startServer(self, interface="::1")
        result = yield self.client.call("::1", port, "test.echo")
        self.assertEqual(result, {"params": {}, "client": "::1"})

    @defer.inlineCallbacks
    def test_errorsBecomeRPCError(self):
        port = startServer(self)
        e = yield self.assertFailure(self.client.call("127.0.0.1", port, "test.fail"), protocol.RPCError)
        self.assertEqual(e.code, 1001)

    @defer.inlineCallbacks
    def test_timeout(self):
        port = startServer(self)
        yield self.assertFailure(self.client.call("127.0.0.1", port, "test.slow", timeout=0.05), RPCTimeout)

    @defer.inlineCallbacks
    def test_silentServerTimesOut(self):
        # A server that accepts and never answers.
        factory = Factory.forProtocol(Protocol)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield self.assertFailure(self.client.call("127.0.0.1", port.getHost().port, "test.echo",
                                                  timeout=0.2), RPCTimeout)

    @defer.inlineCallbacks
    def test_hugeAnswerRefused(self):
        class Huge(Protocol):
            def dataReceived(self, data):
                body = b'{"jsonrpc":"2.0","result":"' + b"x" * 1_000_000 + b'","id":1}'
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

        port = reactor.listenTCP(0, Factory.forProtocol(Huge), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield self.assertFailure(self.client.call("127.0.0.1", port.getHost().port, "test.echo"),
                                 RPCTransportError)

    @defer.inlineCallbacks
    def test_connectionRefused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
        s.close()
        yield self.assertFailure(self.client.call("127.0.0.1", free, "test.echo"), RPCTransportError)


class SurrogateCredentialsTests(SynchronousTestCase):
    """
    The gateway's calls behind the wrapper: a lease id or token holding a
    lone surrogate is -32602 (it used to reach the token comparison, which
    encodes it: -32603 and a traceback per call).
    """

    def setUp(self):
        from mnigs.server.leases import LeaseBook
        from mnigs.server.ratelimit import RateLimiter
        from mnigs.server.rpcapi import makeResource

        book = LeaseBook(10, 600)
        lease = book.draft("c", "", "forward", "10.0.0.1", {}, 0)
        book.add(lease)

        class Gateway:
            def renew(self, leaseId, token):
                return {"expires_in": book.renew(leaseId, token, 1).expiresIn(1)}

            unregister = renew

        self.leaseId = lease.id
        self.site = makeSite(makeResource(Gateway(), RateLimiter(Clock(), 0), signer=None), Clock())

    def call(self, body):
        proto = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 4000),
                                    hostAddress=IPv4Address("TCP", "10.0.0.254", 8150))
        proto.makeConnection(transport)
        proto.dataReceived(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (protocol.RPC_PATH, len(body), body))
        return json.loads(transport.value().partition(b"\r\n\r\n")[2])

    def test_loneSurrogateTokenOrLeaseIsInvalidParams(self):
        lease = self.leaseId.encode()
        for method in (b"gateway.renew", b"gateway.unregister"):
            for params in (b'{"lease":"%s","token":"\\udc80"}' % lease,
                           b'{"lease":"\\ud800","token":"x"}',
                           b'{"lease":"%s","token":"ab\\udfffcd"}' % lease):
                answer = self.call(b'{"jsonrpc":"2.0","method":"%s","params":%s,"id":1}'
                                   % (method, params))
                self.assertEqual(answer["error"]["code"], protocol.INVALID_PARAMS, params)
        self.assertEqual(self.flushLoggedErrors(), [])
        answer = self.call(b'{"jsonrpc":"2.0","method":"gateway.renew",'
                           b'"params":{"lease":"%s","token":"wrong"},"id":1}' % lease)
        self.assertEqual(answer["error"]["code"], protocol.WRONG_TOKEN)
