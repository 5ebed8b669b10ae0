# -*- test-case-name: tests.unit.test_cjdns.test_admin -*-
"""
A client for cjdns's admin API: bencoded dictionaries in UDP datagrams
(default 127.0.0.1:11234).

What cjdns checks, and so what this client does (admin/Admin.c, newest
version; it is newer than the docs and wins where they differ):

  - C{{"q": "cookie"}} is answered with C{{"cookie": "<unix seconds>"}}.
  - An authenticated call is C{{"q": "auth", "aq": <function>, "args":
    {...}, "cookie": <cookie>, "hash": H, "txid": <txid>}} where H is
    first sha256hex(password + cookie) and then sha256hex of the whole
    bencoded request with that first H in place.  (authValid: the password
    and cookie are joined by C{snprintf} into 64 bytes, so only their first
    63 bytes count; this client truncates the same way.)  Cookies from the
    future or older than 20 seconds, and hashes that are not 64
    characters, are refused with C{{"error": "Auth failed."}}.  A cookie
    is only a time, so one serves every call of the next L{COOKIE_REUSE}
    seconds (by our clock; a walk makes thousands of calls, each would
    otherwise be two exchanges); a reused cookie that is refused is
    replaced by a fresh one, once.
  - When cjdns's password is C{NONE} everything counts as authenticated,
    so the plain C{{"q": <function>, "args": ..., "txid": ...}} form is
    used.
  - The user's C{txid} is echoed in the answer (Admin_sendMessage); a
    request longer than Admin_MAX_REQUEST_SIZE, 512 bytes in admin/Admin.h
    (not the 2048 of older notes), is answered with
    C{d5:error16:Request too big.e} without a txid, so this client refuses
    to send one.  Answers are at most Admin_MAX_RESPONSE_SIZE, 65536 bytes.
  - Paged functions take C{page} (0, 1, ...) and put C{"more": 1} in every
    page after which another may follow.

A walk keeps up to C{sources.cjdns.concurrency} calls out at once, and
cjdns's answers come back in bursts: the client's socket asks for a
receive buffer of L{RECEIVE_BUFFER} bytes, since with Linux's default
(net.core.rmem_default, 208 KiB, counting some 2 KiB of kernel overhead
per datagram) a burst of 200 answers overflows it, and each answer
dropped costs the walk a whole C{timeout}.  The kernel grants at most
net.core.rmem_max.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from itertools import count

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from mnigs.cjdns import bencode

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11234
NO_PASSWORD = "NONE"  # admin/Admin.c: this password authenticates everything
MAX_REQUEST = 512  # Admin_MAX_REQUEST_SIZE, admin/Admin.h
MAX_REPLY = 65536  # Admin_MAX_RESPONSE_SIZE, admin/Admin.h
MAX_PAGES = 10000
RECEIVE_BUFFER = 4 * 1024 * 1024
COOKIE_REUSE = 10.0  # seconds; half the 20 s cjdns allows, for clock drift and transit

#: Calls whose lost answer must not make us call again: each success adds
#: an IpTunnel connection (tunnel/IpTunnel.c, newConnection).
NOT_RETRIED = frozenset({"IpTunnel_allowConnection", "IpTunnel_connectTo"})

log = Logger()


class CjdnsError(Exception):
    """
    A call to cjdns failed: C{error} is cjdns's own error text when it
    answered with one.
    """

    def __init__(self, function: str, error: str, answer: dict | None = None):
        super().__init__(function, error)
        self.function = function
        self.error = error
        self.answer = answer or {}

    def __str__(self) -> str:
        return f"cjdns {self.function}: {self.error}"


class CjdnsAuthError(CjdnsError):
    """cjdns said C{Auth failed.}: wrong admin password (or clock trouble)."""


class CjdnsTimeout(CjdnsError):
    """No answer in time (after one retry, for calls that may be retried)."""


class CjdnsConfigError(ValueError):
    """The admin connection settings (C{~/.cjdnsadmin}) are unusable."""


@dataclass(frozen=True)
class AdminConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    password: str = NO_PASSWORD


def loadAdminConfig(path: str | None = None) -> AdminConfig:
    """
    Read the JSON file cjdns's own tools use (contrib/python/cjdnsadmin/
    cjdnsadmin.py, connectWithAdminInfo: C{~/.cjdnsadmin} with C{addr},
    C{port} and C{password}).
    """
    path = os.path.expanduser("~/.cjdnsadmin") if path is None else path
    try:
        with open(path, "rb") as f:
            raw = f.read(64 * 1024 + 1)
    except OSError as e:
        raise CjdnsConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CjdnsConfigError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise CjdnsConfigError(f"{path} must hold a JSON object")
    host = data.get("addr", DEFAULT_HOST)
    port = data.get("port", DEFAULT_PORT)
    password = data.get("password", NO_PASSWORD)
    try:
        ipaddress.ip_address(host)
    except (TypeError, ValueError):
        raise CjdnsConfigError(f"{path}: addr must be an IP address, not {host!r}") from None
    if type(port) is not int or not 0 < port < 65536:
        raise CjdnsConfigError(f"{path}: port must be 1-65535, not {port!r}")
    if not isinstance(password, str) or not password or "\0" in password:
        raise CjdnsConfigError(f"{path}: password must be a non-empty string")
    return AdminConfig(host, port, password)


def _text(value):
    """Answers as Python text: keys and strings decoded losslessly."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def signedRequest(password: str, function: str, args: dict, cookie: bytes, txid: bytes) -> bytes:
    """
    The bencoded authenticated request, hashed exactly as admin/Admin.c
    (authValid) checks it: encoded once with the first hash, which is then
    replaced in place by the hash of the whole, as authValid replaces it
    back.
    """
    passAndCookie = (password.encode("utf-8") + cookie)[:63]
    first = hashlib.sha256(passAndCookie).hexdigest().encode("ascii")
    request = bencode.encode({"q": "auth", "aq": function, "args": args, "cookie": cookie,
                              "hash": first, "txid": txid})
    at = request.index(b"4:hash64:" + first) + len(b"4:hash64:")
    final = hashlib.sha256(request).hexdigest().encode("ascii")
    return request[:at] + final + request[at + 64:]


