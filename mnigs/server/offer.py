"""
What the gateway key signs and checks: the offer that C{gateway.info}
answers (with the nonce that registrations must sign), the proofs of
C{gateway.register}, and the register answers.  Signing costs tens of
microseconds, so the signed offer is cached per (address the client
reached us on, availability, client count, nonce, second).
"""

from __future__ import annotations

import hmac
import secrets

from mnigs import __version__
from mnigs.protocol import BAD_PROOF, MAX_PROBES, PROTOCOL_VERSION, RPCError, gatewayId, signOffer

#: Seconds a nonce is current; the one before it is still accepted, so a
#: nonce is good for between one and two periods after it is first offered
#: (the protocol: it changes at least every 5 minutes).
NONCE_PERIOD = 120.0


def _newNonce() -> str:
    return secrets.token_urlsafe(12)


class Nonces:
    """
    The offer's nonce: a fresh one every C{period} seconds; the current and
    the previous one are accepted.  Follows the clock lazily, no timer.
    """

    def __init__(self, clock, period: float = NONCE_PERIOD, newNonce=_newNonce):
        self.clock = clock
        self.period = period
        self.newNonce = newNonce
        self._current = None
        self._previous = None
        self._since = 0.0

    def _roll(self) -> None:
        now = self.clock.seconds()
        if self._current is None:
            self._current, self._since = self.newNonce(), now
            return
        age = now - self._since
        if age < self.period and age >= 0:
            return
        # Two periods or more (or the clock went back): the previous one
        # is too old as well.
        self._previous = self._current if 0 <= age < 2 * self.period else None
        self._current, self._since = self.newNonce(), now

    def current(self) -> str:
        self._roll()
        return self._current

    def accepts(self, nonce: str) -> bool:
        self._roll()
        given = nonce.encode("utf-8", "surrogatepass")
        return any(known is not None and hmac.compare_digest(known.encode("ascii"), given)
                   for known in (self._current, self._previous))


def termsFromConfig(terms) -> dict:
    fee = None
    if terms.fee.amount:
        fee = {"amount": terms.fee.amount, "currency": terms.fee.currency,
               "period": terms.fee.period, "pay_to": terms.fee.pay_to}
    bandwidth = None
    if terms.bandwidth_kbps.down or terms.bandwidth_kbps.up:
        bandwidth = {"down": terms.bandwidth_kbps.down, "up": terms.bandwidth_kbps.up}
    return {"max_clients": terms.max_clients, "lease_seconds": terms.lease_seconds,
            "fee": fee, "bandwidth_kbps": bandwidth, "contact": terms.contact,
            "notes": terms.notes}


class OfferMaker:
    def __init__(self, clock, key, name: str, terms: dict, methods, nonces=None, probe=(),
                 addresses=None):
        self.clock = clock
        self.key = key
        self.gatewayId = gatewayId(key.verify_key)
        self.name = name
        self.terms = terms
        self.methods = methods
        # What the uplink check pings (uplink.probe): clients ping it too,
        # through their tunnel, to know the Internet answers.
        self.probe = [str(address) for address in probe][:MAX_PROBES]
        self.nonces = nonces if nonces is not None else Nonces(clock)
        # Where else clients can reach this gateway (the offer's
        # C{addresses}; L{mnigs.server.meshaddresses}): called per offer.
        self.addresses = addresses or (lambda: [])
        self._cache = {}

    def setTerms(self, terms: dict) -> None:
        """New terms (a config reload): the next offer carries them."""
        self.terms = terms
        self._cache.clear()

    def offer(self, localHost: str, available: bool, clients: int) -> dict:
        now = int(self.clock.seconds())
        nonce = self.nonces.current()
        cacheKey = (localHost, available, clients, nonce, now)
        cached = self._cache.get(cacheKey)
        if cached is not None:
            return cached
        entries = [entry for entry in (m.offerEntry(localHost) for m in self.methods)
                   if entry is not None]
        terms = dict(self.terms, clients=clients)
        body = {
            "protocol": PROTOCOL_VERSION,
            "gateway": {"id": self.gatewayId, "name": self.name,
                        "software": f"mnigs {__version__}"},
            "available": available,
            "terms": terms,
            "methods": entries,
            "issued_at": now,
            "nonce": nonce,
        }
        if self.probe:
            body["probe"] = self.probe
        addresses = self.addresses()
        if addresses:
            body["addresses"] = addresses
        offer = signOffer(body, self.key)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[cacheKey] = offer
        return offer

    def checkProof(self, request) -> None:
        """
        Raise 1007 unless a registration names this gateway, carries a
        current (or the previous) nonce, and its proof verifies with the
        client id's key.  Nothing changes before this has passed.
        """
        if not hmac.compare_digest(request.gateway.encode("utf-8", "surrogatepass"),
                                   self.gatewayId.encode("ascii")):
            raise RPCError(BAD_PROOF, "bad registration proof: not this gateway's id")
        if not self.nonces.accepts(request.nonce):
            raise RPCError(BAD_PROOF, "bad registration proof: stale or unknown nonce")
        if not request.proofVerifies():
            raise RPCError(BAD_PROOF, "bad registration proof: the signature does not verify")

    def signLease(self, answer: dict, clientId: str) -> dict:
        """
        The register answer as sent: the lease, this gateway's id and the
        client's, signed by the gateway key.
        """
        return signOffer(dict(answer, gateway=self.gatewayId, client=clientId), self.key)
