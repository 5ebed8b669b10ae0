"""
Tests for L{mnigs.server.rpcapi}: each C{gateway.*} call checks its params,
then the rate limit, then (register) the proof, and only then reaches the
gateway machine; what it hands the machine comes from the connection, not
the request.  The whole chain over HTTP is in tests.unit.test_rpc and
tests.unit.test_proofs.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.protocol import RPCError
from mnigs.rpc.server import Call, JSONRPCResource
from mnigs.server.ratelimit import RateLimiter
from mnigs.server.rpcapi import GatewayCalls, makeResource
from tests.unit.test_proofs import makeOffers, registration

CLIENT, LOCAL = "10.99.0.7", "10.99.0.5"
CREDENTIALS = {"lease": "l1", "token": "t" * 32}


class Events:
    """One list the fakes below append to, so order across them shows."""

    def __init__(self):
        self.list = []


class RecordingGateway:
    def __init__(self, events):
        self.events = events

    def info(self, localHost):
        self.events.list.append(("info", localHost))
        return {"offer": localHost}

    def register(self, request, clientHost, localHost):
        self.events.list.append(("register", request.method, clientHost, localHost))
        return defer.succeed({"lease": {"id": "l1", "token": "t" * 32}})

    def renew(self, leaseId, token):
        self.events.list.append(("renew", leaseId, token))
        return {"expires_in": 600}

    def unregister(self, leaseId, token):
        self.events.list.append(("unregister", leaseId, token))
        return {}


class RecordingLimiter:
    def __init__(self, events, limited=False):
        self.events = events
        self.limited = limited

    def check(self, host):
        self.events.list.append(("rateLimit", host))
        if self.limited:
            raise RPCError(protocol.RATE_LIMITED, "rate limited: slow down")


class GatewayCallsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.events = Events()
        self.limiter = RecordingLimiter(self.events)
        self.offers = makeOffers(self.clock)
        self.calls = GatewayCalls(RecordingGateway(self.events), self.limiter, self.offers)

    def assertRPCError(self, code, f, *args):
        e = self.assertRaises(RPCError, f, *args)
        self.assertEqual(e.code, code)
        return e

    def test_infoAnswersForTheAddressTheClientReached(self):
        self.assertEqual(self.calls.jsonrpc_info(Call({}, CLIENT, LOCAL)), {"offer": LOCAL})
        self.assertEqual(self.events.list, [("info", LOCAL)])

    def test_infoIsNotRateLimited(self):
        self.limiter.limited = True
        self.calls.jsonrpc_info(Call({}, CLIENT, LOCAL))
        self.assertEqual(self.events.list, [("info", LOCAL)])

    def test_infoTakesNoParams(self):
        self.assertRPCError(protocol.INVALID_PARAMS, self.calls.jsonrpc_info,
                            Call({"x": 1}, CLIENT, LOCAL))
        self.assertEqual(self.events.list, [])

    def test_renewAndUnregisterAreLimitedByTheConnectionsAddress(self):
        for name in ("renew", "unregister"):
            call = getattr(self.calls, f"jsonrpc_{name}")
            call(Call(dict(CREDENTIALS), CLIENT, LOCAL))
        self.assertEqual(self.events.list, [("rateLimit", CLIENT), ("renew", "l1", "t" * 32),
                                            ("rateLimit", CLIENT), ("unregister", "l1", "t" * 32)])

    def test_rateLimitedCallsNeverReachTheGateway(self):
        self.limiter.limited = True
        params = registration(self.offers.offer(LOCAL, True, 0))
        self.assertRPCError(protocol.RATE_LIMITED, self.calls.jsonrpc_register,
                            Call(params, CLIENT, LOCAL))
        for name in ("renew", "unregister"):
            self.assertRPCError(protocol.RATE_LIMITED, getattr(self.calls, f"jsonrpc_{name}"),
                                Call(dict(CREDENTIALS), CLIENT, LOCAL))
        self.assertEqual(self.events.list, [("rateLimit", CLIENT)] * 3)

    def test_badParamsAreRefusedBeforeTheRateLimitSpendsAToken(self):
        for name, params in (("register", {"method": "wireguard"}),
                             ("renew", {"lease": "l1"}),
                             ("unregister", dict(CREDENTIALS, extra=1))):
            self.assertRPCError(protocol.INVALID_PARAMS, getattr(self.calls, f"jsonrpc_{name}"),
                                Call(params, CLIENT, LOCAL))
        self.assertEqual(self.events.list, [])

    def test_registerIsLimitedThenProvedThenSigned(self):
        params = registration(self.offers.offer(LOCAL, True, 0))
        answer = self.successResultOf(self.calls.jsonrpc_register(Call(params, CLIENT, LOCAL)))
        self.assertEqual(self.events.list, [("rateLimit", CLIENT),
                                            ("register", "wireguard", CLIENT, LOCAL)])
        protocol.checkLeaseSignature(answer, self.offers.gatewayId, params["client"]["id"])

    def test_aBadProofSpendsATokenButChangesNothing(self):
        params = registration(self.offers.offer(LOCAL, True, 0), nonce="guess")
        self.assertRPCError(protocol.BAD_PROOF, self.calls.jsonrpc_register,
                            Call(params, CLIENT, LOCAL))
        self.assertEqual(self.events.list, [("rateLimit", CLIENT)])

    def test_aRealLimiterOnAClock(self):
        calls = GatewayCalls(RecordingGateway(self.events), RateLimiter(self.clock, 1.0, 1),
                             self.offers)
        calls.jsonrpc_renew(Call(dict(CREDENTIALS), CLIENT, LOCAL))
        self.assertRPCError(protocol.RATE_LIMITED, calls.jsonrpc_renew,
                            Call(dict(CREDENTIALS), CLIENT, LOCAL))
        self.clock.advance(1)
        calls.jsonrpc_renew(Call(dict(CREDENTIALS), CLIENT, LOCAL))
        self.assertEqual([e[0] for e in self.events.list], ["renew", "renew"])


class MakeResourceTests(SynchronousTestCase):
    def test_callsAreUnderGateway(self):
        events = Events()
        resource = makeResource(RecordingGateway(events), RecordingLimiter(events), None)
        self.assertIsInstance(resource, JSONRPCResource)
        handler = resource.getSubHandler("gateway")
        self.assertIsInstance(handler, GatewayCalls)
        self.assertEqual(sorted(resource.getSubHandlerPrefixes()), ["gateway"])