def _growReceiveBuffer(port) -> None:
    """Ask for L{RECEIVE_BUFFER} on C{port}'s socket (see the module docstring)."""
    sock = getattr(port, "socket", None)  # in-memory ports of tests have none
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError as e:
        log.warn("cjdns admin client: cannot enlarge the receive buffer: {error}", error=str(e))


class _AdminProtocol(DatagramProtocol):
    def __init__(self, admin: CjdnsAdmin) -> None:
        self.admin = admin

    def datagramReceived(self, data, addr):
        self.admin._received(data)

    def connectionRefused(self):
        self.admin._refused()


class _Pending:
    def __init__(self, function: str, deferred: Deferred, timer) -> None:
        self.function = function
        self.deferred = deferred
        self.timer = timer


class CjdnsAdmin:
    """
    Calls cjdns admin functions.  Each call is its own exchange (a cookie,
    then the call, for authenticated calls), told apart by its txid, so
    calls may overlap.

    @param timeout: seconds to wait for each answer.
    """

    def __init__(self, reactor, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 password: str = NO_PASSWORD, timeout: float = 5.0) -> None:
        self.reactor = reactor
        self.host = str(ipaddress.ip_address(host))
        self.port = port
        self.password = password
        self.timeout = timeout
        self._port = None
        self._pending: dict[bytes, _Pending] = {}
        self._txids = count(1)
        self._session = os.urandom(4).hex()
        self._cookie: tuple[bytes, float] | None = None  # cookie, when it came

    @classmethod
    def fromConfig(cls, reactor, config: AdminConfig, timeout: float = 5.0) -> CjdnsAdmin:
        return cls(reactor, config.host, config.port, config.password, timeout)

    def _transport(self):
        if self._port is None:
            local = "::1" if ipaddress.ip_address(self.host).version == 6 else "127.0.0.1"
            if not ipaddress.ip_address(self.host).is_loopback:
                local = "::" if local == "::1" else "0.0.0.0"
            self._port = self.reactor.listenUDP(0, _AdminProtocol(self), interface=local,
                                                maxPacketSize=MAX_REPLY)
            _growReceiveBuffer(self._port)
            # A connected socket only hears cjdns, and learns of an
            # unreachable port (connectionRefused).
            self._port.connect(self.host, self.port)
        return self._port

    def close(self) -> None:
        """Fail every call in progress and release the socket."""
        self._failAll("admin client closed")
        if self._port is not None:
            port, self._port = self._port, None
            port.stopListening()

    # -- one exchange ------------------------------------------------------

    def _send(self, function: str, build) -> Deferred:
        txid = f"{self._session}{next(self._txids):x}".encode("ascii")
        try:
            data = build(txid)
        except bencode.BencodeError as e:
            raise CjdnsError(function, f"cannot encode the request: {e}") from None
        if len(data) > MAX_REQUEST:
            raise CjdnsError(function, f"request is {len(data)} bytes, cjdns takes at most {MAX_REQUEST}")
        try:
            transport = self._transport()
        except Exception as e:  # CannotListenError, a bad address...
            raise CjdnsError(function, f"cannot open a socket to {self.host}:{self.port}: {e}") from None
        d = Deferred(lambda _: self._forget(txid))
        self._pending[txid] = _Pending(function, d, self.reactor.callLater(
            self.timeout, self._timedOut, txid))
        try:
            transport.write(data)
        except OSError as e:
            self._fail(txid, CjdnsError(function, f"cannot send to {self.host}:{self.port}: {e}"))
        return d

    def _forget(self, txid: bytes) -> None:
        pending = self._pending.pop(txid, None)
        if pending is not None and pending.timer.active():
            pending.timer.cancel()

    def _fail(self, txid: bytes, error: Exception) -> None:
        pending = self._pending.get(txid)
        if pending is not None:
            self._forget(txid)
            pending.deferred.errback(error)

    def _timedOut(self, txid: bytes) -> None:
        pending = self._pending.get(txid)
        if pending is not None:
            self._fail(txid, CjdnsTimeout(pending.function, f"no answer within {self.timeout} s"))

    def _failAll(self, why: str) -> None:
        # Failing one call may end others (their callers cancel them).
        for txid in list(self._pending):
            pending = self._pending.get(txid)
            if pending is not None:
                self._fail(txid, CjdnsError(pending.function, why))

    def _refused(self) -> None:
        self._failAll(f"nothing listens on {self.host}:{self.port}")

    def _received(self, data: bytes) -> None:
        try:
            answer = bencode.decode(data, maxSize=MAX_REPLY)
        except bencode.BencodeError as e:
            log.warn("Dropping an unreadable cjdns admin datagram: {error}", error=str(e))
            return
        txid = answer.get(b"txid") if isinstance(answer, dict) else None
        pending = self._pending.get(txid) if isinstance(txid, bytes) else None
        if pending is None:
            # Admin.c answers "Request too big." without a txid: we never
            # send such a request, so this is a stray or late datagram.
            log.debug("Dropping a cjdns admin answer nobody waits for: {answer!r}", answer=answer)
            return
        self._forget(txid)
        del answer[b"txid"]
        pending.deferred.callback(_text(answer))

    # -- calls -------------------------------------------------------------

    @inlineCallbacks
    def _attempt(self, function: str, args: dict):
        if self.password == NO_PASSWORD:
            answer = yield self._send(function, lambda txid: bencode.encode(
                {"q": function, "args": args, "txid": txid}))
            return answer
        cookie = self._recentCookie()
        if cookie is not None:
            answer = yield self._signedCall(function, args, cookie)
            if answer.get("error") != "Auth failed.":
                return answer
            self._cookie = None  # cjdns's clock moved (a restart?): ask
        cookie = yield self._fetchCookie(function)
        answer = yield self._signedCall(function, args, cookie)
        return answer

    def _recentCookie(self) -> bytes | None:
        if self._cookie is None:
            return None
        cookie, received = self._cookie
        return cookie if 0 <= self.reactor.seconds() - received < COOKIE_REUSE else None

    @inlineCallbacks
    def _fetchCookie(self, function: str):
        answer = yield self._send(function, lambda txid: bencode.encode({"q": "cookie", "txid": txid}))
        cookie = answer.get("cookie")
        if not isinstance(cookie, str) or not cookie.isascii() or not cookie.isdigit():
            raise CjdnsError(function, f"cjdns sent no usable cookie: {answer!r}", answer)
        self._cookie = (cookie.encode("ascii"), self.reactor.seconds())
        return self._cookie[0]

    def _signedCall(self, function: str, args: dict, cookie: bytes) -> Deferred:
        return self._send(function, lambda txid: signedRequest(self.password, function, args,
                                                                cookie, txid))

    @inlineCallbacks
    def call(self, function: str, **args):
        """
        Call the admin function C{function} with C{args}.  Fires with the
        answer (text keys and strings) or fails with L{CjdnsError}: cjdns's
        own C{error} when it is not C{"none"}, L{CjdnsAuthError} for a wrong
        password, L{CjdnsTimeout} when no answer came (a call that may be
        repeated safely is sent once more first).
        """
        for attempt in (1, 2):
            try:
                answer = yield self._attempt(function, args)
            except CjdnsTimeout:
                if attempt == 2 or function in NOT_RETRIED:
                    raise
                log.info("cjdns {function}: no answer, asking once more", function=function)
                continue
            break
        error = answer.get("error")
        if error is not None and error != "none":
            kind = CjdnsAuthError if error == "Auth failed." else CjdnsError
            raise kind(function, error if isinstance(error, str) else repr(error), answer)
        return answer

    @inlineCallbacks
    def callPaged(self, function: str, **args):
        """
        Call C{function} with C{page} 0, 1, ... while cjdns says C{more};
        fires with the list of answers, one per page.
        """
        pages = []
        for page in range(MAX_PAGES):
            answer = yield self.call(function, page=page, **args)
            pages.append(answer)
            if not answer.get("more"):
                return pages
        raise CjdnsError(function, f"still more after {MAX_PAGES} pages")


__all__ = ["AdminConfig", "CjdnsAdmin", "CjdnsAuthError", "CjdnsConfigError",
           "CjdnsError", "CjdnsTimeout", "loadAdminConfig", "signedRequest"]
