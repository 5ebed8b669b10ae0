"""
An online session's watchers in the client effects: ending the session
(a failover, a switch, a stop) leaves no Deferred failing unconsumed.
Clock, a real L{Loss}, recording fakes for the health monitor, the RPC
client and the hooks.
"""

import gc

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.effects import ClientEffects
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Session
from mnigs.config import Section
from mnigs.methods.loss import Loss


class Step:
    gatewayId, host, port, method = "ed25519:gw", "10.99.0.5", 8150, "wireguard"
    gateway = "gw (10.99.0.5)"
    seen = Section(offer=Section(issuedAt=0))


class Connection:
    """A tunnel that reports its loss as the real ones do."""

    def __init__(self):
        self.loss = Loss()

    def whenLost(self):
        return self.loss.when()

    def disconnect(self):
        self.loss.end()
        return defer.succeed(None)


class Health:
    def start(self):
        pass

    def stop(self):
        pass


class Hooks:
    def run(self, *args):
        pass


class Agent:
    def __init__(self):
        self.losses = []

    def lost(self, session, reason):
        self.losses.append(reason)


class SessionWatcherTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        config = Section(health=Section(offer_interval=10.0), discovery=Section(timeout=2.0))
        self.effects = ClientEffects(self.clock, config, [], None, None, {}, None,
                                     QualityHistory(self.clock), None, lambda s, c: Health(),
                                     Hooks(), SigningKey(b"k" * 32))
        self.effects.agent = Agent()

    def session(self):
        return Session(Step(), {"id": "l1", "token": "t", "expires_at": 600.0,
                                "config": {"address": "100.64.0.2/32"}},
                       Connection(), self.clock.seconds())

    def test_endingASessionLeavesNoUnhandledCancelledError(self):
        session = self.session()
        self.effects.startSession(session)
        self.successResultOf(self.effects.endSession(session))
        del session
        gc.collect()  # an unhandled error in a Deferred is logged when it is collected
        self.assertEqual(self.flushLoggedErrors(defer.CancelledError), [])

    def test_aLossDuringTheSessionReachesTheAgent(self):
        session = self.session()
        self.effects.startSession(session)
        session.connection.loss.happened("WireGuard daemon died")
        self.assertEqual(self.effects.agent.losses, ["WireGuard daemon died"])
        self.successResultOf(self.effects.endSession(session))
