"""
What the client daemon loads.  Its resident memory is mostly code loaded
at start (docs/architecture.md, "Memory"; measured by bench/discovery.py
and bench/client_imports.py), so these tests keep the heavy modules it
does not need out of it: the server half of twisted.web and
txjsonrpc-ng, the C{cryptography} package, and the parts of pyroute2 its
package C{__init__} would load.  Each check runs in a fresh interpreter.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What a running `twistd mnigs-client` imports (as bench/client_imports.py).
CLIENT = ["twisted.scripts.twistd", "twisted.internet.reactor", "twisted.plugins.mnigs_plugins",
          "mnigs.client.tap", "mnigs.client.config", "mnigs.client.service",
          "mnigs.routing.babel", "mnigs.routing.kernel", "mnigs.routing.neighbours",
          "mnigs.wireguard.device", "mnigs.protocol"]

NOT_IN_THE_CLIENT = ["cryptography", "bcrypt", "twisted.web.server", "twisted.web.resource",
                     "txjsonrpc_ng.web.jsonrpc", "mnigs.rpc.server", "twisted.conch",
                     "pyroute2.ndb", "pyroute2.ipdb", "sqlite3", "mnigs.server",
                     "mnigs.openvpn", "mnigs.softether", "mnigs.routing.yggdrasil",
                     "mnigs.routing.cjdns"]


def loaded(code):
    env = dict(os.environ, PYTHONPATH=TOP + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                             "print(json.dumps(sorted(sys.modules)))"],
                            capture_output=True, text=True, env=env, cwd=TOP, timeout=120)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return json.loads(result.stdout.splitlines()[-1])


def under(modules, package):
    return [m for m in modules if m == package or m.startswith(package + ".")]


class ClientImportsTests(SynchronousTestCase):
    def test_clientLeavesHeavyModulesOut(self):
        modules = loaded("".join(f"import {name}\n" for name in CLIENT))
        self.assertIn("mnigs.rpc.client", modules)
        self.assertIn("pyroute2.iproute.linux", modules)
        found = {package: under(modules, package) for package in NOT_IN_THE_CLIENT}
        self.assertEqual({p: m for p, m in found.items() if m}, {})


class LeanPyroute2Tests(SynchronousTestCase):
    def test_onlyWhatIsAskedFor(self):
        modules = loaded("from mnigs.system.pyroute import IPRoute, NetlinkError, netns")
        self.assertIn("pyroute2.iproute.linux", modules)
        self.assertEqual(under(modules, "pyroute2.ndb") + under(modules, "sqlite3"), [])

    def test_theWholePackageWhenAskedForByName(self):
        """
        Code importing a name of the package itself (not a submodule)
        still gets it: the package C{__init__} runs then.
        """
        modules = loaded("import mnigs.system.pyroute\nfrom pyroute2 import NDB, IPRoute\n"
                         "import mnigs.system.pyroute as lean\nassert IPRoute is lean.IPRoute")
        self.assertIn("pyroute2.ndb.main", modules)

    def test_submodulesOfTheLeanPackage(self):
        modules = loaded("import mnigs.system.pyroute\nfrom pyroute2 import config, protocols\n"
                         "import pyroute2\nassert pyroute2.protocols is protocols")
        self.assertIn("pyroute2.protocols", modules)
        self.assertEqual(under(modules, "pyroute2.ndb"), [])

    def test_afterAnOrdinaryImport(self):
        """If pyroute2 was already imported the ordinary way, nothing changes."""
        loaded("import pyroute2\nimport mnigs.system.pyroute as lean\n"
               "assert lean.IPRoute is pyroute2.IPRoute")
