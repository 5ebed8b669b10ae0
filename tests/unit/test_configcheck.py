"""
Checking a configuration as a daemon does at start: which daemon a file
is for, warnings for interfaces this machine does not have, the same
lines from C{mnigsctl check-config} (run as a real process) as from a
daemon refusing its file, and the daemons logging the warnings.
"""

import io
import os
import subprocess
import sys

from twisted.application.service import Service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mnigs.daemon.config import ConfigError, ConfigWarning, Section
from mnigs.daemon.configcheck import (
    CLIENT,
    SERVER,
    checkClient,
    checkConfigFile,
    checkServer,
    kindOf,
    missingInterfaces,
)

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_TEXT = '[uplink]\ninterface = "lo0x"\n[methods.forward]\n'
CLIENT_TEXT = '[client]\nname = "c"\n'
MISSING = "mnigsnone0"  # an interface name no machine running these tests has


def noInterfaces(name):
    return False


class ConfigFiles:
    def write(self, text, name="mnigs.toml"):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class KindTests(SynchronousTestCase):
    def test_serverBySections(self):
        self.assertEqual(kindOf("f", {"uplink": {}, "methods": {}}), SERVER)
        self.assertEqual(kindOf("f", {"terms": {}}), SERVER)

    def test_clientBySections(self):
        self.assertEqual(kindOf("f", {"client": {}, "methods": {}}), CLIENT)
        self.assertEqual(kindOf("f", {"method": {}}), CLIENT)
        self.assertEqual(kindOf("f", {"health": {}}), CLIENT)

    def test_onlySharedSectionsCannotBeTold(self):
        e = self.assertRaises(ConfigError, kindOf, "f", {"methods": {}, "cjdns": {}})
        self.assertEqual((e.path, e.key), ("f", ""))
        self.assertIn("cannot tell", e.reason)
        self.assertIn("[uplink]", e.reason)
        self.assertIn("[client]", e.reason)

    def test_bothKindsRefused(self):
        e = self.assertRaises(ConfigError, kindOf, "f", {"uplink": {}, "policy": {}})
        self.assertIn("both server sections ([uplink]) and client sections ([policy])", e.reason)


class InterfaceWarningTests(ConfigFiles, SynchronousTestCase):
    def test_missingNamedWithItsKey(self):
        config = Section(mesh=Section(interfaces=["m0", "m1"]), uplink=Section(interface="u0"))
        warnings = missingInterfaces("f", config, ("mesh.interfaces", "uplink.interface"),
                                     lambda name: name == "m0")
        self.assertEqual(warnings, [
            ConfigWarning("f", "mesh.interfaces", "no interface 'm1' on this machine"),
            ConfigWarning("f", "uplink.interface", "no interface 'u0' on this machine"),
        ])

    def test_serverWarnsForMeshAndUplinkNotForWhatItMakes(self):
        path = self.write('[uplink]\ninterface = "up9"\n[mesh]\ninterfaces = ["m9"]\n'
                          '[methods.wireguard]\ninterface = "wg9"\n')
        checked = checkServer(path, noInterfaces)
        self.assertEqual(checked.program, SERVER)
        self.assertEqual([w.key for w in checked.warnings], ["mesh.interfaces", "uplink.interface"])

    def test_clientWarnsForMeshNotForWhatItMakes(self):
        path = self.write('[mesh]\ninterfaces = ["m9"]\n[methods.wireguard]\ninterface = "wg9"\n')
        checked = checkClient(path, noInterfaces)
        self.assertEqual(checked.program, CLIENT)
        self.assertEqual(checked.warnings, [ConfigWarning(path, "mesh.interfaces", "no interface 'm9' on this machine")])

    def test_realInterfaces(self):
        """The real lookup: lo is on every machine, MISSING on none."""
        self.assertEqual(checkClient(self.write('[mesh]\ninterfaces = ["lo"]\n')).warnings, [])
        path = self.write(f'[mesh]\ninterfaces = ["lo", "{MISSING}"]\n')
        self.assertEqual(checkClient(path).warnings,
                         [ConfigWarning(path, "mesh.interfaces", f"no interface '{MISSING}' on this machine")])

    def test_deprecationAndInterfaceWarningsTogether(self):
        path = self.write(f'[mesh]\ninterfaces = ["{MISSING}"]\n[method.openvpn]\ninterface = "t9"\n')
        self.assertEqual([w.key for w in checkClient(path).warnings], ["method.openvpn", "mesh.interfaces"])

    def test_errorsAreTheLoaders(self):
        path = self.write(SERVER_TEXT.replace("lo0x", "lo"))
        e = self.assertRaises(ConfigError, checkServer, path, noInterfaces)
        self.assertEqual(e.key, "uplink.interface")


