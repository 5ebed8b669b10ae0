"""
The openvpn method in the configuration files and in the gateway service:
its keys, their checks, and what its registry entry's builder makes of them.
"""

import ipaddress
import os
import shutil
import tempfile
import types

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.config import ConfigError
from mnigs.protocol import certificateSHA256
from mnigs.server.config import loadServerConfig
from mnigs.methods import METHODS, GatewayContext
from tests.unit.fakeprocess import FakeSpawner

TOP = os.path.join(os.path.dirname(__file__), "..", "..", "..")
MINIMAL = '[uplink]\ninterface = "up0"\n'


class ConfigTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_samplesConfigureOpenVPN(self):
        server = loadServerConfig(os.path.join(TOP, "etc", "mnigs-server.toml"))
        self.assertEqual(server.methods.openvpn.pool, ipaddress.ip_network("100.65.0.0/22"))
        client = loadClientConfig(os.path.join(TOP, "etc", "mnigs-client.toml"))
        self.assertEqual(client.methods.openvpn.interface, "mnigs-ovpnc0")

    def test_serverDefaults(self):
        config = loadServerConfig(self.write(MINIMAL + "[methods.openvpn]\n"))
        openvpn = config.methods.openvpn
        self.assertEqual((openvpn.enabled, openvpn.interface, openvpn.port, openvpn.proto,
                          openvpn.pool, openvpn.endpoint, openvpn.dns),
                         (True, "mnigs-ovpn0", 1194, "udp", ipaddress.ip_network("100.65.0.0/22"),
                          [], []))

    def test_serverMistakes(self):
        for text, key, reason in [
            ('[methods.openvpn]\nproto = "icmp"\n', "methods.openvpn.proto", "must be one of"),
            ('[methods.openvpn]\npool = "fd00::/64"\n', "methods.openvpn.pool", "IPv4"),
            ('[methods.openvpn]\npool = "100.64.1.0/24"\n[methods.wireguard]\n',
             "methods.openvpn.pool", "overlaps"),
            ('[methods.openvpn]\nport = 0\n', "methods.openvpn.port", "between"),
            ('[methods.openvpn]\ninterface = "tun with spaces0"\n',
             "methods.openvpn.interface", "interface name"),
            ('[methods.openvpn]\nsecret = "static.key"\n', "methods.openvpn.secret", "unknown"),
        ]:
            e = self.assertRaises(ConfigError, loadServerConfig, self.write(MINIMAL + text))
            self.assertEqual(e.key, key, text)
            self.assertIn(reason, e.reason)

    def test_clientTakesOpenVPN(self):
        config = loadClientConfig(self.write(
            '[methods]\norder = ["openvpn", "wireguard"]\n[methods.openvpn]\ninterface = "vpn7"\n'))
        self.assertEqual(config.methods.order, ["openvpn", "wireguard"])
        self.assertEqual(config.methods.openvpn.interface, "vpn7")


class BuildTests(SynchronousTestCase):
    def test_buildMakesThePKIAndTheServer(self):
        config = loadServerConfig(self.write(
            MINIMAL + '[methods.openvpn]\ninterface = "mo7"\nproto = "tcp"\nport = 443\n'
                      'pool = "100.65.4.0/24"\n'))
        stateDir = tempfile.mkdtemp()  # short: the management socket's path is bounded
        self.addCleanup(shutil.rmtree, stateDir)
        reactor = MemoryReactorClock()
        reactor.spawnProcess = FakeSpawner()
        gateway = METHODS["openvpn"].buildGateway(
            GatewayContext(reactor, config, stateDir, access=None, netlink=None),
            config.methods.openvpn)
        with open(os.path.join(stateDir, "openvpn", "ca.pem")) as f:
            self.assertEqual(gateway.caPEM, f.read())
        self.assertEqual(gateway.offerEntry("10.251.0.3"),
                         {"type": "openvpn", "endpoint": "10.251.0.3:443", "proto": "tcp",
                          "ca_sha256": certificateSHA256(gateway.caPEM)})
        self.assertEqual(gateway.daemon.socketPath,
                         os.path.join(stateDir, "openvpn", "management.sock"))
        self.assertEqual(gateway.describe()["pool"], "100.65.4.0/24")
        gateway.start([])
        [call] = reactor.spawnProcess.spawned
        argv = call["args"]
        self.assertEqual(argv[argv.index("--dev") + 1], "mo7")
        self.assertEqual(argv[argv.index("--proto") + 1], "tcp6-server")
        self.assertEqual(argv[argv.index("--ca") + 1], os.path.join(stateDir, "openvpn", "ca.pem"))
        self.assertEqual(argv[-5:], ["--management", gateway.daemon.socketPath, "unix",
                                     "--management-client", "--management-hold"])

    write = ConfigTests.write


class TrafficTests(SynchronousTestCase):
    """The client feeds a session's byte counts to the quality history."""

    def endSession(self, connection):
        from mnigs.client.effects import ClientEffects
        from mnigs.client.history import QualityHistory
        from mnigs.client.machine import Session

        class Step:
            gatewayId, host, method = "ed25519:gw", "10.251.0.3", "openvpn"
            seen = types.SimpleNamespace(offer=types.SimpleNamespace(name="gw"))  # the hooks' name

        class Hooks:
            def run(self, *args):
                pass

        clock = Clock()
        history = QualityHistory(clock)
        effects = ClientEffects(clock, None, [], None, None, {}, None, history, None, None,
                                Hooks(), SigningKey(b"k" * 32))
        session = Session(Step(), {"config": {"address": "100.65.0.2/32"}}, connection, 0.0)
        self.successResultOf(effects.endSession(session))
        return history.get("ed25519:gw")

    def test_countedBytesGoToTheHistory(self):
        class Connection:
            def traffic(self):
                return 2090, 1296

            def disconnect(self):
                return defer.succeed(None)

        quality = self.endSession(Connection())
        self.assertEqual((quality.bytesIn, quality.bytesOut), (2090, 1296))

    def test_connectionsWithoutCountsAddNothing(self):
        class Connection:
            def traffic(self):
                return None  # IClientConnection: not counted

            def disconnect(self):
                return defer.succeed(None)

        quality = self.endSession(Connection())
        self.assertEqual((quality.bytesIn, quality.bytesOut), (0, 0))
