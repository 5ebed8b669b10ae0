"""
The gateway's identity: an ed25519 key made on first start and kept in the
state directory.  Its public half is the gateway id clients pin.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from mnigs.statefile import StateFileCorrupt, atomicWrite, keepAside

KEY_FILE = "identity.pem"


def loadOrCreateKey(stateDir: str) -> Ed25519PrivateKey:
    path = os.path.join(stateDir, KEY_FILE)
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        atomicWrite(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return key
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise StateFileCorrupt(path, keepAside(path), str(e)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StateFileCorrupt(path, keepAside(path), "not an ed25519 key")
    return key
