# -*- test-case-name: tests.unit.test_openvpn.test_pki -*-
"""
The gateway's OpenVPN certificates, made with C{cryptography} (no
easy-rsa): a CA of its own and a server certificate signed by it, both
P-256 ECDSA, created on first start in the state directory.

Clients hold no certificate: they authenticate with their lease id and
token (see L{mnigs.methods.openvpn}).  So the CA's key signs exactly one
certificate and is not kept: if the server files are lost or unusable,
both are made afresh, and since every lease carries the CA, clients simply
get the new one with their next lease.

On the client, the CA comes from the network: L{checkCACertificate} parses
it and returns a re-serialised copy, so only a well-formed certificate,
never text from the gateway, reaches the openvpn configuration.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mnigs.system.statefile import atomicWrite

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
SERVER_NAME = "mnigs-openvpn-server"
VALIDITY = datetime.timedelta(days=3650)
# A certificate needs a little slack for clocks that are slightly behind.
BACKDATE = datetime.timedelta(days=1)
MAX_PEM = 8192


class CertificateRejected(ValueError):
    """A CA certificate from a lease that must not be used."""


@dataclass(frozen=True)
class ServerFiles:
    """Paths of the server's PKI files, and the CA certificate as PEM text."""

    ca: str
    cert: str
    key: str
    caPEM: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def makeCA(common: str, now=None):
    """A self-signed CA: (private key, certificate)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def makeServerCertificate(caKey, caCert, common: str = SERVER_NAME, now=None):
    """
    A TLS server certificate signed by the CA, with the key usage and
    extended key usage that the client's C{remote-cert-tls server} checks.
    """
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common)).issuer_name(caCert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                caKey.public_key()), critical=False)
            .sign(caKey, hashes.SHA256()))
    return key, cert


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _keyPEM(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usable(directory: str, now) -> str | None:
    """The CA PEM if the files in C{directory} make a usable set, else None."""
    try:
        with open(os.path.join(directory, CA_FILE), "rb") as f:
            caPEM = f.read()
        with open(os.path.join(directory, CERT_FILE), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(directory, KEY_FILE), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        ca = x509.load_pem_x509_certificate(caPEM)
    except (OSError, ValueError):
        return None
    if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        return None
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - datetime.timedelta(days=30):
        return None
    return caPEM.decode("ascii")


def loadOrCreateServerPKI(directory: str, now=None) -> ServerFiles:
    """
    The CA and server certificate in C{directory} (created 0700 if need
    be), made afresh when missing, mismatched, or within 30 days of
    expiry.  The private key is written 0600.
    """
    now = now or _now()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    caPEM = _usable(directory, now)
    if caPEM is None:
        caKey, caCert = makeCA(f"mnigs-openvpn-ca-{os.urandom(4).hex()}", now)
        key, cert = makeServerCertificate(caKey, caCert, now=now)
        atomicWrite(os.path.join(directory, KEY_FILE), _keyPEM(key), mode=0o600)
        atomicWrite(os.path.join(directory, CERT_FILE), _pem(cert), mode=0o644)
        # The CA last: its presence says the set is complete.
        atomicWrite(os.path.join(directory, CA_FILE), _pem(caCert), mode=0o644)
        caPEM = _pem(caCert).decode("ascii")
    return ServerFiles(ca=os.path.join(directory, CA_FILE),
                       cert=os.path.join(directory, CERT_FILE),
                       key=os.path.join(directory, KEY_FILE), caPEM=caPEM)


def checkCACertificate(pem, now=None) -> str:
    """
    A CA certificate from a lease: exactly one PEM certificate, a CA,
    currently valid.  Returns it re-serialised by us.
    """
    now = now or _now()
    if not isinstance(pem, str) or len(pem) > MAX_PEM:
        raise CertificateRejected(f"ca must be PEM text of at most {MAX_PEM} characters")
    if pem.count("-----BEGIN") != 1 or not pem.lstrip().startswith("-----BEGIN CERTIFICATE-----"):
        raise CertificateRejected("ca must be exactly one PEM certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise CertificateRejected(f"ca is not a PEM certificate: {e}") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        raise CertificateRejected("ca has no basic constraints") from None
    if not constraints.ca:
        raise CertificateRejected("ca is not a CA certificate")
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CertificateRejected("ca is not valid now")
    return _pem(cert).decode("ascii")
