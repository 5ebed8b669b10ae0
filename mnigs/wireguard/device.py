# -*- test-case-name: tests.unit.test_wgdevice,tests.mesh.test_wireguard_device -*-
"""
A WireGuard interface owned by mnigs: adopted if a previous run left one
behind (its wireguard-go still answering), else kernel WireGuard when there
is some, else a supervised C{wireguard-go -f IFNAME}.

wireguard-go's control sockets (C{/var/run/wireguard/IFNAME.sock}) are
shared by all network namespaces: interface names must be unique machine
wide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Protocol as TypingProtocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.system.netlink import Netlink
from mnigs.system.waiters import Waiters
from mnigs.wireguard.daemon import (
    AdoptedDaemon,
    KernelDevice,
    SpawnedDaemon,
    kernelWireGuardAvailable,
)
from mnigs.wireguard.uapi import DEFAULT_SOCKDIR, UAPIClient, checkKey, publicKey

log = Logger()

_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,14}$")


class DeviceError(Exception):
    """The device cannot be brought up as asked."""


class DeviceStopping(Exception):
    """start() was called while the device is being torn down."""


class _Device(TypingProtocol):
    def start(self, waiter: Deferred[None]) -> None: ...
    def stop(self, waiter: Deferred[None]) -> None: ...
    def daemonReady(self) -> None: ...
    def daemonDied(self, reason: Failure) -> None: ...
    def setupDone(self) -> None: ...
    def setupFailed(self, reason: Failure) -> None: ...
    def teardownDone(self) -> None: ...
    def leave(self, waiter: Deferred[None]) -> None: ...


@dataclass
class _Core:
    reactor: object
    ifname: str
    privateKey: str
    listenPort: Optional[int]
    address: Optional[str]
    address6: Optional[str]
    implementation: str
    netns: Optional[str]
    sockdir: str
    logPath: Optional[str]
    wireguardGo: str
    wg: str
    launchTimeout: float
    watchInterval: float
    netlink: Callable[[Optional[str]], Netlink]
    spawn: object
    # What serves the interface (mnigs.wireguard.daemon); it outlives single states
    # (probing to stopping), like a supervisor's child.
    daemon: object = None
    deathCallbacks: list = field(default_factory=list)
    restoredCallbacks: list = field(default_factory=list)
    startWaiters: Waiters[None] = field(default_factory=Waiters)
    stopWaiters: Waiters[None] = field(default_factory=Waiters)

    def notify(self, callbacks: list, *args: object) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                log.failure("{ifname}: owner callback failed", ifname=self.ifname)


@dataclass
class _Job:
    """An async step whose outcome becomes a machine input, unless cancelled."""

    d: Deferred
    cancelled: bool = False

    @classmethod
    def run(cls, d: Deferred, onDone: Callable[[], None],
            onFailed: Callable[[Failure], None]) -> "_Job":
        job = cls(d)
        d.addCallbacks(lambda _: None if job.cancelled else onDone(),
                       lambda f: None if job.cancelled else onFailed(f))
        return job

    def cancel(self) -> None:
        self.cancelled = True
        self.d.cancel()


class Choice(Enum):
    """What to do with the interface name, once we have looked at it."""

    adoptKernel = "adopt the kernel device"
    adoptUserspace = "adopt the answering wireguard-go"
    createKernel = "create a kernel device"
    spawnUserspace = "spawn wireguard-go"
    notWireGuard = "refuse: the name is a link of another kind"
    takenElsewhere = "refuse: the socket answers but the link is in another namespace"


def chooseDevice(kind: Optional[str], answers: bool, implementation: str,
                 kernelAvailable: Callable[[], bool]) -> Choice:
    """
    Decide what serves the interface from what was found: C{kind}, the kind
    of the link of that name in our namespace (C{None}: no such link);
    C{answers}, whether its wireguard-go control socket answers;
    C{implementation}, what the owner asked for (C{"auto"}, C{"kernel"},
    C{"userspace"}).  C{kernelAvailable} is asked only when the choice
    hangs on it (C{"auto"} and nothing there): asking may load a module.

    Something already there is adopted whatever was asked, since removing
    it would cut whoever it serves.
    """
    if kind == "wireguard":
        return Choice.adoptKernel
    if kind is not None:
        return Choice.adoptUserspace if answers else Choice.notWireGuard
    if answers:
        return Choice.takenElsewhere
    if implementation == "kernel" or (implementation == "auto" and kernelAvailable()):
        return Choice.createKernel
    return Choice.spawnUserspace


@inlineCallbacks
def _probe(c: _Device, s: _Core):
    with s.netlink(s.netns) as nl:
        kind = nl.linkKind(s.ifname)
    answers = yield UAPIClient(s.reactor, s.ifname, s.sockdir).answers()
    with s.netlink(s.netns) as nl:
        choice = chooseDevice(kind, answers, s.implementation,
                              lambda: kernelWireGuardAvailable(nl))
        if choice is Choice.createKernel:
            nl.addLink(s.ifname, "wireguard")
    if choice is Choice.notWireGuard:
        raise DeviceError(f"{s.ifname} exists and is not a WireGuard device")
    if choice is Choice.takenElsewhere:
        raise DeviceError(f"{s.sockdir}/{s.ifname}.sock answers but {s.ifname} is not in "
                          "this namespace: the name is taken elsewhere")
    daemon = {
        Choice.adoptKernel: lambda: KernelDevice(s, c, adopted=True),
        Choice.adoptUserspace: lambda: AdoptedDaemon(s, c),
        Choice.createKernel: lambda: KernelDevice(s, c, adopted=False),
        Choice.spawnUserspace: lambda: SpawnedDaemon(s, c),
    }[choice]()
    log.info("{ifname}: {how} {implementation} WireGuard", ifname=s.ifname,
             how="adopting" if daemon.adopted else "creating",
             implementation=daemon.implementation)
    s.daemon = daemon
    yield daemon.start()


@inlineCallbacks
def _configure(s: _Core):
    yield s.daemon.control.setDevice(private_key=s.privateKey, listen_port=s.listenPort)
    with s.netlink(s.netns) as nl:
        if s.address is not None:
            nl.addAddress(s.ifname, s.address)
        if s.address6 is not None:
            nl.addAddress(s.ifname, s.address6)
        nl.setLinkUp(s.ifname)


@inlineCallbacks
def _teardown(s: _Core):
    if s.daemon is None:
        return  # nothing of ours: leave whatever has the name alone
    yield s.daemon.stop()
    with s.netlink(s.netns) as nl:
        nl.deleteLink(s.ifname)
    if s.daemon.adopted and s.daemon.implementation == "userspace":
        # The orphan exits once its interface is gone; wait for that.
        for _ in range(100):
            if not (yield s.daemon.control.answers()):
                break
            yield _sleep(s.reactor, 0.05)


def _sleep(reactor, seconds: float) -> Deferred:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def _startProbe(c: _Device, s: _Core, *args: object) -> _Job:
    return _Job.run(_probe(c, s), lambda: None, c.setupFailed)


def _startConfigure(c: _Device, s: _Core, *args: object) -> _Job:
    return _Job.run(_configure(s), c.setupDone, c.setupFailed)


def _startTeardown(c: _Device, s: _Core, *args: object) -> _Job:
    def failed(f: Failure) -> None:
        log.failure("{ifname}: teardown failed", f, ifname=s.ifname)
        c.teardownDone()
    return _Job.run(_teardown(s), c.teardownDone, failed)


def _buildMachine():
    m = TypeMachineBuilder(_Device, _Core)
    idle = m.state("idle")
    probing = m.state("probing", _startProbe)
    abortingProbe = m.state("abortingProbe")
    configuring = m.state("configuring", _startConfigure)
    up = m.state("up")
    down = m.state("down")
    restoring = m.state("restoring", _startConfigure)
    stopping = m.state("stopping", _startTeardown)
    stopped = m.state("stopped")
    left = m.state("left")

    for state in (probing, abortingProbe, down, stopping, stopped, left):
        state.upon(_Device.daemonDied).loop().returns(None)
    for state in (stopping, stopped, left):
        state.upon(_Device.daemonReady).loop().returns(None)

    @pep614(idle.upon(_Device.start).to(probing))
    @pep614(stopped.upon(_Device.start).to(probing))
    @pep614(left.upon(_Device.start).to(probing))
    @pep614(probing.upon(_Device.start, nodata=True).loop())
    @pep614(abortingProbe.upon(_Device.start).loop())
    @pep614(configuring.upon(_Device.start, nodata=True).loop())
    @pep614(down.upon(_Device.start).loop())
    @pep614(restoring.upon(_Device.start, nodata=True).loop())
    def awaitUp(c: _Device, s: _Core, waiter: Deferred[None]) -> None:
        s.startWaiters.add(waiter)

    @pep614(up.upon(_Device.start).loop())
    @pep614(idle.upon(_Device.stop).to(stopped))
    @pep614(stopped.upon(_Device.stop).loop())
    @pep614(idle.upon(_Device.leave).to(stopped))
    @pep614(stopped.upon(_Device.leave).loop())
    @pep614(left.upon(_Device.leave).loop())
    def alreadyThere(c: _Device, s: _Core, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    @pep614(stopping.upon(_Device.start, nodata=True).loop())
    def refuseStart(c: _Device, s: _Core, waiter: Deferred[None]) -> None:
        waiter.errback(DeviceStopping(s.ifname))

    # Only a device that is up (or whose daemon is being relaunched) is
    # left in place; one still being set up is torn down, as by stop().
    @pep614(abortingProbe.upon(_Device.stop).loop())
    @pep614(up.upon(_Device.stop).to(stopping))
    @pep614(down.upon(_Device.stop).to(stopping))
    @pep614(left.upon(_Device.stop).to(stopping))
    @pep614(stopping.upon(_Device.stop, nodata=True).loop())
    @pep614(abortingProbe.upon(_Device.leave).loop())
    @pep614(stopping.upon(_Device.leave, nodata=True).loop())
    def awaitStopped(c: _Device, s: _Core, waiter: Deferred[None]) -> None:
        s.stopWaiters.add(waiter)

    @pep614(probing.upon(_Device.stop).to(abortingProbe))
    @pep614(probing.upon(_Device.leave).to(abortingProbe))
    def awaitProbe(c: _Device, s: _Core, job: _Job, waiter: Deferred[None]) -> None:
        # The probe may be spawning a daemon: let it finish, then tear down.
        s.stopWaiters.add(waiter)

    @pep614(configuring.upon(_Device.stop).to(stopping))
    @pep614(restoring.upon(_Device.stop).to(stopping))
    @pep614(configuring.upon(_Device.leave).to(stopping))
    @pep614(restoring.upon(_Device.leave).to(stopping))
    def abandonConfigure(c: _Device, s: _Core, job: _Job, waiter: Deferred[None]) -> None:
        job.cancel()
        s.stopWaiters.add(waiter)

    @pep614(probing.upon(_Device.daemonReady).to(configuring))
    @pep614(down.upon(_Device.daemonReady).to(restoring))
    def configure(c: _Device, s: _Core, *job: _Job) -> None:
        pass

    @pep614(abortingProbe.upon(_Device.daemonReady).to(stopping))
    @pep614(abortingProbe.upon(_Device.setupFailed).to(stopping))
    def probeAborted(c: _Device, s: _Core, reason: Optional[Failure] = None) -> None:
        s.startWaiters.fire(Failure(DeviceStopping(s.ifname)))

    @pep614(probing.upon(_Device.setupFailed).to(stopping))
    @pep614(configuring.upon(_Device.setupFailed).to(stopping))
    def startFailed(c: _Device, s: _Core, job: _Job, reason: Failure) -> None:
        log.error("{ifname}: could not bring the device up: {reason}", ifname=s.ifname,
                  reason=reason.value)
        s.startWaiters.fire(reason)

    @pep614(configuring.upon(_Device.setupDone).to(up))
    def cameUp(c: _Device, s: _Core, job: _Job) -> None:
        log.info("{ifname}: up", ifname=s.ifname)
        s.startWaiters.fire(None)

    @pep614(restoring.upon(_Device.setupDone).to(up))
    def restored(c: _Device, s: _Core, job: _Job) -> None:
        log.info("{ifname}: restored after its daemon died", ifname=s.ifname)
        s.startWaiters.fire(None)
        s.notify(s.restoredCallbacks)

    @pep614(restoring.upon(_Device.setupFailed).to(down))
    def restoreFailed(c: _Device, s: _Core, job: _Job, reason: Failure) -> None:
        log.failure("{ifname}: could not reconfigure the relaunched daemon", reason,
                    ifname=s.ifname)

    @pep614(up.upon(_Device.daemonDied).to(down))
    @pep614(configuring.upon(_Device.daemonDied).to(down))
    @pep614(restoring.upon(_Device.daemonDied).to(down))
    def lostDaemon(c: _Device, s: _Core, *jobAndReason: object) -> None:
        *job, reason = jobAndReason
        for j in job:
            j.cancel()
        log.error("{ifname}: daemon died: {reason}", ifname=s.ifname, reason=reason.value)
        s.notify(s.deathCallbacks, reason)
        s.daemon = s.daemon.replacement(s, c)

    @pep614(up.upon(_Device.leave).to(left))
    @pep614(down.upon(_Device.leave).to(left))
    def letGo(c: _Device, s: _Core, waiter: Deferred[None]) -> None:
        log.info("{ifname}: left in place for the next start to adopt", ifname=s.ifname)
        s.daemon.release().chainDeferred(waiter)

    @pep614(stopping.upon(_Device.teardownDone).to(stopped))
    def finishedStopping(c: _Device, s: _Core, job: _Job) -> None:
        log.info("{ifname}: removed", ifname=s.ifname)
        s.daemon = None
        s.stopWaiters.fire()

    return m.build()


_DeviceMachine = _buildMachine()


class WireGuardDevice:
    """
    One WireGuard interface.  C{start()} fires once the interface has its
    key, port and addresses (C{address}, and C{address6} for IPv6) and is
    up; peers are then the owner's business (L{setPeers}).  When the daemon dies, every C{onDeath} callback gets the
    reason; once a relaunched daemon is configured again, every
    C{onRestored} callback is called: peers must be set again then.

    @param netns: the named network namespace the interface lives in, when
        it is not ours (tests; production runs inside the namespace).
    @param logPath: where wireguard-go's output goes (default: nowhere).
    """

    def __init__(self, reactor, ifname: str, privateKey: str, listenPort: Optional[int] = None,
                 address: Optional[str] = None, address6: Optional[str] = None,
                 implementation: str = "auto",
                 netns: Optional[str] = None, sockdir: str = DEFAULT_SOCKDIR,
                 logPath: Optional[str] = None, wireguardGo: str = "wireguard-go",
                 wg: str = "wg", launchTimeout: float = 10, watchInterval: float = 5,
                 netlink: Callable[[Optional[str]], Netlink] = Netlink, spawn=None) -> None:
        if not _IFNAME.match(ifname):
            raise ValueError(f"bad interface name {ifname!r}")
        if implementation not in ("auto", "kernel", "userspace"):
            raise ValueError("implementation must be auto, kernel or userspace")
        self.ifname = ifname
        self.publicKey = publicKey(checkKey(privateKey))
        self._core = _Core(
            reactor=reactor, ifname=ifname, privateKey=privateKey, listenPort=listenPort,
            address=address, address6=address6, implementation=implementation, netns=netns,
            sockdir=sockdir,
            logPath=logPath, wireguardGo=wireguardGo, wg=wg, launchTimeout=launchTimeout,
            watchInterval=watchInterval, netlink=netlink, spawn=spawn)
        self._machine: _Device = _DeviceMachine(self._core)

    def start(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._machine.start(waiter)
        return waiter

    def stop(self) -> Deferred[None]:
        """Delete the interface and stop our daemon; fires once both are gone."""
        waiter: Deferred[None] = Deferred()
        self._machine.stop(waiter)
        return waiter

    def leave(self) -> Deferred[None]:
        """
        Leave the interface and its daemon running for the next start to
        adopt (a restart that cuts nobody); a device still being set up is
        torn down instead.  Fires once that is done.
        """
        waiter: Deferred[None] = Deferred()
        self._machine.leave(waiter)
        return waiter

    def onDeath(self, callback: Callable[[Failure], object]) -> None:
        self._core.deathCallbacks.append(callback)

    def onRestored(self, callback: Callable[[], object]) -> None:
        self._core.restoredCallbacks.append(callback)

    @property
    def control(self):
        """The L{UAPIClient} or L{WgToolClient} of the current daemon."""
        if self._core.daemon is None:
            raise DeviceError(f"{self.ifname} is not started")
        return self._core.daemon.control

    def get(self) -> Deferred[dict]:
        return self.control.get()

    def setPeers(self, add=(), remove=()) -> Deferred[None]:
        return self.control.setPeers(add=add, remove=remove)

    def describe(self) -> dict:
        daemon = self._core.daemon
        return {"ifname": self.ifname, "netns": self._core.netns,
                "publicKey": self.publicKey, "listenPort": self._core.listenPort,
                "implementation": getattr(daemon, "implementation", None),
                "adopted": getattr(daemon, "adopted", False),
                "pid": getattr(daemon, "pid", None)}
