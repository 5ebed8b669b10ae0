# -*- test-case-name: tests.unit.test_wgdevice,tests.mesh.test_wireguard_device -*-
"""
What serves a L{mnigs.wireguard.device.WireGuardDevice}'s interface: our own
supervised wireguard-go, a wireguard-go adopted from a previous run, or
kernel WireGuard.

Each has C{control} (a L{UAPIClient} or L{WgToolClient}), C{start()} and
C{stop()} and C{release()} (let it
run on without us) returning Deferreds, C{replacement(core, machine)} (what serves
the interface after it died), C{implementation}, C{adopted} and C{pid}.
It tells the device's machine C{daemonReady()} / C{daemonDied(reason)}.
C{core} is the device's core: its settings.
"""

from __future__ import annotations

import os
import secrets
from typing import Optional

from mnigs.system.pyroute import NetlinkError
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.system.netlink import Netlink
from mnigs.system.process import SupervisedProcess
from mnigs.system.readiness import readyWhen
from mnigs.wireguard.uapi import UAPIClient, WgToolClient

log = Logger()

#: How often a freshly spawned wireguard-go's control socket is tried until
#: it answers.  It answers some tens of milliseconds after the spawn, and
#: the client's start waits for it: every poll period is up to that much
#: of the start lost.  A try costs one failed connect() on a unix socket.
READY_POLL = 0.01


class DaemonGone(Exception):
    """An adopted wireguard-go stopped answering on its socket."""


def kernelWireGuardAvailable(netlink: Netlink) -> bool:
    """Whether links of kind wireguard can be made (loading the module)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    probe = "mnigswg" + secrets.token_hex(4)
    try:
        netlink.addLink(probe, "wireguard")
    except NetlinkError:
        return False
    netlink.deleteLink(probe)
    return True


class SpawnedDaemon:
    """Our own wireguard-go, restarted by its supervisor when it dies."""

    implementation = "userspace"
    adopted = False

    def __init__(self, core, machine) -> None:
        self.control = UAPIClient(core.reactor, core.ifname, core.sockdir)
        prefix = ["ip", "netns", "exec", core.netns] if core.netns else []
        self.process = SupervisedProcess(
            core.reactor, prefix + [core.wireguardGo, "-f", core.ifname], f"wireguard-go {core.ifname}",
            readiness=readyWhen(lambda: self.control.answers(), READY_POLL),
            launchTimeout=core.launchTimeout,
            onExit=machine.daemonDied, onReady=machine.daemonReady,
            # not a pipe: it must outlive us (adoption) and Go dies on SIGPIPE
            outputPath=core.logPath or os.devnull, spawn=core.spawn)

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    def start(self) -> Deferred:
        return self.process.start()

    def stop(self) -> Deferred:
        return self.process.stop()

    def release(self) -> Deferred:
        return self.process.release()

    def replacement(self, core, machine) -> "SpawnedDaemon":
        return self  # the supervisor relaunches it


class AdoptedDaemon:
    """A wireguard-go a previous run left; watched through its socket."""

    implementation = "userspace"
    adopted = True
    pid = None

    def __init__(self, core, machine) -> None:
        self.control = UAPIClient(core.reactor, core.ifname, core.sockdir)
        self._core, self._machine = core, machine
        self._watch = None

    def start(self) -> Deferred:
        def gone() -> Deferred[bool]:
            return self.control.answers().addCallback(lambda answers: not answers)

        self._watch = readyWhen(gone, self._core.watchInterval).watch(
            self._core.reactor, lambda: self._machine.daemonDied(Failure(DaemonGone(self._core.ifname))))
        self._machine.daemonReady()
        return succeed(None)

    def stop(self) -> Deferred:
        if self._watch is not None:
            self._watch.cancel()
        return succeed(None)

    release = stop

    def replacement(self, core, machine) -> SpawnedDaemon:
        self.stop()
        spawned = SpawnedDaemon(core, machine)
        spawned.start().addErrback(lambda f: log.failure("{ifname}: no replacement daemon",
                                                         f, ifname=core.ifname))
        return spawned


class KernelDevice:
    implementation = "kernel"
    pid = None

    def __init__(self, core, machine, adopted: bool) -> None:
        self.control = WgToolClient(core.reactor, core.ifname, netns=core.netns, wg=core.wg, spawn=core.spawn)
        self.adopted = adopted
        self._machine = machine

    def start(self) -> Deferred:
        self._machine.daemonReady()
        return succeed(None)

    def stop(self) -> Deferred:
        return succeed(None)

    release = stop

    def replacement(self, core, machine) -> "KernelDevice":
        return self
