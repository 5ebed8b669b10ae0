"""
Tests for L{mnigs.softether.hubsync}: what a user change does while the hub
is synced and while the vpnserver is being launched again, with recording
fakes for the vpncmd work.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from mnigs.softether import hub as h
from mnigs.softether.hubsync import HubCore, HubSync, NotReady

USER = h.HubUser(h.userName("lease-1"), "password-1-xxxxxxxx", ipaddress.ip_address("100.66.0.2"))


class HubSyncTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.hub = HubSync(HubCore(
            "mnigs",
            add=lambda user: self.record("add", user.name),
            remove=lambda name: self.record("remove", name)))

    def record(self, *event):
        self.events.append(event)
        return defer.succeed(None)

    def test_unsyncedUntilTheFirstReconcile(self):
        self.assertEqual(self.hub.describe(), "configuring")
        waiting = self.hub.whenSynced()
        self.assertNoResult(waiting)
        self.hub.reconciled()
        self.successResultOf(waiting)
        self.successResultOf(self.hub.whenSynced())
        self.assertEqual(self.hub.describe(), "synced")

    def test_whileSyncedChangesGoToTheVpnserver(self):
        self.hub.reconciled()
        self.successResultOf(self.hub.addUser(USER))
        self.successResultOf(self.hub.removeUser(USER.name))
        self.assertEqual(self.events, [("add", USER.name), ("remove", USER.name)])

    def test_whileLostAddingIsNotReadyAndRemovingIsLeftToTheReconcile(self):
        self.hub.reconciled()
        self.hub.lost()
        self.assertEqual(self.hub.describe(), "configuring")
        self.failureResultOf(self.hub.addUser(USER), NotReady)
        self.successResultOf(self.hub.removeUser(USER.name))
        self.assertEqual(self.events, [])
        waiting = self.hub.whenSynced()
        self.hub.lost()
        self.assertNoResult(waiting)
        self.hub.reconciled()
        self.successResultOf(waiting)
