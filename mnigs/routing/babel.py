"""
The babel route source: candidate gateways from babeld's local socket
(C{-G PORT} / C{-g PORT}, on C{::1} inside babeld's network namespace, or a
UNIX socket path).

Parsing and route selection live in L{mnigs.routing.babeltable}; this
module holds the I/O.  It is also a small debugging tool::

    python -m mnigs.routing.babel --dump [--host ::1] [--port 33123]
    python -m mnigs.routing.babel --watch --path /run/babeld.sock

prints the candidates, one JSON object a line (C{--watch}: one JSON list
a line, each time they change).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from mnigs.routing.candidates import Candidate
from mnigs.interfaces import IRouteSource
from mnigs.routing.babeltable import (
    BabelEvent,
    BabelRoute,
    BabelTable,
    defaultRoutes,
    hostCandidates,
    parseBabelLine,
)
from mnigs.routing.changes import ChangeNotifier
from mnigs.system.backoff import doubling

__all__ = [
    "BabelCommandRefused",
    "BabelProtocolError",
    "BabelRouteSource",
    "BabelSocketProtocol",
    "BabelTable",
    "BabelWatch",
    "parseBabelLine",
]

DEFAULT_PORT = 33123


class BabelProtocolError(Exception):
    """
    What answered on babeld's socket does not speak its protocol 1.x.
    """


class BabelCommandRefused(Exception):
    """
    babeld answered a request with C{no} or C{bad}; the argument is the line.
    """


class BabelSocketProtocol(LineReceiver):
    """
    One connection to babeld's local socket.  It only turns lines into
    calls: every add/change/flush line into C{onEvent(BabelEvent)}, the
    greeting into L{whenGreeted}, each C{ok}/C{no}/C{bad} into the Deferred
    of the request it answers.

    babeld answers requests strictly in order, and its greeting ends with
    an C{ok} like any answer: the greeting is the first entry of the queue
    of awaited answers.

    @ivar info: the greeting's fields (C{BABEL}, C{version}, C{host},
        C{my-id}).
    """

    delimiter = b"\n"
    log = Logger()

    def __init__(self, onEvent: Callable[[BabelEvent], object]) -> None:
        self._onEvent = onEvent
        self.info: dict[str, str] = {}
        self._greeting: Deferred[dict[str, str]] = Deferred()
        self._answers: deque[Deferred] = deque([self._greeting])

    def whenGreeted(self) -> Deferred[dict[str, str]]:
        """
        Fires with L{info} once babeld's greeting is complete.  Only one
        caller may wait on it.
        """
        return self._greeting

    def request(self, line: str) -> Deferred[None]:
        """
        Send one request (C{dump}, C{monitor}, ...); the result fires on
        babeld's C{ok} and fails with L{BabelCommandRefused} on C{no}/C{bad}.
        Lines babeld sends meanwhile go to C{onEvent} as always.
        """
        answer: Deferred[None] = Deferred()
        self._answers.append(answer)
        self.sendLine(line.encode("ascii"))
        return answer

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        word, _, rest = text.partition(" ")
        if word == "ok":
            self._answer(None)
        elif word in ("no", "bad"):
            self._answer(Failure(BabelCommandRefused(text)))
        elif word == "BABEL":
            self.info[word] = rest
            if not rest.startswith("1."):
                self._answer(Failure(BabelProtocolError(text)))
                self.transport.loseConnection()
        elif word in ("version", "host", "my-id"):
            self.info[word] = rest
        else:
            event = parseBabelLine(text)
            if event is None:
                self.log.debug("Ignoring babeld line {line!r}", line=text)
            else:
                self._onEvent(event)

    def _answer(self, result: object) -> None:
        if not self._answers:
            self.log.warn("Unrequested answer from babeld: {result!r}", result=result)
            return
        answer = self._answers.popleft()
        if answer.called:
            # Its waiter gave up (cancelled, timed out); still consumed, so
            # later answers stay matched to their requests.
            return
        if answer is self._greeting and result is None:
            result = dict(self.info)
        answer.callback(result)

    def connectionLost(self, reason: Failure = None) -> None:
        answers, self._answers = self._answers, deque()
        for answer in answers:
            if not answer.called:
                answer.errback(reason)


class _BabelFactory(Factory):
    noisy = False
    def __init__(self, onEvent: Callable[[BabelEvent], object]) -> None:
        self._onEvent = onEvent

    def buildProtocol(self, addr) -> BabelSocketProtocol:
        protocol = BabelSocketProtocol(self._onEvent)
        protocol.factory = self
        return protocol


def _closing(protocol: BabelSocketProtocol, result: object) -> object:
    protocol.transport.abortConnection()
    return result


@implementer(IRouteSource)
class BabelRouteSource:
    """
    Candidates from babeld: the destinations of its reachable host routes
    (/32, /128), distance the babel metric.

    @param endpoint: where babeld's local socket is, if not C{host}:C{port}
        over TCP (a L{UNIXClientEndpoint}, or a fake in tests).
    @param timeout: seconds allowed for connecting plus one dump.
    @param debounce: seconds over which L{watch} coalesces route changes.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        host: str = "::1",
        port: int = DEFAULT_PORT,
        endpoint: IStreamClientEndpoint | None = None,
        timeout: float = 10.0,
        debounce: float = 0.5,
        name: str = "babel",
    ) -> None:
        self._reactor = reactor
        if endpoint is None:
            endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        self._endpoint = endpoint
        self._timeout = timeout
        self._debounce = debounce
        self.name = name

    def dump(self) -> Deferred[BabelTable]:
        """
        Connect, ask for a C{dump}, and fire with the resulting
        L{BabelTable}.
        """
        table = BabelTable()
        factory = _BabelFactory(table.apply)

        def talk(protocol: BabelSocketProtocol) -> Deferred[BabelTable]:
            conversation = protocol.whenGreeted()
            conversation.addCallback(lambda _: protocol.request("dump"))
            conversation.addBoth(lambda result: _closing(protocol, result))
            conversation.addCallback(lambda _: table)
            return conversation

        dumped = self._endpoint.connect(factory)
        dumped.addCallback(talk)
        dumped.addTimeout(self._timeout, self._reactor)
        return dumped

    def candidates(self) -> Deferred[list[Candidate]]:
        return self.dump().addCallback(lambda table: hostCandidates(table.routes(), self.name))

    def defaultRoutes(self) -> Deferred[list[BabelRoute]]:
        """
        The default routes babeld selected, lowest metric first: each one's
        C{routerId} is a node announcing an exit to the Internet.
        """
        return self.dump().addCallback(lambda table: defaultRoutes(table.routes()))

    def watch(self, onChange: Callable[[], object]) -> BabelWatch:
        watcher = BabelWatch(
            self._reactor,
            self._endpoint,
            onChange,
            source=self.name,
            debounce=self._debounce,
            timeout=self._timeout,
        )
        watcher.start()
        return watcher


