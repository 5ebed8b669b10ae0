"""
The client's side of protocol version 2: registering with a proof the
real gateway code accepts, using a lease only if the gateway of the offer
signed it for us and it agrees with the offer (per method), one more try
with a fresh offer after 1007, and an online session moved only by a
verified C{available: false} of its own gateway.  Clock, the real
OfferMaker on the gateway's side, a scripted RPC client.
"""

import copy
import dataclasses
import types

from hypothesis import given, settings, strategies as st
from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.client.effects import ClientEffects, LeaseRejected, OfferWatch, checkLease
from mnigs.client.machine import Session
from mnigs.client.plan import Attempt, Step
from mnigs.client.ranking import Ranked, Seen
from mnigs.daemon.config import Section
from mnigs.methods.forward import ForwardClient
from mnigs.methods.openvpn import OpenVPNClient
from mnigs.methods.softether import SoftEtherClient
from mnigs.methods.wireguard import WireGuardClient, generatePrivateKey
from mnigs.protocol import BAD_PROOF, RPCError, keyId, signOffer, verifyOffer
from mnigs.server.offer import NONCE_PERIOD, Nonces, OfferMaker
from tests.unit.test_openvpn.test_config import caPEM

GATEWAY_KEY = SigningKey(b"g" * 32)
ROGUE_KEY = SigningKey(b"r" * 32)
CLIENT_KEY = SigningKey(b"c" * 32)
CLIENT_ID = keyId(CLIENT_KEY.verify_key)
GATEWAY_WG = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
ROGUE_WG = "HxwdHhscGRoXFBUWExAREg8MDQ4LCAkKBwQFBgMAAQI="
HOST = "10.99.0.5"


class WireGuardEntry:
    name = "wireguard"

    def offerEntry(self, localHost):
        return {"type": "wireguard", "endpoint": f"{localHost}:51820", "public_key": GATEWAY_WG}


class Gateway:
    """
    The gateway's side as the real server does it (OfferMaker: offers,
    proofs, signed answers), behind a scripted RPC client; C{answers}
    overrides what register answers (an error, or a rogue's answer).
    """

    def __init__(self, clock, key=GATEWAY_KEY):
        self.clock = clock
        self.offers = OfferMaker(clock, key, "gw", {"max_clients": 8, "lease_seconds": 600,
                                                    "fee": None, "bandwidth_kbps": None,
                                                    "contact": "", "notes": ""},
                                 [WireGuardEntry()], Nonces(clock))
        self.calls = []
        self.answers = []  # callables(params) -> answer, or exceptions, used first
        self.leases = 0

    def call(self, host, port, method, params=None, timeout=None):
        self.calls.append((method, params))
        if method == "gateway.info":
            return defer.succeed(self.offers.offer(host, True, 0))
        if method == "gateway.register":
            if self.answers:
                answer = self.answers.pop(0)
                if isinstance(answer, Exception):
                    return defer.fail(answer)
                return defer.succeed(answer(params))
            try:
                request = protocol.parseRegister(params)
                self.offers.checkProof(request)
            except RPCError as e:
                return defer.fail(e)
            self.leases += 1
            return defer.succeed(self.offers.signLease(lease(self.leases), request.clientId))
        raise AssertionError(method)


def lease(n=1, peer=GATEWAY_WG, method="wireguard"):
    return {"lease": {"id": f"lease-{n}", "token": "t" * 32, "method": method,
                      "expires_in": 600,
                      "config": {"address": f"100.64.0.{n + 1}/32",
                                 "gateway_address": "100.64.0.1", "peer_public_key": peer,
                                 "endpoint": f"{HOST}:51820", "dns": []}}}


def stepFor(offer, method="wireguard", host=HOST):
    seen = types.SimpleNamespace(offer=verifyOffer(offer), host=host, port=8150, others=())
    ranked = types.SimpleNamespace(seen=seen, usable=True, methods=(method,))
    return Step(ranked, method)


class History:
    def get(self, gid):
        return self

    def failed(self, *args):
        pass


def makeEffects(clock, rpc):
    config = Section(client=Section(name="me"), discovery=Section(timeout=2.0))
    methods = {"wireguard": WireGuardClient(clock, "wg-test", generatePrivateKey(), None)}
    return ClientEffects(clock, config, [], None, rpc, methods, None, History(), None,
                         None, None, CLIENT_KEY)


class RegisterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.gateway = Gateway(self.clock)
        self.effects = makeEffects(self.clock, self.gateway)
        self.step = stepFor(self.gateway.offers.offer(HOST, True, 0))

    def test_proofIsAcceptedAndTheSignedLeaseUsed(self):
        got = self.successResultOf(self.effects.register(self.step))
        self.assertEqual((got["id"], got["expires_at"]), ("lease-1", 1600))
        [(method, params)] = self.gateway.calls
        self.assertEqual((params["client"]["id"], params["gateway"], params["nonce"]),
                         (CLIENT_ID, self.gateway.offers.gatewayId, self.step.seen.offer.nonce))

    def refusal(self, answer):
        self.gateway.answers.append(answer)
        return self.failureResultOf(self.effects.register(self.step), LeaseRejected).value

    def test_unsignedLeaseRefused(self):
        why = self.refusal(lambda params: dict(lease(), gateway=self.gateway.offers.gatewayId,
                                               client=CLIENT_ID))
        self.assertIn("not signed", str(why))

    def test_leaseSignedByARogueRefused(self):
        """
        A nearer node that replays the gateway's signed offer and answers
        register itself, with its own WireGuard key: it cannot sign as the
        gateway.
        """
        why = self.refusal(lambda params: signOffer(
            dict(lease(peer=ROGUE_WG), gateway=self.gateway.offers.gatewayId, client=CLIENT_ID),
            ROGUE_KEY))
        self.assertIn("signature does not verify with the key of the offer", str(why))

    def test_leaseForAnotherClientRefused(self):
        why = self.refusal(lambda params: self.gateway.offers.signLease(lease(), "ed25519:other"))
        self.assertIn("for another client", str(why))

    def test_leaseNamingAnotherGatewayRefused(self):
        why = self.refusal(lambda params: signOffer(
            dict(lease(), gateway="ed25519:other", client=CLIENT_ID), GATEWAY_KEY))
        self.assertIn("another gateway", str(why))

    def test_signedLeaseWithAnotherWireGuardKeyRefused(self):
        why = self.refusal(lambda params: self.gateway.offers.signLease(lease(peer=ROGUE_WG),
                                                                         CLIENT_ID))
        self.assertIn("WireGuard key is not the one the signed offer names", str(why))

    def test_leaseForAnotherMethodRefused(self):
        why = self.refusal(lambda params: self.gateway.offers.signLease(
            lease(method="forward"), CLIENT_ID))
        self.assertIn("not for wireguard", str(why))

    def test_refusedLeaseMovesToTheNextGateway(self):
        why = self.refusal(lambda params: {"lease": {}})
        attempt = Attempt((self.step,))
        self.assertIsNone(attempt.afterRegisterFailure(why))

    def test_refusedLeaseTriesTheGatewaysOtherAddressFirst(self):
        """
        A nearer node replaying the gateway's offer answers register with a
        lease of its own: refused, then the same gateway is tried at its
        other address, before any other gateway.
        """
        why = self.refusal(lambda params: {"lease": {}})
        real = types.SimpleNamespace(offer=self.step.seen.offer, host="10.0.0.77", port=8150,
                                     distance=9.0, rtt=0.01, others=())
        seen = dataclasses.replace(Seen(self.step.seen.offer, self.step.host, 8150, 1.0),
                                   others=(Seen(real.offer, real.host, 8150, 9.0),))
        step = Step(Ranked(seen, 0.1, True, "", ("wireguard",), ""), "wireguard")
        other = Step(Ranked(Seen(real.offer, "10.0.0.99", 8150, 5.0), 0.2, True, "",
                            ("wireguard",), ""), "wireguard")
        attempt = Attempt((step, other)).afterRegisterFailure(why)
        self.assertEqual((attempt.step.host, attempt.step.method), ("10.0.0.77", "wireguard"))
        self.assertEqual(attempt.step.ranked.seen.others, ())
        # Refused there too: no address left, so the next step (here a
        # step of the same gateway id at a third address) is skipped.
        self.assertIsNone(attempt.afterRegisterFailure(why))

    def test_staleNonceRetriedOnceWithAFreshOffer(self):
        self.clock.advance(2 * NONCE_PERIOD)  # the scan's nonce is no longer accepted
        got = self.successResultOf(self.effects.register(self.step))
        self.assertEqual(got["id"], "lease-1")
        self.assertEqual([method for method, _ in self.gateway.calls],
                         ["gateway.register", "gateway.info", "gateway.register"])
        first, second = self.gateway.calls[0][1], self.gateway.calls[2][1]
        self.assertNotEqual(first["nonce"], second["nonce"])

    def test_secondBadProofGivesUp(self):
        self.gateway.answers = [RPCError(BAD_PROOF, "no"), RPCError(BAD_PROOF, "no again")]
        failure = self.failureResultOf(self.effects.register(self.step), RPCError)
        self.assertEqual(failure.value.code, BAD_PROOF)
        self.assertEqual([method for method, _ in self.gateway.calls],
                         ["gateway.register", "gateway.info", "gateway.register"])
        # 1007 twice: the next gateway.
        self.assertIsNone(Attempt((self.step,)).afterRegisterFailure(failure))

    def test_freshOfferFromAnotherGatewayIsNotRetried(self):
        self.gateway.answers = [RPCError(BAD_PROOF, "no")]
        impostor = Gateway(self.clock, key=ROGUE_KEY)
        self.gateway.offers = impostor.offers  # gateway.info now answers another id
        failure = self.failureResultOf(self.effects.register(self.step), RPCError)
        self.assertEqual(failure.value.code, BAD_PROOF)
        self.assertEqual([method for method, _ in self.gateway.calls],
                         ["gateway.register", "gateway.info"])

    def test_otherErrorsAreNotRetried(self):
        self.gateway.answers = [RPCError(protocol.GATEWAY_FULL, "full")]
        self.failureResultOf(self.effects.register(self.step), RPCError)
        self.assertEqual(len(self.gateway.calls), 1)


