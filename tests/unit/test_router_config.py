"""
The client's mesh-router keys ([share], [mtu], routing.fail_closed):
defaults, and clear errors naming file, key and reason.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import EXISTING_INTERFACES, loadClientConfig
from mnigs.daemon.config import ConfigError


class RouterConfigTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def refused(self, text, key, reasonPart):
        path = self.write(text)
        e = self.assertRaises(ConfigError, loadClientConfig, path)
        self.assertEqual(e.key, key)
        self.assertIn(reasonPart, e.reason)
        self.assertIn(path, str(e))
        return e

    def test_offByDefault(self):
        config = loadClientConfig(self.write(""))
        self.assertEqual((config.share.interfaces, config.share.prefixes, config.share.table),
                         ([], [], "mnigs_client"))
        self.assertEqual((config.mtu.set_tunnel_mtu, config.mtu.clamp_mss), (True, True))
        self.assertFalse(config.routing.fail_closed)

    def test_shared(self):
        config = loadClientConfig(self.write(
            '[share]\ninterfaces = ["br-lan"]\nprefixes = ["192.168.7.0/24", "fd00:7::/64"]\n'
            '[routing]\nfail_closed = true\n'))
        self.assertEqual(config.share.prefixes, [ipaddress.ip_network("192.168.7.0/24"),
                                                 ipaddress.ip_network("fd00:7::/64")])
        self.assertTrue(config.routing.fail_closed)
        self.assertIn("share.interfaces", EXISTING_INTERFACES)

    def test_notAPrefix(self):
        self.refused('[share]\nprefixes = ["192.168.7.1/24"]\n', "share.prefixes",
                     "is not a network")
        self.refused('[share]\nprefixes = ["lan"]\n', "share.prefixes", "is not a network")

    def test_everyAddressIsNoLAN(self):
        self.refused('[share]\nprefixes = ["0.0.0.0/0"]\n', "share.prefixes", "every address")

    def test_aPrefixTwice(self):
        self.refused('[share]\nprefixes = ["10.1.0.0/16", "10.1.0.0/16"]\n', "share.prefixes",
                     "twice")

    def test_overlappingPrefixes(self):
        # One nft interval set holds them: overlapping elements would fail it.
        e = self.refused('[share]\nprefixes = ["fd77::/48", "192.168.7.0/24", "fd77:0:0:1::/64"]\n',
                         "share.prefixes", "twice")
        self.assertIn("fd77::/48 and fd77:0:0:1::/64 overlap", e.reason)
        config = loadClientConfig(self.write('[share]\nprefixes = ["10.0.0.0/8", "a00::/8"]\n'))
        self.assertEqual(len(config.share.prefixes), 2)  # a00::/8 is not 10.0.0.0/8's family

    def test_ipv6Prefixes(self):
        config = loadClientConfig(self.write(
            '[share]\nprefixes = ["fd77::/64", "2001:db8:7::/48", "300:1:2:3::/64"]\n'))
        self.assertEqual([n.version for n in config.share.prefixes], [6, 6, 6])
        self.refused('[share]\nprefixes = ["::/0"]\n', "share.prefixes", "every address")
        self.refused('[share]\nprefixes = ["fd77::1/64"]\n', "share.prefixes", "is not a network")

    def test_noForwardedPacketComesFromThere(self):
        for prefix in ("fe80::/64", "ff02::/16", "::1/128", "::/96", "127.0.0.0/8",
                       "169.254.0.0/16", "239.0.0.0/8", "0.0.0.0/8"):
            self.refused(f'[share]\nprefixes = ["{prefix}"]\n', "share.prefixes",
                         "is not a LAN's")

    def test_aMeshInterfaceIsNotALAN(self):
        self.refused('[mesh]\ninterfaces = ["mesh0"]\n[share]\ninterfaces = ["mesh0"]\n',
                     "share.interfaces", "mesh0 is also a mesh interface")

    def test_badNames(self):
        self.refused('[share]\ninterfaces = ["a/b"]\n', "share.interfaces", "interface name")
        self.refused('[share]\ntable = "my table"\n', "share.table", "bad nft table name")

    def test_wrongTypes(self):
        self.refused('[mtu]\nclamp_mss = "yes"\n', "mtu.clamp_mss", "")
        self.refused('[routing]\nfail_closed = 1\n', "routing.fail_closed", "")
