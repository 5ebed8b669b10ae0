"""
Server configuration: the sample loads; every kind of mistake is refused
naming the file, the key and the reason.
"""

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from mnigs.config import ConfigError
from mnigs.server.config import loadServerConfig

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "mnigs-server.toml")

MINIMAL = """
[uplink]
interface = "up0"
[methods.forward]
"""


class ServerConfigTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertConfigError(self, text, key, reasonPart):
        path = self.write(text)
        e = self.assertRaises(ConfigError, loadServerConfig, path)
        self.assertEqual(e.key, key)
        self.assertIn(reasonPart, e.reason)
        self.assertIn(path, str(e))
        self.assertIn(key, str(e))
        return e

    def test_sampleLoads(self):
        config = loadServerConfig(SAMPLE)
        self.assertEqual(config.rpc.port, 8150)
        self.assertEqual(config.methods.wireguard.pool, ipaddress.ip_network("100.64.0.0/22"))
        self.assertEqual(config.uplink.interface, "eth0")

    def test_minimalGetsDefaults(self):
        config = loadServerConfig(self.write(MINIMAL))
        self.assertEqual(config.terms.max_clients, 32)
        self.assertEqual(config.rpc.listen, [ipaddress.ip_address("::")])
        self.assertEqual(list(config.methods), ["forward"])

    def test_unknownKey(self):
        self.assertConfigError(MINIMAL + "\n[terms]\nmax_client = 3\n", "terms.max_client", "unknown key")

    def test_unknownMethod(self):
        self.assertConfigError(MINIMAL + "\n[methods.pigeon]\n", "methods.pigeon", "unknown")

    def test_wrongType(self):
        self.assertConfigError(MINIMAL + "\n[rpc]\nport = \"8150\"\n", "rpc.port", "must be an integer")

    def test_impossibleValues(self):
        self.assertConfigError(MINIMAL + "\n[rpc]\nport = 70000\n", "rpc.port", "between 1 and 65535")
        self.assertConfigError(MINIMAL + "\n[terms]\nlease_seconds = 1\n", "terms.lease_seconds", "between")
        self.assertConfigError(MINIMAL + "\n[rpc]\nlisten = [\"10.0.0.300\"]\n", "rpc.listen", "not an IP address")
        self.assertConfigError(MINIMAL + "\n[methods.wireguard]\npool = \"100.64.0.1/24\"\n",
                               "methods.wireguard.pool", "not a network")
        self.assertConfigError(MINIMAL + "\n[methods.wireguard]\ninterface = \"a-very-long-interface-name\"\n",
                               "methods.wireguard.interface", "interface name")
        self.assertConfigError(MINIMAL + "\n[server]\nstate_dir = \"relative/dir\"\n",
                               "server.state_dir", "absolute path")
        self.assertConfigError(MINIMAL + "\n[hooks]\nregister = \"/nonexistent/hook\"\n",
                               "hooks.register", "not an executable")

    def test_required(self):
        self.assertConfigError("[methods.forward]\n", "uplink.interface", "is required")

    def test_noMethods(self):
        self.assertConfigError("[uplink]\ninterface = \"up0\"\n", "methods", "no method")

    def test_feeNeedsCurrency(self):
        self.assertConfigError(MINIMAL + "\n[terms.fee]\namount = \"2.50\"\n", "terms.fee.currency", "required")

    def test_notTOML(self):
        e = self.assertRaises(ConfigError, loadServerConfig, self.write("[uplink\n"))
        self.assertIn("not valid TOML", e.reason)

    def test_missingFile(self):
        e = self.assertRaises(ConfigError, loadServerConfig, "/nonexistent/mnigs.toml")
        self.assertIn("no such file", str(e))