class SignedFieldTests(SynchronousTestCase):
    """
    Any change to what the gateway signed is refused.
    """

    clock = Clock()
    gateway = Gateway(clock)
    offer = verifyOffer(gateway.offers.offer(HOST, True, 0))
    signed = gateway.offers.signLease(lease(), CLIENT_ID)

    PATHS = [("lease", "id"), ("lease", "token"), ("lease", "method"), ("lease", "expires_in"),
             ("lease", "config", "address"), ("lease", "config", "gateway_address"),
             ("lease", "config", "peer_public_key"), ("lease", "config", "endpoint"),
             ("lease", "config", "dns"), ("lease", "config", "extra"), ("lease", "extra"),
             ("gateway",), ("client",), ("extra",)]

    def test_theUnchangedAnswerIsAccepted(self):
        checkLease(self.signed, 0, self.offer, CLIENT_ID, "wireguard")

    @settings(derandomize=True, max_examples=300)
    @given(st.sampled_from(PATHS),
           st.none() | st.booleans() | st.integers(1, 10**6) | st.text(max_size=60)
           | st.lists(st.text(max_size=5), max_size=2))
    def test_anyChangeToASignedFieldIsRefused(self, path, value):
        changed = copy.deepcopy(self.signed)
        target = changed
        for part in path[:-1]:
            target = target[part]
        if path[-1] in target and target[path[-1]] == value:
            return
        target[path[-1]] = value
        self.assertRaises(LeaseRejected, checkLease, changed, 0, self.offer, CLIENT_ID,
                          "wireguard")


