"""
L{mnigs.system.nft} against the real nft in a network namespace of its own.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.system.admission import Admission
from mnigs.system.nft import NftAccess, NftError, NftRunner, elementValue
from tests.mesh._netns import makeNamespace, requireRoot

ip = ipaddress.ip_address
MAC = "02:00:5e:00:00:01"


def tunnel(address, interface="wg0"):
    return Admission(ip(address), interface)


def link(address, interface="m0", mac=MAC):
    return Admission(ip(address), interface, mac)


def members(listing):
    """The elements of an C{nft -j list set} answer, as tuples of text."""
    [found] = [item["set"] for item in listing["nftables"] if "set" in item]
    values = [elementValue(e) for e in found.get("elem", [])]
    return {tuple(v["concat"]) if isinstance(v, dict) else (v,) for v in values}


class NftAccessRealTests(TestCase):
    timeout = 60

    def setUp(self):
        requireRoot(self, "nft")
        from twisted.internet import reactor
        self.reactor = reactor
        self.ns = makeNamespace(self)
        self.runner = NftRunner(reactor, netns=self.ns)
        self.access = NftAccess(reactor, self.runner, "uplink0")

    @defer.inlineCallbacks
    def elements(self, setName):
        listing = yield self.runner.listJSON(["set", "inet", "mnigs", setName])
        return members(listing)

    @defer.inlineCallbacks
    def test_lifecycle(self):
        yield self.access.install([tunnel("10.0.0.1"), link("10.99.0.2")], [51820], ["wg0"])
        self.assertEqual((yield self.elements("clients4")), {("10.0.0.1",), ("10.99.0.2",)})
        self.assertEqual((yield self.elements("tunnel4")), {("10.0.0.1", "wg0")})
        self.assertEqual((yield self.elements("link4")), {("10.99.0.2", "m0", MAC)})
        self.assertEqual((yield self.elements("clients6")), set())

        table = yield self.runner.listJSON(["table", "inet", "mnigs"])
        chains = {i["chain"]["name"]: i["chain"] for i in table["nftables"] if "chain" in i}
        self.assertEqual(chains["forward"]["hook"], "forward")
        self.assertEqual(chains["forward"]["policy"], "accept")
        self.assertEqual(chains["postrouting"]["type"], "nat")
        self.assertEqual(chains["prerouting"]["hook"], "prerouting")
        rules = [i["rule"] for i in table["nftables"] if "rule" in i]
        self.assertEqual(chains["clamp"]["hook"], "forward")
        self.assertEqual(len(rules), 1 + 8 + 2 + 2 + 2)  # prerouting, forward, nat, clamp, reply marks

        # One turn: allow two, deny one present and one never admitted.
        calls = [self.access.allow(tunnel("10.0.0.2")), self.access.allow(link("2001:db8::2")),
                 self.access.deny(tunnel("10.0.0.1")), self.access.deny(tunnel("10.0.0.99"))]
        yield defer.gatherResults(calls)
        self.assertEqual((yield self.elements("clients4")), {("10.0.0.2",), ("10.99.0.2",)})
        self.assertEqual((yield self.elements("tunnel4")), {("10.0.0.2", "wg0")})
        self.assertEqual((yield self.elements("clients6")), {("2001:db8::2",)})
        self.assertEqual((yield self.elements("link6")), {("2001:db8::2", "m0", MAC)})

        yield self.access.allow(tunnel("10.0.0.2"))  # again: no error
        yield self.access.install([tunnel("10.0.0.5"), tunnel("2001:db8::5", "mo0")])
        self.assertEqual((yield self.elements("clients4")), {("10.0.0.5",)})
        self.assertEqual((yield self.elements("tunnel6")), {("2001:db8::5", "mo0")})
        self.assertEqual((yield self.elements("link6")), set())

        yield self.access.remove()
        yield self.access.remove()  # already gone: fine
        error = yield self.assertFailure(self.elements("clients4"), NftError)
        self.assertIn("No such file or directory", error.stderr)

    @defer.inlineCallbacks
    def test_changesWithoutATableFail(self):
        error = yield self.assertFailure(self.access.allow(tunnel("10.0.0.1")), NftError)
        self.assertEqual(error.exitCode, 1)

    @defer.inlineCallbacks
    def test_badScriptReportsStderr(self):
        error = yield self.assertFailure(self.runner.apply("this is not nft\n"), NftError)
        self.assertIn("syntax error", error.stderr)
