"""
Tests for L{mnigs.client.effects.Renewal} on a Clock with a scripted RPC
client: renewing at half the lease's life, retrying what can be retried,
and telling the client when the gateway forgot the lease.
"""

from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.effects import Renewal
from mnigs.protocol import RATE_LIMITED, UNKNOWN_LEASE, WRONG_TOKEN, RPCError
from mnigs.rpc.client import RPCTransportError

#: How soon a renewal that got no usable answer is tried again.
RETRY = Renewal.RETRY_SECONDS


class ScriptedRPC:
    """Each call waits for the test to answer it."""

    def __init__(self):
        self.calls = []

    def call(self, host, port, method, params):
        d = defer.Deferred()
        self.calls.append(((host, port, method, params), d))
        return d

    def answer(self, result):
        _, d = self.calls[-1]
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


class RecordingClient:
    def __init__(self):
        self.lost = []

    def leaseLost(self, session, reason):
        self.lost.append((session, reason))


class RenewalTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(5000)
        self.rpc = ScriptedRPC()
        self.client = RecordingClient()
        self.session = SimpleNamespace(
            lease={"id": "l1", "token": "t" * 32, "expires_at": 5000 + 600},
            step=SimpleNamespace(host="10.99.0.5", port=8150))
        self.renewal = Renewal(self.clock, self.rpc, self.session, self.client)

    def callTimes(self):
        return [call.getTime() for call in self.clock.getDelayedCalls()]

    def test_renewsAtHalfTheLeasesLife(self):
        self.renewal.start()
        self.assertEqual(self.callTimes(), [5300])
        self.clock.advance(299)
        self.assertEqual(self.rpc.calls, [])
        self.clock.advance(1)
        [(call, _)] = self.rpc.calls
        self.assertEqual(call, ("10.99.0.5", 8150, "gateway.renew",
                                {"lease": "l1", "token": "t" * 32}))

    def test_anAnswerExtendsTheLeaseAndSchedulesTheNext(self):
        self.renewal.start()
        self.clock.advance(300)
        self.rpc.answer({"expires_in": 400})
        self.assertEqual(self.session.lease["expires_at"], 5300 + 400)
        self.assertEqual(self.callTimes(), [5300 + 200])
        self.clock.advance(200)
        self.assertEqual(len(self.rpc.calls), 2)

    def test_atLeastASecondApart(self):
        self.session.lease["expires_at"] = 5000 - 10  # already past: try soon, not at once
        self.renewal.start()
        self.assertEqual(self.callTimes(), [5001])
        self.clock.advance(1)
        self.rpc.answer({"expires_in": 1})
        self.assertEqual(self.callTimes(), [5002])

    def test_anAnswerWithoutALifetimeIsRetriedSoon(self):
        self.renewal.start()
        self.clock.advance(300)
        for answer in ({}, {"expires_in": 0}, {"expires_in": -5}, {"expires_in": True},
                       {"expires_in": 60.5}, {"expires_in": "60"}, ["expires_in", 60], None):
            self.rpc.answer(answer)
            self.assertEqual(self.callTimes(), [self.clock.seconds() + RETRY], answer)
            self.assertEqual(self.session.lease["expires_at"], 5600, answer)
            self.clock.advance(RETRY)
        self.assertEqual(self.client.lost, [])

    def test_transportFailuresAreRetried(self):
        """Whether the gateway is gone is the health probes' call, not ours."""
        self.renewal.start()
        self.clock.advance(300)
        self.rpc.answer(RPCTransportError("timed out"))
        self.assertEqual(self.callTimes(), [5300 + RETRY])
        self.clock.advance(RETRY)
        self.rpc.answer(RPCError(RATE_LIMITED, "rate limited: slow down"))
        self.assertEqual(self.callTimes(), [5300 + 2 * RETRY])
        self.assertEqual(self.client.lost, [])

    def test_aForgottenLeaseIsLost(self):
        for code in (UNKNOWN_LEASE, WRONG_TOKEN):
            renewal = Renewal(self.clock, self.rpc, self.session, self.client)
            renewal.start()
            self.clock.advance(300)
            self.rpc.answer(RPCError(code, "no such lease"))
            self.assertEqual(self.clock.getDelayedCalls(), [])
            session, reason = self.client.lost[-1]
            self.assertIs(session, self.session)
            self.assertIn(str(code), reason)
            self.session.lease["expires_at"] = self.clock.seconds() + 600
        self.assertEqual(len(self.client.lost), 2)

    def test_stopBeforeTheRenewal(self):
        self.renewal.start()
        self.renewal.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.rpc.calls, [])

    def test_stopDuringTheCallCancelsItQuietly(self):
        self.renewal.start()
        self.clock.advance(300)
        [(_, pending)] = self.rpc.calls
        self.renewal.stop()
        self.assertTrue(pending.called)  # cancelled, and the cancellation swallowed
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.lost, [])
        self.renewal.stop()  # twice is harmless

    def test_stopBeforeStart(self):
        self.renewal.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
