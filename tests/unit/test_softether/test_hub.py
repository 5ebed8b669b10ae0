"""
Tests for L{mnigs.softether.hub}: what the hub is told for a lease, and the
server-wide settings, as exact vpncmd lines.
"""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.softether import hub as h

USER = h.HubUser(h.userName("lease-1"), "password-1-xxxxxxxx", ipaddress.ip_address("100.66.0.2"))
REST = "/SRCMAC: /DESTMAC: /PROTOCOL:ip /SRCPORT: /DESTPORT: /TCPSTATE:"


class UserTests(SynchronousTestCase):
    def test_userNamesAreStableHexAndDoNotCarryTheId(self):
        name = h.userName("0123abcd")
        self.assertEqual(name, h.userName("0123abcd"))
        self.assertNotEqual(name, h.userName("0123abce"))
        self.assertRegex(name, r"^m[0-9a-f]{24}$")
        self.assertNotIn("0123abcd", name)

    @settings(derandomize=True, max_examples=200, deadline=None)
    @given(st.text(max_size=200))
    def test_anyLeaseIdMakesAUsableName(self, leaseId):
        h.HubUser(h.userName(leaseId), "p" * 16, ipaddress.ip_address("100.66.0.2"))

    def test_hubUserChecksWhatItHolds(self):
        self.assertRaises(ValueError, h.HubUser, "admin", "p", ipaddress.ip_address("1.2.3.4"))
        self.assertRaises(TypeError, h.HubUser, USER.name, "p", "1.2.3.4")
        self.assertNotIn(USER.password, repr(USER))

    def test_addingAUser(self):
        n = USER.name
        self.assertEqual([c.line() for c in h.addUserCommands(USER)], [
            f"UserCreate {n} /GROUP:none /REALNAME:none /NOTE:none",
            f"UserPasswordSet {n}",
            f"UserPolicySet {n} /NAME:MultiLogins /VALUE:1",
            f"UserPolicySet {n} /NAME:PrivacyFilter /VALUE:yes",
            f"UserPolicySet {n} /NAME:FilterIPv6 /VALUE:yes",
            f"UserPolicySet {n} /NAME:DHCPNoServer /VALUE:yes",
            f"AccessAdd pass /MEMO:mnigs:{n} /PRIORITY:100 /SRCUSERNAME:{n} /DESTUSERNAME: "
            f"/SRCMAC: /DESTMAC: /SRCIP:100.66.0.2/32 /DESTIP:0.0.0.0/0 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
            f"AccessAdd discard /MEMO:mnigs:{n} /PRIORITY:101 /SRCUSERNAME:{n} /DESTUSERNAME: "
            f"/SRCMAC: /DESTMAC: /SRCIP:0.0.0.0/1 /DESTIP:0.0.0.0/0 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
            f"AccessAdd discard /MEMO:mnigs:{n} /PRIORITY:101 /SRCUSERNAME:{n} /DESTUSERNAME: "
            f"/SRCMAC: /DESTMAC: /SRCIP:128.0.0.0/1 /DESTIP:0.0.0.0/0 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
            f"AccessAdd pass /MEMO:mnigs:{n} /PRIORITY:100 /SRCUSERNAME: /DESTUSERNAME:{n} "
            f"/SRCMAC: /DESTMAC: /SRCIP:0.0.0.0/0 /DESTIP:100.66.0.2/32 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
            f"AccessAdd discard /MEMO:mnigs:{n} /PRIORITY:101 /SRCUSERNAME: /DESTUSERNAME:{n} "
            f"/SRCMAC: /DESTMAC: /SRCIP:0.0.0.0/0 /DESTIP:0.0.0.0/1 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
            f"AccessAdd discard /MEMO:mnigs:{n} /PRIORITY:101 /SRCUSERNAME: /DESTUSERNAME:{n} "
            f"/SRCMAC: /DESTMAC: /SRCIP:0.0.0.0/0 /DESTIP:128.0.0.0/1 /PROTOCOL:ip /SRCPORT: "
            f"/DESTPORT: /TCPSTATE:",
        ])
        passwords = [c.prompts for c in h.addUserCommands(USER) if c.prompts]
        self.assertEqual(passwords, [(USER.password, USER.password)])

    def test_removingAUserStartsWithTheUser(self):
        self.assertEqual([c.line() for c in h.removeUserCommands(USER.name, ["SID-X-2"],
                                                                 ["17", "4"])],
                         [f"UserDelete {USER.name}", "SessionDisconnect SID-X-2",
                          "AccessDelete 17", "AccessDelete 4"])

    def test_rulesOfOtherUsersAndWithoutOurMemoAreNotOurs(self):
        rules = h.rulesByUser([
            {"Unique ID": "1", "Memo": "mnigs:ma"}, {"Unique ID": "2", "Memo": "operator's"},
            {"Unique ID": "3", "Memo": "mnigs:mb"}, {"Unique ID": "x", "Memo": "mnigs:ma"},
            {"Unique ID": "4", "Memo": "mnigs:ma"}])
        self.assertEqual(rules, {"ma": ["1", "4"], "mb": ["3"]})

    def test_onlyOurUsersAreOurs(self):
        self.assertEqual(h.mnigsUsers([{"User Name": USER.name}, {"User Name": "operator"},
                                       {"User Name": USER.name.upper()}]), {USER.name})


