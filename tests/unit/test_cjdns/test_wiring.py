"""
The cjdns source and method as the daemons' config files build them.  No
cjdns runs here (it cannot be installed): nothing is called, only built.
"""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.routing.candidates import HopScaled
from mnigs.client.config import loadClientConfig
from mnigs.client.service import buildSources
from mnigs.daemon.config import ConfigError
from mnigs.routing.cjdns import CjdnsRouteSource
from mnigs.server.config import loadServerConfig

KEY = "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k"


class CjdnsWiringTests(SynchronousTestCase):
    def write(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_clientSourceBuiltHopScaled(self):
        config = loadClientConfig(self.write(
            '[discovery]\nsources = ["cjdns"]\nscan = ["routes"]\n'
            '[cjdns]\npassword = "NONE"\nadmin_port = 11299\n[sources.cjdns]\nbudget = 5\n'))
        [scaled] = buildSources(Clock(), config)
        self.assertIsInstance(scaled, HopScaled)
        self.assertIsInstance(scaled.source, CjdnsRouteSource)
        self.assertEqual(scaled.source.admin.port, 11299)
        self.assertEqual((scaled.source.concurrency, scaled.source.maxNodes), (8, 20000))

    def test_walkLimits(self):
        """
        At most 200 calls in flight (bench/walk.py measures a 10,000-node
        walk at that); max_nodes reaches the walk.
        """
        base = '[discovery]\nsources = ["cjdns"]\nscan = ["routes"]\n[cjdns]\npassword = "NONE"\n[sources.cjdns]\n'
        config = loadClientConfig(self.write(base + 'concurrency = 200\nmax_nodes = 100000\n'))
        [scaled] = buildSources(Clock(), config)
        self.assertEqual((scaled.source.concurrency, scaled.source.maxNodes), (200, 100000))
        for bad in ('concurrency = 201\n', 'concurrency = 0\n', 'max_nodes = 0\n'):
            e = self.assertRaises(ConfigError, loadClientConfig, self.write(base + bad))
            self.assertEqual(e.key, "sources.cjdns." + bad.split(" ")[0])

    def test_clientMethodNeedsTheNodeKey(self):
        e = self.assertRaises(ConfigError, loadClientConfig, self.write(
            '[methods]\norder = ["cjdns"]\n'))
        self.assertEqual(e.key, "cjdns.public_key")
        config = loadClientConfig(self.write(f'[methods]\norder = ["cjdns"]\n[cjdns]\npublic_key = "{KEY}"\n'))
        self.assertEqual(config.cjdns.public_key, KEY)

    def test_badKeyNamesTheKey(self):
        e = self.assertRaises(ConfigError, loadClientConfig, self.write('[cjdns]\npublic_key = "nope.k"\n'))
        self.assertEqual(e.key, "cjdns.public_key")

    def test_serverMethodNeedsTheNodeKey(self):
        base = '[uplink]\ninterface = "up0"\n[methods.cjdns]\n'
        e = self.assertRaises(ConfigError, loadServerConfig, self.write(base))
        self.assertEqual(e.key, "cjdns.public_key")
        config = loadServerConfig(self.write(base + f'[cjdns]\npublic_key = "{KEY}"\n'))
        self.assertEqual(str(config.methods.cjdns.pool), "100.67.0.0/22")

    def test_serverBuildsTheGatewayMethod(self):
        from mnigs.methods.cjdns import CjdnsGateway
        from mnigs.methods import METHODS, GatewayContext

        config = loadServerConfig(self.write(
            '[uplink]\ninterface = "up0"\n[methods.cjdns]\n'
            f'[cjdns]\npublic_key = "{KEY}"\npassword = "NONE"\n'))
        method = METHODS["cjdns"].buildGateway(
            GatewayContext(Clock(), config, stateDir="", access=None, netlink=None),
            config.methods.cjdns)
        self.assertIsInstance(method, CjdnsGateway)
        self.assertEqual(method.name, "cjdns")

    def test_poolsMustNotOverlap(self):
        e = self.assertRaises(ConfigError, loadServerConfig, self.write(
            '[uplink]\ninterface = "up0"\n[methods.wireguard]\npool = "100.67.0.0/24"\n'
            f'[methods.cjdns]\n[cjdns]\npublic_key = "{KEY}"\n'))
        self.assertEqual((e.key, e.reason), ("methods.cjdns.pool", "overlaps methods.wireguard.pool"))
