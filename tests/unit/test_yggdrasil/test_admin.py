"""
Tests for L{mnigs.yggdrasil.admin} over in-memory transports, fed the
exact bytes real yggdrasil 0.4.7 daemons sent (tests/unit/data/ygg_*.json
are those bytes).  The client against the real daemon is in
tests.mesh.test_yggdrasil.
"""

import json
import os

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mnigs.yggdrasil.admin import (
    DEFAULT_ENDPOINT,
    YggdrasilAdmin,
    YggdrasilError,
    YggdrasilTimeout,
    adminEndpoint,
    parseAdminEndpoint,
)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def raw(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


class Exchange:
    """
    One call on a L{MemoryReactorClock}: the connection the admin asked
    for, made with a L{StringTransport}.
    """

    def __init__(self, testCase, endpoint="unix:///run/ygg.sock", timeout=10.0, maxAnswer=2**20,
                 **arguments):
        self.reactor = MemoryReactorClock()
        self.admin = YggdrasilAdmin(self.reactor, endpoint, timeout=timeout, maxAnswer=maxAnswer)
        self.request = arguments.pop("request", "getPeers")
        self.d = self.admin.call(self.request, **arguments)
        self.transport = StringTransport()
        self.protocol = None

    def factory(self):
        if self.reactor.unixClients:
            return self.reactor.unixClients[-1][1]
        return self.reactor.tcpClients[-1][2]

    def connect(self):
        self.protocol = self.factory().buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return self

    def sent(self):
        return json.loads(self.transport.value())

    def answer(self, data, close=True, chunk=None):
        chunks = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
        for piece in chunks:
            self.protocol.dataReceived(piece)
        if close:
            self.protocol.connectionLost(Failure(ConnectionDone()))


class CallTests(SynchronousTestCase):
    def test_theRequestIsOneJSONObjectWithArgumentsInside(self):
        exchange = Exchange(self, request="debug_remoteGetPeers", key="ab" * 32).connect()
        self.assertEqual(exchange.reactor.unixClients[0][0], "/run/ygg.sock")
        self.assertEqual(exchange.sent(), {"request": "debug_remoteGetPeers",
                                           "arguments": {"key": "ab" * 32}, "keepalive": False})

    def test_aCapturedAnswerGivesItsResponse(self):
        data = raw("ygg_getpeers.json")
        exchange = Exchange(self).connect()
        exchange.answer(data, chunk=7)
        self.assertEqual(self.successResultOf(exchange.d), json.loads(data)["response"])
        self.assertEqual(exchange.admin._pending, set())

    def test_theAnswerCountsOnceWholeEvenIfTheDaemonKeepsTheConnection(self):
        exchange = Exchange(self).connect()
        exchange.answer(raw("ygg_getself.json"), close=False)
        self.assertIn("key", self.successResultOf(exchange.d))
        self.assertTrue(exchange.transport.disconnecting)

    def test_capturedErrorsCarryTheDaemonsText(self):
        errors = json.loads(raw("ygg_errors.json"))
        for what, text in errors.items():
            exchange = Exchange(self, request="getTunnelRouting").connect()
            exchange.answer(text.encode("utf-8"))
            failure = self.failureResultOf(exchange.d, YggdrasilError)
            self.assertEqual(failure.value.error, json.loads(text)["error"], what)
            self.assertEqual(failure.value.request, "getTunnelRouting")

    def test_theRemoteTimeoutIsAnError(self):
        remote = json.loads(raw("ygg_remotegetpeers.json"))
        timeout = next(t for t in remote.values() if '"error"' in t)
        exchange = Exchange(self, request="debug_remoteGetPeers", key="77" * 32).connect()
        exchange.answer(timeout.encode("utf-8"))
        self.assertEqual(self.failureResultOf(exchange.d, YggdrasilError).value.error, "timeout")

    def test_noAnswerWithinTheTimeoutAbortsTheConnection(self):
        exchange = Exchange(self, timeout=3.0).connect()
        exchange.reactor.advance(2.9)
        self.assertNoResult(exchange.d)
        exchange.reactor.advance(0.2)
        failure = self.failureResultOf(exchange.d, YggdrasilTimeout)
        self.assertIn("3.0", str(failure.value))
        self.assertTrue(exchange.transport.disconnecting)
        self.assertEqual(exchange.admin._pending, set())

    def test_aTimeoutWhileConnecting(self):
        exchange = Exchange(self, timeout=3.0)
        exchange.reactor.advance(3.1)
        self.failureResultOf(exchange.d, YggdrasilTimeout)

    def test_refusedConnectionSaysWhere(self):
        exchange = Exchange(self)
        exchange.factory().clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        failure = self.failureResultOf(exchange.d, YggdrasilError)
        self.assertIn("cannot connect to unix:///run/ygg.sock", str(failure.value))

    def test_closedWithoutAnswer(self):
        exchange = Exchange(self).connect()
        exchange.answer(b"")
        self.assertIn("without an answer", str(self.failureResultOf(exchange.d, YggdrasilError).value))

    def test_garbageIsAnErrorNotACrash(self):
        for data in (b"not json", b"[1, 2]", b'{"status": "maybe"}', b'{"status": "success"}',
                     b'{"status": "error"}', b"\xff\xfe}\n"):
            exchange = Exchange(self).connect()
            exchange.answer(data)
            self.failureResultOf(exchange.d, YggdrasilError)

    def test_anAnswerTooLongIsCutOff(self):
        exchange = Exchange(self, maxAnswer=100).connect()
        exchange.answer(b" " * 101, close=False)
        self.assertIn("longer than", str(self.failureResultOf(exchange.d, YggdrasilError).value))
        self.assertTrue(exchange.transport.disconnecting)

    def test_cancelClosesTheConnection(self):
        exchange = Exchange(self).connect()
        exchange.d.cancel()
        self.failureResultOf(exchange.d, CancelledError)
        self.assertTrue(exchange.transport.disconnecting)

    def test_closeCancelsEveryCall(self):
        exchange = Exchange(self).connect()
        second = exchange.admin.call("getDHT")
        exchange.admin.close()
        self.failureResultOf(exchange.d, CancelledError)
        self.failureResultOf(second, CancelledError)

    def test_tcpEndpoints(self):
        exchange = Exchange(self, endpoint="tcp://[::1]:9001").connect()
        self.assertEqual(exchange.reactor.tcpClients[0][:2], ("::1", 9001))
        exchange = Exchange(self, endpoint="tcp://127.0.0.1:9001").connect()
        self.assertEqual(exchange.reactor.tcpClients[0][:2], ("127.0.0.1", 9001))

    def test_argumentsThatAreNotJSONAreRefusedAtOnce(self):
        admin = YggdrasilAdmin(MemoryReactorClock())
        self.assertRaises(YggdrasilError, admin.call, "getPeers", key=object())


class EndpointTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(parseAdminEndpoint(DEFAULT_ENDPOINT), ("unix", "/var/run/yggdrasil/yggdrasil.sock"))
        self.assertEqual(parseAdminEndpoint("tcp://localhost:9001"), ("tcp", "localhost", 9001))
        self.assertEqual(parseAdminEndpoint("tcp://[::1]:9001"), ("tcp", "::1", 9001))
        self.assertEqual(adminEndpoint("tcp://10.0.0.1:1"), "tcp://10.0.0.1:1")

    def test_badForms(self):
        for text in ("unix://relative.sock", "/var/run/ygg.sock", "tcp://host", "tcp://[::1:9001",
                     "tcp://h:0", "tcp://h:70000", "tcp://[zz::1]:1", "udp://h:1", "", 5):
            self.assertRaises(ValueError, parseAdminEndpoint, text)
