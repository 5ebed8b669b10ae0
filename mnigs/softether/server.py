# -*- test-case-name: tests.unit.test_softether -*-
"""
The gateway's SoftEther vpnserver: one supervised daemon in its own mount
namespace (L{mnigs.softether.launch}), configured only through vpncmd.

The admin protocol shares the VPN port, on every address.  Before the
daemon first starts, C{adminip.txt} in its state directory limits
administration to loopback (SoftEther reads C{$adminip.txt} from its state
directory at every admin connection; a remote one is refused with error
109): the one file mnigs writes for SoftEther itself.  It closes the
window in which a fresh vpnserver, still without an administrator
password, would take orders from anyone on the mesh, and keeps the admin
protocol off the network for good.

Readiness is "answers on its admin port and is configured as we want":
every launch (the first, and each relaunch after a crash) reconciles the
daemon with what this object holds (the hub, its tap bridge, the listener
and one hub user per live lease) before it counts as ready, so a vpnserver
that lost some of its configuration (it saves it only every five minutes)
comes back complete.  A fresh vpnserver is also hardened once, through its
whole configuration (ConfigGet, edit, ConfigSet: the settings no single
vpncmd command reaches, see L{h.HARDENING}), after which it restarts
itself in-process; its first start takes about 5 s in the namespace tests.

Between a death and the end of the relaunch's reconcile the hub is not
touched (L{mnigs.softether.hubsync}): a new user waits for the reconcile
(at most C{readyWait} seconds, else L{NotReady}), a removed one is left
to it.

Directory layout (0700), kept across restarts so that the server
certificate, which clients pin, stays the same:

    DIRECTORY/admin-password   the vpnserver administrator password (0600)
    DIRECTORY/root/{lib,log,run}   bound over SoftEther's compiled-in paths
    DIRECTORY/root/lib/adminip.txt   administration from loopback only
    DIRECTORY/root/etc/nsswitch.conf   no DNS (see mnigs.softether.launch)
    DIRECTORY/scratch/         vpncmd batch files and the exported certificate
    DIRECTORY/vpnserver.log    the daemon's stdout (its own logs are in root/log)
"""

from __future__ import annotations

import hashlib
import os
import secrets
import ssl
import sys

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mnigs.system.process import SupervisedProcess, readyWhen
from mnigs.softether import VPNCMD, VPNSERVER
from mnigs.softether import hub as h
from mnigs.softether.hubsync import HubCore, HubSync, NotReady
from mnigs.softether.launch import launchArgv
from mnigs.softether.vpncmd import (
    ERR_CONNECT_FAILED,
    ERR_OBJECT_NOT_FOUND,
    ERR_USER_EXISTS,
    Vpncmd,
    VpncmdError,
    VpncmdFailed,
    command,
    portOpen,
    serverTarget,
)
from mnigs.system.statefile import atomicWrite

log = Logger()

ADMIN_PASSWORD_FILE = "admin-password"
# ConfigGet's copy of the configuration holds the server's private key: it
# lives in the 0700 scratch directory only while it is read or sent back.
CONFIG_FILE = "config.txt"
ADMIN_IP_FILE = "adminip.txt"
ADMIN_IP = b"127.0.0.1/32\n::1/128\n"
CERTIFICATE_FILE = "server.pem"
TAP_TIMEOUT = 10.0
RESTART_TIMEOUT = 10.0
# A clean stop takes about half a second per listener; TERM does not always
# end a SoftEther daemon (see mnigs.softether.launch), KILL does.
STOP_TIMEOUT = 3.0
# How long adding a user waits for a vpnserver being relaunched: the
# registration waits meanwhile, and a client gives up on it after
# discovery.timeout (2 s by default), the adding itself (about 0.3 s) and
# the lease's commit included.
READY_WAIT = 0.5


def loadOrCreateSecret(path: str) -> str:
    try:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(24)
    atomicWrite(path, value.encode("ascii") + b"\n", mode=0o600)
    return value


def certificateFingerprint(pem: str) -> str:
    """
    The SHA-256 of the certificate's DER form, as lowercase hex.
    """
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


class TapMissing(Exception):
    pass


