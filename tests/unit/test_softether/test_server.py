"""
Tests for L{mnigs.softether.server}: launching through the launcher,
readiness as "answers and is configured", reconciling after a relaunch,
and users coming and going, against L{FakeVpnServer} (vpncmd's answers)
and a fake spawner, on a L{Clock}.
"""

import ipaddress
import os
import shutil
import stat
import tempfile

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.process import LaunchTimeout
from mnigs.softether import hub as h
from mnigs.softether.server import NotReady, SoftEtherServer, VpncmdFailed, certificateFingerprint
from tests.unit.fakeprocess import FakeSpawner
from tests.unit.test_softether.fakeserver import FakeNetlink, FakeVpnServer

TAP_ADDRESS = ipaddress.ip_interface("100.66.0.1/24")


def user(n):
    return h.HubUser(h.userName(f"lease-{n}"), f"password-{n}-xxxxxxxx",
                     ipaddress.ip_address(f"100.66.0.{n + 1}"))


class ServerTests(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.join(tempfile.mkdtemp(), "softether")
        self.addCleanup(shutil.rmtree, os.path.dirname(self.directory), ignore_errors=True)
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.fake = FakeVpnServer()
        self.netlink = FakeNetlink()
        self.deaths, self.readies, self.probed = [], [], []

    def makeServer(self, port=5555, **kw):
        return SoftEtherServer(self.clock, self.directory, port, "mnigs", "se0", TAP_ADDRESS,
                               self.netlink, python="/py", vpnserver="/vpnserver",
                               vpncmd="/vpncmd", spawn=self.spawner, run=self.fake,
                               onDeath=self.deaths.append,
                               onReady=lambda: self.readies.append(self.clock.seconds()),
                               portOpen=self.portOpen, **kw)

    def portOpen(self, reactor, host, port):
        self.probed.append(port)
        if self.fake.restarting:
            # The old engine's listener closes at the first look; the new
            # engine listens at the next.
            self.fake.restarting = "closed" if self.fake.restarting is True else False
            return defer.succeed(False)
        return defer.succeed(self.fake.up and port in self.fake.listeners)

    def startServer(self, server):
        self.netlink.add("tap_se0")
        d = server.start()
        # A fresh server restarts once, hardened: its listener closes, then
        # the new engine listens again.
        self.clock.pump([0, 0.25, 0.25])
        return self.successResultOf(d)

    def test_launchedThroughTheLauncherWithoutAShell(self):
        server = self.makeServer()
        self.startServer(server)
        [spawned] = self.spawner.spawned
        self.assertEqual(spawned["args"],
                         ["/py", "-m", "mnigs.softether.launch",
                          os.path.join(self.directory, "root"), "/vpnserver", "start",
                          "--foreground"])
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        password = os.path.join(self.directory, "admin-password")
        self.assertEqual(stat.S_IMODE(os.stat(password).st_mode), 0o600)

    def test_administrationOnlyFromLoopbackBeforeTheFirstLaunch(self):
        server = self.makeServer()
        server.start()
        with open(os.path.join(self.directory, "root", "lib", "adminip.txt")) as f:
            self.assertEqual(f.read(), "127.0.0.1/32\n::1/128\n")

    def test_aFreshServerIsConfiguredBeforeItCountsAsReady(self):
        server = self.makeServer()
        server.setUsers([user(1)])
        self.startServer(server)
        fake = self.fake
        with open(os.path.join(self.directory, "admin-password")) as f:
            self.assertEqual(fake.password, f.read().strip())
        self.assertEqual(fake.listeners, {5555})
        self.assertEqual(set(fake.hubs), {"mnigs"})
        self.assertEqual(fake.bridges, {("mnigs", "se0")})
        self.assertEqual(fake.settings, {"PortsUDPSet 0", "OpenVPN Enabled=false",
                                         "SSTP Enabled=false", "KeepDisable",
                                         "SecureNatDisable"})
        self.assertEqual(fake.users, {user(1).name: user(1).password})
        self.assertEqual(fake.policies[user(1).name],
                         {"MultiLogins": "1", "PrivacyFilter": "yes", "FilterIPv6": "yes",
                          "DHCPNoServer": "yes"})
        self.assertEqual(len(fake.rulesOf(user(1).name)), 6)
        self.assertEqual(self.netlink.links["tap_se0"],
                         {"up": True, "addresses": [TAP_ADDRESS]})
        self.assertEqual(server.certificate, fake.certificate)
        self.assertEqual(self.readies, [0.5])

    def test_aFreshServerIsHardenedThroughItsConfigurationOnce(self):
        server = self.makeServer()
        self.startServer(server)
        self.assertEqual(self.fake.restarts, 1)
        self.assertIn("\t\tbool Disabled true\n", self.fake.config)
        for setting in ("DisableJsonRpcWebApi true", "DisableNatTraversal true",
                        "Tls_Disable1_0 true", "Tls_Disable1_1 true", "UseKeepConnect false"):
            self.assertIn(f"\t\tbool {setting}\n", self.fake.config)
        self.assertTrue(self.fake.config.startswith("\ufeff"))
        self.assertEqual([f for f in os.listdir(server.scratch) if f != "server.pem"], [])
        self.startServer(self.makeServer())
        self.assertEqual(self.fake.restarts, 1)

    def test_noSecretOnAnyCommandLine(self):
        server = self.makeServer()
        server.setUsers([user(1)])
        self.startServer(server)
        lines = " ".join(line for batch in self.fake.batches for line in batch["lines"])
        self.assertNotIn(server.adminPassword, lines)
        self.assertNotIn(user(1).password, lines)
        self.assertNotIn(server.adminPassword, " ".join(self.spawner.spawned[0]["args"]))

    def test_anotherPortIsReachedThroughTheBootstrapListener(self):
        server = self.makeServer(port=5600)
        self.startServer(server)
        self.assertEqual(self.fake.listeners, {5600})
        self.assertEqual(self.probed[:2], [5600, 5555])
        # Password, listings and settings through the bootstrap listener;
        # the rest through ours.
        self.assertEqual([b["port"] for b in self.fake.batches[:4]], [5555] * 3 + [5600])
        self.assertEqual(self.fake.batches[-1]["port"], 5600)

    def test_anAlreadyConfiguredServerIsLeftAlone(self):
        self.startServer(self.makeServer())
        before = len(self.fake.batches)
        server = self.makeServer()
        server.start()
        self.clock.advance(0)
        creations = [line for batch in self.fake.batches[before:] for line in batch["lines"]
                     if line.split(" ")[0] in ("HubCreate", "BridgeCreate", "ListenerCreate",
                                               "ListenerDelete", "HubDelete")]
        self.assertEqual(creations, [])

    def test_aTapThatNeverAppearsIsALaunchTimeout(self):
        server = self.makeServer(launchTimeout=5)
        d = server.start()
        self.clock.pump([0.05] * 120)
        self.failureResultOf(d, LaunchTimeout)

    def test_aWrongAdminPasswordIsNotReady(self):
        self.fake.password = "somebody-else's"
        server = self.makeServer(launchTimeout=3)
        self.netlink.add("tap_se0")
        d = server.start()
        self.clock.pump([0.25] * 16)
        self.failureResultOf(d, LaunchTimeout)
        self.assertEqual(self.fake.users, {})

    def test_addAndRemoveUsers(self):
        server = self.makeServer()
        self.startServer(server)
        self.successResultOf(server.addUser(user(1)))
        self.successResultOf(server.addUser(user(2)))
        self.assertEqual(set(self.fake.users), {user(1).name, user(2).name})
        session = self.fake.connect(user(1).name)
        self.fake.connect(user(2).name)
        self.successResultOf(server.removeUser(user(1).name))
        self.assertEqual(set(self.fake.users), {user(2).name})
        self.assertEqual(self.fake.rulesOf(user(1).name), [])
        self.assertEqual(len(self.fake.rulesOf(user(2).name)), 6)
        self.assertNotIn(session, [s for s, _ in self.fake.sessions])
        self.assertEqual([u for _, u in self.fake.sessions], [user(2).name])
        self.assertEqual(set(server.users), {user(2).name})

    def test_removingAUserThatIsGoneIsFine(self):
        server = self.makeServer()
        self.startServer(server)
        self.successResultOf(server.removeUser(user(3).name))

    def test_aLeftoverUserIsReplaced(self):
        server = self.makeServer()
        self.startServer(server)
        self.fake.users[user(1).name] = "old password"
        self.fake.rules.append(("5", "mnigs:" + user(1).name, "old rule"))
        self.successResultOf(server.addUser(user(1)))
        self.assertEqual(self.fake.users[user(1).name], user(1).password)
        self.assertNotIn("old rule", self.fake.rulesOf(user(1).name))
        self.assertEqual(len(self.fake.rulesOf(user(1).name)), 6)

    def test_addingFailsWhenTheServerIsDown(self):
        """
        Down before its death is noticed: adding is not ready; removing
        says what failed (the user is no longer wanted either way).
        """
        server = self.makeServer()
        self.startServer(server)
        self.fake.up = False
        self.failureResultOf(server.addUser(user(1)), NotReady)
        self.failureResultOf(server.removeUser(user(1).name), VpncmdFailed)
        self.assertEqual(server.users, {})

    def created(self, name):
        return [batch for batch in self.fake.batches
                for line in batch["lines"] if line.startswith(f"UserCreate {name} ")]

    def crash(self, server):
        self.fake.crash(keepConfig=False)
        self.spawner.last.end(sig=9, code=None)
        self.assertEqual(server.describe()["state"], "configuring")

    def test_addingWaitsForTheRelaunchToBeConfigured(self):
        """
        A user added while the vpnserver is being relaunched is added once
        the relaunch has configured the hub, not before: nothing is asked
        of a daemon that is not there or not configured yet.
        """
        server = self.makeServer(readyWait=2.0)
        server.setUsers([user(1)])
        self.startServer(server)
        self.crash(server)
        before = len(self.fake.batches)
        d = server.addUser(user(2))
        self.clock.advance(0.25)
        self.assertNoResult(d)
        self.assertEqual(len(self.fake.batches), before)
        self.clock.pump([0.25] * 2)
        self.successResultOf(d)
        self.assertEqual(len(self.readies), 2)
        self.assertEqual(set(self.fake.users), {user(1).name, user(2).name})
        self.assertEqual(len(self.created(user(2).name)), 1)
        self.assertEqual(server.describe()["state"], "synced")

    def test_addingDuringALongRelaunchIsNotReady(self):
        server = self.makeServer(readyWait=1.0)
        self.startServer(server)
        self.crash(server)
        self.fake.up = False
        d = server.addUser(user(2))
        self.clock.advance(0.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIn("not ready within 1.0 s", str(self.failureResultOf(d, NotReady).value))
        self.assertEqual(server.users, {})
        # Undoing the refused grant asks nothing, and so waits for nothing.
        before = len(self.fake.batches)
        self.successResultOf(server.removeUser(user(2).name))
        self.assertEqual(len(self.fake.batches), before)
        self.fake.up = True
        self.clock.pump([0.25] * 4)
        self.assertEqual(len(self.readies), 2)
        self.assertEqual(self.fake.users, {})

    def test_removingDuringARelaunchIsLeftToItsConfiguring(self):
        server = self.makeServer()
        server.setUsers([user(1), user(2)])
        self.startServer(server)
        self.fake.crash(keepConfig=True)
        self.spawner.last.end(sig=9, code=None)
        before = len(self.fake.batches)
        self.successResultOf(server.removeUser(user(1).name))
        self.assertEqual(len(self.fake.batches), before)
        self.clock.pump([0.25] * 4)
        self.assertEqual(len(self.readies), 2)
        self.assertEqual(set(self.fake.users), {user(2).name})
        self.assertEqual(self.fake.rulesOf(user(1).name), [])

    def test_aRemovalQueuedBehindTheConfiguringIsDoneAfterIt(self):
        """
        A removal that waited for the mutex while the relaunch was being
        configured (with that user still wanted) runs against the hub.
        """
        server = self.makeServer()
        server.setUsers([user(1)])
        self.startServer(server)
        self.crash(server)
        removed = []
        original = server._syncUsers

        def syncThenRemove():
            d = original()
            removed.append(server.removeUser(user(1).name))
            return d

        server._syncUsers = syncThenRemove
        self.clock.pump([0.25] * 4)
        self.assertEqual(len(self.readies), 2)
        self.successResultOf(removed[0])
        self.assertEqual(self.fake.users, {})

    def test_aRelaunchedServerGetsItsUsersBack(self):
        server = self.makeServer()
        server.setUsers([user(1)])
        self.startServer(server)
        self.successResultOf(server.addUser(user(2)))
        self.successResultOf(server.removeUser(user(1).name))
        # The crash loses everything not saved yet, and a user that was
        # removed comes back from the saved configuration.
        self.fake.crash(keepConfig=False)
        self.fake.users[user(1).name] = user(1).password
        self.spawner.last.end(sig=9, code=None)
        self.assertEqual(len(self.deaths), 1)
        self.clock.pump([0.25] * 8)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.assertEqual(len(self.readies), 2)
        self.assertEqual(self.fake.restarts, 1)  # its configuration was saved hardened
        self.assertEqual(set(self.fake.users), {user(2).name})
        self.assertEqual(len(self.fake.rulesOf(user(2).name)), 6)
        self.assertEqual(len(self.fake.rules), 6)

    def test_callbacksMayBeSetLater(self):
        server = self.makeServer()
        self.startServer(server)
        deaths = []
        server.onDeath = deaths.append
        self.spawner.last.end(sig=9, code=None)
        self.assertEqual(len(deaths), 1)
        self.assertEqual(self.deaths, [])

    def test_describe(self):
        server = self.makeServer()
        self.startServer(server)
        self.assertEqual(server.describe(), {"hub": "mnigs", "port": 5555, "tap": "tap_se0",
                                             "pid": self.spawner.last.pid, "users": 0,
                                             "state": "synced"})

    def test_stopTermsTheDaemon(self):
        server = self.makeServer()
        self.startServer(server)
        d = server.stop()
        self.assertEqual(self.spawner.last.signals, ["TERM"])
        self.spawner.last.end()
        self.successResultOf(d)


class FingerprintTests(SynchronousTestCase):
    def test_sha256OfTheDER(self):
        pem = ("-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n")
        self.assertEqual(certificateFingerprint(pem),
                         "054edec1d0211f624fed0cbca9d4f9400b0e491c43742af2c5b0abebf0c990d8")

