"""
The connections that forward and WireGuard hand the client name the
device their traffic leaves by (what the health probes are bound to).
The other methods' connections are checked in their own test modules.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IClientConnection
from mnigs.methods.forward import ForwardConnection
from mnigs.methods.wireguard import WireGuardConnection


class FakeWireGuardDevice:
    ifname = "mnigs-c0"

    def __init__(self):
        self.deaths = []

    def onDeath(self, callback):
        self.deaths.append(callback)


class ConnectionDeviceTests(SynchronousTestCase):
    def test_wireguardLeavesByItsInterface(self):
        connection = WireGuardConnection(FakeWireGuardDevice(), None,
                                         {"endpoint": "10.99.0.5:51820", "address": "100.64.0.2/32"})
        verifyObject(IClientConnection, connection)
        self.assertEqual(connection.device, "mnigs-c0")
        self.assertEqual(connection.describe()["interface"], "mnigs-c0")

    def test_forwardLeavesByTheMeshInterfaceTowardTheGateway(self):
        connection = ForwardConnection(None, "mesh0", "10.99.0.5")
        verifyObject(IClientConnection, connection)
        self.assertEqual(connection.device, "mesh0")


class EveryConnectionTests(SynchronousTestCase):
    def test_everyClientMethodsConnectionImplementsTheInterface(self):
        """
        What the client asks of a connection (its device, its loss, its
        byte counters) every method's connection has: no probing with
        getattr.
        """
        from zope.interface.verify import verifyClass

        from mnigs.methods.cjdns import CjdnsConnection
        from mnigs.methods.openvpn import OpenVPNConnection
        from mnigs.methods.softether import SoftEtherConnection

        for cls in (ForwardConnection, WireGuardConnection, OpenVPNConnection,
                    CjdnsConnection, SoftEtherConnection):
            verifyClass(IClientConnection, cls)

    def test_uncountedTrafficIsNone(self):
        self.assertIsNone(ForwardConnection(None, "mesh0", "10.99.0.5").traffic())
