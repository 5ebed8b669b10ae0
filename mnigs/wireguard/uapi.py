# -*- test-case-name: tests.unit.test_wireguard,tests.mesh.test_wireguard_device -*-
"""
WireGuard keys and configuration: key helpers, L{Peer}, and two clients
with one API (C{get}, C{setDevice}, C{setPeers}):

  - L{UAPIClient} speaks the cross-platform UAPI (C{get=1} / C{set=1}) over
    the unix socket of a userspace implementation (wireguard-go);
  - L{WgToolClient} runs C{wg(8)} (kernel WireGuard; wg also reaches
    userspace implementations through their socket).

The device itself (spawn/adopt/stop) is L{mnigs.wireguard.device.WireGuardDevice}.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from nacl.bindings import crypto_scalarmult_base
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from mnigs.system.command import runCommand

log = Logger()

DEFAULT_SOCKDIR = "/var/run/wireguard"

# -- keys --------------------------------------------------------------------


def checkKey(key: object) -> str:
    """Return C{key} if it is the base64 of exactly 32 bytes; else ValueError."""
    if not isinstance(key, str) or len(key) != 44 or not key.endswith("="):
        raise ValueError("a WireGuard key is 44 characters of base64")
    try:
        raw = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("a WireGuard key is 44 characters of base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != key:
        raise ValueError("a WireGuard key is 44 characters of base64")
    return key


def keyToHex(key: str) -> str:
    return base64.b64decode(checkKey(key)).hex()


def hexToKey(hexKey: str) -> str:
    raw = bytes.fromhex(hexKey)
    if len(raw) != 32:
        raise ValueError("a WireGuard key is 32 bytes")
    return base64.b64encode(raw).decode()


def generatePrivateKey() -> str:
    """A new X25519 private key, clamped as C{wg genkey} does."""
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def publicKey(privateKey: str) -> str:
    raw = base64.b64decode(checkKey(privateKey))
    return base64.b64encode(crypto_scalarmult_base(raw)).decode()


# -- peers -------------------------------------------------------------------


def checkEndpoint(endpoint: object) -> str:
    """Normalise C{"ip:port"} / C{"[ip6]:port"} (IP literals only)."""
    if not isinstance(endpoint, str):
        raise ValueError(f"bad endpoint {endpoint!r}")
    bracketed = endpoint.startswith("[")
    if bracketed:
        host, sep, port = endpoint[1:].partition("]:")
    else:
        host, sep, port = endpoint.rpartition(":")
    try:
        address = ipaddress.ip_address(host)
        portNumber = int(port)
    except ValueError:
        raise ValueError(f"bad endpoint {endpoint!r}: want IP:port") from None
    if (not sep or not port.isdigit() or not 0 < portNumber < 65536
            or bracketed != (address.version == 6)):
        raise ValueError(f"bad endpoint {endpoint!r}: want IP:port")
    return f"[{address}]:{portNumber}" if address.version == 6 else f"{address}:{portNumber}"


@dataclass(frozen=True)
class Peer:
    """
    A peer to add or update.  Field names follow the UAPI keys; values are
    validated and normalised on construction.
    """

    public_key: str
    allowed_ips: Sequence[Union[str, ipaddress.IPv4Network, ipaddress.IPv6Network]] = ()
    endpoint: Optional[str] = None
    keepalive: Optional[int] = None
    replace_allowed_ips: bool = True

    def __post_init__(self) -> None:
        checkKey(self.public_key)
        if isinstance(self.allowed_ips, str):
            raise ValueError("allowed_ips is a list of prefixes, not a string")
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_ips)
        object.__setattr__(self, "allowed_ips", nets)
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", checkEndpoint(self.endpoint))
        if self.keepalive is not None and not (
                isinstance(self.keepalive, int) and 0 <= self.keepalive < 65536):
            raise ValueError(f"bad keepalive {self.keepalive!r}")


class UAPIError(Exception):
    """The daemon refused a request (C{errno} as it said it, often negative)
    or the exchange broke."""

    def __init__(self, ifname: str, errno: Optional[int], message: str = "") -> None:
        super().__init__(ifname, errno, message)
        self.ifname = ifname
        self.errno = errno

    def __str__(self) -> str:
        what = f"errno={self.errno}" if self.errno is not None else self.args[2]
        return f"WireGuard {self.ifname}: {what}"


def formatSet(private_key: Optional[str] = None, listen_port: Optional[int] = None,
              add: Iterable[Peer] = (), remove: Iterable[str] = ()) -> bytes:
    """One UAPI C{set=1} request (device keys first, then peers)."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={keyToHex(private_key)}")
    if listen_port is not None:
        if not (isinstance(listen_port, int) and 0 <= listen_port < 65536):
            raise ValueError(f"bad listen port {listen_port!r}")
        lines.append(f"listen_port={listen_port}")
    add, remove = list(add), [checkKey(k) for k in remove]
    clash = {p.public_key for p in add} & set(remove)
    if clash:
        raise ValueError(f"peers both added and removed: {sorted(clash)}")
    for key in remove:
        lines += [f"public_key={keyToHex(key)}", "remove=true"]
    for peer in add:
        lines.append(f"public_key={keyToHex(peer.public_key)}")
        if peer.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        if peer.keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.keepalive}")
        lines += [f"allowed_ip={net}" for net in peer.allowed_ips]
    return ("\n".join(lines) + "\n\n").encode("ascii")


