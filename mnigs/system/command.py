# -*- test-case-name: tests.unit.test_process -*-
"""
One-shot commands (nft, wg, ...): an argument list, never a shell, bytes on
stdin, the whole output back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


class CommandTimeout(Exception):
    """A one-shot command ran longer than its timeout and was killed."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple
    exitCode: Optional[int]
    signal: Optional[int]
    stdout: bytes
    stderr: bytes


class _CommandProtocol(ProcessProtocol):
    def __init__(self, stdin: bytes, done: Callable[[Failure, bytes, bytes], None]) -> None:
        self._stdin = stdin
        self._done = done
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def connectionMade(self) -> None:
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        (self._out if childFD == 1 else self._err).append(data)

    def processEnded(self, reason: Failure) -> None:
        self._done(reason, b"".join(self._out), b"".join(self._err))


def runCommand(reactor, argv: Sequence[str], stdin: bytes = b"", env: Optional[dict] = None,
               timeout: float = 30, spawn=None, path: Optional[str] = None
               ) -> Deferred[CommandResult]:
    """
    Run C{argv} (a list, no shell) to completion, feeding it C{stdin}, in
    directory C{path} (ours if C{None}).  Fires with a L{CommandResult}
    whatever the exit code; fails with L{CommandTimeout} if it had to be
    killed after C{timeout} seconds.
    """
    argv = tuple(argv)
    result: Deferred[CommandResult] = Deferred()
    transport: list[IProcessTransport] = []

    def expire() -> None:
        try:
            transport[0].signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, expire)

    def done(reason: Failure, out: bytes, err: bytes) -> None:
        timedOut = not timer.active()
        if not timedOut:
            timer.cancel()
        if timedOut:
            result.errback(CommandTimeout(argv, timeout))
            return
        value = reason.value
        result.callback(CommandResult(argv, getattr(value, "exitCode", None),
                                      getattr(value, "signal", None), out, err))

    protocol = _CommandProtocol(stdin, done)
    try:
        spawner = spawn or reactor.spawnProcess
        if path is None:
            transport.append(spawner(protocol, argv[0], list(argv), env=env))
        else:
            transport.append(spawner(protocol, argv[0], list(argv), env=env, path=path))
    except Exception:
        timer.cancel()
        result.errback()
    return result
