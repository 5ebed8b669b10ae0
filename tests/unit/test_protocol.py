"""
Canonical JSON, offer signing and verification, and hostile offers.
"""

import copy

from nacl.signing import SigningKey
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.protocol import OfferRejected, canonicalJSON, signOffer, verifyOffer

WG_KEY = "x" * 43 + "="  # 32 bytes of base64


def makeOffer(key=None, **changes):
    key = key or SigningKey.generate()
    offer = {
        "protocol": 2,
        "gateway": {"id": protocol.gatewayId(key.verify_key), "name": "gw-1",
                    "software": "mnigs 0.1.0"},
        "available": True,
        "terms": {"max_clients": 32, "clients": 3, "lease_seconds": 600, "fee": None,
                  "bandwidth_kbps": {"down": 50000, "up": 10000},
                  "contact": "ops@example.net", "notes": "free"},
        "methods": [
            {"type": "wireguard", "endpoint": "10.99.0.5:51820",
             "public_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
            {"type": "forward"},
        ],
        "issued_at": 1764000000,
        "nonce": "n0nce",
    }
    for path, value in changes.items():
        target = offer
        parts = path.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return signOffer(offer, key), key


class CanonicalJSONTests(SynchronousTestCase):
    def test_sortedCompactUTF8(self):
        self.assertEqual(canonicalJSON({"b": 1, "a": ["é", {"d": None, "c": True}]}),
                         '{"a":["é",{"c":true,"d":null}],"b":1}'.encode("utf-8"))

    @settings(derandomize=True, max_examples=200)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                        lambda children: st.lists(children) | st.dictionaries(st.text(), children)))
    def test_roundTripIsStable(self, value):
        import json
        self.assertEqual(canonicalJSON(json.loads(canonicalJSON(value))), canonicalJSON(value))


class SignatureTests(SynchronousTestCase):
    def test_signedOfferVerifies(self):
        offer, key = makeOffer()
        verified = verifyOffer(offer)
        self.assertEqual(verified.gatewayId, offer["gateway"]["id"])
        self.assertEqual(verified.load, 3 / 32)
        self.assertEqual([m["type"] for m in verified.methods], ["wireguard", "forward"])

    def test_signatureCoversEveryMember(self):
        offer, _ = makeOffer()
        for mutate in (lambda o: o["terms"].update(clients=0),
                       lambda o: o.update(available=False),
                       lambda o: o["methods"][0].update(endpoint="10.99.0.6:51820"),
                       lambda o: o["gateway"].update(name="evil")):
            tampered = copy.deepcopy(offer)
            mutate(tampered)
            self.assertRaises(OfferRejected, verifyOffer, tampered)

    def test_otherKeysSignatureRejected(self):
        offer, _ = makeOffer()
        other, _ = makeOffer()
        offer["signature"] = other["signature"]
        self.assertRaises(OfferRejected, verifyOffer, offer)

    def test_pinnedAndBlocked(self):
        offer, _ = makeOffer()
        gid = offer["gateway"]["id"]
        verifyOffer(offer, pinned=frozenset({gid}))
        self.assertRaises(OfferRejected, verifyOffer, offer, pinned=frozenset({"ed25519:other"}))
        self.assertRaises(OfferRejected, verifyOffer, offer, blocked=frozenset({gid}))