_INT_KEYS = {"listen_port", "fwmark", "last_handshake_time_sec", "last_handshake_time_nsec",
             "rx_bytes", "tx_bytes", "persistent_keepalive_interval", "protocol_version"}
_ZERO_KEY = "0" * 64


def _newPeer(publicKey: str) -> dict:
    return {"public_key": publicKey, "preshared_key": None, "endpoint": None,
            "allowed_ips": [], "last_handshake_time_sec": 0, "last_handshake_time_nsec": 0,
            "rx_bytes": 0, "tx_bytes": 0, "persistent_keepalive_interval": 0}


def parseGet(text: str) -> dict:
    """
    Parse a UAPI C{get=1} answer into C{{private_key, public_key,
    listen_port, fwmark, peers: [...]}}, keys in base64.  Raises
    L{ValueError} on a malformed answer or a non-zero errno.
    """
    device: dict = {"private_key": None, "public_key": None, "listen_port": None,
                    "fwmark": None, "peers": []}
    current = device
    errno = None
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"malformed UAPI line {line!r}")
        if key == "errno":
            errno = int(value)
        elif key == "public_key":
            current = _newPeer(hexToKey(value))
            device["peers"].append(current)
        elif key in ("private_key", "preshared_key"):
            current[key] = None if value == _ZERO_KEY else hexToKey(value)
        elif key == "allowed_ip":
            current["allowed_ips"].append(str(ipaddress.ip_network(value, strict=False)))
        elif key in _INT_KEYS:
            current[key] = int(value)
        else:
            current[key] = value
    if errno is None:
        raise ValueError("UAPI answer without errno")
    if errno != 0:
        raise ValueError(f"UAPI get answered errno={errno}")
    if device["private_key"] is not None:
        device["public_key"] = publicKey(device["private_key"])
    return device


def _parseErrno(text: str) -> Optional[int]:
    for line in text.split("\n"):
        if line.startswith("errno="):
            return int(line[len("errno="):])
    return None


class _QuietFactory(Factory):
    # One short connection per UAPI request: no "Starting factory" log lines.
    noisy = False


