# -*- test-case-name: tests.unit.test_yggdrasil.test_admin -*-
"""
A client for yggdrasil 0.4's admin socket (C{AdminListen}: a UNIX socket,
C{unix:///var/run/yggdrasil/yggdrasil.sock} in Debian's build, or
C{tcp://host:port}).

What yggdrasil 0.4.7 does there (checked on the real daemon): each
connection reads JSON objects C{{"request": NAME, "arguments": {...},
"keepalive": BOOL}} and answers each with one indented JSON object
ending in a newline: C{{"status": "success", "request": null, "response":
{...}}}, or C{{"status": "error", "error": TEXT, "request": null,
"response": null}}.  Request names are case-insensitive; arguments must be
inside C{arguments} (unknown ones are ignored).  Without keepalive the
daemon closes the connection after its answer, so this client opens one
connection per call: calls never wait for each other, and a slow one
(C{debug_remoteGetPeers} waits up to 6 s for the remote node) holds up
nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import re

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

DEFAULT_ENDPOINT = "unix:///var/run/yggdrasil/yggdrasil.sock"  # Debian's yggdrasilctl default
DEFAULT_TIMEOUT = 10.0  # above the 6 s yggdrasil itself waits for a remote node
MAX_ANSWER = 16 * 1024 * 1024

_TCP = re.compile(r"^tcp://(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})$")

log = Logger()


class YggdrasilError(Exception):
    """
    A call failed: C{error} is yggdrasil's own error text when it answered
    with one.
    """

    def __init__(self, request: str, error: str) -> None:
        super().__init__(request, error)
        self.request = request
        self.error = error

    def __str__(self) -> str:
        return f"yggdrasil {self.request}: {self.error}"


class YggdrasilTimeout(YggdrasilError):
    """No complete answer within the client's timeout."""


def parseAdminEndpoint(text: str) -> tuple:
    """
    C{("unix", path)} or C{("tcp", host, port)} from an C{AdminListen}
    style string; raises ValueError saying what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/") or "\0" in path:
            raise ValueError(f"{text!r}: unix:// needs an absolute path")
        return ("unix", path)
    m = _TCP.match(text)
    if m is None:
        raise ValueError(f"{text!r} is neither unix:///PATH nor tcp://HOST:PORT")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    host = m.group("v6") or m.group("host")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address") from None
    return ("tcp", host, port)


def adminEndpoint(text: str) -> str:
    """Config check: the endpoint string itself, once it parses."""
    parseAdminEndpoint(text)
    return text


class _AdminProtocol(Protocol):
    """
    One exchange: send the request, collect the answer until the daemon
    closes (or a whole JSON object has arrived), then fire C{answered}.
    Turns bytes into one result; holds no policy.
    """

    def __init__(self, request: bytes, maxAnswer: int) -> None:
        self.request = request
        self.maxAnswer = maxAnswer
        self.chunks: list[bytes] = []
        self.size = 0
        self.answered: Deferred = Deferred(lambda _: self._abort())

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        self.chunks.append(data)
        self.size += len(data)
        if self.size > self.maxAnswer:
            self._finish(ValueError(f"answer longer than {self.maxAnswer} bytes"))
            self._abort()
        elif data.endswith(b"}\n"):
            # Probably the end of the answer: the daemon may close later.
            try:
                answer = json.loads(b"".join(self.chunks))
            except ValueError:
                return
            self._finish(answer)
            self.transport.loseConnection()

    def connectionLost(self, reason=ConnectionDone) -> None:
        if self.answered.called:
            return
        data = b"".join(self.chunks)
        if not data:
            self._finish(ValueError("the connection closed without an answer"))
            return
        try:
            self._finish(json.loads(data))
        except ValueError as e:
            self._finish(ValueError(f"the answer is not JSON: {e}"))

    def _finish(self, outcome) -> None:
        if not self.answered.called:
            if isinstance(outcome, Exception):
                self.answered.errback(outcome)
            else:
                self.answered.callback(outcome)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


def checkAnswer(request: str, answer) -> dict:
    """
    The C{response} of a successful answer, or L{YggdrasilError} with
    what the daemon said.
    """
    if not isinstance(answer, dict):
        raise YggdrasilError(request, "the answer is not a JSON object")
    status = answer.get("status")
    if status == "success":
        response = answer.get("response")
        if not isinstance(response, dict):
            raise YggdrasilError(request, "a success without a response object")
        return response
    if status == "error":
        error = answer.get("error")
        raise YggdrasilError(request, error if isinstance(error, str) and error else "unspecified error")
    raise YggdrasilError(request, f"unknown answer status {str(status)[:40]!r}")


class YggdrasilAdmin:
    """
    Calls on one yggdrasil admin socket.

    @param endpoint: C{unix:///PATH} or C{tcp://HOST:PORT} (the daemon's
        C{AdminListen}).
    @param timeout: seconds for each call, connecting included.
    """

    def __init__(self, reactor, endpoint: str = DEFAULT_ENDPOINT,
                 timeout: float = DEFAULT_TIMEOUT, maxAnswer: int = MAX_ANSWER) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.address = parseAdminEndpoint(endpoint)
        self.timeout = timeout
        self.maxAnswer = maxAnswer
        self._pending: set[Deferred] = set()

    def _clientEndpoint(self):
        if self.address[0] == "unix":
            return UNIXClientEndpoint(self.reactor, self.address[1], timeout=self.timeout)
        _, host, port = self.address
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
        kind = TCP6ClientEndpoint if literal.version == 6 else TCP4ClientEndpoint
        return kind(self.reactor, host, port, timeout=self.timeout)

    def call(self, request: str, **arguments) -> Deferred:
        """
        Send C{request} with C{arguments}; fires with the C{response}
        object, or fails with L{YggdrasilError} (the daemon's own error
        text, or why there was no usable answer) or L{YggdrasilTimeout}.
        Cancelling it closes the connection.
        """
        try:
            data = json.dumps({"request": request, "arguments": arguments, "keepalive": False},
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise YggdrasilError(request, f"cannot encode the request: {e}") from None
        d = self._exchange(request, data)
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timedOut(request))
        self._pending.add(d)
        d.addBoth(self._done, d)
        return d

    def _timedOut(self, request: str):
        def convert(result, timeout):
            raise YggdrasilTimeout(request, f"no answer within {timeout} s")
        return convert

    def _done(self, result, d):
        self._pending.discard(d)
        return result

    @inlineCallbacks
    def _exchange(self, request: str, data: bytes):
        protocol = _AdminProtocol(data, self.maxAnswer)
        try:
            yield self._clientEndpoint().connect(Factory.forProtocol(lambda: protocol))
        except ConnectingCancelledError:
            raise CancelledError() from None
        except (ConnectError, OSError) as e:
            raise YggdrasilError(request, f"cannot connect to {self.endpoint}: {e}") from None
        try:
            answer = yield protocol.answered
        except CancelledError:
            raise
        except ValueError as e:
            raise YggdrasilError(request, str(e)) from None
        return checkAnswer(request, answer)

    def close(self) -> None:
        """Cancel every call in progress."""
        for d in list(self._pending):
            d.cancel()
