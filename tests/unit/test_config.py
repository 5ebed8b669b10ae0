"""
Server and client configuration: the samples load; every kind of mistake
is refused naming the file, the key and the reason; the client's
per-method tables are [methods.NAME], the old [method.NAME] still read
with a warning.
"""

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.config import ConfigError, ConfigWarning
from mnigs.server.config import loadServerConfig

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "mnigs-server.toml")

MINIMAL = """
[uplink]
interface = "up0"
[methods.forward]
"""


class ConfigFileTestCase(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path


class ServerConfigTests(ConfigFileTestCase):
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

    def test_repliesByArrivalOnByDefaultTheirTablesApartFromThePools(self):
        routing = loadServerConfig(self.write(MINIMAL)).routing
        self.assertEqual((routing.reply_by_arrival, routing.reply_table, routing.reply_rule_priority),
                         (True, 8160, 8149))
        self.assertConfigError(MINIMAL + "\n[routing]\nreply_table = 8000\n",
                               "routing.reply_table", "would include routing.table (8152)")
        self.assertConfigError(MINIMAL + "\n[routing]\nreply_table = 2147483647\n",
                               "routing.reply_table", "between")

    def test_loopbackIsNeverAnUplink(self):
        self.assertConfigError(MINIMAL.replace('"up0"', '"lo"'), "uplink.interface", "loopback")

    def test_warningsListIsOptional(self):
        path = self.write(MINIMAL)
        warnings = []
        self.assertEqual(loadServerConfig(path, warnings), loadServerConfig(path))
        self.assertEqual(warnings, [])

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


class ClientConfigTests(ConfigFileTestCase):
    def test_methodTablesBesideTheOrder(self):
        warnings = []
        config = loadClientConfig(self.write(
            '[methods]\norder = ["wireguard", "openvpn"]\n'
            '[methods.wireguard]\ninterface = "wg7"\nkeepalive = 9\n'), warnings)
        self.assertEqual(config.methods.order, ["wireguard", "openvpn"])
        self.assertEqual((config.methods.wireguard.interface, config.methods.wireguard.keepalive),
                         ("wg7", 9))
        self.assertEqual(warnings, [])
        self.assertNotIn("method", config)

    def test_standbyDevicesMustNotShareANameWithAnotherMethods(self):
        text = ('[methods]\norder = ["wireguard", "openvpn"]\n'
                '[methods.wireguard]\ninterface = "tun0"\n[methods.openvpn]\ninterface = "tun2"\n')
        e = self.assertRaises(ConfigError, loadClientConfig, self.write(text))
        self.assertEqual(e.key, "methods.openvpn.interface")
        self.assertIn("shares the device name tun2 with methods.wireguard.interface", e.reason)
        config = loadClientConfig(self.write(text + "[standby]\ncount = 0\n"))
        self.assertEqual(config.standby.count, 0)
        self.assertEqual(loadClientConfig(self.write("")).standby.count, 1)

    def test_methodsWithoutTableHaveTheirDefaults(self):
        config = loadClientConfig(self.write(""))
        self.assertEqual(config.methods.wireguard,
                         {"interface": "mnigs-c0", "implementation": "auto", "keepalive": 5,
                          "ipv6": True})
        self.assertEqual(config.methods.openvpn.interface, "mnigs-ovpnc0")
        self.assertEqual(config.methods.softether.nic, "mnigs")
        self.assertEqual(config.methods.forward, {})

    def test_oldSpellingReadWithADeprecationWarning(self):
        path = self.write('[method.wireguard]\ninterface = "wg8"\n[method.softether]\nnic = "se8"\n')
        warnings = []
        config = loadClientConfig(path, warnings)
        self.assertEqual(config.methods.wireguard.interface, "wg8")
        self.assertEqual(config.methods.softether.nic, "se8")
        self.assertEqual(config.methods.openvpn.interface, "mnigs-ovpnc0")
        self.assertEqual(warnings, [
            ConfigWarning(path, "method.wireguard", "[method.wireguard] is deprecated: write [methods.wireguard]"),
            ConfigWarning(path, "method.softether", "[method.softether] is deprecated: write [methods.softether]"),
        ])
        self.assertEqual(str(warnings[0]),
                         f"{path}: method.wireguard: [method.wireguard] is deprecated: write [methods.wireguard]")
        # Without a list, the same config and no complaint.
        self.assertEqual(loadClientConfig(path), config)

    def test_freeTextClientIdIsIgnoredWithAWarning(self):
        path = self.write('[client]\nid = "my-laptop"\nstate_dir = "/var/lib/c"\n')
        warnings = []
        loadClientConfig(path, warnings)
        self.assertEqual(warnings, [ConfigWarning(
            path, "client.id", "is ignored: a client's id is now the public half of its key "
                               "(/var/lib/c/identity.pem), which proves it; remove client.id")])

    def test_oldSpellingStillChecked(self):
        e = self.assertRaises(ConfigError, loadClientConfig, self.write('[method.wireguard]\nkeepalive = -1\n'))
        self.assertEqual(e.key, "method.wireguard.keepalive")

    def test_bothSpellingsRefused(self):
        path = self.write('[method.wireguard]\ninterface = "wg8"\n[methods.openvpn]\ninterface = "vpn8"\n')
        e = self.assertRaises(ConfigError, loadClientConfig, path)
        self.assertEqual(e.key, "method")
        self.assertIn("both used", e.reason)
        self.assertIn("[methods.openvpn]", e.reason)

    def test_unknownMethodTable(self):
        for text, key in (("[methods.pigeon]\n", "methods.pigeon"), ("[method.pigeon]\n", "method.pigeon")):
            e = self.assertRaises(ConfigError, loadClientConfig, self.write(text))
            self.assertEqual(e.key, key)
            self.assertIn("unknown", e.reason)
