"""
Both services built with a Clock and fakes: their constructors store what
they are given and touch nothing (no state directory, key, socket or
file); C{startService} opens and wires it all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.client.service import ClientService
from mnigs.methods.forward import ForwardClient, ForwardGateway
from mnigs.protocol import keyId
from mnigs.routing.neighbours import StaticSource
from mnigs.server.config import loadServerConfig
from mnigs.server.service import GatewayService
from mnigs.methods import register
from tests.htmlview import PageView
from tests.unit.test_registries import FAKE_METHOD, FakeClient, FakeGateway
from tests.unit.test_website import ask


class Recorder:
    """Records every call made on it; answers each from C{answers}."""

    def __init__(self, **answers):
        self.calls = []
        self.answers = answers

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append(name)
            answer = self.answers.get(name)
            return answer(*args, **kwargs) if callable(answer) else answer
        return call


def fakeNetlink():
    return Recorder(linkIsUp=True, hasDefaultRoute=True, localAddresses=set, linkAddresses=list)


class Runner:
    def __init__(self):
        self.scripts = []

    def apply(self, script):
        self.scripts.append(script)
        return defer.succeed(None)


class Directories:
    def setUp(self):
        # Short: the admin socket's path is bounded.
        self.top = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.top)
        self.stateDir = os.path.join(self.top, "state")
        self.adminSocket = os.path.join(self.top, "run", "admin.sock")

    def write(self, text):
        path = os.path.join(self.top, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertNothingMade(self, reactor, *fakes):
        self.assertEqual(sorted(os.listdir(self.top)), ["config.toml"])
        self.assertEqual((reactor.tcpServers, reactor.unixServers, reactor.tcpClients),
                         ([], [], []))
        self.assertEqual(reactor.getDelayedCalls(), [])
        for fake in fakes:
            self.assertEqual(fake.calls, [])


class GatewayServiceTests(Directories, SynchronousTestCase):
    def config(self, methods='[methods.forward]\n'):
        return loadServerConfig(self.write(
            f'[server]\nstate_dir = "{self.stateDir}"\n[admin]\nsocket = "{self.adminSocket}"\n'
            '[uplink]\ninterface = "up0"\n[rpc]\nlisten = ["127.0.0.1"]\nport = 18150\n'
            + methods))

    def build(self, config):
        self.reactor = MemoryReactorClock()
        self.netlink, self.runner = fakeNetlink(), Runner()
        self.poolRouting = Recorder()
        self.hopRouting = Recorder(readNeighbours=lambda choose: [], installedHops=dict)
        return GatewayService(self.reactor, config, netlink=self.netlink, nftRunner=self.runner,
                              poolRouting=self.poolRouting, hopRouting=self.hopRouting)

    def test_constructionDoesNoIO(self):
        service = self.build(self.config())
        self.assertNothingMade(self.reactor, self.netlink, self.poolRouting, self.hopRouting)
        self.assertEqual(self.runner.scripts, [])
        self.assertEqual(list(service), [])

    def test_startWiresAndServes(self):
        service = self.build(self.config())
        service.startService()
        self.assertTrue(os.path.exists(os.path.join(self.stateDir, "identity.pem")))
        self.assertEqual(service.offers.gatewayId, keyId(service.key.verify_key))
        self.assertEqual(list(service.methods), ["forward"])
        self.assertIsInstance(service.methods["forward"], ForwardGateway)
        self.assertIs(service.methods["forward"].netlink, self.netlink)
        # The tables (the gate's, the replies by arrival's) were installed
        # by the fake runner, the pool and hop routes by the fakes, and the
        # gateway serves: listeners up, the uplink watched.
        self.assertEqual(len(self.runner.scripts), 2)
        self.assertIn("table inet mnigs_hops {\n", self.runner.scripts[1])
        self.assertEqual(self.poolRouting.calls, ["install"])
        self.assertEqual(self.hopRouting.calls,
                         ["readNeighbours", "installedHops", "takeOver", "install", "prune"])
        self.assertEqual(service.gateway.describe()["state"], "serving")
        [(port, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (18150, "127.0.0.1"))
        [(path, *_)] = self.reactor.unixServers
        self.assertEqual(path, self.adminSocket)
        self.assertIn("linkIsUp", self.netlink.calls)
        self.successResultOf(defer.maybeDeferred(service.stopService))

    def test_theStatusPageWhenAsked(self):
        service = self.build(self.config(
            '[methods.forward]\n[web]\nenabled = true\nlisten = ["127.0.0.1"]\nport = 18151\n'))
        service.startService()
        [site] = [factory for port, factory, _, interface in self.reactor.tcpServers
                  if (port, interface) == (18151, "127.0.0.1")]
        page = PageView(ask(site, b"GET", b"/").body.decode("utf-8"))
        self.assertEqual(page.headings[0], ("h1", "mnigs gateway mnigs-gateway: serving"))
        self.assertEqual(json.loads(ask(site, b"GET", b"/status.json").body)["state"], "serving")
        self.successResultOf(defer.maybeDeferred(service.stopService))

    def test_aRegisteredMethodIsBuilt(self):
        self.addCleanup(register(FAKE_METHOD))
        service = self.build(self.config('[methods.fakevpn]\nport = 4001\n'))
        service.startService()
        [gateway] = service.methods.values()
        self.assertIsInstance(gateway, FakeGateway)
        self.assertEqual(gateway.context.stateDir, self.stateDir)
        self.assertEqual(gateway.started, [[]])
        self.assertEqual(service.offers.offer("10.0.0.1", True, 0)["methods"],
                         [{"type": "fakevpn", "endpoint": "10.0.0.1:4001", "token": "fake"}])
        self.successResultOf(defer.maybeDeferred(service.stopService))


class ClientServiceTests(Directories, SynchronousTestCase):
    def config(self, methods='["forward"]', extra=''):
        return loadClientConfig(self.write(
            f'[client]\nstate_dir = "{self.stateDir}"\n[admin]\nsocket = "{self.adminSocket}"\n'
            f'[methods]\norder = {methods}\n'
            '[discovery]\nscan = ["static"]\nstatic = ["10.99.0.5"]\n' + extra))

    def build(self, config):
        self.reactor = MemoryReactorClock()
        self.netlink, self.routing = fakeNetlink(), Recorder()
        self.dataPath = Recorder(start=lambda: defer.succeed(None), stop=lambda: defer.succeed(None))
        return ClientService(self.reactor, config, netlink=self.netlink, routing=self.routing,
                             dataPath=self.dataPath)

    def test_constructionDoesNoIO(self):
        service = self.build(self.config())
        self.assertNothingMade(self.reactor, self.netlink, self.routing, self.dataPath)
        self.assertEqual(list(service), [])

    def test_startWiresAndSearches(self):
        service = self.build(self.config())
        service.startService()
        self.assertTrue(os.path.exists(os.path.join(self.stateDir, "identity.pem")))
        self.assertEqual(service.clientId, keyId(service.clientKey.verify_key))
        self.assertEqual(list(service.methods), ["forward"])
        self.assertIsInstance(service.methods["forward"], ForwardClient)
        self.assertIs(service.methods["forward"].routing, self.routing)
        [source] = service.effects.sources
        self.assertIsInstance(source, StaticSource)
        [(path, *_)] = self.reactor.unixServers
        self.assertEqual(path, self.adminSocket)
        # Whatever a crashed run left is cleared, then the search begins:
        # the static candidate is asked for its offer.
        self.assertEqual(self.routing.calls[0], "clear")
        self.assertEqual(self.dataPath.calls, ["start"])
        self.assertEqual([(host, port) for host, port, *_ in self.reactor.tcpClients],
                         [("10.99.0.5", 8150)])
        d = defer.maybeDeferred(service.stopService)
        self.reactor.advance(10)
        self.successResultOf(d)

    def test_theStatusPageWhenAsked(self):
        service = self.build(self.config(
            extra='[web]\nenabled = true\nlisten = ["127.0.0.1"]\nport = 18152\n'))
        service.startService()
        [site] = [factory for port, factory, _, interface in self.reactor.tcpServers
                  if (port, interface) == (18152, "127.0.0.1")]
        page = PageView(ask(site, b"GET", b"/").body.decode("utf-8"))
        self.assertEqual(page.headings[0], ("h1", "mnigs client: searching"))
        self.assertEqual(json.loads(ask(site, b"GET", b"/status.json").body)["state"],
                         "searching")
        d = defer.maybeDeferred(service.stopService)
        self.reactor.advance(10)
        self.successResultOf(d)

    def test_aRegisteredMethodIsBuilt(self):
        self.addCleanup(register(FAKE_METHOD))
        service = self.build(self.config('["fakevpn", "forward"]'))
        service.startService()
        self.assertEqual(list(service.methods), ["fakevpn", "forward"])
        fake = service.methods["fakevpn"]
        self.assertIsInstance(fake, FakeClient)
        self.assertEqual((fake.section.depth, fake.context.routing), (1, self.routing))
        d = defer.maybeDeferred(service.stopService)
        self.reactor.advance(10)
        self.successResultOf(d)