class ServerSettingsTests(SynchronousTestCase):
    def test_aFreshServer(self):
        lines = [c.line() for c in h.serverSettingsCommands(
            5555, {443, 992, 1194, 5555}, {"DEFAULT"}, "mnigs", "hubpw-xxxxxxxxxxxx", set(),
            "se0", "server.pem")]
        self.assertEqual(lines, ["PortsUDPSet 0", "ProtoOptionsSet OpenVPN /NAME:Enabled /VALUE:false",
                                 "ProtoOptionsSet SSTP /NAME:Enabled /VALUE:false",
                                 "KeepDisable", "HubCreate mnigs",
                                 "HubDelete DEFAULT", "BridgeCreate mnigs /DEVICE:se0 /TAP:yes",
                                 "ServerCertGet server.pem"])
        self.assertEqual([c.line() for c in h.listenerCleanupCommands(5555, {443, 992, 1194, 5555})],
                         ["ListenerDelete 443", "ListenerDelete 992", "ListenerDelete 1194"])

    def test_aConfiguredServerOnlyGetsTheHarmlessRepeats(self):
        lines = [c.line() for c in h.serverSettingsCommands(
            5600, {5600}, {"mnigs"}, "mnigs", "x" * 16, {("mnigs", "se0")}, "se0", "s.pem")]
        self.assertNotIn("ListenerCreate 5600", lines)
        self.assertFalse([line for line in lines if line.startswith(("HubCreate", "HubDelete",
                                                                      "BridgeCreate"))])
        self.assertEqual(h.listenerCleanupCommands(5600, {5600}), [])

    def test_anotherPort(self):
        lines = [c.line() for c in h.serverSettingsCommands(
            5600, {5555}, {"mnigs"}, "mnigs", "x" * 16, set(), "se0", "s.pem")]
        self.assertEqual(lines[0], "ListenerCreate 5600")

    def test_names(self):
        for good in ("mnigs", "Hub_1", "a-b"):
            self.assertEqual(h.checkHubName(good), good)
        for bad in ("DEFAULT", "default", "", "a b", "a/b", "x" * 33):
            self.assertRaises(ValueError, h.checkHubName, bad)
        for good in ("se0", "mnigs", "a" * 11):
            self.assertEqual(h.checkBridgeName(good), good)
        for bad in ("", "a" * 12, "Se0", "se-0", "se_0"):
            self.assertRaises(ValueError, h.checkBridgeName, bad)
        self.assertEqual(h.tapInterface("a" * 11), "tap_" + "a" * 11)


FRESH = ("\ufeff# Software Configuration File\r\ndeclare root\r\n{\r\n"
         "\tdeclare DDnsClient\r\n\t{\r\n\t\tstring CustomHttpHeader $\r\n"
         "\t\tbool Disabled false\r\n\t\tbyte Key 1Jek+JPP/eNPjxwAapqQ8vtVbeE=\r\n\t}\r\n"
         "\tdeclare ServerConfiguration\r\n\t{\r\n\t\tbool DisableJsonRpcWebApi false\r\n"
         "\t\tbool DisableNatTraversal false\r\n\t\tbool Tls_Disable1_0 false\r\n"
         "\t\tbool Tls_Disable1_1 false\r\n\t\tbool Tls_Disable1_2 false\r\n"
         "\t\tbool UseKeepConnect true\r\n\t}\r\n"
         "\tdeclare VirtualHUB\r\n\t{\r\n\t\tdeclare SecureNAT\r\n\t\t{\r\n"
         "\t\t\tbool Disabled false\r\n\t\t}\r\n\t}\r\n}\r\n")


class HardeningTests(SynchronousTestCase):
    def test_exactlyTheHardeningLinesChange(self):
        hardened = h.hardenedConfig(FRESH)
        changed = [(a, b) for a, b in zip(FRESH.split("\r\n"), hardened.split("\r\n")) if a != b]
        self.assertEqual(changed, [
            ("\t\tbool Disabled false", "\t\tbool Disabled true"),
            ("\t\tbool DisableJsonRpcWebApi false", "\t\tbool DisableJsonRpcWebApi true"),
            ("\t\tbool DisableNatTraversal false", "\t\tbool DisableNatTraversal true"),
            ("\t\tbool Tls_Disable1_0 false", "\t\tbool Tls_Disable1_0 true"),
            ("\t\tbool Tls_Disable1_1 false", "\t\tbool Tls_Disable1_1 true"),
            ("\t\tbool UseKeepConnect true", "\t\tbool UseKeepConnect false"),
        ])
        self.assertIn("declare SecureNAT\r\n\t\t{\r\n\t\t\tbool Disabled false", hardened)

    def test_aHardenedConfigurationIsLeftAlone(self):
        self.assertIsNone(h.hardenedConfig(h.hardenedConfig(FRESH)))
