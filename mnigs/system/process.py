# -*- test-case-name: tests.unit.test_process -*-
"""
Supervised daemons (L{SupervisedProcess}), in the manner of txtorcon's tor
launcher and L{twisted.runner.procmon}.  One-shot commands are in
L{mnigs.system.command}.

A supervised daemon is launched with an argument list (never a shell), is
ready when its C{readiness} says so (a line of output, a control socket that
answers, or simply once spawned), is restarted with exponential backoff when
it dies by itself, and is stopped with TERM and, after C{stopTimeout}, KILL.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol as TypingProtocol, Sequence

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.system.backoff import Backoff
from mnigs.system.readiness import Watch, asReadiness, readyOnOutput, readyWhen
from mnigs.system.waiters import Waiters

log = Logger()


def _command(argv) -> str:
    """An argument list as a log line shows it: a shell-quoted command."""
    return shlex.join(os.fsdecode(arg) for arg in argv)

__all__ = ["SupervisedProcess", "LaunchTimeout", "ProcessExitedEarly", "LaunchCancelled",
           "ProcessStopping", "readyOnOutput", "readyWhen"]

_MAX_LINE = 64 * 1024


class LaunchTimeout(Exception):
    """The daemon did not become ready within its launch timeout."""


class ProcessExitedEarly(Exception):
    """The daemon exited before it became ready; C{args[1]} is the reason."""


class LaunchCancelled(Exception):
    """stop() was called before the daemon became ready."""


class ProcessStopping(Exception):
    """start() was called while the daemon is being stopped."""


# -- the machine -----------------------------------------------------------


class _Supervisor(TypingProtocol):
    def start(self, waiter: Deferred[None]) -> None:
        "Launch unless running; fire C{waiter} when ready."

    def stop(self, waiter: Deferred[None]) -> None:
        "Stop for good; fire C{waiter} once no child is left."

    def outputLine(self, line: bytes) -> None:
        "The child wrote a line on stdout or stderr."

    def processReady(self) -> None:
        "The readiness watch saw the child ready."

    def launchTimedOut(self) -> None:
        "The child was not ready within the launch timeout."

    def processExited(self, reason: Failure) -> None:
        "The child is gone."

    def backoffElapsed(self) -> None:
        "Time to relaunch after a death."

    def stopTimedOut(self) -> None:
        "TERM did not end the child in time."

    def release(self, waiter: Deferred[None]) -> None:
        "Let a running child go on without us; fire C{waiter} at once."


@dataclass
class _Core:
    reactor: object
    argv: Sequence[str]
    name: str
    env: Optional[dict]
    readiness: object
    launchTimeout: float
    minBackoff: float
    maxBackoff: float
    stopTimeout: float
    onExit: Callable[[Failure], object]
    onReady: Callable[[], object]
    outputPath: Optional[str]
    spawn: Callable[..., IProcessTransport]
    makeProtocol: Callable[[], ProcessProtocol]
    child: Optional[IProcessTransport] = None
    startWaiters: Waiters[None] = field(default_factory=Waiters)
    stopWaiters: Waiters[None] = field(default_factory=Waiters)
    backoff: Backoff = field(init=False)
    readySince: Optional[float] = None

    def __post_init__(self) -> None:
        self.backoff = Backoff(self.minBackoff, self.maxBackoff)

    def signal(self, sig: str) -> None:
        if self.child is None:
            return
        try:
            self.child.signalProcess(sig)
        except ProcessExitedAlready:
            pass
        else:
            log.info("{name}: sent {signal} to pid {pid}", name=self.name,
                     signal=sig, pid=self.child.pid)

    def notify(self, callback: Callable, *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.failure("{name}: owner callback failed", name=self.name)


class _Cancellable:
    def cancel(self) -> None:
        raise NotImplementedError()


@dataclass
class _Launch(_Cancellable):
    watch: Watch
    timeout: IDelayedCall

    def cancel(self) -> None:
        self.watch.cancel()
        if self.timeout.active():
            self.timeout.cancel()


@dataclass
class _Killing(_Cancellable):
    kill: IDelayedCall

    def cancel(self) -> None:
        if self.kill.active():
            self.kill.cancel()


@dataclass
class _Retry:
    retry: IDelayedCall


def _spawnChild(c: _Supervisor, s: _Core, *args: object) -> _Launch:
    s.child = None
    protocol = s.makeProtocol()
    outFD = None
    try:
        if s.outputPath is None:
            childFDs = {0: "w", 1: "r", 2: "r"}
        else:
            # A daemon meant to outlive us must not write to our pipes: when
            # we die it would get SIGPIPE (Go programs exit on it).
            outFD = os.open(s.outputPath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            childFDs = {0: "w", 1: outFD, 2: outFD}
        s.child = s.spawn(protocol, s.argv[0], list(s.argv), env=s.env, childFDs=childFDs)
    except Exception:
        failure = Failure()
        log.failure("{name}: could not spawn {command}", failure, name=s.name, argv=s.argv,
                    command=_command(s.argv))
        c.processExited(failure)  # runs once this transition is over
        return _Launch(Watch(), s.reactor.callLater(s.launchTimeout, c.launchTimedOut))
    finally:
        if outFD is not None:
            os.close(outFD)
    log.info("{name}: spawned pid {pid}: {command}", name=s.name, pid=s.child.pid, argv=s.argv,
             command=_command(s.argv))
    watch = s.readiness.watch(s.reactor, c.processReady)
    return _Launch(watch, s.reactor.callLater(s.launchTimeout, c.launchTimedOut))


def _terminateChild(c: _Supervisor, s: _Core, *args: object) -> _Killing:
    s.signal("TERM")
    return _Killing(s.reactor.callLater(s.stopTimeout, c.stopTimedOut))


def _scheduleRelaunch(c: _Supervisor, s: _Core, *args: object) -> _Retry:
    now = s.reactor.seconds()
    if s.readySince is not None and now - s.readySince >= s.maxBackoff:
        s.backoff.reset()  # it had been stable: start the backoff afresh
    s.readySince = None
    delay = s.backoff.next()
    log.warn("{name}: relaunching in {delay} s (attempt {attempt})",
             name=s.name, delay=delay, attempt=s.backoff.attempts)
    return _Retry(s.reactor.callLater(delay, c.backoffElapsed))


def _buildMachine(restart: bool):
    m = TypeMachineBuilder(_Supervisor, _Core)
    idle = m.state("idle")
    launching = m.state("launching", _spawnChild)
    running = m.state("running")
    backingOff = m.state("backingOff", _scheduleRelaunch)
    relaunching = m.state("relaunching", _spawnChild)
    abandoning = m.state("abandoning", _terminateChild)
    stopping = m.state("stopping", _terminateChild)
    stopped = m.state("stopped")
    released = m.state("released")

    # Inputs that change nothing where they arrive.
    for state in (idle, backingOff, stopped, released):
        state.upon(_Supervisor.outputLine).loop().returns(None)
    for state in (running, backingOff, abandoning, stopping, stopped, released):
        state.upon(_Supervisor.processReady).loop().returns(None)

    @pep614(running.upon(_Supervisor.outputLine).loop())
    @pep614(abandoning.upon(_Supervisor.outputLine, nodata=True).loop())
    @pep614(stopping.upon(_Supervisor.outputLine, nodata=True).loop())
    def logLine(c: _Supervisor, s: _Core, line: bytes) -> None:
        log.info("{name}: {line}", name=s.name, line=line.decode("utf-8", "replace"))

    @pep614(idle.upon(_Supervisor.start).to(launching))
    @pep614(stopped.upon(_Supervisor.start).to(launching))
    @pep614(launching.upon(_Supervisor.start, nodata=True).loop())
    @pep614(relaunching.upon(_Supervisor.start, nodata=True).loop())
    @pep614(backingOff.upon(_Supervisor.start, nodata=True).loop())
    @pep614(abandoning.upon(_Supervisor.start, nodata=True).loop())
    def awaitReady(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        s.startWaiters.add(waiter)

    @pep614(running.upon(_Supervisor.start).loop())
    def alreadyReady(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    @pep614(stopping.upon(_Supervisor.start, nodata=True).loop())
    def refuseStart(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        waiter.errback(ProcessStopping(s.name))

    @pep614(idle.upon(_Supervisor.stop).to(stopped))
    @pep614(stopped.upon(_Supervisor.stop).loop())
    @pep614(released.upon(_Supervisor.stop).loop())
    @pep614(idle.upon(_Supervisor.release).to(stopped))
    @pep614(stopped.upon(_Supervisor.release).loop())
    @pep614(released.upon(_Supervisor.release).loop())
    def nothingToStop(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    # A child that is not (yet, or no longer) running is not handed on:
    # releasing it stops it, as stop() would.
    @pep614(launching.upon(_Supervisor.stop).to(stopping))
    @pep614(relaunching.upon(_Supervisor.stop).to(stopping))
    @pep614(abandoning.upon(_Supervisor.stop).to(stopping))
    @pep614(launching.upon(_Supervisor.release).to(stopping))
    @pep614(relaunching.upon(_Supervisor.release).to(stopping))
    @pep614(abandoning.upon(_Supervisor.release).to(stopping))
    def abortLaunch(c: _Supervisor, s: _Core, launch: _Cancellable, waiter: Deferred[None]) -> None:
        launch.cancel()
        s.stopWaiters.add(waiter)
        s.startWaiters.fire(Failure(LaunchCancelled(s.name)))

    @pep614(running.upon(_Supervisor.stop).to(stopping))
    @pep614(stopping.upon(_Supervisor.stop, nodata=True).loop())
    @pep614(stopping.upon(_Supervisor.release, nodata=True).loop())
    def awaitStopped(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        s.stopWaiters.add(waiter)

    @pep614(backingOff.upon(_Supervisor.stop).to(stopped))
    @pep614(backingOff.upon(_Supervisor.release).to(stopped))
    def cancelRelaunch(c: _Supervisor, s: _Core, backoff: _Retry,
                       waiter: Deferred[None]) -> None:
        backoff.retry.cancel()
        s.stopWaiters.add(waiter)
        s.startWaiters.fire(Failure(LaunchCancelled(s.name)))
        s.stopWaiters.fire()

    @pep614(launching.upon(_Supervisor.outputLine).loop())
    @pep614(relaunching.upon(_Supervisor.outputLine).loop())
    def checkLine(c: _Supervisor, s: _Core, launch: _Launch, line: bytes) -> None:
        logLine(c, s, line)
        launch.watch.lineReceived(line)

    @pep614(launching.upon(_Supervisor.processReady).to(running))
    @pep614(relaunching.upon(_Supervisor.processReady).to(running))
    def becameReady(c: _Supervisor, s: _Core, launch: _Launch) -> None:
        launch.cancel()
        s.readySince = s.reactor.seconds()
        log.info("{name}: ready (pid {pid})", name=s.name, pid=s.child.pid)
        s.startWaiters.fire(None)
        s.notify(s.onReady)

    @pep614(launching.upon(_Supervisor.launchTimedOut).to(stopping))
    def launchFailedSlow(c: _Supervisor, s: _Core, launch: _Launch) -> None:
        launch.cancel()
        log.error("{name}: not ready after {timeout} s", name=s.name,
                  timeout=s.launchTimeout)
        s.startWaiters.fire(Failure(LaunchTimeout(s.name, s.launchTimeout)))

    @pep614(launching.upon(_Supervisor.processExited).to(stopped))
    def launchFailedExit(c: _Supervisor, s: _Core, launch: _Launch, reason: Failure) -> None:
        launch.cancel()
        s.child = None
        log.error("{name}: exited before it was ready: {reason}", name=s.name,
                  reason=reason.value)
        s.startWaiters.fire(Failure(ProcessExitedEarly(s.name, reason)))

    @pep614(relaunching.upon(_Supervisor.launchTimedOut).to(abandoning))
    def relaunchFailedSlow(c: _Supervisor, s: _Core, launch: _Launch) -> None:
        launch.cancel()
        log.error("{name}: relaunched child not ready after {timeout} s",
                  name=s.name, timeout=s.launchTimeout)

    @pep614(relaunching.upon(_Supervisor.processExited).to(backingOff))
    def relaunchFailedExit(c: _Supervisor, s: _Core, launch: _Launch, reason: Failure) -> None:
        launch.cancel()
        s.child = None
        log.error("{name}: relaunched child exited: {reason}", name=s.name,
                  reason=reason.value)

    @pep614(abandoning.upon(_Supervisor.processExited).to(backingOff))
    def abandoned(c: _Supervisor, s: _Core, killing: _Killing, reason: Failure) -> None:
        killing.cancel()
        s.child = None

    @pep614(backingOff.upon(_Supervisor.backoffElapsed).to(relaunching))
    def relaunch(c: _Supervisor, s: _Core, backoff: _Retry) -> None:
        pass

    def died(c: _Supervisor, s: _Core, reason: Failure) -> None:
        log.error("{name}: pid {pid} died: {reason}", name=s.name,
                  pid=s.child.pid if s.child else None, reason=reason.value)
        s.child = None
        s.notify(s.onExit, reason)

    if restart:
        running.upon(_Supervisor.processExited).to(backingOff)(died)
    else:
        running.upon(_Supervisor.processExited).to(stopped)(died)

    @pep614(stopping.upon(_Supervisor.stopTimedOut).loop())
    @pep614(abandoning.upon(_Supervisor.stopTimedOut).loop())
    def kill(c: _Supervisor, s: _Core, killing: _Killing) -> None:
        log.warn("{name}: still alive {timeout} s after TERM", name=s.name,
                 timeout=s.stopTimeout)
        s.signal("KILL")

    @pep614(running.upon(_Supervisor.release).to(released))
    def letGo(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        log.info("{name}: pid {pid} left running", name=s.name, pid=s.child.pid)
        waiter.callback(None)

    @pep614(released.upon(_Supervisor.processExited).loop())
    def goneAfterRelease(c: _Supervisor, s: _Core, reason: Failure) -> None:
        s.child = None

    @pep614(released.upon(_Supervisor.start).loop())
    def refuseStartReleased(c: _Supervisor, s: _Core, waiter: Deferred[None]) -> None:
        waiter.errback(ProcessStopping(s.name))

    @pep614(stopping.upon(_Supervisor.processExited).to(stopped))
    def finishedStopping(c: _Supervisor, s: _Core, killing: _Killing, reason: Failure) -> None:
        killing.cancel()
        s.child = None
        log.info("{name}: stopped", name=s.name)
        s.stopWaiters.fire()

    return m.build()


_RestartingMachine = _buildMachine(restart=True)
_OneShotMachine = _buildMachine(restart=False)


class _ChildProtocol(ProcessProtocol):
    """Turns the child's output and exit into machine inputs."""

    def __init__(self, machine: _Supervisor) -> None:
        self._machine = machine
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE:
            lines.append(rest)
        elif rest:
            self._partial[childFD] = rest
        for line in lines:
            self._machine.outputLine(line.rstrip(b"\r"))

    def processEnded(self, reason: Failure) -> None:
        for fd in sorted(self._partial):
            self._machine.outputLine(self._partial.pop(fd))
        self._machine.processExited(reason)


