"""
Tests for L{mnigs.system.process}: the supervision machine against a fake spawner
and a clock, and a few runs against the real reactor with real children.
"""

import os
import signal
import sys

from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mnigs.system.command import CommandTimeout, runCommand
from mnigs.system.process import (
    LaunchCancelled,
    LaunchTimeout,
    ProcessExitedEarly,
    ProcessStopping,
    SupervisedProcess,
    readyOnOutput,
    readyWhen,
)
from tests.unit.fakeprocess import FakeSpawner


class SupervisedProcessTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.spawner = FakeSpawner()
        self.events = []

    def make(self, **kw):
        kw.setdefault("onExit", lambda reason: self.events.append(("exit", reason)))
        kw.setdefault("onReady", lambda: self.events.append(("ready",)))
        return SupervisedProcess(self.reactor, ["daemon", "-f", "x"], "daemon",
                                 spawn=self.spawner, **kw)

    def test_readyOnSpawnFiresStartAtOnce(self):
        proc = self.make(env={"A": "1"})
        self.assertIsNone(self.successResultOf(proc.start()))
        [call] = self.spawner.spawned
        self.assertEqual(call["executable"], "daemon")
        self.assertEqual(call["args"], ["daemon", "-f", "x"])
        self.assertEqual(call["env"], {"A": "1"})
        self.assertEqual(call["childFDs"], {0: "w", 1: "r", 2: "r"})
        self.assertTrue(call["process"].stdinClosed)
        self.assertEqual(proc.pid, 101)
        self.assertEqual(self.events, [("ready",)])

    def test_startWhenRunningFiresAtOnceWithoutSpawning(self):
        proc = self.make()
        proc.start()
        self.successResultOf(proc.start())
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_readyOnOutputWaitsForTheLineEvenWhenSplit(self):
        proc = self.make(readiness=lambda line: line == b"listening")
        d = proc.start()
        self.spawner.last.output(b"starting\nlis")
        self.assertNoResult(d)
        self.spawner.last.output(b"listening-not\n", fd=2)
        self.assertNoResult(d)
        self.spawner.last.output(b"tening\r\n")
        self.successResultOf(d)

    def test_readyOnOutputHelper(self):
        proc = self.make(readiness=readyOnOutput(lambda line: b"ok" in line))
        d = proc.start()
        self.assertNoResult(d)
        self.spawner.last.output(b"all ok\n")
        self.successResultOf(d)

    def test_pollReadinessAsksUntilTrue(self):
        answers = [defer.fail(OSError("refused")), defer.succeed(False), defer.succeed(True)]
        asked = []

        def check():
            asked.append(self.reactor.seconds())
            return answers.pop(0)

        proc = self.make(readiness=readyWhen(check, interval=0.25))
        d = proc.start()
        self.reactor.advance(0)
        self.reactor.advance(0.25)
        self.assertNoResult(d)
        self.reactor.advance(0.25)
        self.successResultOf(d)
        self.assertEqual(asked, [0, 0.25, 0.5])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_launchTimeoutFailsStartThenTerminates(self):
        proc = self.make(readiness=lambda line: False, launchTimeout=3, stopTimeout=2)
        d = proc.start()
        self.reactor.advance(3)
        self.failureResultOf(d, LaunchTimeout)
        child = self.spawner.last
        self.assertEqual(child.signals, ["TERM"])
        self.reactor.advance(2)
        self.assertEqual(child.signals, ["TERM", "KILL"])
        child.end(sig=9)
        self.assertIsNone(proc.pid)
        self.assertEqual(self.events, [])
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exitBeforeReadyFailsStartWithoutRestart(self):
        proc = self.make(readiness=lambda line: False)
        d = proc.start()
        self.spawner.last.end(code=1)
        f = self.failureResultOf(d, ProcessExitedEarly)
        self.assertIsInstance(f.value.args[1].value, ProcessTerminated)
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(self.events, [])

    def test_spawnErrorFailsStart(self):
        self.spawner.fail = OSError("no fork")
        proc = self.make()
        self.failureResultOf(proc.start(), ProcessExitedEarly)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_deathRestartsWithExponentialBackoff(self):
        proc = self.make(minBackoff=0.5, maxBackoff=2)
        proc.start()
        delays = []
        for attempt in range(5):
            self.spawner.last.end(code=2)
            self.assertIsNone(proc.pid)
            [call] = self.reactor.getDelayedCalls()
            delays.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
            self.assertEqual(len(self.spawner.spawned), attempt + 2)
        self.assertEqual(delays, [0.5, 1, 2, 2, 2])
        self.assertEqual([e[0] for e in self.events], ["ready"] + ["exit", "ready"] * 5)
        self.assertIsInstance(self.events[1][1].value, ProcessTerminated)

    def test_backoffStartsAfreshAfterAStableRun(self):
        proc = self.make(minBackoff=0.5, maxBackoff=4)
        proc.start()
        self.spawner.last.end(code=2)
        self.reactor.advance(0.5)
        self.spawner.last.end(code=2)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), 1)
        self.reactor.advance(1)
        self.reactor.advance(10)  # ran longer than maxBackoff
        self.spawner.last.end(code=2)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), 0.5)

    def test_relaunchThatNeverGetsReadyIsKilledAndRetried(self):
        proc = self.make(readiness=lambda line: line == b"up", launchTimeout=5,
                         stopTimeout=1, minBackoff=1)
        proc.start()
        self.spawner.last.output(b"up\n")
        self.spawner.last.end(code=1)
        self.reactor.advance(1)
        stuck = self.spawner.last
        self.reactor.advance(5)
        self.assertEqual(stuck.signals, ["TERM"])
        self.reactor.advance(1)
        self.assertEqual(stuck.signals, ["TERM", "KILL"])
        stuck.end(sig=9)
        self.reactor.advance(2)
        self.assertEqual(len(self.spawner.spawned), 3)
        d = proc.start()
        self.assertNoResult(d)
        self.spawner.last.output(b"up\n")
        self.successResultOf(d)
        self.assertEqual([e[0] for e in self.events], ["ready", "exit", "ready"])

    def test_noRestartWhenAskedNot(self):
        proc = self.make(restart=False)
        proc.start()
        self.spawner.last.end(code=3)
        self.assertEqual([e[0] for e in self.events], ["ready", "exit"])
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.successResultOf(proc.start())
        self.assertEqual(len(self.spawner.spawned), 2)

    def test_stopSendsTermThenKill(self):
        proc = self.make(stopTimeout=5)
        proc.start()
        child = self.spawner.last
        d = proc.stop()
        self.assertEqual(child.signals, ["TERM"])
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(child.signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        child.end(sig=9)
        self.successResultOf(d)
        self.assertIsNone(proc.pid)
        self.assertEqual(self.events, [("ready",)])
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_stopFiresWhenTermSuffices(self):
        proc = self.make()
        proc.start()
        d1, d2 = proc.stop(), proc.stop()
        self.spawner.last.end(sig=15)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(self.spawner.last.signals, ["TERM"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.successResultOf(proc.stop())

    def test_stopBeforeStartIsImmediate(self):
        self.successResultOf(self.make().stop())

    def test_stopDuringLaunchCancelsStart(self):
        proc = self.make(readiness=lambda line: False)
        started = proc.start()
        stopped = proc.stop()
        self.failureResultOf(started, LaunchCancelled)
        self.spawner.last.end(sig=15)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopDuringBackoffCancelsRelaunch(self):
        proc = self.make()
        proc.start()
        self.spawner.last.end(code=1)
        waiting = proc.start()
        self.successResultOf(proc.stop())
        self.failureResultOf(waiting, LaunchCancelled)
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_startWhileStoppingFails(self):
        proc = self.make()
        proc.start()
        proc.stop()
        self.failureResultOf(proc.start(), ProcessStopping)

    def test_ownerMayStopFromItsExitCallback(self):
        stops = []
        proc = None

        def onExit(reason):
            stops.append(proc.stop())

        proc = self.make(onExit=onExit)
        proc.start()
        self.spawner.last.end(code=1)
        self.successResultOf(stops[0])
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_releaseLeavesARunningChildAloneForGood(self):
        proc = self.make()
        proc.start()
        child = self.spawner.last
        self.successResultOf(proc.release())
        self.assertEqual(child.signals, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # Whatever it does now is not ours: no relaunch, no owner callback,
        # no start, and stop has nothing to signal.
        child.end(code=1)
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(self.events, [("ready",)])
        self.failureResultOf(proc.start(), ProcessStopping)
        self.successResultOf(proc.stop())
        self.successResultOf(proc.release())

    def test_releaseDuringLaunchStopsTheHalfStartedChild(self):
        proc = self.make(readiness=lambda line: False)
        started = proc.start()
        released = proc.release()
        self.failureResultOf(started, LaunchCancelled)
        self.assertEqual(self.spawner.last.signals, ["TERM"])
        self.spawner.last.end(sig=15)
        self.successResultOf(released)

    def test_releaseDuringBackoffCancelsTheRelaunch(self):
        proc = self.make()
        proc.start()
        self.spawner.last.end(code=1)
        self.successResultOf(proc.release())
        self.reactor.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_outputPathGivesTheChildAFile(self):
        path = self.mktemp()
        proc = self.make(outputPath=path)
        proc.start()
        fds = self.spawner.spawned[0]["childFDs"]
        self.assertEqual(fds[0], "w")
        self.assertIsInstance(fds[1], int)
        self.assertEqual(fds[1], fds[2])
        self.assertTrue(os.path.exists(path))

    def test_rejectsNonListArgv(self):
        self.assertRaises(ValueError, SupervisedProcess, self.reactor, "sleep 1", "x")
        self.assertRaises(ValueError, SupervisedProcess, self.reactor, [], "x")


class RunCommandTests(SynchronousTestCase):
    def test_feedsStdinAndReportsExit(self):
        reactor = MemoryReactorClock()
        spawner = FakeSpawner()
        d = runCommand(reactor, ["nft", "-f", "-"], stdin=b"flush ruleset\n", spawn=spawner)
        child = spawner.last
        self.assertEqual(child.written, [b"flush ruleset\n"])
        self.assertTrue(child.stdinClosed)
        child.output(b"out")
        child.output(b"Error: bad\n", fd=2)
        child.end(code=1)
        result = self.successResultOf(d)
        self.assertEqual((result.exitCode, result.stdout, result.stderr),
                         (1, b"out", b"Error: bad\n"))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_killsAfterTimeout(self):
        reactor = MemoryReactorClock()
        spawner = FakeSpawner()
        d = runCommand(reactor, ["slow"], timeout=2, spawn=spawner)
        reactor.advance(2)
        self.assertEqual(spawner.last.signals, ["KILL"])
        spawner.last.end(sig=9)
        self.failureResultOf(d, CommandTimeout)


CHILD = r"""
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *a: sys.exit(3))
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class RealChildTests(TestCase):
    """Real processes on the real reactor: restart, TERM and KILL."""

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor

    def supervise(self, mode, **kw):
        events = {"ready": defer.DeferredQueue(), "exit": defer.DeferredQueue()}
        proc = SupervisedProcess(
            self.reactor, [sys.executable, "-c", CHILD, mode], "child-" + mode,
            env=None, readiness=lambda line: line == b"ready", launchTimeout=10,
            minBackoff=0.1, onReady=lambda: events["ready"].put(proc.pid),
            onExit=lambda reason: events["exit"].put(reason.value), **kw)
        self.addCleanup(proc.stop)
        return proc, events

    @defer.inlineCallbacks
    def test_restartsAChildThatDies(self):
        proc, events = self.supervise("polite")
        yield proc.start()
        first = yield events["ready"].get()
        os.kill(first, signal.SIGUSR1)
        reason = yield events["exit"].get()
        self.assertEqual(reason.exitCode, 3)
        second = yield events["ready"].get()
        self.assertNotEqual(first, second)
        self.assertEqual(proc.pid, second)
        yield proc.stop()
        self.assertIsNone(proc.pid)
        self.assertFalse(_alive(second))

    @defer.inlineCallbacks
    def test_killsAChildThatIgnoresTerm(self):
        proc, events = self.supervise("stubborn", stopTimeout=0.5)
        yield proc.start()
        pid = proc.pid
        started = self.reactor.seconds()
        yield proc.stop()
        self.assertGreaterEqual(self.reactor.seconds() - started, 0.45)
        self.assertFalse(_alive(pid))
        self.assertEqual(events["exit"].pending, [])

    @defer.inlineCallbacks
    def test_termStopsSleep(self):
        proc = SupervisedProcess(self.reactor, ["sleep", "60"], "sleep", env=None)
        self.addCleanup(proc.stop)
        yield proc.start()
        pid = proc.pid
        started = self.reactor.seconds()
        yield proc.stop()
        self.assertLess(self.reactor.seconds() - started, 4)
        self.assertFalse(_alive(pid))

    @defer.inlineCallbacks
    def test_runCommandReal(self):
        result = yield runCommand(self.reactor, ["cat"], stdin=b"hello")
        self.assertEqual((result.exitCode, result.stdout), (0, b"hello"))
        result = yield runCommand(self.reactor, [sys.executable, "-c", "raise SystemExit(4)"])
        self.assertEqual(result.exitCode, 4)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
