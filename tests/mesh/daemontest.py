"""
A base for namespace tests that run real mnigs-server and mnigs-client
daemons on a L{Mesh}: each test gets C{self.mesh}, and every daemon it
starts is stopped when it ends.
"""

from twisted.trial.unittest import TestCase

from tests.mesh.clientproc import ClientProcess
from tests.mesh.gatewayproc import GatewayProcess
from tests.mesh.harness import INTERNET_HOST, Mesh, requireNamespaces


class DaemonMeshTestCase(TestCase):
    timeout = 180

    def setUp(self):
        requireNamespaces(self, "babeld", "wireguard-go", "wg", "nft", "ping")
        self.mesh = Mesh(self)

    def gateway(self, node, **overrides):
        """A started mnigs-server on C{node}, named after it."""
        process = GatewayProcess(node, overrides, name=node.name)
        self.addCleanup(process.stop)
        return process.start()

    def clientProcess(self, node, name="client", **overrides):
        """
        An mnigs-client on C{node} (not started), whose health probes also
        reach past the gateway to the internet host.
        """
        overrides.setdefault("health", {"beyond": [INTERNET_HOST]})
        process = ClientProcess(node, overrides, name=name)
        self.addCleanup(process.stop)
        return process
