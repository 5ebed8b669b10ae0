"""
The JSON-RPC 2.0 server side of mnigs, on txjsonrpc-ng, with what the
library lacks and mnigs needs (the client side is L{mnigs.rpc.client}):

 - L{JSONRPCResource} answers every well-formed POST with a JSON-RPC 2.0
   object (txjsonrpc-ng answers unparsable JSON with its pre-1.0 "fault"
   shape, and maps exceptions to 8002 with their repr); no JSONP, no
   tracebacks, no HTML.
 - L{LimitedRequest} refuses bodies over 64 KiB with 413 as soon as the
   Content-Length (or the chunked body so far) says so, without reading
   the rest.
 - L{makeSite} caps open connections, in all and per client address (an
   IPv6 /64 counts as one), times idle ones out, and gives each request a
   deadline to arrive whole: trickling a byte now and then (slow loris)
   resets twisted.web's idle timeout but not the deadline.
 - A notification (no C{id}) is carried out and answered with HTTP 204
   and no body, as JSON-RPC 2.0 says (txjsonrpc-ng answers it).
 - Params holding a lone surrogate (JSON allows C{"\\ud800"}; it is not
   text and cannot be encoded) are invalid params, not an internal error
   wherever a handler first encodes them.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import server
from txjsonrpc_ng import jsonrpclib
from txjsonrpc_ng.web.jsonrpc import JSONRPC

from mnigs.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_REQUEST_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RPC_PATH,
    RPCError,
)
from mnigs.server.ratelimit import addressGroup

log = Logger()


def _errorBody(code: int, message: str, id=None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message},
                       "id": id}).encode("utf-8")


def _resultBody(result, id) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "result": result, "id": id},
                      separators=(",", ":")).encode("utf-8")


# -- server ------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """
    What a handler gets: the named params and where the call came from.
    C{clientHost} is taken from the connection, never from the request.
    """
    params: dict
    clientHost: str
    localHost: str


def _host(address) -> str:
    host = getattr(address, "host", "") or ""
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
    try:
        parsed = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class JSONRPCResource(JSONRPC):
    """
    Dispatches C{group.name} to C{jsonrpc_name(call)} of the sub-handler
    registered with C{putSubHandler(group, handler)}.  Handlers take one
    L{Call} and return a value or a Deferred; raising L{RPCError} answers
    with that error, anything else with -32603 and a log entry.
    """

    isLeaf = True

    #: Told about every call (an L{mnigs.interfaces.IRPCObserver}), or None.
    observer = None

    def __init__(self, observer=None):
        super().__init__()
        self.observer = observer

    def render(self, request):
        # txjsonrpc-ng's render takes any verb, reads JSONP callbacks and
        # answers bad JSON in its pre-1.0 shape: none of it is wanted here.
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"allow", b"POST")
            return _errorBody(INVALID_REQUEST, "use POST")
        try:
            return self._renderPOST(request)
        except Exception:
            # twisted.web would answer with its HTML "Processing Failed" page.
            log.failure("internal error reading an RPC call")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"application/json")
            return _errorBody(INTERNAL_ERROR, "internal error")

    def _renderPOST(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.path != RPC_PATH:
            request.setResponseCode(404)
            return _errorBody(METHOD_NOT_FOUND, "no such path; use " + RPC_PATH.decode())
        request.content.seek(0, 0)
        body = request.content.read()
        observer = self.observer
        started = None if observer is None else observer.callStarted()
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self._tell(started, None, PARSE_ERROR)
            return _errorBody(PARSE_ERROR, "parse error: the body is not JSON")
        except RecursionError:
            # "[[[[..." within 64 KiB nests deeper than the json module goes.
            self._tell(started, None, PARSE_ERROR)
            return _errorBody(PARSE_ERROR, "parse error: JSON nested too deeply")
        id = parsed.get("id") if isinstance(parsed, dict) else None
        if type(id) not in (str, int, type(None)):
            id = None
        notification = isinstance(parsed, dict) and "id" not in parsed
        try:
            function, params = self._resolve(parsed)
            if b"\\u" in body:
                _checkEncodable(params)
        except RPCError as e:
            self._tell(started, None, e.code)
            if notification and e.code not in (INVALID_REQUEST, PARSE_ERROR):
                return _noContent(request)
            return _errorBody(e.code, e.message, id)
        method = parsed["method"]  # one a handler has: a bounded name
        call = Call(params, _host(request.getClientAddress()), _host(request.getHost()))
        d = defer.maybeDeferred(function, call)
        request.notifyFinish().addErrback(lambda _: d.cancel())

        def answered(result):
            if observer is not None:
                observer.callAnswered(started, method, 0)
            return _resultBody(result, id)

        d.addCallbacks(answered, self._failureBody, errbackArgs=(id, started, method))
        if notification:
            d.addCallback(lambda body: None if body is None else b"")
        d.addCallback(self._write, request)
        return server.NOT_DONE_YET

    def _resolve(self, parsed):
        if isinstance(parsed, list):
            raise RPCError(INVALID_REQUEST, "invalid request: batches are not supported")
        if not isinstance(parsed, dict):
            raise RPCError(INVALID_REQUEST, "invalid request: expected a JSON object")
        if parsed.get("jsonrpc") != "2.0":
            raise RPCError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
        method = parsed.get("method")
        if not isinstance(method, str) or method.count(".") != 1 or "_" in method:
            raise RPCError(METHOD_NOT_FOUND if isinstance(method, str) else INVALID_REQUEST,
                           f"method not found: {str(method)[:64]!r}")
        params = parsed.get("params", {})
        if not isinstance(params, dict):
            raise RPCError(INVALID_PARAMS, "invalid params: params must be an object")
        if type(parsed.get("id")) not in (str, int, type(None)):
            raise RPCError(INVALID_REQUEST, "invalid request: id must be a string or an integer")
        try:
            function = self._getFunction(method)
        except jsonrpclib.Fault:
            raise RPCError(METHOD_NOT_FOUND, f"method not found: {method[:64]!r}") from None
        return function, params

    def _tell(self, started, method, code):
        "Tell the observer, if any, that a call was answered (see L{IRPCObserver})."
        if self.observer is not None:
            self.observer.callAnswered(started, method, code)

    def _failureBody(self, failure, id, started=None, method=None):
        if failure.check(RPCError):
            self._tell(started, method, failure.value.code)
            return _errorBody(failure.value.code, failure.value.message, id)
        if failure.check(defer.CancelledError):
            self._tell(started, method, None)
            return None
        self._tell(started, method, INTERNAL_ERROR)
        log.failure("internal error answering an RPC call", failure)
        return _errorBody(INTERNAL_ERROR, "internal error", id)

    @staticmethod
    def _write(body, request):
        if body is None or request.finished or request._disconnected:
            return
        if not body:  # a notification's
            _noContent(request)
        else:
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
        request.finish()


def _noContent(request) -> bytes:
    request.setResponseCode(204)
    request.responseHeaders.removeHeader(b"content-type")
    return b""


def _checkEncodable(params) -> None:
    """
    Raise -32602 if a string anywhere in C{params} holds a lone surrogate.
    Only called when the body has a C{\\u} escape: nothing else makes one.
    """
    try:
        json.dumps(params, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RPCError(INVALID_PARAMS, "invalid params: text with a lone surrogate "
                                       "(not valid Unicode)") from None


class LimitedRequest(server.Request):
    """
    A request that refuses a body over L{maxBody} bytes as soon as it knows,
    instead of buffering it (twisted.web reads any size).
    """

    maxBody = MAX_REQUEST_BYTES
    _received = 0
    _refused = False

    def gotLength(self, length):
        if length is not None and length > self.maxBody:
            self._refuse()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.maxBody:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        self._tellConnection("requestArrived")
        super().requestReceived(command, path, version)

    def finish(self):
        # Before finishing: finishing hands a pipelined next request to
        # the channel, which may arrive (and disarm) at once.
        self._tellConnection("responseFinished")
        super().finish()

    def _tellConnection(self, what):
        # The channel's transport is the L{_Deadline} wrapper when the
        # request came through L{makeSite}.
        getattr(getattr(self.channel, "transport", None), what, lambda: None)()

    def _refuse(self):
        self._refused = True
        body = _errorBody(INVALID_REQUEST, f"request body over {self.maxBody} bytes")
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.channel.loseConnection()


def makeSite(resource, reactor, maxConnections=512, idleTimeout=DEFAULT_IDLE_TIMEOUT,
             requestTimeout=DEFAULT_REQUEST_TIMEOUT, maxPerAddress=None):
    """
    The listening factory: a Site with L{LimitedRequest}, an idle timeout,
    caps on open connections in all and per client address group (the
    ones over a cap are closed at once; C{maxPerAddress} None: no per
    address cap), and a deadline of C{requestTimeout} seconds for each
    request to arrive whole, counted from the connection's start or from
    the first byte of a request that follows an answer.
    """
    try:
        # JSON-RPC bodies are never forms: do not let twisted.web parse
        # them as such (its Content-Type parsing through the email package
        # was a fifth of the cost of a gateway.info call, and multipart
        # parsing of hostile bodies is attack surface we do not need).
        site = server.Site(resource, timeout=idleTimeout, reactor=reactor,
                           parsePOSTFormSubmission=False)
    except TypeError:  # a Twisted from before the option: it parses forms
        site = server.Site(resource, timeout=idleTimeout, reactor=reactor)
    site.requestFactory = LimitedRequest
    site.displayTracebacks = False
    site.noisy = False
    # No access log: at thousands of probes a second it would be most of
    # the daemon's work and disk writes.
    site.log = lambda request: None
    return _ConnectionCap(site, maxConnections, reactor, requestTimeout,
                          maxPerAddress or maxConnections)


class _Deadline(ProtocolWrapper):
    """
    Aborts a connection whose request has not fully arrived within the
    deadline.  Armed when the connection opens, and after an answer by
    the first byte of the next request (an idle keep-alive connection is
    twisted.web's idle timeout's business); disarmed while a complete
    request is being answered.
    """

    _timer = None
    _gone = False
    # Between a complete request and its answer: bytes arriving then (a
    # pipelined request) do not start a deadline of their own yet.
    _answering = False

    def makeConnection(self, transport):
        super().makeConnection(transport)
        self._arm()

    def dataReceived(self, data):
        if not self._answering:
            self._arm()
        super().dataReceived(data)

    def requestArrived(self):
        self._answering = True
        self._disarm()

    def responseFinished(self):
        self._answering = False

    def _arm(self):
        if self._timer is None and not (self._gone or self.disconnecting):
            self._timer = self.factory.reactor.callLater(self.factory.deadline, self._expired)

    def _disarm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expired(self):
        self._timer = None
        log.debug("request from {peer} not complete within {deadline} s: closing",
                  peer=self.getPeer(), deadline=self.factory.deadline)
        self.abortConnection()

    def connectionLost(self, reason):
        self._gone = True
        self._disarm()
        super().connectionLost(reason)


class _ConnectionCap(WrappingFactory):
    noisy = False
    protocol = _Deadline

    def __init__(self, wrappedFactory, limit, reactor, deadline, perAddress):
        super().__init__(wrappedFactory)
        self.limit = limit
        self.perAddress = perAddress
        self.reactor = reactor
        self.deadline = deadline
        self.groups: dict[str, int] = {}

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.limit:
            return None  # closes the connection at once
        group = addressGroup(getattr(addr, "host", "") or "")
        if self.groups.get(group, 0) >= self.perAddress:
            log.debug("{group} holds {n} connections already: closing a new one",
                      group=group, n=self.perAddress)
            return None
        protocol = super().buildProtocol(addr)
        protocol.addressGroup = group
        return protocol

    def registerProtocol(self, protocol):
        super().registerProtocol(protocol)
        group = protocol.addressGroup
        self.groups[group] = self.groups.get(group, 0) + 1

    def unregisterProtocol(self, protocol):
        if protocol in self.protocols:
            group = protocol.addressGroup
            left = self.groups.get(group, 0) - 1
            if left > 0:
                self.groups[group] = left
            else:
                self.groups.pop(group, None)
        super().unregisterProtocol(protocol)