class CheckConfigFileTests(ConfigFiles, SynchronousTestCase):
    def check(self, path):
        out, err = io.StringIO(), io.StringIO()
        status = checkConfigFile(path, out, err, noInterfaces)
        return status, out.getvalue(), err.getvalue()

    def test_validWithWarnings(self):
        path = self.write(SERVER_TEXT)
        self.assertEqual(self.check(path), (
            0, f"{path}: valid mnigs-server configuration (1 warning)\n",
            f"mnigs-server: configuration warning: {path}: uplink.interface: no interface 'lo0x' on this machine\n"))

    def test_unreadable(self):
        for path, reason in (("/nonexistent/x.toml", "no such file"), (self.mktemp(), "no such file"),
                             (TOP, "is a directory"), (self.write("[client\n"), "not valid TOML"),
                             (self.write("a = 1\n"), "cannot tell")):
            status, out, err = self.check(path)
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.startswith(f"mnigsctl: configuration error: {path}: {reason}"), err)


class CheckConfigCommandTests(ConfigFiles, SynchronousTestCase):
    """
    C{python -m mnigs.cli.ctl check-config FILE}, and a daemon given the same
    bad file, as real processes with the checkout on PYTHONPATH.
    """

    def runPython(self, argv):
        env = dict(os.environ, PYTHONPATH=TOP)
        return subprocess.run([sys.executable] + argv, capture_output=True, text=True,
                              env=env, cwd=TOP, timeout=120)

    def checkConfig(self, path):
        return self.runPython(["-m", "mnigs.cli.ctl", "check-config", path])

    def test_validServer(self):
        path = self.write('[uplink]\ninterface = "lo0x"\n[methods.forward]\n[mesh]\ninterfaces = ["lo"]\n')
        result = self.checkConfig(path)
        self.assertEqual((result.returncode, result.stdout),
                         (0, f"{path}: valid mnigs-server configuration (1 warning)\n"))
        self.assertEqual(result.stderr,
                         f"mnigs-server: configuration warning: {path}: uplink.interface: "
                         f"no interface 'lo0x' on this machine\n")

    def test_validClientWithoutWarnings(self):
        path = self.write(CLIENT_TEXT + '[mesh]\ninterfaces = ["lo"]\n[methods.wireguard]\nkeepalive = 2\n')
        result = self.checkConfig(path)
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (0, f"{path}: valid mnigs-client configuration\n", ""))

    def test_deprecatedSpellingWarned(self):
        path = self.write(CLIENT_TEXT + '[method.wireguard]\nkeepalive = 2\n')
        result = self.checkConfig(path)
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stderr,
                         f"mnigs-client: configuration warning: {path}: method.wireguard: "
                         f"[method.wireguard] is deprecated: write [methods.wireguard]\n")

    def test_freeTextClientIdWarned(self):
        path = self.write('[client]\nid = "my-laptop"\nstate_dir = "/var/lib/c"\n'
                          '[mesh]\ninterfaces = ["lo"]\n')
        result = self.checkConfig(path)
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stderr,
                         f"mnigs-client: configuration warning: {path}: client.id: is ignored: "
                         f"a client's id is now the public half of its key "
                         f"(/var/lib/c/identity.pem), which proves it; remove client.id\n")

    def test_invalidAsTheDaemonSaysIt(self):
        for program, text, line in (
                ("mnigs-server", SERVER_TEXT.replace("lo0x", "lo"),
                 "uplink.interface: 'lo' is the loopback interface, never an uplink"),
                ("mnigs-client", CLIENT_TEXT + "[policy]\nswitch_hold = -1.0\n",
                 "policy.switch_hold: must be between 0 and 86400, not -1.0"),
                ("mnigs-client", CLIENT_TEXT + '[method.wireguard]\n[methods.wireguard]\n',
                 "method: the old spelling [method.NAME] and the new one [methods.wireguard] are both used")):
            path = self.write(text)
            checked = self.checkConfig(path)
            self.assertEqual((checked.returncode, checked.stdout), (1, ""), checked.stderr)
            self.assertTrue(checked.stderr.startswith(f"{program}: configuration error: {path}: {line}"),
                            checked.stderr)
            daemon = self.runPython(["-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                               "--pidfile=", "--logfile", os.path.join(os.path.dirname(path), "log"),
                               program, "--config", path])
            self.assertEqual(daemon.returncode, 1)
            self.assertEqual(daemon.stderr, checked.stderr)

    def test_neitherKind(self):
        path = self.write("[cjdns]\ntimeout = 2.0\n")
        result = self.checkConfig(path)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"mnigsctl: configuration error: {path}: cannot tell", result.stderr)

    def test_fileOnlyWithCheckConfig(self):
        self.assertEqual(self.runPython(["-m", "mnigs.cli.ctl", "check-config"]).returncode, 2)
        self.assertEqual(self.runPython(["-m", "mnigs.cli.ctl", "status", self.write(CLIENT_TEXT)]).returncode, 2)


