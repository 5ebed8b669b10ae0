"""
The sample configurations in etc/ tell the truth: both load with the
daemons' own loaders, and every value shown is the key's default unless
its comment starts with "required" (a key without default) or "example
(default V)" (then V is the default).
"""

import os
import re
import tomllib

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import SCHEMA as CLIENT_SCHEMA, loadClientConfig
from mnigs.daemon.config import Field, Table
from mnigs.daemon.configcheck import CLIENT, SERVER, kindOf
from mnigs.server.config import SCHEMA as SERVER_SCHEMA, loadServerConfig

ETC = os.path.join(os.path.dirname(__file__), "..", "..", "etc")
SERVER_SAMPLE = os.path.join(ETC, "mnigs-server.toml")
CLIENT_SAMPLE = os.path.join(ETC, "mnigs-client.toml")
EXAMPLE = re.compile(r"example \(default (.+?)\)")


def splitComment(line):
    """
    A key line as its TOML (a one-key dict) and its comment: the comment
    starts at the first C{#} before which the line is whole TOML.
    """
    for end in [i for i, c in enumerate(line) if c == "#"] + [len(line)]:
        try:
            return tomllib.loads(line[:end]), line[end + 1:].strip()
        except tomllib.TOMLDecodeError:
            continue
    raise ValueError(f"not a one-line TOML key: {line!r}")


def sampleValues(path):
    """
    (line number, dotted key, value, comment) for every key a sample sets.
    """
    table = ()
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                table = tuple(line[1:line.index("]")].split("."))
                continue
            data, comment = splitComment(line)
            [(key, value)] = data.items()
            yield number, ".".join(table + (key,)), value, comment


def schemaField(schema, dottedKey) -> Field:
    node = schema
    for part in dottedKey.split("."):
        node = node.members[part] if isinstance(node, Table) else node[part]
    return node


class SamplesTests(SynchronousTestCase):
    def assertTruthful(self, path, schema):
        checked = 0
        for number, key, value, comment in sampleValues(path):
            where = f"{os.path.basename(path)}:{number} {key} = {value!r}"
            field = schemaField(schema, key)
            required = field.default is Field(str).default  # the "no default" marker
            if comment.startswith("required"):
                self.assertTrue(required, f"{where}: marked required but has a default")
            elif comment.startswith("example"):
                stated = EXAMPLE.match(comment)
                self.assertIsNotNone(stated, f"{where}: an example must say 'example (default V)'")
                default = tomllib.loads(f"v = {stated.group(1)}")["v"]
                self.assertEqual(default, field.default, f"{where}: the default it states is wrong")
                self.assertNotEqual(value, field.default, f"{where}: marked example but is the default")
            else:
                self.assertFalse(required, f"{where}: a required key must say 'required'")
                self.assertEqual(value, field.default, f"{where}: shown as the default but is not")
            checked += 1
        return checked

    def test_serverSampleTruthful(self):
        self.assertGreaterEqual(self.assertTruthful(SERVER_SAMPLE, SERVER_SCHEMA), 60)

    def test_clientSampleTruthful(self):
        self.assertGreaterEqual(self.assertTruthful(CLIENT_SAMPLE, CLIENT_SCHEMA), 50)

    def test_samplesLoadWithoutWarnings(self):
        warnings = []
        loadServerConfig(SERVER_SAMPLE, warnings)
        loadClientConfig(CLIENT_SAMPLE, warnings)
        self.assertEqual(warnings, [])

    def test_samplesToldApart(self):
        for path, kind in ((SERVER_SAMPLE, SERVER), (CLIENT_SAMPLE, CLIENT)):
            with open(path, "rb") as f:
                self.assertEqual(kindOf(path, tomllib.load(f)), kind)

    def test_aWrongDefaultIsCaught(self):
        """The check itself: a sample claiming a wrong default fails it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[rpc]\nport = 8151    # the RPC port\n")
        self.assertRaises(self.failureException, self.assertTruthful, path, SERVER_SCHEMA)
        with open(path, "w") as f:
            f.write("[rpc]\nport = 8151    # example (default 8150): another port\n"
                    "[uplink]\ninterface = \"up0\"    # required\n")
        self.assertEqual(self.assertTruthful(path, SERVER_SCHEMA), 2)
        with open(path, "w") as f:
            f.write("[rpc]\nport = 8151    # example (default 8152): another port\n")
        self.assertRaises(self.failureException, self.assertTruthful, path, SERVER_SCHEMA)
