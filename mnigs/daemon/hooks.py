"""
Event hooks: an operator's executable run on an event, with its arguments
as an argument vector (never through a shell).  A hook cannot hold mnigs
up: it is started and forgotten, and its exit status is only logged.  At
most C{maxRunning} hooks run at once; the events beyond wait their turn in
order (a burst of registrations must not fork a process each at once,
nor lose an event).
"""

from __future__ import annotations

import os
import shlex
from collections import deque

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()

#: Hooks running at once by default (hooks.max_running).
DEFAULT_MAX_RUNNING = 4


class _HookProtocol(ProcessProtocol):
    def __init__(self, argv, ended):
        self.argv = argv
        self.ended = ended

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        if code:
            log.warn("hook {command} exited with status {code}", argv=self.argv,
                     command=shlex.join(self.argv), code=code)
        self.ended()


class Hooks:
    """
    C{paths} maps event names to executables ("" or missing: no hook).
    """

    def __init__(self, reactor, paths: dict, maxRunning: int = DEFAULT_MAX_RUNNING):
        self.reactor = reactor
        self.paths = {event: path for event, path in paths.items() if path}
        self.maxRunning = maxRunning
        self.running = 0
        self.waiting: deque[list[str]] = deque()

    def run(self, event: str, *args) -> None:
        path = self.paths.get(event)
        if path is None:
            return
        self.waiting.append([path, event] + [str(a) for a in args])
        self._startWaiting()

    def _startWaiting(self):
        while self.waiting and self.running < self.maxRunning:
            self._spawn(self.waiting.popleft())

    def _spawn(self, argv):
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        try:
            self.reactor.spawnProcess(_HookProtocol(argv, self._ended), argv[0], argv, env=env,
                                      childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            log.error("hook {path} could not start: {error}", path=argv[0], error=e)
            return
        self.running += 1

    def _ended(self):
        self.running -= 1
        self._startWaiting()