class FakeService(Service):
    def __init__(self, reactor, config, configPath=None, levelFilter=None):
        self.config = config
        self.configPath = configPath
        self.levelFilter = levelFilter


class DaemonWarningTests(ConfigFiles, SynchronousTestCase):
    """
    The tap modules log the check's warnings.  The services themselves
    are replaced by a fake: building a real one opens netlink sockets and
    state files, and only what the tap does with the config is tested.
    """

    def makeService(self, tap, serviceModule, serviceName, text):
        from mnigs.daemon import gcpause
        from tests.unit.test_gcpause import FakeCollector

        self.patch(serviceModule, serviceName, FakeService)
        # The client's tap pauses the collector until its (fake) reactor
        # resumes it: not this process's own.
        self.patch(gcpause, "gc", FakeCollector())
        path = self.write(text)
        with capturedLogs() as events:
            service = tap.makeService({"config": path}, reactor=MemoryReactorClock()).daemon
        return path, service, [e for e in events if e["log_level"] == LogLevel.warn]

    def test_serverLogsMissingInterfaces(self):
        from mnigs.server import service, tap

        path, made, events = self.makeService(tap, service, "GatewayService",
                                              f'[uplink]\ninterface = "{MISSING}"\n[methods.forward]\n')
        self.assertEqual(made.config.uplink.interface, MISSING)
        [event] = events
        self.assertEqual(event["line"], f"mnigs-server: configuration warning: {path}: uplink.interface: "
                                        f"no interface '{MISSING}' on this machine")
        self.assertEqual(event["key"], "uplink.interface")

    def test_clientLogsDeprecationAndMissingInterfaces(self):
        from mnigs.client import service, tap

        path, made, events = self.makeService(
            tap, service, "ClientService",
            f'[mesh]\ninterfaces = ["lo", "{MISSING}"]\n[method.wireguard]\nkeepalive = 3\n')
        self.assertEqual(made.config.methods.wireguard.keepalive, 3)
        self.assertEqual([e["line"] for e in events], [
            f"mnigs-client: configuration warning: {path}: method.wireguard: "
            f"[method.wireguard] is deprecated: write [methods.wireguard]",
            f"mnigs-client: configuration warning: {path}: mesh.interfaces: "
            f"no interface '{MISSING}' on this machine"])
