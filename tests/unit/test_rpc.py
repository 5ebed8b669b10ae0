"""
The JSON-RPC wrapper over a real loopback socket (IPv4 and IPv6): every
answer is a JSON-RPC 2.0 object, the body limit, the client's timeout and
bounded reads, and the hostile-input set of the gateway issue.
"""

import json
import socket

from twisted.internet import defer, reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
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
    time) is still cut when its request is not whole by the deadline.
    """

    request = (b'POST /mnigs/v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 62\r\n\r\n'
               b'{"jsonrpc":"2.0","method":"test.echo","params":{},"id":1}     ')

    def setUp(self):
        self.clock = Clock()
        resource = JSONRPCResource()
        resource.putSubHandler("test", Echo())
        site = makeSite(resource, self.clock, 512, 30)
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
        self.trickle(self.request, 10)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.clock.seconds(), 30)
        self.assertEqual(self.transport.value(), b"")

    def test_promptRequestsOnOneConnectionEachGetTheirOwnDeadline(self):
        for n in range(3):
            self.clock.advance(20)
            self.proto.dataReceived(self.request)
            self.assertIn(b'"result"', self.transport.value())
            self.transport.clear()
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)

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
