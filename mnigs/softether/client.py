# -*- test-case-name: tests.unit.test_softether -*-
"""
The client's SoftEther vpnclient: one daemon per connection, in its own
mount namespace, with a fresh state directory each time, configured only
through vpncmd.

A vpnclient is managed on localhost port 9931 (fixed), so one runs per
network namespace at a time; the client never brings a tunnel up before
the previous one is down, so this holds.  It is ready once vpncmd answers
and has set the random management password this instance uses (another
local user cannot steer it).  The connection is one virtual NIC
(C{vpn_NIC}, a tap) and one account: the lease's hub, user and password,
the server certificate from the lease pinned (the account refuses any
other), and no automatic retries: when the session ends, the NIC loses
its carrier and mnigs decides what next.

Directory layout (0700), removed on stop:

    DIRECTORY/root/{lib,log,run}   bound over SoftEther's compiled-in paths
    DIRECTORY/scratch/             batch files and the pinned certificate
    DIRECTORY/vpnclient.log        the daemon's stdout
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys

from twisted.internet import defer
from twisted.logger import Logger

from mnigs.system.process import SupervisedProcess, readyWhen
from mnigs.softether import VPNCLIENT, VPNCMD
from mnigs.softether.launch import launchArgv
from mnigs.softether.vpncmd import (
    CLIENT_PORT,
    Vpncmd,
    VpncmdFailed,
    clientTarget,
    command,
    portOpen,
)
from mnigs.system.statefile import atomicWrite

log = Logger()

ACCOUNT = "mnigs"
CERTIFICATE_FILE = "server.pem"
# AccountList's status column.
CONNECTED = "Connected"
# On TERM a vpnclient usually ends its session and exits within half a
# second, but not always (see mnigs.softether.launch).  It is killed after
# a second: its NIC goes with it, its directory is removed.
STOP_TIMEOUT = 1.0
OFFLINE = "Offline"


def nicInterface(nic: str) -> str:
    return "vpn_" + nic


def accountCommands(nic: str, endpoint: str, hub: str, username: str, password: str,
                    certificatePath: str) -> list:
    """
    The NIC and the account, connected.  The certificate check is on before
    the first connection attempt.
    """
    return [command("NicCreate", nic),
            command("AccountCreate", ACCOUNT, SERVER=endpoint, HUB=hub, USERNAME=username,
                    NICNAME=nic),
            command("AccountPasswordSet", ACCOUNT, TYPE="standard", prompts=(password, password)),
            command("AccountServerCertSet", ACCOUNT, LOADCERT=certificatePath),
            command("AccountServerCertEnable", ACCOUNT),
            command("AccountRetrySet", ACCOUNT, NUM="0", INTERVAL="5"),
            command("AccountConnect", ACCOUNT)]


def accountStatus(accountTable: list[dict]) -> str | None:
    for row in accountTable:
        if row.get("VPN Connection Setting Name") == ACCOUNT:
            return row.get("Status")
    return None


class VpnClient:
    """
    @param onExit: called with the reason if the vpnclient dies by itself.
    """

    def __init__(self, reactor, directory: str, python: str = sys.executable,
                 vpnclient: str = VPNCLIENT, vpncmd: str = VPNCMD, launchTimeout: float = 10.0,
                 onExit=None, spawn=None, run=None, portOpen=portOpen):
        self.reactor = reactor
        self.directory = directory
        self.scratch = os.path.join(directory, "scratch")
        self.password = secrets.token_urlsafe(24)
        self.portOpen = portOpen
        self.vpncmd = Vpncmd(reactor, clientTarget(), self.scratch, password=self.password,
                             vpncmd=vpncmd, **({} if run is None else {"run": run}))
        self.process = SupervisedProcess(
            reactor, launchArgv(python, os.path.join(directory, "root"), vpnclient,
                                "start", "--foreground"),
            name="vpnclient", readiness=readyWhen(self._readyCheck, interval=0.1),
            launchTimeout=launchTimeout, restart=False, stopTimeout=STOP_TIMEOUT,
            outputPath=os.path.join(directory, "vpnclient.log"),
            onExit=onExit, spawn=spawn)

    @property
    def pid(self):
        return self.process.pid

    def start(self):
        # A fresh directory: nothing from an earlier connection carries over.
        shutil.rmtree(self.directory, ignore_errors=True)
        os.makedirs(self.scratch, mode=0o700)
        os.chmod(self.directory, 0o700)
        return self.process.start()

    @defer.inlineCallbacks
    def _readyCheck(self):
        # Answers whether the management password is set yet or not (see
        # SoftEtherServer._adminPort).
        if not (yield self.portOpen(self.reactor, "127.0.0.1", CLIENT_PORT)):
            return False
        try:
            replies = yield self.vpncmd.run(
                [command("PasswordSet", REMOTEONLY="no", prompts=(self.password, self.password))])
        except VpncmdFailed:
            return False
        replies[0].check()
        return True

    @defer.inlineCallbacks
    def connectAccount(self, endpoint: str, hub: str, username: str, password: str,
                       certificatePEM: str, nic: str):
        path = os.path.join(self.scratch, CERTIFICATE_FILE)
        atomicWrite(path, certificatePEM.encode("ascii"), mode=0o600)
        replies = yield self.vpncmd.run(accountCommands(nic, endpoint, hub, username, password,
                                                        path))
        for reply in replies:
            reply.check()

    @defer.inlineCallbacks
    def status(self):
        """
        The account's status: C{"Connected"}, C{"Connecting"},
        C{"Offline"}, ...
        """
        replies = yield self.vpncmd.run([command("AccountList")])
        return accountStatus(replies[0].table())

    def lastError(self) -> str:
        """
        Why the last connection attempt ended, from the daemon's output (the
        account status does not say), for error messages.
        """
        try:
            with open(os.path.join(self.directory, "vpnclient.log"), errors="replace") as f:
                causes = [line for line in f if "Cause:" in line]
        except OSError:
            causes = []
        return causes[-1].split("Cause:", 1)[1].strip() if causes else "unknown"

    @defer.inlineCallbacks
    def stop(self):
        try:
            yield self.process.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
