"""
The gateway's side of protocol version 2: the offer's nonce, the proof a
registration must carry (1007 otherwise, and nothing changes), and the
signed register answer.  Clock, the real OfferMaker and GatewayCalls, a
recording gateway machine.
"""

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.protocol import BAD_PROOF, RPCError, keyId, signRegistration, verifyOffer
from mnigs.rpc.server import Call
from mnigs.server.offer import NONCE_PERIOD, Nonces, OfferMaker
from mnigs.server.rpcapi import GatewayCalls

GATEWAY_KEY = SigningKey(b"g" * 32)
CLIENT_KEY = SigningKey(b"c" * 32)
THIEF_KEY = SigningKey(b"t" * 32)
WG_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return f"nonce-{self.n}"


class NonceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.nonces = Nonces(self.clock, newNonce=Counter())

    def test_sameNonceWithinAPeriod(self):
        first = self.nonces.current()
        self.clock.advance(NONCE_PERIOD - 1)
        self.assertEqual(self.nonces.current(), first)
        self.assertTrue(self.nonces.accepts(first))

    def test_previousNonceAcceptedForOneMorePeriod(self):
        first = self.nonces.current()
        self.clock.advance(NONCE_PERIOD)
        second = self.nonces.current()
        self.assertNotEqual(first, second)
        self.assertTrue(self.nonces.accepts(first))
        self.assertTrue(self.nonces.accepts(second))
        self.clock.advance(NONCE_PERIOD)
        self.assertFalse(self.nonces.accepts(first))
        self.assertTrue(self.nonces.accepts(second))

    def test_afterTwoIdlePeriodsNeitherOldNonceIsAccepted(self):
        first = self.nonces.current()
        self.clock.advance(2 * NONCE_PERIOD)
        self.assertFalse(self.nonces.accepts(first))
        self.assertNotEqual(self.nonces.current(), first)

    def test_changesAtLeastEveryFiveMinutes(self):
        self.assertLessEqual(NONCE_PERIOD, 300)

    def test_unknownNonceRefused(self):
        self.nonces.current()
        for nonce in ("", "nonce-9", "nonce-1 ", "\ud800"):
            self.assertFalse(self.nonces.accepts(nonce), nonce)


class Method:
    name = "wireguard"

    def offerEntry(self, localHost):
        return {"type": "wireguard", "endpoint": f"{localHost}:51820", "public_key": WG_KEY}


def makeOffers(clock):
    return OfferMaker(clock, GATEWAY_KEY, "gw", {"max_clients": 8, "lease_seconds": 600,
                                                 "fee": None, "bandwidth_kbps": None,
                                                 "contact": "", "notes": ""},
                      [Method()], Nonces(clock, newNonce=Counter()))


def registration(offer, key=CLIENT_KEY, clientId=None, **changes):
    params = {"client": {"id": clientId or keyId(key.verify_key), "name": "me"},
              "gateway": offer["gateway"]["id"], "nonce": offer["nonce"],
              "method": "wireguard", "params": {"public_key": WG_KEY}}
    params.update(changes)
    return signRegistration(params, key)


class ProofTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.offers = makeOffers(self.clock)
        self.offer = self.offers.offer("10.99.0.5", True, 0)

    def check(self, params):
        self.offers.checkProof(protocol.parseRegister(params))

    def assertBadProof(self, params, why):
        e = self.assertRaises(RPCError, self.check, params)
        self.assertEqual(e.code, BAD_PROOF)
        self.assertIn(why, e.message)

    def test_offerCarriesANonceAndVerifies(self):
        verified = verifyOffer(self.offer)
        self.assertEqual(verified.nonce, "nonce-1")
        self.assertEqual(verified.raw["protocol"], 2)

    def test_validProofAccepted(self):
        self.check(registration(self.offer))

    def test_proofByAnotherKeyRefused(self):
        params = registration(self.offer, key=THIEF_KEY, clientId=keyId(CLIENT_KEY.verify_key))
        self.assertBadProof(params, "signature does not verify")

    def test_proofForAnotherGatewayRefused(self):
        other = keyId(SigningKey(b"o" * 32).verify_key)
        self.assertBadProof(registration(self.offer, gateway=other), "not this gateway's id")

    def test_staleNonceRefused(self):
        params = registration(self.offer)
        self.clock.advance(2 * NONCE_PERIOD)
        self.assertBadProof(params, "nonce")

    def test_previousNonceAccepted(self):
        params = registration(self.offer)
        self.clock.advance(NONCE_PERIOD)
        fresh = self.offers.offer("10.99.0.5", True, 0)
        self.assertNotEqual(fresh["nonce"], self.offer["nonce"])
        self.check(params)
        self.check(registration(fresh))

    def test_madeUpNonceRefused(self):
        self.assertBadProof(registration(self.offer, nonce="guess"), "nonce")

    def test_changedAfterSigningRefused(self):
        params = registration(self.offer)
        params["params"] = {"public_key": "y" * 43 + "="}
        self.assertBadProof(params, "signature does not verify")

    def test_signedAnswerNamesBothSidesAndVerifies(self):
        answer = self.offers.signLease({"lease": {"id": "l1"}}, "ed25519:client")
        self.assertEqual((answer["gateway"], answer["client"]),
                         (self.offers.gatewayId, "ed25519:client"))
        protocol.checkLeaseSignature(answer, self.offers.gatewayId, "ed25519:client")


class RecordingGateway:
    def __init__(self):
        self.registered = []

    def register(self, request, clientHost, localHost):
        self.registered.append(request.clientId)
        return defer.succeed({"lease": {"id": "l1", "token": "t" * 32}})


class NoLimit:
    def check(self, host):
        pass


class RegisterCallTests(SynchronousTestCase):
    """
    gateway.register as the RPC server calls it: a bad proof never reaches
    the gateway; a good one gets a signed answer.
    """

    def setUp(self):
        self.clock = Clock()
        self.offers = makeOffers(self.clock)
        self.gateway = RecordingGateway()
        self.calls = GatewayCalls(self.gateway, NoLimit(), self.offers)
        self.offer = self.offers.offer("10.99.0.5", True, 0)

    def call(self, params):
        return self.calls.jsonrpc_register(Call(params, "10.99.0.7", "10.99.0.5"))

    def test_badProofChangesNothing(self):
        params = registration(self.offer, key=THIEF_KEY, clientId=keyId(CLIENT_KEY.verify_key))
        e = self.assertRaises(RPCError, self.call, params)
        self.assertEqual(e.code, BAD_PROOF)
        self.assertEqual(self.gateway.registered, [])

    def test_goodProofGetsASignedLease(self):
        answer = self.successResultOf(self.call(registration(self.offer)))
        clientId = keyId(CLIENT_KEY.verify_key)
        self.assertEqual(self.gateway.registered, [clientId])
        protocol.checkLeaseSignature(answer, self.offers.gatewayId, clientId)
        self.assertEqual(answer["lease"]["id"], "l1")


class RPCCommandLineTests(SynchronousTestCase):
    """
    C{mnigs-rpc --key FILE HOST gateway.register PARAMS} signs what it sends.
    """

    def test_registrationIsCompletedAndSigned(self):
        import os
        import stat

        from mnigs.cli.rpccli import loadOrCreateKeyFile, registration

        path = os.path.join(self.mktemp() + "-key.pem")
        key = loadOrCreateKeyFile(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(bytes(loadOrCreateKeyFile(path)), bytes(key))
        clock = Clock()
        offers = makeOffers(clock)
        offer = offers.offer("10.99.0.5", True, 0)
        params = registration({"method": "wireguard", "params": {"public_key": WG_KEY}},
                              key, offer)
        self.assertEqual(params["client"]["id"], keyId(key.verify_key))
        offers.checkProof(protocol.parseRegister(params))
        # Someone else's id with our key: sent as asked, refused by the gateway.
        theirs = registration({"client": {"id": keyId(CLIENT_KEY.verify_key)},
                               "method": "wireguard"}, key, offer)
        e = self.assertRaises(RPCError, offers.checkProof, protocol.parseRegister(theirs))
        self.assertEqual(e.code, BAD_PROOF)
