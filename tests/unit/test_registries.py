"""
The registries of methods (L{mnigs.methods}) and route sources
(L{mnigs.routing}): every entry builds what its interfaces promise and is
shown in the sample configurations and docs/configuration.md; and a method
or a source registered by a test alone is read by the config schemas, the
protocol and the builders, with no other file touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from mnigs.client.config import loadClientConfig
from mnigs.client.service import buildSources
from mnigs.daemon.config import ConfigError, Field, between, port
from mnigs.interfaces import IClientMethod, IGatewayMethod, IRouteSource
from mnigs.methods import METHODS, ClientContext, GatewayContext, Method, register
from mnigs.protocol import OfferRejected, knownMethods, signOffer, verifyOffer
from mnigs.routing import SOURCES, RouteSource, register as registerSource
from mnigs.routing.candidates import Candidate
from mnigs.server.config import loadServerConfig
from tests.unit.fakeprocess import FakeSpawner

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CJDNS_KEY = "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k"
CJDNS = f'[cjdns]\npublic_key = "{CJDNS_KEY}"\npassword = "NONE"\n'


def read(*parts):
    with open(os.path.join(TOP, *parts)) as f:
        return f.read()


class Files:
    def write(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def stateDir(self):
        # Short: sockets made under it have bounded paths.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        return directory


class FakeNetlink:
    def localAddresses(self):
        return set()


class RegistryWalkTests(Files, SynchronousTestCase):
    """
    Each registered method and route source, built from a config file the
    way the daemons build them, provides its interfaces.
    """

    def test_everyMethodBuildsBothSides(self):
        reactor = MemoryReactorClock()
        reactor.spawnProcess = FakeSpawner()
        server = loadServerConfig(self.write(
            '[uplink]\ninterface = "up0"\n' + "".join(f"[methods.{name}]\n" for name in METHODS)
            + CJDNS))
        client = loadClientConfig(self.write(
            f"[methods]\norder = {list(METHODS)!r}\n".replace("'", '"') + CJDNS))
        stateDir = self.stateDir()
        gatewayContext = GatewayContext(reactor, server, stateDir, access=None,
                                        netlink=FakeNetlink())
        clientContext = ClientContext(reactor, client, stateDir, routing=None,
                                      netlink=FakeNetlink())
        self.assertEqual(list(METHODS), ["forward", "wireguard", "openvpn", "softether", "cjdns"])
        for name, method in METHODS.items():
            gateway = method.buildGateway(gatewayContext, server.methods[name])
            self.assertTrue(verifyClass(IGatewayMethod, type(gateway)), name)
            self.assertTrue(verifyObject(IGatewayMethod, gateway), name)
            self.assertEqual(gateway.name, name)
            clientSide = method.buildClient(clientContext, client.methods.get(name))
            self.assertTrue(verifyClass(IClientMethod, type(clientSide)), name)
            self.assertTrue(verifyObject(IClientMethod, clientSide), name)
            self.assertEqual(clientSide.name, name)
        self.assertEqual(knownMethods(), tuple(METHODS))

    def test_everySourceBuilds(self):
        names = [name for name, source in SOURCES.items() if source.scan == "routes"]
        config = loadClientConfig(self.write(
            f'[discovery]\nsources = {names!r}\nscan = ["routes", "neighbours", "static"]\n'
            .replace("'", '"') + 'static = ["10.99.0.5"]\n' + CJDNS))
        built = buildSources(MemoryReactorClock(), config)
        self.assertEqual([source.name for source in built],
                         ["static", "babel", "kernel", "yggdrasil", "cjdns", "neighbours"])
        self.assertEqual(sorted(source.name for source in built), sorted(SOURCES))
        for source in built:
            self.assertTrue(verifyClass(IRouteSource, type(source)), source.name)
            self.assertTrue(verifyObject(IRouteSource, source), source.name)

    def test_sourcesComeInTheConfiguredOrder(self):
        """
        A candidate keeps the distance of the first source reporting it:
        static first, the route sources as discovery.sources lists them,
        then the neighbours.
        """
        config = loadClientConfig(self.write(
            '[discovery]\nsources = ["kernel", "babel"]\nstatic = ["10.99.0.5"]\n'))
        self.assertEqual([s.name for s in buildSources(MemoryReactorClock(), config)],
                         ["static", "kernel", "babel", "neighbours"])
        config = loadClientConfig(self.write('[discovery]\nscan = ["neighbours", "routes"]\n'))
        self.assertEqual([s.name for s in buildSources(MemoryReactorClock(), config)],
                         ["babel", "kernel", "neighbours"])

    def test_everyMethodIsInTheSamplesAndTheDocs(self):
        server = read("etc", "mnigs-server.toml")
        client = read("etc", "mnigs-client.toml")
        docs = read("docs", "configuration.md")
        [order] = re.findall(r"^order = .*$", client, re.M)
        [orderRow] = re.findall(r"^\| `methods\.order` .*$", docs, re.M)
        for name, method in METHODS.items():
            # A table shown, or (cjdns, which needs a node) shown commented out.
            self.assertRegex(server, rf"(?m)^(# )?\[methods\.{name}\]", name)
            self.assertIn(f"`methods.{name}.", docs)
            self.assertRegex(order, rf"\b{name}\b")
            self.assertIn(f"`{name}`", orderRow)
            if method.clientSettings:
                self.assertRegex(client, rf"(?m)^\[methods\.{name}\]", name)
                for key in method.clientSettings:
                    self.assertIn(f"`methods.{name}.{key}`", docs)

    def test_everySourceIsInTheSampleAndTheDocs(self):
        client = read("etc", "mnigs-client.toml")
        docs = read("docs", "configuration.md")
        [sourcesLine] = re.findall(r"^sources = .*$", client, re.M)
        [scanLine] = re.findall(r"^scan = .*$", client, re.M)
        [sourcesRow] = re.findall(r"^\| `discovery\.sources` .*$", docs, re.M)
        [scanRow] = re.findall(r"^\| `discovery\.scan` .*$", docs, re.M)
        for name, source in SOURCES.items():
            if source.scan == "routes":
                self.assertRegex(sourcesLine, rf"\b{name}\b")
                self.assertIn(f"`{name}`", sourcesRow)
            else:
                self.assertRegex(scanLine, rf"\b{name}\b")
                self.assertIn(f"`{name}`", scanRow)
            if source.settings:
                self.assertRegex(client, rf"(?m)^\[sources\.{name}\]", name)
                self.assertIn(f"`sources.{name}.", docs)


# -- a method and a source that exist only in this test --------------------

@implementer(IGatewayMethod)
class FakeGateway:
    """A method with nothing behind it: enough for the registry's readers."""

    name = "fakevpn"

    def __init__(self, context, section):
        self.context = context
        self.section = section
        self.started = []

    def offerEntry(self, localHost):
        return {"type": "fakevpn", "endpoint": f"{localHost}:{self.section.port}",
                "token": "fake"}

    def tunnelPools(self):
        return ()

    def udpPorts(self):
        return ()

    def tunnelInterfaces(self):
        return ()

    def admissions(self, lease):
        raise ValueError("nothing is admitted")

    def checkParams(self, params):
        return {}

    def checkClient(self, clientHost, localHost):
        pass

    def allocate(self, lease, others, localHost):
        return {}

    def start(self, leases):
        self.started.append(list(leases))
        return defer.succeed(None)

    def grant(self, lease):
        return defer.succeed(None)

    def traffic(self):
        return defer.succeed({})

    def revoke(self, lease):
        return defer.succeed(None)

    def unconfirmed(self):
        return defer.succeed([])

    def stop(self):
        return defer.succeed(None)

    def leave(self):
        return defer.succeed(None)

    def describe(self):
        return {}


