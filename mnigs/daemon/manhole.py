# -*- test-case-name: tests.unit.test_manhole -*-
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
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ServerFactory


def _unanswered(failure):
    # The console works without any of the options it asks for: a peer
    # that declines one, or leaves before answering (socat, a script, a
    # closed terminal), is no error.
    failure.trap(ConnectionDone, ConnectionLost, telnet.OptionRefused)


class _ManholeTelnet(telnet.TelnetTransport):
    """
    Telnet whose option requests end quietly when the peer does not take
    them up: C{TelnetBootstrapProtocol} logs every failed one as critical,
    so every disconnect of a peer that does not speak telnet left a
    traceback in the daemon's log.
    """

    def do(self, option):
        return super().do(option).addErrback(_unanswered)

    def will(self, option):
        return super().will(option).addErrback(_unanswered)


def makeManholeService(reactor, socketPath: str, namespace: dict):
    os.makedirs(os.path.dirname(socketPath), mode=0o700, exist_ok=True)
    factory = ServerFactory()
    factory.protocol = lambda: _ManholeTelnet(
        telnet.TelnetBootstrapProtocol, insults.ServerProtocol,
        manhole.ColoredManhole, namespace)
    endpoint = UNIXServerEndpoint(reactor, socketPath, mode=0o600, wantPID=True)
    return StreamServerEndpointService(endpoint, factory)
