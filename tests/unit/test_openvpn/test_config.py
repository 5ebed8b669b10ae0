"""
Tests for L{mnigs.openvpn.config} and L{mnigs.openvpn.pki}: the server's
argv, the client's configuration file, hostile lease configs, and the
certificates made on first start.
"""

import datetime
import ipaddress
import os
import shutil
import stat
import tempfile

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from mnigs.openvpn import pki
from mnigs.openvpn.config import (
    LeaseConfigRejected,
    checkCredentials,
    checkLeaseConfig,
    clientConfig,
    credentialsFile,
    serverArgv,
)

_CA = {}


def caPEM():
    """One CA for the whole module (making keys is the slow part)."""
    if not _CA:
        key, cert = pki.makeCA("test-ca")
        _CA["key"], _CA["cert"] = key, cert
        _CA["pem"] = pki._pem(cert).decode("ascii")
    return _CA["pem"]


def goodConfig(**changes):
    config = {"address": "100.65.0.7/32", "gateway_address": "100.65.0.1",
              "endpoint": "10.251.0.3:1194", "proto": "udp", "ca": caPEM(), "dns": []}
    config.update(changes)
    return config


class LeaseConfigTests(SynchronousTestCase):
    def test_goodConfigIsNormalised(self):
        checked = checkLeaseConfig(goodConfig(endpoint="[fd00::1]:1194", proto="tcp"))
        self.assertEqual(checked, {"address": "100.65.0.7/32", "gateway_address": "100.65.0.1",
                                   "endpoint": (ipaddress.ip_address("fd00::1"), 1194),
                                   "proto": "tcp", "ca": caPEM()})

    def test_protoDefaultsToUDP(self):
        config = goodConfig()
        del config["proto"]
        self.assertEqual(checkLeaseConfig(config)["proto"], "udp")

    def test_hostileConfigsAreRejected(self):
        server = pki.makeServerCertificate(_CA["key"], _CA["cert"])[1]
        now = datetime.datetime.now(datetime.timezone.utc)
        expired = pki._pem(pki.makeCA("old", now=now - datetime.timedelta(days=4000))[1]).decode()
        hostile = {
            "not an object": ["address", "x"],
            "no address": goodConfig(address=None),
            "address not /32": goodConfig(address="100.65.0.7/24"),
            "address IPv6": goodConfig(address="fd00::7/128"),
            "address injection": goodConfig(address="100.65.0.7/32\nscript-security 3"),
            "address number": goodConfig(address=1),
            "gateway number": goodConfig(gateway_address=1677787393),
            "gateway is the client": goodConfig(gateway_address="100.65.0.7"),
            "gateway IPv6": goodConfig(gateway_address="fd00::1"),
            "gateway injection": goodConfig(gateway_address="100.65.0.1 \nup /bin/sh"),
            "endpoint host name": goodConfig(endpoint="evil.example:1194"),
            "endpoint injection": goodConfig(endpoint="10.0.0.1:1194\nup /bin/sh"),
            "endpoint port 0": goodConfig(endpoint="10.0.0.1:0"),
            "endpoint multicast": goodConfig(endpoint="224.0.0.1:1194"),
            "endpoint list": goodConfig(endpoint=["10.0.0.1", 1194]),
            "proto tcp-server": goodConfig(proto="tcp-server"),
            "proto injection": goodConfig(proto="udp\nup /bin/sh"),
            "proto number": goodConfig(proto=17),
            "no ca": goodConfig(ca=None),
            "ca not text": goodConfig(ca=["-----BEGIN CERTIFICATE-----"]),
            "ca garbage": goodConfig(ca="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "ca two certificates": goodConfig(ca=caPEM() + caPEM()),
            "ca key first": goodConfig(ca="-----BEGIN PRIVATE KEY-----\n" + caPEM()),
            "ca not a CA": goodConfig(ca=pki._pem(server).decode()),
            "ca expired": goodConfig(ca=expired),
            "ca huge": goodConfig(ca=caPEM() + "\n" * 10000),
            "ca not ascii": goodConfig(ca=caPEM().replace("CERTIFICATE-----\n", "CERTIFICATE-----\né", 1)),
        }
        for name, config in hostile.items():
            with self.assertRaises(LeaseConfigRejected, msg=name):
                checkLeaseConfig(config)

    def test_textAfterTheCertificateIsDropped(self):
        injected = caPEM() + "</ca>\nscript-security 3\nup /bin/sh\n"
        checked = checkLeaseConfig(goodConfig(ca=injected))
        self.assertEqual(checked["ca"], caPEM())

    def test_textBeforeTheCertificateIsRefused(self):
        self.assertRaises(LeaseConfigRejected, checkLeaseConfig,
                          goodConfig(ca="script-security 3\n" + caPEM()))

    def test_credentials(self):
        self.assertEqual(checkCredentials("0123abcd", "tok-EN_1="), ("0123abcd", "tok-EN_1="))
        self.assertEqual(credentialsFile("0123abcd", "tok"), b"0123abcd\ntok\n")
        for leaseId, token in (("a\nb", "t"), ("a", "t\nx"), ("a b", "t"), ("", "t"),
                               ("a", ""), ("a", "t" * 129), (1, "t"), ("a", None),
                               ("a", "t\x00"), ("a", "tök")):
            self.assertRaises(LeaseConfigRejected, checkCredentials, leaseId, token)


class ClientConfigTests(SynchronousTestCase):
    def test_udpIPv4(self):
        text = clientConfig(checkLeaseConfig(goodConfig()), "mp0", "/s/ca.pem", "/s/credentials")
        self.assertEqual(text.splitlines(), [
            "client", "dev mp0", "dev-type tun", "proto udp", "remote 10.251.0.3 1194",
            "nobind", "ca /s/ca.pem", "remote-cert-tls server", "auth-user-pass /s/credentials",
            "auth-retry none", "route-noexec",
            'pull-filter accept "route-gateway "', 'pull-filter ignore "route"',
            'pull-filter ignore "redirect-"', 'pull-filter ignore "dhcp-option"',
            'pull-filter ignore "block-"', 'pull-filter ignore "register-dns"',
            'pull-filter ignore "ifconfig-ipv6"', 'pull-filter ignore "ping"',
            'pull-filter ignore "inactive"', "ping 1", "ping-exit 5", "connect-retry-max 1",
            "disable-dco", "verb 3", "suppress-timestamps"])

    def test_tcpIPv6(self):
        config = checkLeaseConfig(goodConfig(endpoint="[fd00::1]:443", proto="tcp"))
        lines = clientConfig(config, "mp0", "/s/ca.pem", "/s/c").splitlines()
        self.assertIn("proto tcp-client", lines)
        self.assertIn("remote fd00::1 443", lines)
        self.assertNotIn("nobind", lines)

    def test_hostileNamesAndPaths(self):
        config = checkLeaseConfig(goodConfig())
        for ifname in ("", "x" * 16, "a b", "a\nb", "../x", "-x"):
            self.assertRaises(ValueError, clientConfig, config, ifname, "/s/ca", "/s/c")
        for path in ("relative", "/s/with space", "/s/new\nline", '/s/"q"', "/s/#x"):
            self.assertRaises(ValueError, clientConfig, config, "mp0", path, "/s/c")


class ServerArgvTests(SynchronousTestCase):
    files = pki.ServerFiles(ca="/s/ca.pem", cert="/s/server.pem", key="/s/server.key", caPEM="")

    def test_udp(self):
        argv = serverArgv("/usr/sbin/openvpn", "mo0", "udp", 1194, "100.65.0.0/22", self.files)
        self.assertEqual(argv[0], "/usr/sbin/openvpn")
        joined = " ".join(argv)
        for part in ("--mode server --tls-server", "--dev mo0 --dev-type tun --topology subnet",
                     "--ifconfig 100.65.0.1 255.255.252.0", "--port 1194",
                     "--ca /s/ca.pem --cert /s/server.pem --key /s/server.key --dh none",
                     "--verify-client-cert none --username-as-common-name",
                     "--management-client-auth", "--proto udp6 --multihome",
                     "--explicit-exit-notify 1", "--disable-dco"):
            self.assertIn(part, joined)
        self.assertEqual(argv[argv.index("--push") + 1], "topology subnet")
        self.assertIn("route-gateway 100.65.0.1", argv)
        self.assertNotIn("--duplicate-cn", argv)

    def test_tcp(self):
        argv = serverArgv("openvpn", "mo0", "tcp", 443, "100.65.0.0/24", self.files)
        self.assertEqual(argv[argv.index("--proto") + 1], "tcp6-server")
        self.assertNotIn("--multihome", argv)
        self.assertNotIn("--explicit-exit-notify", argv)

    def test_refusesBadValues(self):
        for args in (("mo 0", "udp", 1194, "100.65.0.0/24"), ("mo0", "icmp", 1194, "100.65.0.0/24"),
                     ("mo0", "udp", 0, "100.65.0.0/24"), ("mo0", "udp", 1194, "fd00::/64")):
            self.assertRaises(ValueError, serverArgv, "openvpn", *args, self.files)


class PKITests(SynchronousTestCase):
    def setUp(self):
        top = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, top)
        self.dir = os.path.join(top, "openvpn")

    def load(self, name):
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def test_firstStartMakesAServerCertificateSignedByTheCA(self):
        files = pki.loadOrCreateServerPKI(self.dir)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(files.key).st_mode), 0o600)
        ca = x509.load_pem_x509_certificate(self.load("ca.pem"))
        cert = x509.load_pem_x509_certificate(self.load("server.pem"))
        cert.verify_directly_issued_by(ca)
        self.assertEqual(files.caPEM, self.load("ca.pem").decode())
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(usage), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual(checkLeaseConfig(goodConfig(ca=files.caPEM))["ca"], files.caPEM)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "ca.key")))

    def test_secondStartKeepsTheFiles(self):
        first = pki.loadOrCreateServerPKI(self.dir)
        key = self.load("server.key")
        second = pki.loadOrCreateServerPKI(self.dir)
        self.assertEqual(first, second)
        self.assertEqual(self.load("server.key"), key)

    def test_brokenOrMismatchedFilesAreMadeAfresh(self):
        first = pki.loadOrCreateServerPKI(self.dir)
        with open(first.key, "wb") as f:
            f.write(b"garbage")
        second = pki.loadOrCreateServerPKI(self.dir)
        self.assertNotEqual(first.caPEM, second.caPEM)
        otherTop = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, otherTop)
        other = os.path.join(otherTop, "other")
        third = pki.loadOrCreateServerPKI(other)
        os.replace(third.key, second.key)  # a key that is not the certificate's
        self.assertNotEqual(pki.loadOrCreateServerPKI(self.dir).caPEM, second.caPEM)

    def test_certificateNearExpiryIsRenewed(self):
        old = datetime.datetime.now(datetime.timezone.utc) - pki.VALIDITY + datetime.timedelta(days=10)
        first = pki.loadOrCreateServerPKI(self.dir, now=old)
        self.assertNotEqual(pki.loadOrCreateServerPKI(self.dir).caPEM, first.caPEM)
