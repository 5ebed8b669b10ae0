"""
Event hooks: an operator's executable run on an event, with its arguments
as an argument vector (never through a shell).  A hook cannot hold mnigs
up: it is started and forgotten, and its exit status is only logged.
"""

from __future__ import annotations

import os
import shlex

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()


class _HookProtocol(ProcessProtocol):
    def __init__(self, argv):
        self.argv = argv

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        if code:
            log.warn("hook {command} exited with status {code}", argv=self.argv,
                     command=shlex.join(self.argv), code=code)


class Hooks:
    """
    C{paths} maps event names to executables ("" or missing: no hook).
    """

    def __init__(self, reactor, paths: dict):
        self.reactor = reactor
        self.paths = {event: path for event, path in paths.items() if path}

    def run(self, event: str, *args) -> None:
        path = self.paths.get(event)
        if path is None:
            return
        argv = [path, event] + [str(a) for a in args]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        try:
            self.reactor.spawnProcess(_HookProtocol(argv), path, argv, env=env,
                                      childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            log.error("hook {path} could not start: {error}", path=path, error=e)