class HostileOfferTests(SynchronousTestCase):
    """
    Offers come from anyone on the mesh: every odd shape is rejected with a
    reason, never an exception of another kind.
    """

    def assertRejected(self, **changes):
        offer, _ = makeOffer(**changes)
        self.assertRaises(OfferRejected, verifyOffer, offer)

    def test_badShapes(self):
        self.assertRejected(protocol=1)
        self.assertRejected(protocol=3)
        self.assertRejected(nonce="")
        self.assertRejected(nonce=5)
        self.assertRejected(nonce="n" * 500)
        self.assertRejected(nonce="new\nline")
        self.assertRejected(available="yes")
        self.assertRejected(terms__max_clients=-1)
        self.assertRejected(terms__clients=1.5)
        self.assertRejected(terms__lease_seconds=0)
        self.assertRejected(terms__lease_seconds=10**9)
        self.assertRejected(terms__fee={"amount": "NaN", "currency": "EUR", "period": "month"})
        self.assertRejected(terms__fee={"amount": "-1", "currency": "EUR", "period": "month"})
        self.assertRejected(terms__notes="x" * 10000)
        self.assertRejected(terms__notes="bell\x07")
        self.assertRejected(methods="wireguard")
        self.assertRejected(methods=[{"type": "forward"}] * 100)
        self.assertRejected(gateway__id="rsa:abc")
        self.assertRejected(issued_at="now")

    def test_hostileEndpoints(self):
        for endpoint in ("evil.example.net:51820", "10.0.0.1", "10.0.0.1:99999",
                         "$(reboot):1", "10.0.0.1:51820; rm -rf /", "[::1:51820",
                         "224.0.0.1:51820", "0.0.0.0:1", 12345):
            self.assertRejected(methods=[{"type": "wireguard", "endpoint": endpoint,
                                          "public_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}])

    def test_badWireGuardKey(self):
        self.assertRejected(methods=[{"type": "wireguard", "endpoint": "10.0.0.1:1",
                                      "public_key": "--key; reboot"}])

    def test_unknownMethodTypesIgnored(self):
        offer, _ = makeOffer(methods=[{"type": "carrier-pigeon", "coop": "roof"},
                                      {"type": "forward"}])
        self.assertEqual(verifyOffer(offer).methods, ({"type": "forward"},))

    def test_notAnObject(self):
        for junk in (None, [], "offer", 5, {"protocol": 1}):
            self.assertRaises(OfferRejected, verifyOffer, junk)

    def test_probeTargetsParsed(self):
        offer, _ = makeOffer(probe=["9.9.9.9", "2620:fe::FE", "9.9.9.9"])
        self.assertEqual(verifyOffer(offer).probe, ("9.9.9.9", "2620:fe::fe"))
        self.assertEqual(verifyOffer(makeOffer()[0]).probe, ())

    def test_badProbeTargetsRejectTheOfferWithAReason(self):
        for probe, why in ((["9.9.9.9"] * 9, "probe must be a list of at most 8 addresses"),
                           ("9.9.9.9", "probe must be a list of at most 8 addresses"),
                           (["dns.quad9.net"], "probe entry 'dns.quad9.net' is not an IP address"),
                           (["9.9.9.9; reboot"], "is not an IP address"),
                           ([9], "probe entries must be address text"),
                           (["127.0.0.1"], "probe address 127.0.0.1 is not a unicast address"),
                           (["fe80::1"], "not a unicast address"),
                           (["224.0.0.1"], "not a unicast address"),
                           (["0.0.0.0"], "not a unicast address")):
            offer, _ = makeOffer(probe=probe)
            error = self.assertRaises(OfferRejected, verifyOffer, offer)
            self.assertIn(why, str(error))

    def test_meshAddressesParsed(self):
        offer, _ = makeOffer(addresses=["10.251.0.5", "10.99.0.5", "FD00::5", "10.251.0.5"])
        self.assertEqual(verifyOffer(offer).addresses, ("10.251.0.5", "10.99.0.5", "fd00::5"))
        self.assertEqual(verifyOffer(makeOffer()[0]).addresses, ())

    def test_badMeshAddressesRejectTheOfferWithAReason(self):
        for addresses, why in ((["10.99.0.5"] * 17, "addresses must be a list of at most 16"),
                               (["gw.example"], "addresses entry 'gw.example' is not an IP address"),
                               (["::1"], "addresses address ::1 is not a unicast address"),
                               ([{"host": "x"}], "addresses entries must be address text")):
            offer, _ = makeOffer(addresses=addresses)
            error = self.assertRaises(OfferRejected, verifyOffer, offer)
            self.assertIn(why, str(error))

    def test_ipv6Endpoint(self):
        offer, _ = makeOffer(methods=[{"type": "wireguard", "endpoint": "[200:1234::1]:51820",
                                       "public_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}])
        self.assertEqual(verifyOffer(offer).method("wireguard")["endpoint"], "[200:1234::1]:51820")

    @settings(derandomize=True, max_examples=300)
    @given(st.dictionaries(st.sampled_from(["protocol", "gateway", "available", "terms",
                                            "methods", "issued_at", "signature"]),
                           st.none() | st.booleans() | st.integers() | st.text()
                           | st.lists(st.integers()) | st.dictionaries(st.text(), st.text())))
    def test_garbageOnlyEverRejected(self, junk):
        try:
            verifyOffer(junk)
        except OfferRejected:
            pass


CLIENT_KEY = SigningKey(b"c" * 32)
CLIENT_ID = protocol.keyId(CLIENT_KEY.verify_key)


def registerParams(key=CLIENT_KEY, **changes):
    params = {"client": {"id": protocol.keyId(key.verify_key), "name": "n"},
              "gateway": "ed25519:" + "g" * 43 + "=", "nonce": "n0nce",
              "method": "wireguard", "params": {"public_key": WG_KEY}}
    params.update(changes)
    return protocol.signRegistration(params, key)


class RegisterParamsTests(SynchronousTestCase):
    def test_valid(self):
        r = protocol.parseRegister(registerParams())
        self.assertEqual((r.clientId, r.clientName, r.method, r.gateway, r.nonce),
                         (CLIENT_ID, "n", "wireguard", "ed25519:" + "g" * 43 + "=", "n0nce"))
        self.assertTrue(r.proofVerifies())

    def test_invalid(self):
        good = registerParams()
        for changes in ({"client": "x"}, {"client": {"id": ""}}, {"client": {"id": "a b"}},
                        {"client": {"id": "node-1"}}, {"client": {"id": "ed25519:" + "a" * 200}},
                        {"client": {"id": "ed25519:AAAA"}}, {"method": 5}, {"params": []},
                        {"extra": 1}, {"gateway": 5}, {"nonce": None}, {"proof": 7},
                        {"proof": "p" * 500}):
            params = dict(good, **changes)
            e = self.assertRaises(protocol.RPCError, protocol.parseRegister, params)
            self.assertEqual(e.code, protocol.INVALID_PARAMS, changes)
        for missing in ("client", "gateway", "nonce", "proof"):
            params = {k: v for k, v in good.items() if k != missing}
            e = self.assertRaises(protocol.RPCError, protocol.parseRegister, params)
            self.assertEqual(e.code, protocol.INVALID_PARAMS, missing)


class RegistrationProofTests(SynchronousTestCase):
    """
    The proof is the client key's signature over every other member: any
    change to what was signed, or a proof by another key, does not verify.
    """

    def test_proofByTheClientKeyVerifies(self):
        self.assertTrue(protocol.parseRegister(registerParams()).proofVerifies())

    def test_proofByAnotherKeyDoesNotVerify(self):
        params = registerParams(key=SigningKey(b"m" * 32))
        params["client"] = {"id": CLIENT_ID, "name": "n"}  # the victim's id, the thief's proof
        self.assertFalse(protocol.parseRegister(params).proofVerifies())

    def test_garbledProofDoesNotVerify(self):
        for proof in ("", "not base64!", "AAAA", registerParams()["proof"][:-4] + "AAA="):
            params = dict(registerParams(), proof=proof)
            self.assertFalse(protocol.parseRegister(params).proofVerifies(), proof)

    @settings(derandomize=True, max_examples=100)
    @given(st.sampled_from(["gateway", "nonce", "method", "params", "client"]),
           st.text(max_size=20) | st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
    def test_anyChangeToASignedMemberBreaksTheProof(self, member, value):
        signed = registerParams()
        changed = dict(signed, **{member: value})
        if member == "client":
            changed["client"] = {"id": CLIENT_ID, "name": str(value)[:64]}
        if changed == signed:
            return
        try:
            request = protocol.parseRegister(changed)
        except protocol.RPCError:
            return  # malformed now: refused before the proof is looked at
        self.assertFalse(request.proofVerifies())

    def test_leaseCredentials(self):
        self.assertEqual(protocol.parseLeaseCredentials({"lease": "a", "token": "b"}), ("a", "b"))
        for params in ({}, {"lease": 1, "token": "b"}, {"lease": "a"}, {"lease": "a", "token": "b", "x": 1}):
            e = self.assertRaises(protocol.RPCError, protocol.parseLeaseCredentials, params)
            self.assertEqual(e.code, protocol.INVALID_PARAMS)


class KeyTests(SynchronousTestCase):
    def test_nonCanonicalBase64Refused(self):
        # Same bytes, other trailing bits: a key that wg itself would refuse.
        e = self.assertRaises(protocol.RPCError, protocol.checkBase64Key, "B" * 43 + "=", "public_key")
        self.assertEqual(e.code, protocol.INVALID_PARAMS)
        self.assertEqual(protocol.checkBase64Key("A" * 43 + "=", "k"), "A" * 43 + "=")


class SameBytesAsBeforeTests(SynchronousTestCase):
    """
    Offers are signed with PyNaCl (libsodium); ed25519 signatures are
    deterministic, so they must be byte for byte what the C{cryptography}
    library makes of the same canonical JSON, and verify there too.
    """

    def test_signatureMatchesCryptography(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        seed = bytes(range(32))
        offer, key = makeOffer(SigningKey(seed))
        theirs = Ed25519PrivateKey.from_private_bytes(seed)
        body = canonicalJSON({k: v for k, v in offer.items() if k != "signature"})
        self.assertEqual(protocol._unb64(offer["signature"], 64), theirs.sign(body))
        theirs.public_key().verify(protocol._unb64(offer["signature"], 64), body)