class SupervisedProcess:
    """
    One supervised daemon.

    @param readiness: C{None} (ready once spawned), a callable
        C{readiness(line: bytes) -> bool} over output lines, or what
        L{readyOnOutput} / L{readyWhen} return.
    @param onExit: called with the reason each time a ready child dies
        without C{stop()} having asked it to (deaths of relaunches that never
        became ready are only logged; C{start()}'s Deferred reports a first
        launch that fails).
    @param onReady: called each time a child becomes ready, the first launch
        and every relaunch.
    @param outputPath: send the child's stdout and stderr to this file rather
        than to our log, for daemons that must outlive us.
    @param spawn: C{reactor.spawnProcess} unless given (for tests).
    """

    def __init__(self, reactor, argv: Sequence[str], name: str, env: Optional[dict] = None,
                 readiness=None, launchTimeout: float = 10, restart: bool = True,
                 minBackoff: float = 0.5, maxBackoff: float = 30, stopTimeout: float = 5,
                 onExit: Optional[Callable[[Failure], object]] = None,
                 onReady: Optional[Callable[[], object]] = None,
                 outputPath: Optional[str] = None,
                 spawn: Optional[Callable[..., IProcessTransport]] = None) -> None:
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a non-empty list of strings")
        self.name = name
        factory = _RestartingMachine if restart else _OneShotMachine
        self._core = _Core(
            reactor=reactor, argv=tuple(argv), name=name, env=env,
            readiness=asReadiness(readiness), launchTimeout=launchTimeout,
            minBackoff=minBackoff, maxBackoff=maxBackoff, stopTimeout=stopTimeout,
            onExit=onExit or (lambda reason: None), onReady=onReady or (lambda: None),
            outputPath=outputPath, spawn=spawn or reactor.spawnProcess,
            makeProtocol=lambda: _ChildProtocol(self._machine),
        )
        self._machine: _Supervisor = factory(self._core)

    @property
    def pid(self) -> Optional[int]:
        """The current child's pid, or C{None} while there is none."""
        child = self._core.child
        return None if child is None else child.pid

    def start(self) -> Deferred[None]:
        """Launch; the Deferred fires once the child is ready."""
        waiter: Deferred[None] = Deferred()
        self._machine.start(waiter)
        return waiter

    def stop(self) -> Deferred[None]:
        """TERM, then KILL after C{stopTimeout}; fires once the child exited."""
        waiter: Deferred[None] = Deferred()
        self._machine.stop(waiter)
        return waiter

    def release(self) -> Deferred[None]:
        """
        Let a running child go on after we exit (it is neither watched,
        relaunched nor stopped any more); a child that is not running is
        stopped instead.  Fires once that is done.
        """
        waiter: Deferred[None] = Deferred()
        self._machine.release(waiter)
        return waiter

    def __repr__(self) -> str:
        return f"<SupervisedProcess {self.name} pid={self.pid}>"