class AgreementTests(SynchronousTestCase):
    """
    Each method's lease config must agree with what the signed offer pins.
    """

    def test_wireguardKey(self):
        client = WireGuardClient(None, "wg-test", generatePrivateKey(), None)
        entry = {"type": "wireguard", "public_key": GATEWAY_WG}
        client.checkAgainstOffer(entry, {"peer_public_key": GATEWAY_WG})
        for config in ({"peer_public_key": ROGUE_WG}, {}):
            self.assertRaises(ValueError, client.checkAgainstOffer, entry, config)

    def test_openvpnCA(self):
        client = OpenVPNClient(None, "ovpn-test", None, self.mktemp())
        ca = caPEM()
        entry = {"type": "openvpn", "ca_sha256": protocol.certificateSHA256(ca)}
        client.checkAgainstOffer(entry, {"ca": ca})
        e = self.assertRaises(ValueError, client.checkAgainstOffer,
                              dict(entry, ca_sha256="0" * 64), {"ca": ca})
        self.assertIn("CA certificate is not the one", str(e))
        for config in ({}, {"ca": "not a certificate"}, {"ca": 5}):
            self.assertRaises(ValueError, client.checkAgainstOffer, entry, config)

    def test_softetherCertificate(self):
        client = SoftEtherClient(None, "mnigs", None, None, self.mktemp())
        cert = caPEM()
        entry = {"type": "softether", "cert_sha256": protocol.certificateSHA256(cert)}
        client.checkAgainstOffer(entry, {"server_cert": cert})
        e = self.assertRaises(ValueError, client.checkAgainstOffer,
                              dict(entry, cert_sha256="0" * 64), {"server_cert": cert})
        self.assertIn("server certificate is not the one", str(e))
        self.assertRaises(ValueError, client.checkAgainstOffer, entry, {})

    def test_forwardHasNothingToPin(self):
        ForwardClient(None, None).checkAgainstOffer({"type": "forward"}, {})

    def test_offerWithoutPinsIsRefused(self):
        for entry in ({"type": "openvpn", "endpoint": "10.0.0.1:1194"},
                      {"type": "openvpn", "endpoint": "10.0.0.1:1194", "ca_sha256": "AB" * 32},
                      {"type": "softether", "endpoint": "10.0.0.1:443", "hub": "MNIGS"}):
            gateway = Gateway(Clock())
            offer = gateway.offers.offer(HOST, True, 0)
            offer = signOffer(dict(offer, methods=[entry]), GATEWAY_KEY)
            self.assertRaises(protocol.OfferRejected, verifyOffer, offer)


class Agent:
    def __init__(self):
        self.losses = []

    def lost(self, session, reason):
        self.losses.append(reason)


class OfferWatchTests(SynchronousTestCase):
    """
    Only a verified offer of the session's own gateway, not older than one
    already seen, says the gateway is unavailable.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.gateway = Gateway(self.clock)
        self.step = stepFor(self.gateway.offers.offer(HOST, True, 0))
        self.answers = []
        rpc = types.SimpleNamespace(call=lambda *args, **kw: defer.succeed(self.answers.pop(0)))
        self.agent = Agent()
        self.session = Session(self.step, {}, None, self.clock.seconds())
        self.watch = OfferWatch(rpc, self.session, self.agent, 2.0)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def answer(self, offer):
        self.answers.append(offer)
        self.successResultOf(self.watch.check())

    def infoLines(self):
        return [e["why"] for e in self.logged
                if e.get("log_level").name == "info" and "why" in e]

    def unavailable(self, key=GATEWAY_KEY, **changes):
        offer = dict(self.gateway.offers.offer(HOST, False, 0), **changes)
        return signOffer(offer, key)

    def test_signedUnavailableMoves(self):
        self.clock.advance(1)
        self.answer(self.gateway.offers.offer(HOST, False, 0))
        self.assertEqual(self.agent.losses, ["the gateway says it is unavailable"])

    def test_unsignedUnavailableIgnored(self):
        offer = dict(self.gateway.offers.offer(HOST, False, 0))
        del offer["signature"]
        self.answer(offer)
        self.assertEqual(self.agent.losses, [])
        self.assertIn("not signed", self.infoLines()[0])

    def test_forgedUnavailableIgnored(self):
        self.answer(self.unavailable(key=ROGUE_KEY))
        self.assertEqual(self.agent.losses, [])
        self.assertIn("signature does not verify", self.infoLines()[0])

    def test_anotherGatewaysUnavailableIgnored(self):
        rogue = Gateway(self.clock, key=ROGUE_KEY)
        self.answer(rogue.offers.offer(HOST, False, 0))
        self.assertEqual(self.agent.losses, [])
        self.assertIn("signed by another gateway", self.infoLines()[0])

    def test_replayedOlderUnavailableIgnored(self):
        old = self.unavailable(issued_at=self.step.seen.offer.issuedAt - 60)
        self.answer(old)
        self.assertEqual(self.agent.losses, [])
        self.assertIn("older than an offer already seen", self.infoLines()[0])

    def test_availableMovesNobodyAndLogsNothingAtInfo(self):
        self.answer(self.gateway.offers.offer(HOST, True, 0))
        self.answer({"junk": True})
        self.assertEqual((self.agent.losses, self.infoLines()), ([], []))
