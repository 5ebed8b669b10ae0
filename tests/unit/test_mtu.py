"""
L{mnigs.client.mtu}: a tunnel's MTU and MSS from the path and the
method's overhead (the registry's numbers).
"""

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.mtu import deviceMTU, mssFor, tunnelMTU
from mnigs.methods import METHODS


class TunnelMTUTests(SynchronousTestCase):
    def test_wireguard(self):
        overhead = METHODS["wireguard"].overhead
        padding = METHODS["wireguard"].padding
        self.assertEqual(tunnelMTU(1500, overhead, 4, padding), 1440)
        # WireGuard pads to 16 bytes up to the gateway's own MTU (1420 by
        # default), so 1420 would not do: a full packet is padded to 1424.
        self.assertEqual(tunnelMTU(1500, overhead, 6, padding), 1408)
        self.assertEqual(tunnelMTU(1280, overhead, 4, padding), 1216)
        self.assertEqual(tunnelMTU(1280, overhead, 6, padding), 1200)
        self.assertEqual(tunnelMTU(1280, overhead, 4), 1220)  # without the padding

    def test_openvpn(self):
        self.assertEqual(tunnelMTU(1280, METHODS["openvpn"].overhead, 4), 1220)

    def test_unknownIsNone(self):
        self.assertIsNone(tunnelMTU(None, METHODS["wireguard"].overhead, 4))
        for name in ("forward", "softether", "cjdns"):
            self.assertIsNone(METHODS[name].overhead)
            self.assertIsNone(tunnelMTU(1280, METHODS[name].overhead, 4))

    def test_tooNarrowIsLeftAlone(self):
        self.assertEqual(tunnelMTU(636, {4: 60}, 4), 576)
        self.assertIsNone(tunnelMTU(635, {4: 60}, 4))

    def test_mss(self):
        self.assertEqual(mssFor(1220, 4), 1180)
        self.assertEqual(mssFor(1220, 6), 1160)


class DeviceMTUTests(SynchronousTestCase):
    def test_ipv6InsideIsNeverBelow1280(self):
        """
        A tunnel carrying IPv6 egress keeps IPv6's minimum MTU (below it
        the kernel takes the device's IPv6 addresses away); TCP is still
        clamped to what fits (the Passage keeps C{tunnelMTU}'s figure).
        """
        fits = tunnelMTU(1304, METHODS["wireguard"].overhead, 6, METHODS["wireguard"].padding)
        self.assertEqual(fits, 1216)
        self.assertEqual(deviceMTU(fits, inner6=True), 1280)
        self.assertEqual(deviceMTU(fits, inner6=False), 1216)
        self.assertEqual(deviceMTU(1440, inner6=True), 1440)