class _Exchange(Protocol):
    """Sends one request, collects the answer up to the blank line."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answer: Deferred[str] = Deferred(lambda d: self.transport.abortConnection())
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\n\n")
        if end >= 0 and not self.answer.called:
            self.answer.callback(self._buffer[:end + 1].decode("ascii", "replace"))
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


class UAPIClient:
    """
    One short unix-socket connection per request to C{SOCKDIR/IFNAME.sock}.
    Note: wireguard-go applies a C{set} line by line, so a request refused
    half-way leaves the lines before the bad one applied.
    """

    def __init__(self, reactor, ifname: str, sockdir: str = DEFAULT_SOCKDIR,
                 timeout: float = 5) -> None:
        self._reactor = reactor
        self.ifname = ifname
        self.path = os.path.join(sockdir, ifname + ".sock")
        self._timeout = timeout

    def _request(self, payload: bytes) -> Deferred[str]:
        endpoint = UNIXClientEndpoint(self._reactor, self.path, timeout=self._timeout)
        exchange = _Exchange(payload)
        connecting = endpoint.connect(_QuietFactory.forProtocol(lambda: exchange))
        d = connecting.addCallback(lambda _: exchange.answer)
        d.addTimeout(self._timeout, self._reactor)

        def failed(failure):
            if failure.check(UAPIError):
                return failure
            raise UAPIError(self.ifname, None, f"{self.path}: {failure.getErrorMessage()}")

        return d.addErrback(failed)

    def get(self) -> Deferred[dict]:
        def parse(text: str) -> dict:
            try:
                return parseGet(text)
            except ValueError as e:
                raise UAPIError(self.ifname, _parseErrno(text), str(e)) from None

        return self._request(b"get=1\n\n").addCallback(parse)

    def answers(self) -> Deferred[bool]:
        """Whether a daemon answers on the socket."""
        return self.get().addCallbacks(lambda _: True, lambda _: False)

    def _set(self, payload: bytes) -> Deferred[None]:
        def check(text: str) -> None:
            errno = _parseErrno(text)
            if errno != 0:
                raise UAPIError(self.ifname, errno, text.strip())

        return self._request(payload).addCallback(check)

    def setDevice(self, private_key: Optional[str] = None,
                  listen_port: Optional[int] = None) -> Deferred[None]:
        return self._set(formatSet(private_key=private_key, listen_port=listen_port))

    def setPeers(self, add: Iterable[Peer] = (), remove: Iterable[str] = ()) -> Deferred[None]:
        """Add/update C{add} and remove C{remove} in one C{set} transaction."""
        return self._set(formatSet(add=add, remove=remove))


def parseDump(text: str) -> dict:
    """Parse C{wg show IF dump} into the shape L{parseGet} gives."""
    lines = [line.split("\t") for line in text.splitlines() if line]
    if not lines or len(lines[0]) != 4:
        raise ValueError("malformed wg dump")
    private, _, port, fwmark = lines[0]

    def none(value: str) -> Optional[str]:
        return None if value == "(none)" else value

    device = {"private_key": none(private), "public_key": None,
              "listen_port": int(port), "fwmark": None if fwmark == "off" else int(fwmark, 0),
              "peers": []}
    if device["private_key"]:
        device["public_key"] = publicKey(device["private_key"])
    for fields in lines[1:]:
        if len(fields) != 8:
            raise ValueError("malformed wg dump peer line")
        key, psk, endpoint, allowed, handshake, rx, tx, keepalive = fields
        peer = _newPeer(key)
        peer.update(preshared_key=none(psk), endpoint=none(endpoint),
                    allowed_ips=[] if allowed == "(none)" else allowed.split(","),
                    last_handshake_time_sec=int(handshake), rx_bytes=int(rx), tx_bytes=int(tx),
                    persistent_keepalive_interval=0 if keepalive == "off" else int(keepalive))
        device["peers"].append(peer)
    return device


class WgToolClient:
    """The L{UAPIClient} API on top of C{wg(8)} (for kernel WireGuard)."""

    def __init__(self, reactor, ifname: str, netns: Optional[str] = None, wg: str = "wg",
                 spawn=None) -> None:
        self._reactor = reactor
        self.ifname = ifname
        self._prefix = (["ip", "netns", "exec", netns] if netns else []) + [wg]
        self._spawn = spawn

    def _wg(self, args: Sequence[str], stdin: bytes = b"") -> Deferred[str]:
        argv = self._prefix + list(args)

        def check(result):
            if result.exitCode != 0:
                raise UAPIError(self.ifname, None, result.stderr.decode("utf-8", "replace"))
            return result.stdout.decode("utf-8", "replace")

        return runCommand(self._reactor, argv, stdin=stdin, timeout=10,
                          spawn=self._spawn).addCallback(check)

    def get(self) -> Deferred[dict]:
        return self._wg(["show", self.ifname, "dump"]).addCallback(parseDump)

    def answers(self) -> Deferred[bool]:
        return self.get().addCallbacks(lambda _: True, lambda _: False)

    def setDevice(self, private_key: Optional[str] = None,
                  listen_port: Optional[int] = None) -> Deferred[None]:
        args, stdin = ["set", self.ifname], b""
        if private_key is not None:
            args += ["private-key", "/dev/stdin"]
            stdin = checkKey(private_key).encode() + b"\n"
        if listen_port is not None:
            args += ["listen-port", str(int(listen_port))]
        return self._wg(args, stdin).addCallback(lambda _: None)

    def setPeers(self, add: Iterable[Peer] = (), remove: Iterable[str] = ()) -> Deferred[None]:
        add, remove = list(add), [checkKey(k) for k in remove]
        formatSet(add=add, remove=remove)  # same validation as the UAPI
        if any(not p.replace_allowed_ips for p in add):
            # Debian's wg has no "+prefix": merge with what is there.
            return self.get().addCallback(lambda dev: self._setPeers(add, remove, dev))
        return self._setPeers(add, remove, None)

    def _setPeers(self, add: list, remove: list, device: Optional[dict]) -> Deferred[None]:
        present = {p["public_key"]: p["allowed_ips"] for p in (device or {}).get("peers", [])}
        args = ["set", self.ifname]
        for key in remove:
            args += ["peer", key, "remove"]
        for peer in add:
            nets = [str(n) for n in peer.allowed_ips]
            if not peer.replace_allowed_ips:
                nets = sorted(set(present.get(peer.public_key, [])) | set(nets))
            args += ["peer", peer.public_key, "allowed-ips", ",".join(nets)]
            if peer.endpoint is not None:
                args += ["endpoint", peer.endpoint]
            if peer.keepalive is not None:
                args += ["persistent-keepalive", str(peer.keepalive)]
        return self._wg(args).addCallback(lambda _: None)
