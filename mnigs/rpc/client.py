"""
The JSON-RPC 2.0 client side of mnigs (the server side is
L{mnigs.rpc.server}, which the client daemon never imports: it pulls in
twisted.web's server half, a few MB of resident memory).

L{RPCClient} builds each call on txjsonrpc-ng's C{BaseQueryFactory} (the
request id) and posts it with twisted.web's C{Agent}; txjsonrpc-ng's own
C{QueryFactory} lives beside its server in C{txjsonrpc_ng.web.jsonrpc} and
has neither a timeout nor a bound on what it reads.  Here a call has a
timeout that really cancels the HTTP request (and its connection
attempt), reads at most a bounded answer, fails at once on an answer too
deeply nested to parse, sends named params as an object (also when empty),
and turns errors into L{RPCError} / L{RPCTimeout} / L{RPCTransportError}.  Only IP literals are called (IPv6 too), connected
to directly.
"""

from __future__ import annotations

import ipaddress
import json

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer
from txjsonrpc_ng import jsonrpclib
from txjsonrpc_ng.jsonrpc import BaseQueryFactory

from mnigs.protocol import DEFAULT_IDLE_TIMEOUT, RPC_PATH, RPCError

MAX_RESPONSE_BYTES = 256 * 1024
_HEADERS = {b"User-Agent": [b"mnigs"], b"Content-Type": [b"application/json"]}

# -- client ------------------------------------------------------------

class RPCTimeout(Exception):
    pass


class RPCTransportError(Exception):
    pass


@implementer(IBodyProducer)
class _Body:
    """A request body that is all there at once."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _BoundedBody(Protocol):
    def __init__(self, finished, limit):
        self.finished = finished
        self.limit = limit
        self.parts = []
        self.size = 0

    def dataReceived(self, data):
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            if not self.finished.called:
                self.finished.errback(RPCTransportError(f"answer over {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


class _QueryFactory(BaseQueryFactory):
    """
    One call: txjsonrpc-ng's query (its request id), posted with an
    C{Agent}, cancellable (cancelling stops the HTTP request and its
    connection attempt) and bounded in what it reads.
    """

    maxResponse = MAX_RESPONSE_BYTES

    def __init__(self, agent, url: str, method: str, params: dict):
        super().__init__(method, jsonrpclib.VERSION_2)
        self.agent = agent
        self.url = url
        self.payload = json.dumps({"jsonrpc": "2.0", "method": method,
                                   "params": params, "id": self.id}).encode("utf-8")
        self._request = None
        self.deferred = defer.Deferred(self._cancel)

    def _cancel(self, _):
        self.deferred = None
        if self._request is not None:
            self._request.cancel()

    def send(self):
        self._request = self.agent.request(b"POST", self.url.encode("ascii"), Headers(_HEADERS),
                                           _Body(self.payload))
        self._request.addCallback(self._handleResponse)
        self._request.addErrback(self._handleError)
        return self.deferred

    def _handleResponse(self, response):
        finished = defer.Deferred()
        response.deliverBody(_BoundedBody(finished, self.maxResponse))
        finished.addCallback(self._parse, response.code)
        finished.addErrback(self._handleError)
        return finished

    def _parse(self, body, code):
        if self.deferred is None:
            return
        d, self.deferred = self.deferred, None
        try:
            answer = json.loads(body)
        except ValueError:
            d.errback(RPCTransportError(f"HTTP {code}: the answer is not JSON"))
            return
        except RecursionError:
            # "[[[[..." within the answer bound nests deeper than the json
            # module goes; raised from here it would be lost (this
            # call's Deferred is already taken) and the call would hang.
            d.errback(RPCTransportError(f"HTTP {code}: the answer is JSON nested too deeply"))
            return
        if not isinstance(answer, dict):
            d.errback(RPCTransportError(f"HTTP {code}: the answer is not a JSON-RPC object"))
            return
        error = answer.get("error")
        if error is not None:
            if isinstance(error, dict) and type(error.get("code")) is int:
                d.errback(RPCError(error["code"], str(error.get("message", ""))[:256]))
            else:
                d.errback(RPCTransportError("malformed JSON-RPC error"))
            return
        if "result" not in answer:
            d.errback(RPCTransportError(f"HTTP {code}: no result in the answer"))
            return
        d.callback(answer["result"])

    def _handleError(self, failure):
        if self.deferred is not None:
            d, self.deferred = self.deferred, None
            if failure.check(RPCTransportError, RPCError):
                d.errback(failure)
            else:
                d.errback(RPCTransportError(failure.getErrorMessage() or failure.type.__name__))


@implementer(IAgentEndpointFactory)
class _LiteralEndpoints:
    def __init__(self, reactor, timeout):
        self.reactor = reactor
        self.timeout = timeout

    def endpointForURI(self, uri):
        address = ipaddress.ip_address(uri.host.decode("ascii").strip("[]"))
        kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        return kind(self.reactor, str(address), uri.port, timeout=self.timeout)


class _QuietHTTPFactory(_HTTP11ClientFactory):
    # A factory per connection; thousands during a scan: no log line each.
    noisy = False


def rpcURL(host, port: int) -> str:
    address = ipaddress.ip_address(host)
    netloc = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{netloc}:{port}{RPC_PATH.decode()}"


#: Seconds an idle keep-alive connection is kept for the next call.
CACHED_CONNECTION_TIMEOUT = DEFAULT_IDLE_TIMEOUT * 2 / 3


class RPCClient:
    """
    Calls mnigs JSON-RPC methods.  One per daemon; it keeps a connection
    pool for keep-alive.
    """

    def __init__(self, reactor, timeout: float = 5.0, persistent: bool = True):
        self.reactor = reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool._factory = _QuietHTTPFactory
        self.pool.maxPersistentPerHost = 2
        self.pool.retryAutomatically = False
        # Let go of an idle connection before a server with the default
        # idle timeout closes it: a call sent on a connection the server is
        # closing at that moment would fail (POSTs are not retried).
        self.pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
        # mnigs only ever calls IP literals: connect to them directly.
        # Agent's default path sends even a literal through a threaded
        # getaddrinfo, a thread-pool call per candidate during a scan.
        self.agent = Agent.usingEndpointFactory(reactor, _LiteralEndpoints(reactor, timeout),
                                                pool=self.pool)

    def call(self, host, port: int, method: str, params: dict | None = None, timeout: float | None = None):
        # Not txjsonrpc-ng's Proxy: its callRemote takes params as keyword
        # arguments, so a param called "method" (gateway.register has one)
        # cannot pass through it.
        d = _QueryFactory(self.agent, rpcURL(host, port), method, params or {}).send()
        limit = self.timeout if timeout is None else timeout
        d.addTimeout(limit, self.reactor, onTimeoutCancel=lambda result, t: _timedOut(method, host, t))
        return d

    def close(self):
        return self.pool.closeCachedConnections()


def _timedOut(method, host, timeout):
    raise RPCTimeout(f"{method} to {host}: no answer within {timeout} s")
