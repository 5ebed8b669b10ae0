"""
SIGHUP reload (L{mnigs.daemon.reload}): which keys changed, which of them may
change live, and a L{Reloader} over the real config loaders and real files.
"""

import os
import shutil
import signal
import tempfile

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.reload import Reloader, changedKeys, handleSIGHUP, refusedKeys
from mnigs.server.config import loadServerConfig
from mnigs.server.service import GatewayService
from mnigs.client.service import ClientService

SERVER = """
[server]
state_dir = "/var/lib/x"
[rpc]
port = {port}
[uplink]
interface = "up0"
[terms]
max_clients = {maxClients}
[terms.fee]
amount = "{fee}"
currency = "EUR"
[methods.forward]
"""


class ChangedKeysTests(SynchronousTestCase):
    def test_nestedChangesAreNamedByDottedKey(self):
        old = {"a": 1, "t": {"x": 1, "fee": {"amount": "1"}}, "gone": 2}
        new = {"a": 1, "t": {"x": 2, "fee": {"amount": "2"}}, "added": 3}
        self.assertEqual(changedKeys(old, new), ["added", "gone", "t.fee.amount", "t.x"])
        self.assertEqual(changedKeys(old, dict(old)), [])

    def test_liveSectionsCoverTheirKeysOnly(self):
        self.assertEqual(refusedKeys(["terms.fee.amount", "terms", "termsx", "rpc.port"],
                                     ("terms", "log.level")), ["termsx", "rpc.port"])


class ReloaderTests(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "server.toml")
        self.write(port=8150, maxClients=8, fee="1.00")
        self.running = loadServerConfig(self.path)
        self.applied = []

    def write(self, **values):
        with open(self.path, "w") as f:
            f.write(SERVER.format(**values))

    def reloader(self):
        def apply(new, changed):
            self.applied.append(changed)
            self.running = new
        return Reloader(self.path, loadServerConfig, lambda: self.running, apply,
                        GatewayService.LIVE_KEYS)

    def test_termsChangeLive(self):
        self.write(port=8150, maxClients=16, fee="2.50")
        with capturedLogs() as events:
            self.assertTrue(self.reloader().reload())
        self.assertEqual(self.applied, [["terms.fee.amount", "terms.max_clients"]])
        self.assertEqual(self.running.terms.max_clients, 16)
        self.assertIn("reloaded", events[-1]["log_format"])

    def test_aPortChangeIsRefusedNamingTheKeyAndNothingChanges(self):
        self.write(port=8151, maxClients=16, fee="1.00")
        with capturedLogs() as events:
            self.assertFalse(self.reloader().reload())
        self.assertEqual(self.applied, [])
        self.assertEqual(self.running.rpc.port, 8150)
        self.assertEqual(self.running.terms.max_clients, 8)
        [refusal] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(refusal["key"], "rpc.port")
        self.assertEqual(refusal["path"], self.path)

    def test_aBrokenFileIsRefusedWithTheLoadersMessage(self):
        with open(self.path, "a") as f:
            f.write("[terms]\nmax_clients = -1\n")
        with capturedLogs() as events:
            self.assertFalse(self.reloader().reload())
        self.assertEqual(self.applied, [])
        self.assertIn(self.path, events[-1]["error"])

    def test_clientPolicyAndHealthAreLiveItsMethodsAreNot(self):
        self.assertEqual(refusedKeys(["policy.blocked", "health.interval", "methods.order"],
                                     ClientService.LIVE_KEYS), ["methods.order"])
        path = os.path.join(self.dir, "client.toml")
        with open(path, "w") as f:
            f.write("[policy]\nblocked = []\n")
        self.assertEqual(loadClientConfig(path).policy.blocked, frozenset())


class SIGHUPTests(SynchronousTestCase):
    def test_sighupCallsBackInTheReactorAndTheOldHandlerComesBack(self):
        before = signal.getsignal(signal.SIGHUP)
        calls = []

        class Reactor(Clock):
            def callFromThread(self, f, *args):
                calls.append(f)

        restore = handleSIGHUP(Reactor(), lambda: None)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            restore()
        self.assertEqual(len(calls), 1)
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)


class ApplyLogLevelTests(SynchronousTestCase):
    """
    An accepted reload puts the new C{log.level} in force through the filter
    the tap gave the service (the service's other parts are stand-ins).
    """

    def test_serverAppliesTheLevel(self):
        from types import SimpleNamespace

        from mnigs.daemon.daemonlog import LevelFilter
        from mnigs.server.leases import LeaseBook

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "server.toml")
        with open(path, "w") as f:
            f.write(SERVER.format(port=8150, maxClients=5, fee="1.00") + '[log]\nlevel = "debug"\n')
        config = loadServerConfig(path)
        levelFilter = LevelFilter("info")
        offers = SimpleNamespace(setTerms=lambda terms: setattr(offers, "terms", terms))
        service = SimpleNamespace(book=LeaseBook(8, 600), offers=offers, levelFilter=levelFilter)
        GatewayService.applyConfig(service, config, ["log.level", "terms.max_clients"])
        self.assertEqual((levelFilter.level, service.book.maxClients, offers.terms["max_clients"]),
                         ("debug", 5, 5))
