"""
L{mnigs.client.dns}: what the client wants of the system's resolvers, the
order the changes reach the backend in, the record that outlives a crash,
and the lease's C{dns} as the network sends it.  The backend is a
recording fake (the real ones: tests.unit.test_resolvers).
"""

import json
import os

from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mnigs.client.dns import RECORD_FILE, ResolverKeeper, leaseResolvers
from mnigs.interfaces import IResolverBackend


@implementer(IResolverBackend)
class RecordingBackend:
    """
    Records plan/put/undo; C{hold} makes puts and undos wait until
    L{release}.
    """

    needsOwnDevice = False

    def __init__(self, events, mode="hook", hold=False):
        self.events = events
        self.mode = mode
        self.hold = hold
        self.waiting = []

    def plan(self, device, servers, previous):
        return {"mode": self.mode, "device": device, "servers": list(servers), "hook": "/h",
                "name": device + ".mnigs"}

    def _op(self, *event):
        self.events.append(event)
        if not self.hold:
            return defer.succeed(None)
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def put(self, record, previous):
        return self._op("put", self.mode, record["device"], tuple(record["servers"]),
                        previous and previous["device"])

    def undo(self, record):
        return self._op("undo", record["mode"], record["device"])

    def release(self):
        "Let the change under way finish (the next one may then start)."
        self.waiting.pop(0).callback(None)


class KeeperTests(SynchronousTestCase):
    def setUp(self):
        self.stateDir = os.path.abspath(self.mktemp())
        os.makedirs(self.stateDir)
        self.events = []
        self.backend = RecordingBackend(self.events)
        self.keeper = self.makeKeeper()

    def makeKeeper(self, backend=None, hold=False):
        backend = backend or self.backend
        others = {}

        def backendFor(mode):
            if mode == backend.mode:
                return backend
            return others.setdefault(mode, RecordingBackend(self.events, mode))

        return ResolverKeeper(backend, self.stateDir, backendFor)

    def record(self):
        path = os.path.join(self.stateDir, RECORD_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def test_onlineThenOffline(self):
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.assertEqual(self.record()["servers"], ["198.51.100.7"])
        self.assertEqual(self.keeper.describe(),
                         {"mode": "hook", "servers": ["198.51.100.7"], "device": "mnigs-c0"})
        self.keeper.offline()
        self.keeper.offline()
        self.assertEqual(self.events, [("put", "hook", "mnigs-c0", ("198.51.100.7",), None),
                                       ("undo", "hook", "mnigs-c0")])
        self.assertIsNone(self.record())
        self.assertEqual(self.keeper.describe()["servers"], [])

    def test_aFailoverReplacesWithoutRestoringBetween(self):
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.online("mnigs-c0", True, ("198.51.100.8",), "gwB")
        self.keeper.offline()
        self.assertEqual(self.events, [
            ("put", "hook", "mnigs-c0", ("198.51.100.7",), None),
            ("put", "hook", "mnigs-c0", ("198.51.100.8",), "mnigs-c0"),
            ("undo", "hook", "mnigs-c0")])

    def test_theSameResolversAreAppliedToEachNewSession(self):
        # The new session's device has the old one's name but is a new
        # link: systemd-resolved forgot the old link's settings with it.
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwB")
        self.assertEqual(self.events, [
            ("put", "hook", "mnigs-c0", ("198.51.100.7",), None),
            ("put", "hook", "mnigs-c0", ("198.51.100.7",), "mnigs-c0")])

    def test_aLeaseWithoutResolversBringsTheOriginalsBack(self):
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.online("mnigs-c0", True, (), "gwB")
        self.assertEqual(self.events[-1], ("undo", "hook", "mnigs-c0"))
        self.assertIsNone(self.record())

    def test_aPerLinkBackendLeavesForwardAlone(self):
        self.backend.needsOwnDevice = True
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.online("m0", False, ("198.51.100.8",), "gwB")
        self.assertEqual(self.events, [("put", "hook", "mnigs-c0", ("198.51.100.7",), None),
                                       ("undo", "hook", "mnigs-c0")])

    def test_offAppliesNothing(self):
        keeper = ResolverKeeper(None, self.stateDir, lambda mode: self.backend)
        keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        keeper.offline()
        self.assertEqual(self.events, [])
        self.assertEqual(keeper.describe()["mode"], "off")

    def test_changesQueueInTheOrderAsked(self):
        # Going offline and online again while the backend is still busy:
        # each change runs on what the previous one left.
        self.backend.hold = True
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.offline()
        self.keeper.online("mnigs-c0", True, ("198.51.100.8",), "gwB")
        settled = self.keeper.settled()
        self.assertEqual(len(self.events), 1)
        self.assertNoResult(settled)
        while self.backend.waiting:
            self.backend.release()
        self.successResultOf(settled)
        self.assertEqual(self.events, [
            ("put", "hook", "mnigs-c0", ("198.51.100.7",), None),
            ("undo", "hook", "mnigs-c0"),
            ("put", "hook", "mnigs-c0", ("198.51.100.8",), None)])
        self.assertEqual(self.record()["servers"], ["198.51.100.8"])

    def test_theRecordIsWrittenBeforeTheSystemChanges(self):
        self.backend.hold = True
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.assertEqual(self.record()["servers"], ["198.51.100.7"])  # put still running
        self.keeper.offline()
        self.backend.release()
        self.assertIsNotNone(self.record())  # undo still running
        self.backend.release()
        self.assertIsNone(self.record())

    def test_aFailedChangeIsLoggedAndTheNextStillRuns(self):
        errors = []

        def observe(event):
            if event["log_level"] == LogLevel.error:
                errors.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.backend.put = lambda record, previous: defer.fail(RuntimeError("hook exited 1"))
        self.keeper.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        self.keeper.offline()
        self.assertEqual(self.events, [("undo", "hook", "mnigs-c0")])
        self.assertEqual(len(errors), 1)
        self.assertIn("hook exited 1", errors[0]["why"])


class RecoveryTests(KeeperTests.__base__):
    """A client that crashed while its resolvers were in force."""

    setUp = KeeperTests.setUp
    makeKeeper = KeeperTests.makeKeeper
    record = KeeperTests.record

    def crashWithResolversInForce(self, mode="hook"):
        crashed = self.makeKeeper(RecordingBackend(self.events, mode))
        crashed.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        del self.events[:]
        return self.record()

    def test_aRestartUndoesWhatTheCrashedRunLeft(self):
        left = self.crashWithResolversInForce()
        self.assertIsNotNone(left)
        self.successResultOf(self.makeKeeper().recover())
        self.assertEqual(self.events, [("undo", "hook", "mnigs-c0")])
        self.assertIsNone(self.record())

    def test_aRecordOfAnotherModeIsUndoneItsOwnWay(self):
        self.crashWithResolversInForce("resolvconf")
        keeper = self.makeKeeper()
        keeper.recover()
        keeper.online("mnigs-c0", True, ("198.51.100.8",), "gwB")
        self.assertEqual(self.events, [("undo", "resolvconf", "mnigs-c0"),
                                       ("put", "hook", "mnigs-c0", ("198.51.100.8",), None)])

    def test_nothingLeftNothingDone(self):
        self.successResultOf(self.keeper.recover())
        self.assertEqual(self.events, [])

    def test_aRecordThatDoesNotCheckIsKeptAsideAndLogged(self):
        with open(os.path.join(self.stateDir, RECORD_FILE), "w") as f:
            json.dump({"mode": "hook", "device": "-rf", "servers": [], "hook": "/h"}, f)
        self.successResultOf(self.keeper.recover())
        self.assertEqual(self.events, [])
        kept = [name for name in os.listdir(self.stateDir) if ".corrupt-" in name]
        self.assertEqual(len(kept), 1)
        self.flushLoggedErrors()

    def test_aRealFileComesBackAfterACrash(self):
        from mnigs.system.resolvers import ResolvFile, makeBackend

        path = os.path.join(self.stateDir, "resolv.conf")
        with open(path, "wb") as f:
            f.write(b"nameserver 10.99.0.1\n")
        os.chmod(path, 0o604)
        crashed = ResolverKeeper(ResolvFile(path), self.stateDir, lambda mode: None)
        crashed.online("mnigs-c0", True, ("198.51.100.7",), "gwA")
        with open(path, "rb") as f:
            self.assertIn(b"198.51.100.7", f.read())
        restarted = ResolverKeeper(None, self.stateDir,
                                   lambda mode: makeBackend(mode, None, file="/elsewhere"))
        self.successResultOf(restarted.recover())
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"nameserver 10.99.0.1\n")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o604)
        self.assertIsNone(self.record())