@implementer(IClientMethod)
class FakeClient:
    name = "fakevpn"

    def __init__(self, context, section):
        self.context = context
        self.section = section

    def registerParams(self, offerEntry):
        return {}

    def checkAgainstOffer(self, offerEntry, config):
        pass

    def connect(self, step, lease):
        return defer.fail(RuntimeError("nowhere to connect"))


def fakeOffer(entry):
    if entry.get("token") != "fake":
        raise ValueError("token must be 'fake'")
    return dict(entry)


FAKE_METHOD = Method(
    "fakevpn", gateway=FakeGateway, client=FakeClient, offer=fakeOffer,
    serverSettings={"port": Field(int, 4000, port)},
    clientSettings={"depth": Field(int, 1, between(1, 9))})


@implementer(IRouteSource)
class FakeSource:
    name = "fakesource"

    def __init__(self, context, section):
        self.context = context
        self.section = section

    def candidates(self):
        import ipaddress

        return defer.succeed([Candidate(ipaddress.ip_address("10.98.0.1"), 1.0, self.name)])

    def watch(self, onChange):
        return self


FAKE_SOURCE = RouteSource("fakesource", FakeSource, {"depth": Field(int, 2, between(1, 9))})


def offerWith(methods):
    from nacl.signing import SigningKey

    from mnigs.protocol import PROTOCOL_VERSION, gatewayId

    key = SigningKey.generate()
    return signOffer({
        "protocol": PROTOCOL_VERSION, "gateway": {"id": gatewayId(key.verify_key), "name": "g"},
        "available": True, "issued_at": 1, "nonce": "n1",
        "terms": {"max_clients": 1, "clients": 0, "lease_seconds": 600},
        "methods": methods}, key)


