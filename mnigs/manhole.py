"""
The manhole: a Python console inside the running daemon, for debugging.
Off by default; when on, it listens on a unix socket created with mode
0600 (root only), whose namespace holds the live service objects.
"""

from __future__ import annotations

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.conch import manhole, telnet
from twisted.conch.insults import insults
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import ServerFactory


def makeManholeService(reactor, socketPath: str, namespace: dict):
    os.makedirs(os.path.dirname(socketPath), mode=0o700, exist_ok=True)
    factory = ServerFactory()
    factory.protocol = lambda: telnet.TelnetTransport(
        telnet.TelnetBootstrapProtocol, insults.ServerProtocol,
        manhole.ColoredManhole, namespace)
    endpoint = UNIXServerEndpoint(reactor, socketPath, mode=0o600, wantPID=True)
    return StreamServerEndpointService(endpoint, factory)
