"""
Running commands and processes for the namespace harness, and waiting
without fixed sleeps.
"""

import os
import signal
import subprocess
import time

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()

TERMINATE_GRACE = 3.0


class CommandFailed(subprocess.CalledProcessError):
    """
    A command exited non-zero; unlike its base class, its message carries
    the command's output.
    """

    def __str__(self):
        return (
            f"{super().__str__()}\n"
            f"stdout: {self.stdout!r}\nstderr: {self.stderr!r}"
        )


def runCommand(argv, check=True, timeout=30, input=None):
    """
    Run C{argv} (never through a shell) and capture its text output.

    @raise CommandFailed: if C{check} and it exits non-zero.
    """
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise CommandFailed(
            result.returncode, argv, result.stdout, result.stderr
        )
    return result


#: How much later than the design says a timed thing may happen on a loaded
#: 2-core CI box (other namespace tests, babeld, wireguard-go and the
#: daemons under test sharing two cores) before a bound counts as broken.
LOAD_MARGIN = 2.0


def withMargin(promised):
    """
    The bound a wall-clock duration is checked against: what the design
    promises (C{promised} seconds) plus L{LOAD_MARGIN}.  A bound is a
    deadline that says the mechanism works (one sweep, not none; a
    failover, not a babel reconvergence), never a timing target.
    """
    return promised + LOAD_MARGIN


class _Poll:
    """
    What waiting on a condition is, whether it blocks (L{waitUntil}) or
    lets the reactor run (L{waitFor}): a deadline, a pause between looks,
    the last exception a look raised, and the message at the deadline.
    """

    def __init__(self, timeout, interval, message):
        self.timeout = timeout
        self.interval = interval
        self.message = message
        self.deadline = time.monotonic() + timeout
        self.lastError = None

    def failed(self, error):
        self.lastError = error

    def pause(self):
        """
        How long to wait before the next look; raises C{AssertionError}
        (its cause the last exception a look raised) once the deadline
        has passed.
        """
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"timed out after {self.timeout}s waiting for {self.message}"
            ) from self.lastError
        return min(self.interval, remaining)


def waitUntil(predicate, timeout, interval=0.05, message="condition"):
    """
    Poll C{predicate()} until it returns something truthy and return that,
    blocking (for the harness's synchronous tests; with the reactor
    running, use L{waitFor}).  Exceptions count as falsy; the last one
    becomes the C{__cause__} of the C{AssertionError} raised at the
    deadline.
    """
    poll = _Poll(timeout, interval, message)
    while True:
        try:
            value = predicate()
        except Exception as e:
            value = None
            poll.failed(e)
        if value:
            return value
        time.sleep(poll.pause())


def watchFor(seconds, look, interval=0.05):
    """
    Call C{look()}, which asserts what must hold, every C{interval}
    seconds for C{seconds}: a watch over a while (no flapping, say), not
    a wait; the first failing look ends it.
    """
    deadline = time.monotonic() + seconds
    while True:
        look()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(interval, remaining))


def waitFor(reactor, predicate, timeout=10.0, interval=0.05, message="condition"):
    """
    L{waitUntil} for tests that run the reactor: C{predicate()} may return
    a Deferred, and the reactor runs between looks.  Returns a Deferred
    firing with the first truthy value, or failing with C{AssertionError}
    at the deadline.
    """
    poll = _Poll(timeout, interval, message)

    @defer.inlineCallbacks
    def loop():
        while True:
            try:
                value = yield defer.maybeDeferred(predicate)
            except Exception as e:
                value = None
                poll.failed(e)
            if value:
                return value
            yield task.deferLater(reactor, poll.pause(), lambda: None)

    return loop()


def namespaceInode(ns):
    """
    The identity of the named network namespace C{ns}.
    """
    info = os.stat(os.path.join("/run/netns", ns))
    return info.st_dev, info.st_ino


def pidsInNamespaces(namespaces):
    """
    Processes whose network namespace is one of C{namespaces}, however they
    were started (daemons that detach escape their process group).
    """
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(namespaceInode(ns))
        except OSError:
            pass
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            info = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in inodes:
            pids.append(int(entry))
    return pids


def fileTail(path, size=4000):
    """
    The last C{size} characters of a log file, for error messages.
    """
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:]
    except OSError as e:
        return f"({path}: {e})\n"


def _signalGroup(process, signum):
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def terminate(processes, grace=TERMINATE_GRACE):
    """
    TERM the process groups of C{processes}, KILL what is left after
    C{grace} seconds, and reap them all.
    """
    alive = [p for p in processes if p.poll() is None]
    for process in alive:
        _signalGroup(process, signal.SIGTERM)
    try:
        waitUntil(lambda: all(p.poll() is not None for p in alive), grace,
                  message="processes to exit on TERM")
    except AssertionError:
        for process in alive:
            if process.poll() is None:
                log.warn("killing {argv} (pid {pid}): no exit on TERM",
                         argv=process.args, pid=process.pid)
            # The leader may be gone while others in its group are not.
            _signalGroup(process, signal.SIGKILL)
        for process in alive:
            process.wait(timeout=10)


def killNamespaceProcesses(namespaces, grace=TERMINATE_GRACE):
    """
    TERM, then KILL, every process still inside C{namespaces} (a namespace
    outlives its name while a process holds it).
    """
    pids = pidsInNamespaces(namespaces)
    if not pids:
        return
    log.warn("processes left in {namespaces}: {pids}",
             namespaces=sorted(namespaces), pids=pids)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        try:
            waitUntil(lambda: not pidsInNamespaces(namespaces), grace,
                      message="processes in namespaces to exit")
            return
        except AssertionError:
            pids = pidsInNamespaces(namespaces)