class RegisteredInATestTests(Files, SynchronousTestCase):
    """
    A method and a route source registered here, and only here, are read
    by everything that reads the registries.
    """

    def setUp(self):
        self.addCleanup(register(FAKE_METHOD))
        self.addCleanup(registerSource(FAKE_SOURCE))

    def test_theServerSchemaReadsItsSection(self):
        config = loadServerConfig(self.write(
            '[uplink]\ninterface = "up0"\n[methods.fakevpn]\nport = 4001\n'))
        self.assertEqual((config.methods.fakevpn.enabled, config.methods.fakevpn.port),
                         (True, 4001))
        e = self.assertRaises(ConfigError, loadServerConfig, self.write(
            '[uplink]\ninterface = "up0"\n[methods.fakevpn]\nport = 0\n'))
        self.assertEqual(e.key, "methods.fakevpn.port")

    def test_theClientSchemaReadsItsSections(self):
        config = loadClientConfig(self.write(
            '[methods]\norder = ["fakevpn", "wireguard"]\n[methods.fakevpn]\ndepth = 3\n'
            '[discovery]\nsources = ["fakesource"]\n[sources.fakesource]\ndepth = 4\n'))
        self.assertEqual(config.methods.order, ["fakevpn", "wireguard"])
        self.assertEqual((config.methods.fakevpn.depth, config.sources.fakesource.depth), (3, 4))
        e = self.assertRaises(ConfigError, loadClientConfig, self.write(
            '[sources.fakesource]\ndepth = 10\n'))
        self.assertEqual(e.key, "sources.fakesource.depth")

    def test_theProtocolChecksItsOfferEntry(self):
        entry = {"type": "fakevpn", "token": "fake"}
        self.assertEqual(verifyOffer(offerWith([entry])).method("fakevpn"), entry)
        e = self.assertRaises(OfferRejected, verifyOffer,
                              offerWith([{"type": "fakevpn", "token": "other"}]))
        self.assertEqual(str(e), "fakevpn method: token must be 'fake'")

    def test_theBuildersMakeIt(self):
        reactor = MemoryReactorClock()
        server = loadServerConfig(self.write(
            '[uplink]\ninterface = "up0"\n[methods.fakevpn]\nport = 4001\n'))
        gatewayContext = GatewayContext(reactor, server, "/nonexistent", None, None)
        gateway = FAKE_METHOD.buildGateway(gatewayContext, server.methods.fakevpn)
        self.assertEqual(gateway.offerEntry("10.0.0.1")["endpoint"], "10.0.0.1:4001")
        client = loadClientConfig(self.write(
            '[methods]\norder = ["fakevpn"]\n[discovery]\nsources = ["fakesource"]\n'
            'scan = ["routes"]\n'))
        [source] = buildSources(reactor, client)
        self.assertIsInstance(source, FakeSource)
        self.assertEqual(source.section.depth, 2)

    def test_aNameIsRegisteredOnce(self):
        self.assertRaises(ValueError, register, FAKE_METHOD)
        self.assertRaises(ValueError, registerSource, FAKE_SOURCE)

    def test_removedItIsUnknownAgain(self):
        """What a test registers, its cleanup removes (the walk above sees only the real ones)."""
        METHODS.pop("fakevpn")
        try:
            e = self.assertRaises(ConfigError, loadServerConfig, self.write(
                '[uplink]\ninterface = "up0"\n[methods.fakevpn]\n'))
            self.assertEqual(e.key, "methods.fakevpn")
            self.assertIsNone(verifyOffer(offerWith([{"type": "fakevpn"}])).method("fakevpn"))
        finally:
            register(FAKE_METHOD)  # for setUp's cleanup to remove
