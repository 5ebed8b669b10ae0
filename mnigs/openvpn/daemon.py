# -*- test-case-name: tests.unit.test_openvpn.test_daemon -*-
"""
One openvpn process with its management connection: the gateway's server
and each of the client's connections.

The process is a L{SupervisedProcess} (argument list, TERM then KILL,
restart with backoff when asked).  It is started with
C{--management PATH unix --management-client --management-hold}: it
connects to our socket, waits for us to switch on C{state} and
C{bytecount}, and only starts its tunnel once we send C{hold release}, so
no state change is missed.  It is ready when the management interface
reports C{CONNECTED,SUCCESS} (a server once it is set up, a client once
its tunnel is).  If the management connection drops, openvpn exits
(C{management-exit}), so it never outlives us.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.openvpn import management as m
from mnigs.openvpn.channel import ManagementFactory
from mnigs.system.process import SupervisedProcess
from mnigs.system.readiness import Watch

log = Logger()

# sockaddr_un.sun_path is 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


class NotRunning(Exception):
    """No openvpn management connection to send a command over."""


def managementArgs(socketPath: str) -> list[str]:
    if len(os.fsencode(socketPath)) > MAX_SOCKET_PATH:
        raise ValueError(f"management socket path too long for a unix socket: {socketPath}")
    return ["--management", socketPath, "unix", "--management-client", "--management-hold"]


class _ConnectedWatch(Watch):
    def __init__(self, daemon: "OpenVPNDaemon", ready: Callable[[], None]) -> None:
        self.daemon = daemon
        self.ready = ready

    def cancel(self) -> None:
        if self.daemon._readyWatch is self:
            self.daemon._readyWatch = None


class _ConnectedReadiness:
    """Ready when the management interface reports CONNECTED,SUCCESS."""

    def __init__(self, daemon: "OpenVPNDaemon") -> None:
        self.daemon = daemon

    def watch(self, reactor, ready: Callable[[], None]) -> Watch:
        watch = _ConnectedWatch(self.daemon, ready)
        self.daemon._readyWatch = watch
        return watch


class OpenVPNDaemon:
    """
    @param argv: the openvpn command line without the management options.
    @param onEvent: called with every management event but replies.
    @param releaseEveryHold: release the hold of every (re)start of the
        tunnel inside openvpn (a server); otherwise only the first one of
        each process (a client: when its tunnel restarts, mnigs drops the
        connection instead and openvpn may stay on hold until stopped).
    @param onExit: called with the reason when a ready process dies by itself.
    @param onReady: called when a process becomes ready (each relaunch too).
    """

    def __init__(self, reactor, argv, socketPath: str, name: str,
                 onEvent: Callable[[object], object] = lambda event: None,
                 releaseEveryHold: bool = True, restart: bool = True,
                 launchTimeout: float = 10, bytecountInterval: int = 1,
                 onExit: Optional[Callable[[Failure], object]] = None,
                 onReady: Optional[Callable[[], object]] = None,
                 minBackoff: float = 0.5, maxBackoff: float = 30, stopTimeout: float = 5,
                 spawn=None) -> None:
        argv = list(argv)
        if argv and os.sep not in argv[0]:
            argv[0] = shutil.which(argv[0]) or argv[0]
        self.reactor = reactor
        self.socketPath = socketPath
        self.name = name
        self.onEvent = onEvent
        self.releaseEveryHold = releaseEveryHold
        self.bytecountInterval = bytecountInterval
        self.session = None
        self._holds = {}
        self._readyWatch = None
        self._port = None
        self.process = SupervisedProcess(
            reactor, argv + managementArgs(socketPath), name,
            readiness=_ConnectedReadiness(self), launchTimeout=launchTimeout,
            restart=restart, minBackoff=minBackoff, maxBackoff=maxBackoff,
            stopTimeout=stopTimeout, onExit=onExit, onReady=onReady, spawn=spawn)

    @property
    def pid(self):
        return self.process.pid

    def start(self) -> Deferred:
        """Listen for the management connection, launch; fires once ready."""
        if self._port is None:
            try:
                self._listen()
            except Exception:
                return fail()
        return self.process.start()

    def _listen(self) -> None:
        directory = os.path.dirname(self.socketPath)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            os.unlink(self.socketPath)  # left by a crashed run
        except FileNotFoundError:
            pass
        self._port = self.reactor.listenUNIX(self.socketPath, ManagementFactory(self),
                                             mode=0o600)

    def stop(self) -> Deferred:
        """Stop openvpn (TERM, then KILL) and stop listening."""
        d = self.process.stop()

        def stopListening(result):
            port, self._port = self._port, None
            if port is None:
                return result
            return maybeDeferred(port.stopListening).addBoth(lambda _: result)

        return d.addBoth(stopListening)

    def command(self, text: str, timeout: Optional[float] = None) -> Deferred:
        """
        Send a command; with C{timeout}, give up waiting after that many
        seconds (the reply, when it comes, is then dropped in order).
        """
        if self.session is None:
            return fail(NotRunning(f"{self.name} has no management connection"))
        d = self.session.command(text)
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        return d

    # -- what the management connection reports ---------------------------
    def managementConnected(self, protocol) -> None:
        if self.session is not None:
            log.warn("{name}: a second management connection; closing it", name=self.name)
            protocol.transport.loseConnection()
            return
        self.session = protocol
        self._holds[protocol] = 0
        for text in (m.stateOn(), m.bytecount(self.bytecountInterval)):
            self._send(protocol, text)

    def _send(self, protocol, text: str) -> None:
        protocol.command(text).addErrback(
            lambda f: log.warn("{name}: {command!r} failed: {why}", name=self.name,
                               command=text, why=f.getErrorMessage()))

    def managementEvent(self, protocol, event) -> None:
        if protocol is not self.session:
            return
        if isinstance(event, m.Hold):
            self._holds[protocol] += 1
            if self.releaseEveryHold or self._holds[protocol] == 1:
                self._send(protocol, m.holdRelease())
        try:
            self.onEvent(event)
        except Exception:
            log.failure("{name}: management event handler failed", name=self.name)
        # After the owner saw the event: whoever waits for readiness may
        # look at what it said (the tunnel's address).
        if isinstance(event, m.State) and event.connected and self._readyWatch is not None:
            watch, self._readyWatch = self._readyWatch, None
            watch.ready()

    def managementLost(self, protocol, reason) -> None:
        self._holds.pop(protocol, None)
        if protocol is self.session:
            self.session = None
            log.info("{name}: management connection closed", name=self.name)

    def describe(self) -> dict:
        return {"pid": self.pid, "management": self.session is not None}
