"""
The gateway's WireGuard answers follow its routing tables, not the
interface the initiation came in on (issue 11, bench/wg_sticky_reply.sh).

Three namespaces of this test's own, real wireguard-go on both ends and the
real nftables table of L{mnigs.system.nft.NftAccess}::

    client a0 --- r0 [router] r1 --- b0 gateway     (initiations arrive on b0)
                              r2 --- b1             (the gateway's way back)

wireguard-go passes the arrival interface with every answer (IP_PKTINFO);
the kernel then takes the client for on-link on b0, ARPs there and drops the
handshake response, while TCP and ICMP follow the routes.  The test first
shows the loss without mnigs's table, then the tunnel working with it.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.system.admission import Admission
from mnigs.system.command import runCommand
from mnigs.system.nft import NftAccess, NftRunner
from mnigs.wireguard.device import WireGuardDevice
from mnigs.wireguard.uapi import Peer, UAPIClient, generatePrivateKey, publicKey
from tests.mesh._netns import makeNamespace, nsrun, requireRoot, uniqueName, veth
from tests.mesh.commands import waitFor
from tests.mesh.test_wireguard_device import forgetWireGuard


class ReplyRouteTests(TestCase):
    timeout = 90

    def setUp(self):
        requireRoot(self, "wireguard-go", "wg", "ping", "nft")
        from twisted.internet import reactor
        self.reactor = reactor
        self.client, self.router, self.gateway = (makeNamespace(self) for _ in range(3))
        for ns in (self.client, self.router, self.gateway):
            nsrun(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                       "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])
        veth(self.client, "a0", "10.1.1.1/24", self.router, "r0", "10.1.1.2/24")
        veth(self.router, "r1", "10.3.3.1/24", self.gateway, "b0", "10.3.3.2/24")
        veth(self.router, "r2", "10.4.4.1/24", self.gateway, "b1", "10.4.4.2/24")
        nsrun(self.gateway, ["ip", "addr", "add", "10.9.9.9/32", "dev", "lo"])
        nsrun(self.client, ["ip", "route", "add", "default", "via", "10.1.1.2"])
        nsrun(self.router, ["ip", "route", "add", "10.9.9.9/32", "via", "10.3.3.2", "dev", "r1"])
        nsrun(self.gateway, ["ip", "route", "add", "10.1.1.0/24", "via", "10.4.4.1", "dev", "b1"])
        self.ifClient, self.ifGateway = uniqueName("mw", 6), uniqueName("mw", 6)
        for ifname in (self.ifClient, self.ifGateway):
            self.addCleanup(forgetWireGuard, ifname)

    @defer.inlineCallbacks
    def tunnel(self):
        keyC, keyG = generatePrivateKey(), generatePrivateKey()
        devices = [
            WireGuardDevice(self.reactor, self.ifClient, keyC, address="100.64.0.2/32",
                            netns=self.client),
            WireGuardDevice(self.reactor, self.ifGateway, keyG, listenPort=51820,
                            address="100.64.0.1/24", netns=self.gateway)]
        for device in devices:
            self.addCleanup(device.stop)
        yield defer.gatherResults([device.start() for device in devices])
        yield UAPIClient(self.reactor, self.ifGateway).setPeers(
            add=[Peer(publicKey(keyC), ["100.64.0.2/32"])])
        yield UAPIClient(self.reactor, self.ifClient).setPeers(
            add=[Peer(publicKey(keyG), ["100.64.0.1/32"], endpoint="10.9.9.9:51820")])

    def ping(self):
        d = runCommand(self.reactor, ["ip", "netns", "exec", self.client, "ping", "-n", "-c", "1",
                                      "-W", "1", "-I", self.ifClient, "100.64.0.1"])
        return d.addCallback(lambda result: result.exitCode == 0)

    @defer.inlineCallbacks
    def test_handshakeAnswersFollowTheRoutes(self):
        yield self.tunnel()
        # Without the table: the answers go out of b0 and are lost (the
        # first initiation is retried by wireguard-go every 5 s; three
        # pings cover the first two).
        for attempt in range(3):
            self.assertFalse((yield self.ping()), "the unfixed path should lose the handshake")
        neighbours = nsrun(self.gateway, ["ip", "-4", "neigh", "show", "dev", "b0"]).stdout
        self.assertIn(b"10.1.1.1", neighbours)  # taken for on-link on the arrival side

        access = NftAccess(self.reactor, NftRunner(self.reactor, netns=self.gateway), "b9",
                           table=uniqueName("mnigs", 6))
        self.addCleanup(access.remove)
        yield access.install([Admission(ipaddress.ip_address("100.64.0.2"), self.ifGateway)],
                             replyPorts=[51820], strictInterfaces=[self.ifGateway])
        yield waitFor(self.reactor, self.ping, timeout=15, message="a ping through the tunnel")
