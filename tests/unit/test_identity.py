"""
The gateway's identity key: its file form (RFC 8410 PKCS#8 PEM, the same
bytes the C{cryptography} library and C{openssl genpkey} write), loading
it back, and what happens to a damaged file.  The signatures it makes
are checked against RFC 8032's first test vector.
"""

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.daemon.identity import KEY_FILE, decodeKey, encodeKey, loadOrCreateKey
from mnigs.system.statefile import StateFileCorrupt

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


class KeyFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, KEY_FILE)

    def test_madeOnceThenLoaded(self):
        first = loadOrCreateKey(self.dir)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(bytes(loadOrCreateKey(self.dir)), bytes(first))

    def test_looseModeTightenedOnLoad(self):
        loadOrCreateKey(self.dir)
        os.chmod(self.path, 0o644)
        loadOrCreateKey(self.dir)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_clientKeyReplacesTheOldClientIdFile(self):
        from mnigs.client.service import OLD_CLIENT_ID_FILE, loadOrCreateClientKey

        old = os.path.join(self.dir, OLD_CLIENT_ID_FILE)
        with open(old, "w") as f:
            f.write("mnigs-0123456789abcdef\n")
        key = loadOrCreateClientKey(self.dir)
        self.assertFalse(os.path.exists(old))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(bytes(loadOrCreateClientKey(self.dir)), bytes(key))

    def test_readsWhatCryptographyWrites(self):
        """A key file written by the C{cryptography} library (as mnigs did
        before it used PyNaCl) loads as the same key."""
        theirs = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
        with open(self.path, "wb") as f:
            f.write(theirs.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        key = loadOrCreateKey(self.dir)
        self.assertEqual(bytes(key), RFC8032_SECRET)
        self.assertEqual(bytes(key.verify_key), RFC8032_PUBLIC)

    def test_writesWhatCryptographyReads(self):
        pem = encodeKey(SigningKey(RFC8032_SECRET))
        theirs = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
        self.assertEqual(pem, theirs.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                   NoEncryption()))
        self.assertEqual(load_pem_private_key(pem, None).private_bytes_raw(), RFC8032_SECRET)

    def test_rfc8032Signature(self):
        key = decodeKey(encodeKey(SigningKey(RFC8032_SECRET)))
        self.assertEqual(key.sign(b"").signature, RFC8032_SIGNATURE)
        self.assertEqual(protocol.publicKeyFromId(protocol.gatewayId(key.verify_key)).encode(),
                         RFC8032_PUBLIC)

    def test_damagedFilesAreKeptAside(self):
        other = Ed25519PrivateKey.generate()
        for damaged, reason in [
            (b"", "not a PEM"),
            (b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "bad base64"),
            (encodeKey(SigningKey(RFC8032_SECRET))[:-30], "not a PEM"),
            (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
             "not an ed25519 key"),
            (other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                 NoEncryption()).replace(b"K2Vw", b"K2Vx"),
             "not an ed25519 key"),
        ]:
            with open(self.path, "wb") as f:
                f.write(damaged)
            with self.assertRaises(StateFileCorrupt) as caught:
                loadOrCreateKey(self.dir)
            self.assertIn(reason, str(caught.exception))
            self.assertFalse(os.path.exists(self.path), "the damaged file was kept aside")
            kept = [name for name in os.listdir(self.dir) if name != KEY_FILE]
            self.assertTrue(kept)
            for name in kept:
                os.remove(os.path.join(self.dir, name))
