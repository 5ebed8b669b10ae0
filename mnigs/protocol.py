"""
The wire contract of docs/protocol.md (version 2): error codes, canonical
JSON, the signatures (offers and leases by the gateway key, registration
proofs by the client key), and the validation of everything that arrives
from the network.  Pure: no I/O, no reactor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

PROTOCOL_VERSION = 2
RPC_PATH = b"/mnigs/v2"
DEFAULT_PORT = 8150
MAX_REQUEST_BYTES = 64 * 1024
#: Seconds a server keeps an idle connection by default (rpc.idle_timeout).
DEFAULT_IDLE_TIMEOUT = 30.0
#: Seconds a server gives a request to arrive whole (rpc.request_timeout).
DEFAULT_REQUEST_TIMEOUT = 5.0

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
GATEWAY_FULL = 1001
METHOD_UNAVAILABLE = 1002
UNKNOWN_LEASE = 1003
WRONG_TOKEN = 1004
UNAVAILABLE = 1005
RATE_LIMITED = 1006
BAD_PROOF = 1007
REFUSED = 1008

# Bounds on what a client accepts in an offer: an offer is small, and
# anything bigger or stranger than this is somebody probing for bugs.
MAX_OFFER_BYTES = 16 * 1024
MAX_METHODS = 16
MAX_TEXT = 256
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_ID = 128
#: At most this many probe targets in an offer (the server offers its first).
MAX_PROBES = 8
#: At most this many mesh addresses in an offer's C{addresses}.
MAX_ADDRESSES = 16
MAX_NONCE = 128
#: At most this many resolvers in a lease's C{dns} (glibc uses the first 3).
MAX_RESOLVERS = 8


class RPCError(Exception):
    """
    A JSON-RPC error with a code from the table in docs/protocol.md ("Errors").
    """

    def __init__(self, code: int, message: str):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.message} ({self.code})"


#: Unicode categories never allowed in a text shown or logged: controls
#: (C0, DEL, C1), format characters (bidi overrides, zero-width) and lone
#: surrogates (not text at all).
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def unprintable(text: str) -> str | None:
    """
    None if C{text} is printable as the protocol says ("Transport"), else
    a description of its first offending character (C{"U+202E"}).
    """
    if text.isascii() and text.isprintable():
        return None  # the common case, without a lookup per character
    for c in text:
        if unicodedata.category(c) in UNPRINTABLE_CATEGORIES:
            return f"U+{ord(c):04X} ({unicodedata.name(c, unicodedata.category(c))})"
    return None


def printable(text: str) -> str:
    """
    C{text} with every unprintable character (see L{unprintable}) shown
    as an escape (C{\\u202e}), for output that a person reads.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) in UNPRINTABLE_CATEGORIES else c
                   for c in text)


def invalidParams(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, f"invalid params: {message}")


