"""
L{BabelRouteSource} against real babeld: a chain a - b - c, with an
internet uplink on c (so there is a default route to ignore).

The test process lives in the root network namespace, where babeld's
C{::1} socket of another namespace cannot be reached.  Two ways round it:
the debugging CLI run inside the namespace (C{ip netns exec}), and, for the
long-lived watch, sockets created inside the namespace by pyroute2 and
adopted by the reactor (L{InNamespaceEndpoint}).
"""

import json
import os
import socket
import sys

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial import unittest
from zope.interface import implementer

from mnigs.routing.babel import BabelRouteSource
from tests.mesh.commands import waitFor
from tests.mesh.harness import BABEL_LOCAL_PORT, Mesh, requireNamespaces

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTRA_ADDRESSES = ("10.251.0.98", "10.251.0.99")
TIMEOUT = 30


@implementer(IStreamClientEndpoint)
class InNamespaceEndpoint:
    """
    TCP to C{::1} inside C{node}'s namespace: the socket is made there by
    pyroute2, connected (at once: it is local) and handed to the reactor.
    """

    def __init__(self, reactor, node, port=BABEL_LOCAL_PORT):
        self._reactor = reactor
        self._node = node
        self._port = port

    def connect(self, factory):
        try:
            sock = self._node.openSocket(socket.AF_INET6)
        except Exception:
            return defer.fail()
        try:
            sock.connect(("::1", self._port))
            sock.setblocking(False)
            built = []

            class Capturing(Factory):
                def buildProtocol(self, addr):
                    protocol = factory.buildProtocol(addr)
                    built.append(protocol)
                    return protocol

            self._reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET6, Capturing())
        except Exception:
            return defer.fail()
        finally:
            # The reactor holds its own duplicate of the descriptor.
            sock.close()
        return defer.succeed(built[0])


class BabelRouteSourceMeshTests(unittest.TestCase):
    def setUp(self):
        requireNamespaces(self, "babeld")
        self.mesh = Mesh(self)
        self.a, self.b, self.c = (self.mesh.node(name) for name in "abc")
        self.mesh.link(self.a, self.b)
        self.mesh.link(self.b, self.c)
        self.mesh.internet(self.c)
        extra = [f"redistribute local ip {address}/32 allow" for address in EXTRA_ADDRESSES]
        self.mesh.startBabel(extra={self.c: extra})
        self.mesh.waitConverged()

    def test_dumpCLIFromFarEnd(self):
        """
        C{python -m mnigs.routing.babel --dump} inside a's namespace prints
        b's and c's node addresses, nearest first, and nothing else: not
        the default route, not the mesh subnets.
        """
        result = self.a.run(
            ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "mnigs.routing.babel", "--dump"], timeout=30
        )
        candidates = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([c["address"] for c in candidates], [self.b.address, self.c.address])
        near, far = candidates
        self.assertLess(0, near["distance"])
        self.assertLess(near["distance"], far["distance"])
        self.assertEqual({c["source"] for c in candidates}, {"babel"})
        self.assertEqual({c["interface"] for c in candidates}, {"m0"})
        self.assertEqual(result.stderr, "")

    def test_dumpCLIWithoutBabeld(self):
        result = self.b.run(
            ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "mnigs.routing.babel", "--dump", "--port", "1"],
            check=False,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("Connection refused", result.stderr)

    @defer.inlineCallbacks
    def test_watchFollowsRoutesAndBabeldRestarts(self):
        source = BabelRouteSource(reactor, endpoint=InNamespaceEndpoint(reactor, self.a), debounce=0.2)
        candidates = yield source.candidates()
        self.assertEqual([str(c.address) for c in candidates], [self.b.address, self.c.address])

        changes = []
        watcher = source.watch(lambda: changes.append(reactor.seconds()))
        self.addCleanup(watcher.stop)

        def seen():
            return {str(c.address) for c in watcher.candidates()}

        yield waitFor(reactor, lambda: changes, TIMEOUT, message="the first report")
        self.assertEqual(seen(), {self.b.address, self.c.address})

        extra = EXTRA_ADDRESSES[0]
        self.c.run(["ip", "addr", "add", f"{extra}/32", "dev", "lo"])
        yield waitFor(reactor, lambda: len(changes) >= 2 and extra in seen(), TIMEOUT,
                      message=f"{extra} to appear")
        self.c.run(["ip", "addr", "del", f"{extra}/32", "dev", "lo"])
        yield waitFor(reactor, lambda: len(changes) >= 3 and extra not in seen(), TIMEOUT,
                      message=f"{extra} to go")

        self.mesh.stopBabel(self.a)
        self.mesh.startBabel(nodes=[self.a])
        after = len(changes)
        extra = EXTRA_ADDRESSES[1]
        self.c.run(["ip", "addr", "add", f"{extra}/32", "dev", "lo"])
        yield waitFor(
            reactor,
            lambda: len(changes) > after and seen() == {self.b.address, self.c.address, extra},
            timeout=TIMEOUT,
            message="the watch to reconnect and see the new address",
        )
        yield watcher.stop()
