"""
Event hooks: an operator's executable run on an event, with its arguments
as an argument vector (never through a shell).  Most hooks cannot hold
mnigs up: L{Hooks.run} starts one and forgets it, and its exit status is
only logged.  A hook that decides (the server's C{register} hook: may this
lease be granted?) is asked with L{Hooks.ask}, which waits for its exit
status up to a timeout.  At most C{maxRunning} hooks run at once; the
events beyond wait their turn in order (a burst of registrations must not
fork a process each at once, nor lose an event).
"""

from __future__ import annotations

import enum
import os
import shlex
import signal
from collections import deque

from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()

#: Hooks running at once by default (hooks.max_running).
DEFAULT_MAX_RUNNING = 4

#: What an argument that is not known is passed as (a byte count, say).
UNKNOWN = "-"


class Verdict(enum.Enum):
    """How an asked hook answered."""
    allowed = "allowed"  # exit status 0
    refused = "refused"  # any other exit status, or it could not start
    timedOut = "timed out"  # still running at its deadline (it is killed)


class _HookProtocol(ProcessProtocol):
    def __init__(self, argv, ended):
        self.argv = argv
        self.ended = ended

    def processEnded(self, reason):
        # ProcessDone: status 0; ProcessTerminated: a status, or a signal.
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.ended(code if sig is None else f"signal {sig}")


class _Asked:
    """One asked hook: its Deferred, its deadline, its process once started."""

    def __init__(self, argv, answer):
        self.argv = argv
        self.answer = answer
        self.deadline = None
        self.process = None

    def decide(self, verdict: Verdict) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        if not self.answer.called:
            self.answer.callback(verdict)


def _argument(value) -> str:
    return UNKNOWN if value is None else str(value)


class Hooks:
    """
    C{paths} maps event names to executables ("" or missing: no hook).
    """

    def __init__(self, reactor, paths: dict, maxRunning: int = DEFAULT_MAX_RUNNING):
        self.reactor = reactor
        self.paths = {event: path for event, path in paths.items() if path}
        self.maxRunning = maxRunning
        self.running = 0
        self.waiting: deque[tuple[list[str], _Asked | None]] = deque()

    def has(self, event: str) -> bool:
        return event in self.paths

    def run(self, event: str, *args) -> None:
        """
        Run C{event}'s hook, if there is one, as C{HOOK EVENT ARGS...}
        (C{None} passed as L{UNKNOWN}); its exit status is only logged.
        """
        path = self.paths.get(event)
        if path is None:
            return
        self.waiting.append(([path, event] + [_argument(a) for a in args], None))
        self._startWaiting()

    def ask(self, event: str, timeout: float, *args):
        """
        Run C{event}'s hook and wait for its exit status.  Returns C{None}
        at once when there is no hook for C{event} (the caller goes on
        without waiting), else a Deferred firing with a L{Verdict}: exit
        status 0 allows, anything else (or a hook that cannot start)
        refuses, and a hook still waiting or running after C{timeout}
        seconds (its turn included) is killed and answers
        L{Verdict.timedOut}.
        """
        path = self.paths.get(event)
        if path is None:
            return None
        asked = _Asked([path, event] + [_argument(a) for a in args], defer.Deferred())
        entry = (asked.argv, asked)

        def timedOut():
            try:
                self.waiting.remove(entry)
            except ValueError:
                pass  # started already
            if asked.process is not None:
                try:
                    asked.process.signalProcess(signal.SIGKILL)
                except (ProcessExitedAlready, OSError):
                    pass
            log.warn("hook {command} gave no answer within {timeout} s", argv=asked.argv,
                     command=shlex.join(asked.argv), timeout=timeout)
            asked.decide(Verdict.timedOut)

        asked.deadline = self.reactor.callLater(timeout, timedOut)
        self.waiting.append(entry)
        self._startWaiting()
        return asked.answer

    def _startWaiting(self):
        while self.waiting and self.running < self.maxRunning:
            self._spawn(*self.waiting.popleft())

    def _spawn(self, argv, asked):
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}

        def ended(code):
            if code and asked is None:
                log.warn("hook {command} exited with status {code}", argv=argv,
                         command=shlex.join(argv), code=code)
            if asked is not None:
                asked.decide(Verdict.refused if code else Verdict.allowed)
            self._ended()

        try:
            process = self.reactor.spawnProcess(_HookProtocol(argv, ended), argv[0], argv, env=env,
                                                childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            log.error("hook {path} could not start: {error}", path=argv[0], error=e)
            if asked is not None:
                asked.decide(Verdict.refused)
            return
        if asked is not None:
            asked.process = process
        self.running += 1

    def _ended(self):
        self.running -= 1
        self._startWaiting()
