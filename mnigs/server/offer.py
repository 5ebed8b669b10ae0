"""
Building and signing the offer that C{gateway.info} answers.  Signing costs
tens of microseconds, so the signed offer is cached per (address the client
reached us on, availability, client count, second).
"""

from __future__ import annotations

from mnigs import __version__
from mnigs.protocol import MAX_PROBES, PROTOCOL_VERSION, gatewayId, signOffer


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
    def __init__(self, clock, key, name: str, terms: dict, methods, probe=()):
        self.clock = clock
        self.key = key
        self.gatewayId = gatewayId(key.verify_key)
        self.name = name
        self.terms = terms
        self.methods = methods
        # What the uplink check pings (uplink.probe): clients ping it too,
        # through their tunnel, to know the Internet answers.
        self.probe = [str(address) for address in probe][:MAX_PROBES]
        self._cache = {}

    def setTerms(self, terms: dict) -> None:
        """New terms (a config reload): the next offer carries them."""
        self.terms = terms
        self._cache.clear()

    def offer(self, localHost: str, available: bool, clients: int) -> dict:
        now = int(self.clock.seconds())
        cacheKey = (localHost, available, clients, now)
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
        }
        if self.probe:
            body["probe"] = self.probe
        offer = signOffer(body, self.key)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[cacheKey] = offer
        return offer
