"""
The local admin socket that C{mnigsctl} reads: one request line (a
command word and its arguments, e.g. C{status} or C{drain 60}), one JSON
answer line, then the connection closes.  The socket is created with mode
0600.  A handler that refuses its arguments raises ValueError or
TypeError; the answer is then C{{"error": reason}}.
"""

from __future__ import annotations

import json
import os

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

log = Logger()


class AdminProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024

    def lineReceived(self, line):
        command, *args = line.decode("ascii", "replace").split() or [""]
        handler = self.factory.commands.get(command)
        if handler is None:
            self._answer({"error": f"unknown command {command[:32]!r}",
                          "commands": sorted(self.factory.commands)})
            return
        d = defer.maybeDeferred(handler, *args)
        d.addCallbacks(self._answer, self._failed)

    def _failed(self, failure):
        if failure.check(ValueError, TypeError):
            self._answer({"error": str(failure.value)})
            return
        log.failure("admin command failed", failure)
        self._answer({"error": "internal error"})

    def _answer(self, value):
        self.transport.write(json.dumps(value, default=str).encode("utf-8") + b"\n")
        self.transport.loseConnection()


def makeAdminService(reactor, socketPath: str, commands: dict):
    os.makedirs(os.path.dirname(socketPath), mode=0o755, exist_ok=True)
    factory = ServerFactory.forProtocol(AdminProtocol)
    factory.commands = commands
    endpoint = UNIXServerEndpoint(reactor, socketPath, mode=0o600, wantPID=True)
    return StreamServerEndpointService(endpoint, factory)