class Restarting(Exception):
    """The vpnserver restarts itself with a new configuration."""


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SoftEtherServer:
    """
    @param tapAddress: the gateway's address on the tap (an
        L{ipaddress.IPv4Interface}, the pool's first host and its prefix).
    @param netlink: a L{mnigs.system.netlink.Netlink} of the gateway's namespace.
    @param onDeath: called with the reason when a ready vpnserver dies (its
        sessions die with it; clients notice and connect again).
    @param onReady: called each time a vpnserver is ready, that is
        configured with every user of L{users}.
    @param readyWait: seconds L{addUser} waits for a vpnserver that is
        being launched again before it fails with L{NotReady}.
    """

    def __init__(self, reactor, directory: str, port: int, hub: str, bridge: str, tapAddress,
                 netlink, python: str = sys.executable, vpnserver: str = VPNSERVER,
                 vpncmd: str = VPNCMD, launchTimeout: float = 30.0, spawn=None, run=None,
                 onDeath=None, onReady=None, portOpen=portOpen, readyWait=READY_WAIT):
        self.reactor = reactor
        self.directory = directory
        self.port = port
        self.hub = h.checkHubName(hub)
        self.bridge = h.checkBridgeName(bridge)
        self.tap = h.tapInterface(bridge)
        self.tapAddress = tapAddress
        self.netlink = netlink
        self.onDeath = onDeath or (lambda reason: None)
        self.onReady = onReady or (lambda: None)
        self.portOpen = portOpen
        self.readyWait = readyWait
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.scratch = os.path.join(directory, "scratch")
        self.adminPassword = loadOrCreateSecret(os.path.join(directory, ADMIN_PASSWORD_FILE))
        self._vpncmdOptions = dict(password=self.adminPassword, vpncmd=vpncmd,
                                   **({} if run is None else {"run": run}))
        self.vpncmd = self._vpncmdAt(port)
        self.users: dict[str, h.HubUser] = {}
        self.certificate = None
        self._mutex = defer.DeferredLock()
        self._hub = HubSync(HubCore(self.hub, add=self._addUser, remove=self._removeUser))
        self.process = SupervisedProcess(
            reactor, launchArgv(python, os.path.join(directory, "root"), vpnserver,
                                "start", "--foreground"),
            name=f"vpnserver {self.hub}", readiness=readyWhen(self._readyCheck, interval=0.25),
            launchTimeout=launchTimeout, stopTimeout=STOP_TIMEOUT,
            outputPath=os.path.join(directory, "vpnserver.log"),
            onExit=self._died, onReady=lambda: self.onReady(),
            spawn=spawn)

    def _vpncmdAt(self, port):
        return Vpncmd(self.reactor, serverTarget("127.0.0.1", port), self.scratch,
                      **self._vpncmdOptions)

    # -- lifecycle -------------------------------------------------------

    def start(self):
        """
        Launch and configure; fires once the hub serves the users already
        added with L{setUsers}.
        """
        lib = os.path.join(self.directory, "root", "lib")
        os.makedirs(lib, mode=0o700, exist_ok=True)
        atomicWrite(os.path.join(lib, ADMIN_IP_FILE), ADMIN_IP, mode=0o600)
        return self.process.start()

    def stop(self):
        self._hub.lost()
        return self.process.stop()

    def _died(self, reason):
        self._hub.lost()
        self.onDeath(reason)

    @property
    def pid(self):
        return self.process.pid

    # -- readiness: admin port answers, then reconcile ---------------------

    @defer.inlineCallbacks
    def _readyCheck(self):
        # Only a daemon that is not ready yet is checked: a relaunch whose
        # predecessor died before it was ready (no onExit) is also new.
        self._hub.lost()
        port = yield self._adminPort()
        if port is None:
            return False
        try:
            yield self._mutex.run(self._reconcile, port)
        except Restarting as e:
            log.info("vpnserver {hub}: {what}", hub=self.hub, what=e)
            return False
        except Exception as e:
            log.warn("vpnserver {hub}: configuring failed, retrying: {error}", hub=self.hub,
                     error=e)
            return False
        return True

    @defer.inlineCallbacks
    def _adminPort(self):
        """
        Our port once configured; on a first start, one of the ports a
        vpnserver without configuration listens on.  Setting the
        administrator password works whether one is set or not: with one,
        vpncmd asks for it first (the first answer); without, the command's
        own two prompts take the first two answers and the third is unread.
        """
        ports = [self.port] + [p for p in h.BOOTSTRAP_PORTS if p != self.port]
        setPassword = command("ServerPasswordSet",
                              prompts=(self.adminPassword, self.adminPassword))
        for port in ports:
            if not (yield self.portOpen(self.reactor, "127.0.0.1", port)):
                continue
            try:
                replies = yield self._vpncmdAt(port).run([setPassword])
            except VpncmdFailed as e:
                if e.code != ERR_CONNECT_FAILED:
                    log.warn("vpnserver {hub}: admin port {port}: {error}", hub=self.hub,
                             port=port, error=e)
                continue
            replies[0].check()
            return port
        return None

    @defer.inlineCallbacks
    def _harden(self, run):
        """
        Switch off what no vpncmd command switches off (L{h.HARDENING}),
        through the whole configuration.  The vpnserver then restarts
        inside its process, after ConfigSet has answered: wait until its
        listener is gone, so that the next readiness check does not talk to
        the old engine (a second ConfigSet during the shutdown made one
        restart take 20 s).  Done once the listeners are down to ours: each
        takes 0.4 s to stop.
        """
        path = os.path.join(self.scratch, CONFIG_FILE)
        try:
            (yield run([command("ConfigGet", CONFIG_FILE)]))[0].check()
            with open(path, encoding="utf-8", newline="") as f:
                hardened = h.hardenedConfig(f.read())
            if hardened is None:
                return
            atomicWrite(path, hardened.encode("utf-8"), mode=0o600)
            (yield run([command("ConfigSet", CONFIG_FILE)]))[0].check()
        finally:
            _remove(path)
        deadline = self.reactor.seconds() + RESTART_TIMEOUT
        while (yield self.portOpen(self.reactor, "127.0.0.1", self.port)):
            if self.reactor.seconds() >= deadline:
                break
            yield deferLater(self.reactor, 0.05)
        raise Restarting("restarting with dynamic DNS, NAT traversal, the JSON-RPC API, "
                         "keep-alive pings and TLS 1.0/1.1 off")

    @defer.inlineCallbacks
    def _reconcile(self, adminPort):
        run = self._vpncmdAt(adminPort).run
        listing = yield run([command("ListenerList"), command("HubList"), command("BridgeList")])
        listening = h.listenerPorts(listing[0].table())
        settings = h.serverSettingsCommands(
            self.port, listening, h.hubNames(listing[1].table()), self.hub,
            secrets.token_urlsafe(24), h.bridges(listing[2].table()), self.bridge,
            CERTIFICATE_FILE)
        for reply in (yield run(settings)):
            reply.check()
        run = self.vpncmd.run
        cleanup = h.listenerCleanupCommands(self.port, listening | {adminPort})
        if cleanup:
            for reply in (yield run(cleanup)):
                reply.check(ERR_OBJECT_NOT_FOUND)
        yield self._harden(run)
        with open(os.path.join(self.scratch, CERTIFICATE_FILE)) as f:
            self.certificate = f.read()
        yield self._configureTap()
        yield self._syncUsers()
        self._hub.reconciled()

    @defer.inlineCallbacks
    def _configureTap(self):
        deadline = self.reactor.seconds() + TAP_TIMEOUT
        while self.netlink.linkIndex(self.tap) is None:
            if self.reactor.seconds() >= deadline:
                raise TapMissing(f"{self.tap} did not appear within {TAP_TIMEOUT} s")
            yield deferLater(self.reactor, 0.05)
        if self.tapAddress not in self.netlink.addresses(self.tap):
            self.netlink.addAddress(self.tap, self.tapAddress)
        self.netlink.setLinkUp(self.tap)

    @defer.inlineCallbacks
    def _syncUsers(self):
        """
        Make the hub's users and their rules exactly L{users}: every mnigs
        rule is removed and the wanted ones added again, every wanted user
        (re)created with its password.
        """
        run = self.vpncmd.run
        tables = yield run([command("SecureNatDisable"), command("UserList"),
                            command("AccessList")], hub=self.hub)
        tables[0].check()
        present = h.mnigsUsers(tables[1].table())
        rules = h.rulesByUser(tables[2].table())
        commands = []
        for name in sorted(present - set(self.users)):
            commands.append(command("UserDelete", name))
        for name in sorted(rules):
            commands += [command("AccessDelete", rule) for rule in rules[name]]
        for user in self.users.values():
            commands += h.addUserCommands(user)
        if not commands:
            return
        for reply in (yield run(commands, hub=self.hub)):
            reply.check(ERR_OBJECT_NOT_FOUND, ERR_USER_EXISTS)

    # -- users -------------------------------------------------------------

    def setUsers(self, users):
        """
        Replace the wanted users (before L{start}, or for a relaunch).
        """
        self.users = {user.name: user for user in users}

    def addUser(self, user: h.HubUser):
        """
        Add C{user} to the hub; fires once it can log in.  Fails with
        L{NotReady} when the vpnserver is being launched again and is not
        configured within L{readyWait} seconds, or stops answering.
        """
        def notInTime(failure):
            failure.trap(defer.TimeoutError)
            raise NotReady(f"the vpnserver of hub {self.hub} is being launched again and was "
                           f"not ready within {self.readyWait} s")

        d = self._hub.whenSynced()
        d.addTimeout(self.readyWait, self.reactor)
        d.addErrback(notInTime)
        return d.addCallback(lambda _: self._mutex.run(self._hub.addUser, user))

    @defer.inlineCallbacks
    def _addUser(self, user):
        self.users[user.name] = user
        try:
            replies = yield self._addUserCommands(user)
        except VpncmdFailed as e:
            # It died under us (its relaunch adds the user, while wanted).
            raise NotReady(f"the vpnserver of hub {self.hub} did not answer: {e}") from None
        for reply in replies:
            reply.check()

    @defer.inlineCallbacks
    def _addUserCommands(self, user):
        replies = yield self.vpncmd.run(h.addUserCommands(user), hub=self.hub)
        if replies[0].error == ERR_USER_EXISTS:
            # A leftover (a revoke that failed half-way): start afresh.
            yield self._removeUser(user.name)
            replies = yield self.vpncmd.run(h.addUserCommands(user), hub=self.hub)
        return replies

    def removeUser(self, name: str):
        """
        Delete the user, disconnect its sessions, drop its rules; fires once
        it is all gone, or at once while the vpnserver is being launched
        again (its reconcile removes the user).  A user already gone is
        fine, and one never added (its adding was refused: L{NotReady})
        asks nothing of the vpnserver, so that the refusal is not held up
        by a reconcile.  Fails with L{VpncmdFailed} or L{VpncmdError} when
        vpncmd could not do it (the user is no longer wanted: the next
        reconcile removes it).
        """
        if self.users.pop(name, None) is None:
            return defer.succeed(None)
        return self._mutex.run(self._hub.removeUser, name)

    @defer.inlineCallbacks
    def _removeUser(self, name):
        tables = yield self.vpncmd.run([command("SessionList"), command("AccessList")],
                                       hub=self.hub)
        sessions = h.sessionsOf(tables[0].table(), name)
        rules = h.rulesByUser(tables[1].table()).get(name, [])
        replies = yield self.vpncmd.run(h.removeUserCommands(name, sessions, rules),
                                        hub=self.hub)
        for reply in replies:
            reply.check(ERR_OBJECT_NOT_FOUND)

    @defer.inlineCallbacks
    def sessionTraffic(self):
        """
        User name -> C{(bytes to the client, bytes from it)} summed over
        the user's sessions now on the hub (L{h.sessionBytes}), from one
        C{SessionList} and one batch of C{SessionGet}.
        """
        listed = yield self.vpncmd.run([command("SessionList")], hub=self.hub)
        sessions = h.sessionsByUser(listed[0].table(), self.users)
        if not sessions:
            return {}
        replies = yield self.vpncmd.run([command("SessionGet", session)
                                         for _, session in sessions], hub=self.hub)
        counted: dict[str, tuple[int, int]] = {}
        for (user, _), reply in zip(sessions, replies):
            found = h.sessionBytes(reply.items()) if reply.ok else None  # it may have just ended
            if found is not None:
                toClient, fromClient = counted.get(user, (0, 0))
                counted[user] = (toClient + found[0], fromClient + found[1])
        return counted

    def describe(self):
        return {"hub": self.hub, "port": self.port, "tap": self.tap, "pid": self.pid,
                "users": len(self.users), "state": self._hub.describe()}


__all__ = ["SoftEtherServer", "certificateFingerprint", "loadOrCreateSecret", "TapMissing",
           "NotReady", "VpncmdError", "VpncmdFailed"]