class LeaseResolversTests(SynchronousTestCase):
    def test_checkedFromTheLease(self):
        self.assertEqual(leaseResolvers({"config": {"dns": ["198.51.100.7"]}}, "gwA"),
                         ("198.51.100.7",))
        self.assertEqual(leaseResolvers({"config": {}}, "gwA"), ())

    def test_hostileOnesAreRefusedWithAWarning(self):
        warnings = []

        def observe(event):
            if event["log_level"] == LogLevel.warn:
                warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for dns in ("198.51.100.7", ["198.51.100.7\nsearch evil"], ["127.0.0.1"],
                    ["198.51.100.1"] * 9, [{"x": 1}]):
            self.assertEqual(leaseResolvers({"config": {"dns": dns}}, "gwA"), ())
        self.assertEqual(len(warnings), 5)
        self.assertEqual(warnings[1]["gateway"], "gwA")
        self.assertIn("is not an IP address", warnings[1]["why"])
        self.assertNotIn("\n", warnings[1]["why"])


class ClientConfigTests(SynchronousTestCase):
    def load(self, text):
        from mnigs.client.config import loadClientConfig

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return loadClientConfig(path)

    def test_defaults(self):
        config = self.load("")
        self.assertEqual((config.dns.mode, config.dns.file, config.dns.hook),
                         ("auto", "/etc/resolv.conf", ""))

    def test_aHookModeNeedsItsHook(self):
        from mnigs.daemon.config import ConfigError

        e = self.assertRaises(ConfigError, self.load, '[dns]\nmode = "hook"\n')
        self.assertEqual(e.key, "dns.hook")
        e = self.assertRaises(ConfigError, self.load, '[dns]\nmode = "dhcp"\n')
        self.assertEqual(e.key, "dns.mode")
        e = self.assertRaises(ConfigError, self.load, '[dns]\nfile = "resolv.conf"\n')
        self.assertEqual(e.key, "dns.file")
        e = self.assertRaises(ConfigError, self.load, '[dns]\nhook = "/nonexistent/hook"\n')
        self.assertEqual(e.key, "dns.hook")


class StatusTests(SynchronousTestCase):
    def test_mnigsctlShowsTheResolversInForce(self):
        from mnigs.cli.ctl import formatStatus

        text = formatStatus({"state": "online", "gateways": [],
                             "dns": {"mode": "file", "servers": ["198.51.100.7", "2001:db8::53"],
                                     "device": "mnigs-c0"}})
        self.assertIn("\ndns: 198.51.100.7, 2001:db8::53 (file, through mnigs-c0)", text)
        text = formatStatus({"state": "searching", "gateways": [],
                             "dns": {"mode": "file", "servers": [], "device": None}})
        self.assertNotIn("dns:", text)