class BabelWatch:
    """
    A C{monitor} connection to babeld that calls C{onChange()} when the
    candidates it yields change, at most once per C{debounce} seconds.

    The connection is kept by a L{ClientService}: when babeld goes away it
    is re-established with exponential backoff, and its fresh dump is
    compared with what was reported before.  The first report counts as a
    change unless it is empty, so a client that started while babeld was
    down hears about the routes once babeld is up.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        onChange: Callable[[], object],
        source: str = "babel",
        debounce: float = 0.5,
        timeout: float = 10.0,
        retryPolicy: Callable[[int], float] | None = None,
    ) -> None:
        self._clock = clock
        self._source = source
        self._timeout = timeout
        self.table = BabelTable()
        self._notifier = ChangeNotifier(
            clock, self._snapshot, onChange, delay=debounce, baseline=()
        )
        self._service = ClientService(
            endpoint,
            _BabelFactory(self._event),
            retryPolicy=retryPolicy or doubling(1.0, 30.0),
            clock=clock,
            prepareConnection=self._monitor,
        )

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred[None]:
        """
        Close the connection and stop reconnecting; no C{onChange} after
        this.  The Deferred fires once the connection is closed.  Stopping
        again is harmless.
        """
        self._notifier.cancel()
        if not self._service.running:
            # Also guards against a stop() from a callback of the first
            # one's Deferred, which ClientService's machine would refuse.
            return succeed(None)
        stopped = self._service.stopService()
        stopped.addBoth(lambda result: self._notifier.cancel() or result)
        return stopped

    def candidates(self) -> list[Candidate]:
        """
        The candidates as of the last line from babeld.
        """
        return hostCandidates(self.table.routes(), self._source)

    def _snapshot(self) -> tuple[Candidate, ...]:
        return tuple(self.candidates())

    def _event(self, event: BabelEvent) -> None:
        if self.table.apply(event) and isinstance(event.entry, BabelRoute):
            self._notifier.poke()

    def _monitor(self, protocol: BabelSocketProtocol) -> Deferred[None]:
        """
        Start monitoring on a fresh connection; fail (and so make the
        service retry) if babeld does not answer in time.
        """
        self.table.clear()
        monitoring = protocol.whenGreeted()
        monitoring.addCallback(self._greeted, protocol)
        monitoring.addTimeout(self._timeout, self._clock)
        monitoring.addCallbacks(self._monitoring, self._rejected, errbackArgs=(protocol,))
        return monitoring

    def _greeted(self, info: dict[str, str], protocol: BabelSocketProtocol) -> Deferred[None]:
        self.log.info(
            "Monitoring babeld {version} on {host}, router id {routerId}",
            version=info.get("version"),
            host=info.get("host"),
            routerId=info.get("my-id"),
        )
        return protocol.request("monitor")

    def _monitoring(self, _: None) -> None:
        # The full dump that opens a monitor stream is in: compare now.
        self._notifier.lookNow()

    def _rejected(self, failure: Failure, protocol: BabelSocketProtocol) -> Failure:
        if not failure.check(CancelledError):  # a stop: nothing went wrong
            self.log.warn("babeld monitor connection failed: {reason}",
                          reason=failure.getErrorMessage())
        # The failure tells the ClientService this attempt failed; the
        # connection's loss must not tell it again: its machine has no
        # transition for a connection lost after a failed preparation
        # (Waiting or Stopped) and logs NoTransition as critical.  The
        # protocol is the service's proxy, which relays connectionLost
        # to the machine through _lostNotification.
        if hasattr(protocol, "_lostNotification"):
            protocol._lostNotification = lambda reason: None
        protocol.transport.abortConnection()
        return failure


def _candidateDict(candidate: Candidate) -> dict:
    return {
        "address": str(candidate.address),
        "distance": candidate.distance,
        "source": candidate.source,
        "via": candidate.via,
        "interface": candidate.interface,
    }


def _printLines(candidates: list[Candidate], out) -> None:
    for candidate in candidates:
        out.write(json.dumps(_candidateDict(candidate), sort_keys=True) + "\n")
    out.flush()


def _printList(candidates: list[Candidate], out) -> None:
    out.write(json.dumps([_candidateDict(c) for c in candidates], sort_keys=True) + "\n")
    out.flush()


def buildSource(context, section):
    """The registry's builder (L{mnigs.routing}): C{[sources.babel]}."""
    return BabelRouteSource(context.reactor, host=section.host, port=section.port)


def main(reactor, *argv: str) -> Deferred:
    """
    The debugging CLI; see the module docstring.
    """
    parser = argparse.ArgumentParser(prog="python -m mnigs.routing.babel")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dump", action="store_true", help="print candidates once")
    mode.add_argument("--watch", action="store_true", help="print candidates at each change")
    parser.add_argument("--host", default="::1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--path", help="babeld's UNIX socket, instead of host and port")
    parser.add_argument("--timeout", type=float, default=10.0)
    options = parser.parse_args(argv)
    endpoint = None
    if options.path:
        endpoint = UNIXClientEndpoint(reactor, options.path, timeout=options.timeout)
    source = BabelRouteSource(
        reactor, options.host, options.port, endpoint=endpoint, timeout=options.timeout
    )
    if options.dump:
        return source.candidates().addCallback(_printLines, sys.stdout)

    def changed() -> None:
        _printList(watcher.candidates(), sys.stdout)

    watcher = source.watch(changed)
    return Deferred()


if __name__ == "__main__":
    from twisted.internet.task import react

    react(main, sys.argv[1:])
