"""
The softether method in the configuration files and the services: its
keys, their checks, and what its registry entry's builder makes of them.
"""

import ipaddress
import os
import shutil
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.config import ConfigError
from mnigs.methods.softether import SoftEtherGateway
from mnigs.server.config import loadServerConfig
from mnigs.methods import METHODS, GatewayContext
from tests.unit.fakeprocess import FakeSpawner
from tests.unit.test_softether.fakeserver import FakeNetlink

TOP = os.path.join(os.path.dirname(__file__), "..", "..", "..")
MINIMAL = '[uplink]\ninterface = "up0"\n'


class ConfigTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_samplesShowSoftEther(self):
        server = loadServerConfig(os.path.join(TOP, "etc", "mnigs-server.toml"))
        softether = server.methods.softether
        self.assertFalse(softether.enabled)
        self.assertEqual(softether.pool, ipaddress.ip_network("100.66.0.0/22"))
        client = loadClientConfig(os.path.join(TOP, "etc", "mnigs-client.toml"))
        self.assertEqual(client.methods.softether.nic, "mnigs")

    def test_serverDefaults(self):
        softether = loadServerConfig(self.write(MINIMAL + "[methods.softether]\n")).methods.softether
        self.assertEqual((softether.enabled, softether.port, softether.hub, softether.bridge,
                          softether.pool, softether.endpoint, softether.dns),
                         (True, 5555, "mnigs", "mnigs", ipaddress.ip_network("100.66.0.0/22"),
                          [], []))

    def test_serverMistakes(self):
        for text, key, reason in [
            ('[methods.softether]\nhub = "DEFAULT"\n', "methods.softether.hub", "not DEFAULT"),
            ('[methods.softether]\nhub = "a hub"\n', "methods.softether.hub", "hub name"),
            ('[methods.softether]\nbridge = "mnigs-se"\n', "methods.softether.bridge",
             "bridge name"),
            ('[methods.softether]\nbridge = "twelve-chars"\n', "methods.softether.bridge",
             "bridge name"),
            ('[methods.softether]\npool = "fd00::/64"\n', "methods.softether.pool", "IPv4"),
            ('[methods.softether]\npool = "100.64.1.0/24"\n[methods.wireguard]\n',
             "methods.softether.pool", "overlaps methods.wireguard.pool"),
            ('[methods.softether]\npool = "100.65.0.0/24"\n[methods.openvpn]\n',
             "methods.softether.pool", "overlaps methods.openvpn.pool"),
            ('[methods.softether]\nport = 70000\n', "methods.softether.port", "between"),
            ('[methods.softether]\npassword = "x"\n', "methods.softether.password", "unknown"),
        ]:
            e = self.assertRaises(ConfigError, loadServerConfig, self.write(MINIMAL + text))
            self.assertEqual(e.key, key, text)
            self.assertIn(reason, e.reason)

    def test_clientTakesSoftEther(self):
        config = loadClientConfig(self.write(
            '[methods]\norder = ["softether", "forward"]\n[methods.softether]\nnic = "se7"\n'))
        self.assertEqual(config.methods.order, ["softether", "forward"])
        self.assertEqual(config.methods.softether.nic, "se7")

    def test_clientNicMistakes(self):
        for nic in ("vpn-se", "twelve45678x", "SE"):
            e = self.assertRaises(ConfigError, loadClientConfig, self.write(
                f'[methods.softether]\nnic = "{nic}"\n'))
            self.assertEqual(e.key, "methods.softether.nic")


class BuildTests(SynchronousTestCase):
    def test_buildMakesTheServerOnThePoolsFirstHost(self):
        config = loadServerConfig(self.write(
            MINIMAL + '[methods.softether]\nport = 5556\nhub = "h1"\nbridge = "b1"\n'
                      'pool = "100.66.4.0/24"\n'))
        stateDir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, stateDir)
        reactor = MemoryReactorClock()
        reactor.spawnProcess = FakeSpawner()
        gateway = METHODS["softether"].buildGateway(
            GatewayContext(reactor, config, stateDir, access=None, netlink=FakeNetlink()),
            config.methods.softether)
        self.assertIsInstance(gateway, SoftEtherGateway)
        server = gateway.server
        self.assertEqual((server.port, server.hub, server.tap, server.tapAddress),
                         (5556, "h1", "tap_b1", ipaddress.ip_interface("100.66.4.1/24")))
        self.assertEqual(server.directory, os.path.join(stateDir, "softether"))
        self.assertTrue(os.path.exists(os.path.join(stateDir, "softether", "admin-password")))

    write = ConfigTests.write
