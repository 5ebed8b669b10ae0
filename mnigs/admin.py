"""
The local admin socket that C{mnigsctl} reads: one request line
(C{status}), one JSON answer line, then the connection closes.  The socket
is created with mode 0600.
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
        command = line.strip().decode("ascii", "replace")
        handler = self.factory.commands.get(command)
        if handler is None:
            self._answer({"error": f"unknown command {command[:32]!r}",
                          "commands": sorted(self.factory.commands)})
            return
        d = defer.maybeDeferred(handler)
        d.addCallbacks(self._answer, self._failed)

    def _failed(self, failure):
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
