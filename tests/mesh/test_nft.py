"""
L{mnigs.nft} against the real nft in a network namespace of its own.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.nft import NftAccess, NftError, NftRunner
from tests.mesh._netns import makeNamespace, requireRoot

ip = ipaddress.ip_address


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
        [found] = [item["set"] for item in listing["nftables"] if "set" in item]
        return {ip(e) for e in found.get("elem", [])}

    @defer.inlineCallbacks
    def test_lifecycle(self):
        yield self.access.install([ip("10.0.0.1")])
        self.assertEqual((yield self.elements("clients4")), {ip("10.0.0.1")})
        self.assertEqual((yield self.elements("clients6")), set())

        table = yield self.runner.listJSON(["table", "inet", "mnigs"])
        chains = {i["chain"]["name"]: i["chain"] for i in table["nftables"] if "chain" in i}
        self.assertEqual(chains["forward"]["hook"], "forward")
        self.assertEqual(chains["forward"]["policy"], "accept")
        self.assertEqual(chains["postrouting"]["type"], "nat")
        rules = [i["rule"] for i in table["nftables"] if "rule" in i]
        self.assertEqual(len(rules), 8)

        # One turn: allow two, deny one present and one never admitted.
        calls = [self.access.allow(ip("10.0.0.2")), self.access.allow(ip("2001:db8::2")),
                 self.access.deny(ip("10.0.0.1")), self.access.deny(ip("10.0.0.99"))]
        yield defer.gatherResults(calls)
        self.assertEqual((yield self.elements("clients4")), {ip("10.0.0.2")})
        self.assertEqual((yield self.elements("clients6")), {ip("2001:db8::2")})

        yield self.access.allow(ip("10.0.0.2"))  # again: no error
        yield self.access.install([ip("10.0.0.5"), ip("2001:db8::5")])
        self.assertEqual((yield self.elements("clients4")), {ip("10.0.0.5")})
        self.assertEqual((yield self.elements("clients6")), {ip("2001:db8::5")})

        yield self.access.remove()
        yield self.access.remove()  # already gone: fine
        error = yield self.assertFailure(self.elements("clients4"), NftError)
        self.assertIn("No such file or directory", error.stderr)

    @defer.inlineCallbacks
    def test_changesWithoutATableFail(self):
        error = yield self.assertFailure(self.access.allow(ip("10.0.0.1")), NftError)
        self.assertEqual(error.exitCode, 1)

    @defer.inlineCallbacks
    def test_badScriptReportsStderr(self):
        error = yield self.assertFailure(self.runner.apply("this is not nft\n"), NftError)
        self.assertIn("syntax error", error.stderr)