def canonicalJSON(value) -> bytes:
    """
    Keys sorted, separators ',' and ':', UTF-8, no whitespace.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def fromBase64(text: str, length: int | None = None) -> bytes:
    """
    The bytes of canonical base64 C{text} (of C{length} bytes if given);
    ValueError saying why otherwise.
    """
    return _unb64(text, length)


def _unb64(text: str, length: int | None = None) -> bytes:
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64: {e}") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def keyId(publicKey: VerifyKey) -> str:
    """
    The id of an ed25519 public key, as gateway and client ids are written:
    C{ed25519:<base64>}.
    """
    return "ed25519:" + _b64(bytes(publicKey))


#: A gateway id is the id of the gateway's key.
gatewayId = keyId


def publicKeyFromId(gid: str) -> VerifyKey:
    if not isinstance(gid, str) or not gid.startswith("ed25519:"):
        raise ValueError("an id must start with 'ed25519:'")
    return VerifyKey(_unb64(gid[8:], 32))


def _signed(value: dict, member: str, key: SigningKey) -> dict:
    body = {k: v for k, v in value.items() if k != member}
    signed = dict(body)
    signed[member] = _b64(key.sign(canonicalJSON(body)).signature)
    return signed


def _verify(value: dict, member: str, publicKey: VerifyKey) -> None:
    """
    Raise ValueError unless C{value[member]} is C{publicKey}'s signature
    over the canonical JSON of C{value} without C{member}.
    """
    try:
        signature = _unb64(value[member], 64)
        body = {k: v for k, v in value.items() if k != member}
        publicKey.verify(canonicalJSON(body), signature)
    except BadSignatureError:
        raise ValueError("signature does not verify") from None
    except KeyError:
        raise ValueError("not signed") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"unverifiable signature: {e}") from None


def signOffer(value: dict, key: SigningKey) -> dict:
    """
    Return a copy of C{value} (an offer, or a register answer) with its
    C{signature} member set.
    """
    return _signed(value, "signature", key)


def checkSignature(offer: dict) -> None:
    """
    Raise L{OfferRejected} unless the offer is signed by its gateway id.
    """
    try:
        publicKey = publicKeyFromId(offer["gateway"]["id"])
    except (KeyError, TypeError, ValueError) as e:
        raise OfferRejected(f"unverifiable signature: {e}") from None
    try:
        _verify(offer, "signature", publicKey)
    except ValueError as e:
        raise OfferRejected(str(e)) from None


def certificateSHA256(pem: str) -> str:
    """
    The pin of a certificate in an offer (C{ca_sha256}, C{cert_sha256}):
    the SHA-256 of its DER form, as lowercase hex.
    """
    import ssl

    if not isinstance(pem, str):
        raise ValueError("a certificate must be PEM text")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def isSHA256(value) -> bool:
    """
    True for a SHA-256 written as an offer pins it: 64 lowercase hex digits.
    """
    return isinstance(value, str) and _SHA256.match(value) is not None


# -- endpoints ----------------------------------------------------------

_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})$")


def parseEndpoint(text) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """
    Parse C{"10.0.0.1:51820"} or C{"[fd00::1]:51820"}: literal addresses
    only (a host name in an offer would make the client resolve names the
    gateway chose).
    """
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("endpoint must be a short string")
    m = _ENDPOINT.match(text)
    if not m:
        raise ValueError(f"endpoint {text!r} is not ADDRESS:PORT")
    address = ipaddress.ip_address(m.group("v6") or m.group("v4"))
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"endpoint port {port} out of range")
    if address.is_multicast or address.is_unspecified:
        raise ValueError(f"endpoint address {address} is not unicast")
    return address, port


def formatEndpoint(address, port: int) -> str:
    address = ipaddress.ip_address(address)
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


# -- offer verification (client side) ----------------------------------

class OfferRejected(ValueError):
    """
    An offer that a client must not use; the message says why.
    """


@dataclass(frozen=True)
class Fee:
    amount: Decimal
    currency: str
    period: str
    payTo: str


@dataclass(frozen=True)
class Offer:
    """
    A verified offer.  C{methods} holds only the entries of known types,
    each already checked; C{raw} is the offer as received.
    """
    gatewayId: str
    name: str
    available: bool
    maxClients: int
    clients: int
    leaseSeconds: int
    fee: Fee | None
    bandwidthDown: int | None
    bandwidthUp: int | None
    methods: tuple[dict, ...]
    issuedAt: int
    raw: dict
    #: Internet addresses the gateway checks its uplink with (C{probe}).
    probe: tuple[str, ...] = ()
    #: What a registration proof signs (see L{signRegistration}).
    nonce: str = ""
    #: The gateway's mesh addresses (C{addresses}): where else it answers.
    addresses: tuple[str, ...] = ()

    @property
    def load(self) -> float:
        if self.maxClients <= 0:
            return 1.0
        return min(1.0, self.clients / self.maxClients)

    def method(self, name: str) -> dict | None:
        for entry in self.methods:
            if entry["type"] == name:
                return entry
        return None


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise OfferRejected(message)


def _isInt(value, low=0, high=2**31) -> bool:
    return type(value) is int and low <= value <= high


def _text(value, field: str, limit: int = MAX_TEXT, optional=True) -> str:
    if value is None and optional:
        return ""
    _need(isinstance(value, str) and len(value) <= limit, f"{field} must be text of at most {limit} characters")
    bad = unprintable(value)
    _need(bad is None, f"{field} has a character that is not printable: {bad}")
    return value


def knownMethods() -> tuple[str, ...]:
    """
    The method types this side knows, from the registry (L{mnigs.methods}).
    """
    from mnigs.methods import METHODS  # the registry imports this module

    return tuple(METHODS)


def _checkMethodEntry(entry: dict) -> dict | None:
    """
    An offer's method entry as its method's registry entry checks it, or
    C{None} for a type this side does not know (ignored, per the protocol).
    """
    from mnigs.methods import METHODS  # the registry imports this module

    method = METHODS.get(entry.get("type"))
    if method is None:
        return None
    try:
        return method.offer(entry)
    except ValueError as e:
        raise OfferRejected(f"{method.name} method: {e}") from None


def verifyOffer(offer, pinned: frozenset[str] | None = None, blocked: frozenset[str] = frozenset()) -> Offer:
    """
    Check an offer from the network against the protocol: shape, sane
    values and signature.  Returns an L{Offer} or raises L{OfferRejected}.
    Nothing in an offer is ever executed or used as a path or a command.
    """
    _need(isinstance(offer, dict), "offer is not an object")
    try:
        size = len(canonicalJSON(offer))
    except (TypeError, ValueError) as e:
        raise OfferRejected(f"offer is not plain JSON: {e}") from None
    _need(size <= MAX_OFFER_BYTES, f"offer is {size} bytes, more than {MAX_OFFER_BYTES}")
    _need(offer.get("protocol") == PROTOCOL_VERSION, "unsupported protocol version")
    gateway = offer.get("gateway")
    _need(isinstance(gateway, dict), "gateway must be an object")
    gid = gateway.get("id")
    _need(isinstance(gid, str) and gid.startswith("ed25519:") and len(gid) < 100, "gateway id is malformed")
    _need(gid not in blocked, "gateway is blocked")
    _need(pinned is None or gid in pinned, "gateway is not pinned")
    name = _text(gateway.get("name"), "gateway name", 64)
    _need(isinstance(offer.get("available"), bool), "available must be true or false")
    terms = offer.get("terms")
    _need(isinstance(terms, dict), "terms must be an object")
    _need(_isInt(terms.get("max_clients")), "max_clients must be a non-negative integer")
    _need(_isInt(terms.get("clients")), "clients must be a non-negative integer")
    _need(_isInt(terms.get("lease_seconds"), 1, MAX_LEASE_SECONDS), "lease_seconds out of range")
    fee = _checkFee(terms.get("fee"))
    down = up = None
    bandwidth = terms.get("bandwidth_kbps")
    if bandwidth is not None:
        _need(isinstance(bandwidth, dict), "bandwidth_kbps must be an object")
        down, up = bandwidth.get("down"), bandwidth.get("up")
        _need(down is None or _isInt(down), "bandwidth down must be a non-negative integer")
        _need(up is None or _isInt(up), "bandwidth up must be a non-negative integer")
    _text(terms.get("contact"), "contact")
    _text(terms.get("notes"), "notes")
    methods = offer.get("methods")
    _need(isinstance(methods, list) and len(methods) <= MAX_METHODS, f"methods must be a list of at most {MAX_METHODS}")
    known = []
    for entry in methods:
        _need(isinstance(entry, dict) and isinstance(entry.get("type"), str), "method entries must be objects with a type")
        checked = _checkMethodEntry(entry)
        if checked is not None:
            known.append(checked)
    probe = _checkAddresses(offer.get("probe"), "probe", MAX_PROBES)
    addresses = _checkAddresses(offer.get("addresses"), "addresses", MAX_ADDRESSES)
    _need(_isInt(offer.get("issued_at"), 0, 2**40), "issued_at must be a timestamp")
    nonce = offer.get("nonce")
    _need(isinstance(nonce, str) and 0 < len(nonce) <= MAX_NONCE and nonce.isascii()
          and nonce.isprintable(), f"nonce must be printable ASCII of 1-{MAX_NONCE} characters")
    checkSignature(offer)
    return Offer(
        gatewayId=gid, name=name, available=offer["available"],
        maxClients=terms["max_clients"], clients=terms["clients"],
        leaseSeconds=terms["lease_seconds"], fee=fee,
        bandwidthDown=down, bandwidthUp=up, methods=tuple(known),
        issuedAt=offer["issued_at"], raw=offer, probe=probe, nonce=nonce,
        addresses=addresses,
    )


def _checkAddresses(value, field: str, limit: int) -> tuple[str, ...]:
    """
    An offer's optional list of addresses (C{probe}: what a client may
    ping through its tunnel; C{addresses}: the gateway's mesh addresses):
    literal unicast addresses, normalised, without repeats.  Loopback,
    link-local, multicast and unspecified addresses are refused: none is
    the Internet, nor a place another node can reach.
    """
    if value is None:
        return ()
    _need(isinstance(value, list) and len(value) <= limit,
          f"{field} must be a list of at most {limit} addresses")
    checked = []
    for entry in value:
        _need(isinstance(entry, str) and len(entry) <= 64, f"{field} entries must be address text")
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            raise OfferRejected(f"{field} entry {entry[:64]!r} is not an IP address") from None
        _need(not (address.is_loopback or address.is_link_local or address.is_multicast
                   or address.is_unspecified), f"{field} address {address} is not a unicast address")
        if str(address) not in checked:
            checked.append(str(address))
    return tuple(checked)


def checkResolvers(value) -> tuple[str, ...]:
    """
    A lease's C{dns}: a list of at most L{MAX_RESOLVERS} distinct literal
    unicast IP addresses (no scope, no IPv4-mapped IPv6), normalised.
    Loopback, link-local, multicast, unspecified and reserved addresses
    are refused: a gateway has no business pointing a client's resolver at
    the client itself or at whatever shares one of its links.  Raises
    ValueError saying what is wrong; it names at most the first 64
    characters of an entry, printably.
    """
    if not isinstance(value, list):
        raise ValueError("dns must be a list of addresses")
    if len(value) > MAX_RESOLVERS:
        raise ValueError(f"dns lists {len(value)} resolvers, more than {MAX_RESOLVERS}")
    checked: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or len(entry) > 45:
            raise ValueError(f"dns entry {ascii(entry)[:64]} is not address text")
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(f"dns entry {ascii(entry)[:64]} is not an IP address") from None
        if (address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_unspecified or address.is_reserved
                or getattr(address, "scope_id", None) or getattr(address, "ipv4_mapped", None)):
            raise ValueError(f"dns entry {address} is not a usable unicast address")
        if str(address) in checked:
            raise ValueError(f"dns lists {address} twice")
        checked.append(str(address))
    return tuple(checked)


def _checkFee(fee) -> Fee | None:
    if fee is None:
        return None
    _need(isinstance(fee, dict), "fee must be null or an object")
    amount = fee.get("amount")
    _need(isinstance(amount, str) and len(amount) <= 20, "fee amount must be a decimal string")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise OfferRejected("fee amount is not a decimal number") from None
    _need(value.is_finite() and value >= 0, "fee amount must be a non-negative number")
    currency = _text(fee.get("currency"), "fee currency", 8, optional=False)
    period = _text(fee.get("period"), "fee period", 16, optional=False)
    payTo = _text(fee.get("pay_to"), "fee pay_to")
    return Fee(value, currency, period, payTo)


# -- registration (gateway.register) ------------------------------------

def isKeyId(value) -> bool:
    """
    True for a well-formed C{ed25519:<base64 of 32 bytes>} id.
    """
    if not isinstance(value, str) or len(value) > MAX_ID:
        return False
    try:
        publicKeyFromId(value)
    except ValueError:
        return False
    return True


def signRegistration(params: dict, key: SigningKey) -> dict:
    """
    The client's side: C{params} of C{gateway.register} with its C{proof},
    the client key's signature over the canonical JSON of the rest.
    """
    return _signed(params, "proof", key)


@dataclass(frozen=True)
class RegisterRequest:
    clientId: str
    clientName: str
    method: str
    params: dict
    #: What the client signed: the gateway id and nonce it registers with,
    #: and the whole params object as received (the proof checks it).
    gateway: str = ""
    nonce: str = ""
    signed: dict | None = None

    def proofVerifies(self) -> bool:
        """
        True if the proof is the client key's signature over the params.
        """
        if self.signed is None:
            return False
        try:
            _verify(self.signed, "proof", publicKeyFromId(self.clientId))
        except ValueError:
            return False
        return True


_REGISTER_MEMBERS = {"client", "gateway", "nonce", "method", "params", "proof"}


def parseRegister(params: dict) -> RegisterRequest:
    """
    The shape of C{gateway.register} params (-32602 when malformed); the
    gateway id, the nonce and the proof are checked by the caller (1007).
    """
    client = params.get("client")
    if not isinstance(client, dict):
        raise invalidParams("client must be an object")
    clientId = client.get("id")
    if not isKeyId(clientId):
        raise invalidParams("client.id must be an ed25519 public key (ed25519:<base64>)")
    name = client.get("name", "")
    if not isinstance(name, str) or len(name) > 64:
        raise invalidParams("client.name must be text of at most 64 characters")
    if unprintable(name) is not None:
        raise invalidParams(f"client.name has a character that is not printable: {unprintable(name)}")
    method = params.get("method")
    if not isinstance(method, str) or len(method) > 32:
        raise invalidParams("method must be a method type")
    methodParams = params.get("params", {})
    if not isinstance(methodParams, dict):
        raise invalidParams("params must be an object")
    extra = set(params) - _REGISTER_MEMBERS
    if extra:
        raise invalidParams(f"unknown members {sorted(extra)}")
    gateway, nonce, proof = params.get("gateway"), params.get("nonce"), params.get("proof")
    if not isinstance(gateway, str) or len(gateway) > MAX_ID:
        raise invalidParams("gateway must be the gateway id from the offer")
    if not isinstance(nonce, str) or len(nonce) > MAX_NONCE:
        raise invalidParams("nonce must be the nonce from the offer")
    if not isinstance(proof, str) or len(proof) > 128:
        raise invalidParams("proof must be a base64 ed25519 signature")
    return RegisterRequest(clientId, name, method, methodParams, gateway, nonce, dict(params))


# -- the register answer (client side) ---------------------------------

def checkLeaseSignature(answer, gatewayId: str, clientId: str) -> None:
    """
    Raise ValueError (with the reason) unless C{answer} is a register
    answer signed by C{gatewayId}'s key and naming that gateway and
    C{clientId}.
    """
    if not isinstance(answer, dict):
        raise ValueError("the answer is not an object")
    try:
        _verify(answer, "signature", publicKeyFromId(gatewayId))
    except ValueError as e:
        raise ValueError(f"lease {e} with the key of the offer") from None
    if answer.get("gateway") != gatewayId:
        raise ValueError("the lease names another gateway")
    if answer.get("client") != clientId:
        raise ValueError("the lease is for another client")


def parseLeaseCredentials(params: dict) -> tuple[str, str]:
    lease, token = params.get("lease"), params.get("token")
    if not isinstance(lease, str) or not 0 < len(lease) <= 64:
        raise invalidParams("lease must be a lease id")
    if not isinstance(token, str) or not 0 < len(token) <= 128:
        raise invalidParams("token must be a lease token")
    extra = set(params) - {"lease", "token"}
    if extra:
        raise invalidParams(f"unknown members {sorted(extra)}")
    return lease, token


def checkBase64Key(value, what: str) -> str:
    """
    A 32-byte key in base64 (WireGuard, cjdns-style), as register params
    carry them.  Returns it unchanged or raises -32602.
    """
    try:
        _unb64(value, 32)
    except ValueError as e:
        raise invalidParams(f"{what}: {e}") from None
    return value
