"""
A daemon's identity: an ed25519 key made on first start and kept in the
state directory, mode 0600.  The public half of a gateway's is the gateway
id clients pin; that of a client's is its client id, and registrations
are signed with it (docs/protocol.md).

The file is the standard unencrypted PKCS#8 PEM of RFC 8410 (what
C{openssl genpkey -algorithm ed25519} and the C{cryptography} library
write), so keys move between tools; for ed25519 that DER is a fixed
16-byte header followed by the 32-byte seed.
"""

from __future__ import annotations

import base64
import binascii
import os

from nacl.signing import SigningKey

from mnigs.system.statefile import StateFileCorrupt, atomicWrite, keepAside

KEY_FILE = "identity.pem"

# SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_BEGIN, _END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def encodeKey(key: SigningKey) -> bytes:
    der = base64.b64encode(_PKCS8_ED25519 + bytes(key))
    return _BEGIN + b"\n" + der + b"\n" + _END + b"\n"


def decodeKey(pem: bytes) -> SigningKey:
    """
    The key in a PKCS#8 PEM file, or ValueError saying what is wrong.
    """
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != _BEGIN or lines[-1].strip() != _END:
        raise ValueError("not a PEM 'PRIVATE KEY' block")
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad base64: {e}") from None
    if len(der) != len(_PKCS8_ED25519) + 32 or not der.startswith(_PKCS8_ED25519):
        raise ValueError("not an ed25519 key (RFC 8410 PKCS#8, unencrypted)")
    return SigningKey(der[len(_PKCS8_ED25519):])


def loadOrCreateKey(stateDir: str) -> SigningKey:
    path = os.path.join(stateDir, KEY_FILE)
    try:
        with open(path, "rb") as f:
            pem = f.read()
            if os.fstat(f.fileno()).st_mode & 0o077:
                os.fchmod(f.fileno(), 0o600)  # a private key is nobody else's business
    except FileNotFoundError:
        key = SigningKey.generate()
        atomicWrite(path, encodeKey(key))
        return key
    try:
        return decodeKey(pem)
    except ValueError as e:
        raise StateFileCorrupt(path, keepAside(path), str(e)) from None
