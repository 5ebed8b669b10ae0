"""
Printable text only (docs/protocol.md, "Transport"): no Unicode Cc or Cf in
any text a peer sends and the other side shows or logs.  The client
rejects such an offer, the server's config refuses such text, a
registration with such a name is -32602, and mnigsctl never prints a
control character that came from the network.
"""

import json

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.daemon.config import ConfigError
from mnigs.cli.ctl import formatDrain, formatStatus
from mnigs.protocol import OfferRejected, printable, unprintable, verifyOffer
from mnigs.server.config import loadServerConfig
from tests.unit.test_protocol import makeOffer

# One of each kind the protocol names.
BAD = {
    "NUL": "\x00", "BEL": "\x07", "TAB": "\t", "LF": "\n", "ESC": "\x1b",
    "DEL": "\x7f", "C1 NEL": "\x85", "C1 CSI": "\x9b",
    "RLO (bidi override)": "\u202e", "LRI (bidi isolate)": "\u2066",
    "ZWSP (zero width)": "\u200b", "ZWJ": "\u200d", "BOM": "\ufeff",
    "soft hyphen": "\u00ad",
}
GOOD = ["ops@example.net", "Grüße, 東京 — free ☕", "€ 2,50", "pay to: iban DE00 1234", ""]


class UnprintableTests(SynchronousTestCase):
    def test_everyBadKindFound(self):
        for name, c in BAD.items():
            self.assertIsNotNone(unprintable(f"ok{c}ok"), name)
            self.assertIn(f"U+{ord(c):04X}", unprintable(f"ok{c}ok"))

    def test_goodTextPasses(self):
        for text in GOOD:
            self.assertIsNone(unprintable(text), text)

    @settings(derandomize=True, max_examples=300)
    @given(st.text())
    def test_printableLeavesNothingUnprintable(self, text):
        shown = printable(text)
        self.assertIsNone(unprintable(shown))
        if unprintable(text) is None:
            self.assertEqual(shown, text)


class OfferTextTests(SynchronousTestCase):
    def test_offerWithUnprintableTextRejectedWithAReason(self):
        fields = {"gateway__name": "gateway name", "terms__contact": "contact",
                  "terms__notes": "notes"}
        for path, field in fields.items():
            for name, c in BAD.items():
                offer, _ = makeOffer(**{path: f"nice{c}text"})
                e = self.assertRaises(OfferRejected, verifyOffer, offer)
                self.assertIn(field, str(e), name)
                self.assertIn("not printable", str(e), name)

    def test_feeTextChecked(self):
        for member in ("currency", "pay_to", "period"):
            fee = {"amount": "1", "currency": "EUR", "period": "month", "pay_to": "x"}
            fee[member] = "E\u202eR"
            offer, _ = makeOffer(terms__fee=fee)
            e = self.assertRaises(OfferRejected, verifyOffer, offer)
            self.assertIn(member.replace("_", " ") if member != "pay_to" else "pay_to", str(e))

    def test_printableOfferAccepted(self):
        offer, _ = makeOffer(gateway__name="Grüße ☕", terms__notes=GOOD[1])
        self.assertEqual(verifyOffer(offer).name, "Grüße ☕")


class RegisterNameTests(SynchronousTestCase):
    def test_unprintableClientNameIsInvalidParams(self):
        for name, c in BAD.items():
            e = self.assertRaises(protocol.RPCError, protocol.parseRegister,
                                  {"client": {"id": "me", "name": f"a{c}b"},
                                   "method": "forward"})
            self.assertEqual(e.code, protocol.INVALID_PARAMS, name)


MINIMAL = """
[uplink]
interface = "up0"
[methods.forward]
"""


class ServerConfigTextTests(SynchronousTestCase):
    def test_unprintableTermsRefusedNamingFileKeyAndReason(self):
        keys = {"server.name": "[server]\nname = {}\n",
                "terms.contact": "[terms]\ncontact = {}\n",
                "terms.notes": "[terms]\nnotes = {}\n",
                "terms.fee.currency": "[terms.fee]\namount = \"1\"\ncurrency = {}\n",
                "terms.fee.pay_to": "[terms.fee]\npay_to = {}\n"}
        for key, table in keys.items():
            for name, c in BAD.items():
                path = self.mktemp()
                with open(path, "w") as f:
                    f.write(MINIMAL + table.format(json.dumps(f"x{c}y")))
                e = self.assertRaises(ConfigError, loadServerConfig, path)
                self.assertEqual(e.key, key, name)
                self.assertIn("not printable", e.reason, name)
                self.assertIn(path, str(e))


class CtlOutputTests(SynchronousTestCase):
    """
    Whatever the daemons relay from the network (gateway names, reasons,
    client names), mnigsctl prints it with its control characters
    escaped, so a hostile name can neither rewrite the terminal nor fake
    a line of output.
    """

    def assertClean(self, text):
        self.assertIsNone(unprintable(text.replace("\n", "")), repr(text))

    def test_clientStatus(self):
        hostile = "evil\x1b[2J\u202egw\nstate: online"
        text = formatStatus({
            "state": "online\x07", "reason": hostile,
            "current": {"name": hostile, "gateway": "ed25519:x", "host": "10.0.0.1",
                        "method": "wireguard", "lease_expires_in": 30},
            "gateways": [{"name": hostile, "host": "10.0.0.1", "score": 1.0, "distance": 1,
                          "quality": {}, "usable": False, "why_not": hostile}],
            "history": {hostile: {"sessions": 1, "last_failure_reason": hostile}},
        })
        self.assertClean(text)
        self.assertNotIn("\nstate: online", text.split("\n", 1)[1])
        self.assertIn("\\x1b[2J\\u202egw\\nstate: online", text)

    def test_serverStatus(self):
        text = formatStatus({"name": "gw\x9b", "gateway": "g", "state": "serving",
                             "clients": 1, "max_clients": 2,
                             "leases": [{"id": "1", "method": "forward", "client": "c\u200b",
                                         "host": "10.0.0.1", "address": "10.0.0.1/32"}]})
        self.assertClean(text)

    def test_errorsAndDrain(self):
        self.assertClean(formatStatus({"error": "bad\x1b]0;title\x07"}))
        self.assertClean(formatDrain({"error": "bad\x1b"}))
        self.assertClean(formatDrain({"state": "serving\u202e"}))
