"""
Lease bookkeeping: who holds which lease until when.  Pure: time comes in
as numbers, randomness through an injectable source; no I/O.  The data
path and the state file follow what this book says.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from mnigs.protocol import (
    GATEWAY_FULL,
    RATE_LIMITED,
    UNKNOWN_LEASE,
    WRONG_TOKEN,
    RPCError,
)
from mnigs.server.ratelimit import addressGroup

RECORD_VERSION = 1


@dataclass(slots=True)
class Lease:
    id: str
    token: str
    clientId: str
    clientName: str
    method: str
    clientHost: str
    params: dict
    config: dict
    createdAt: float
    expiresAt: float
    # Where the lease's packets come from, when its method binds it to more
    # than its address and interface (forward: {"interface", "link_address"},
    # see IGatewayMethod.allocate).  Stored, never sent.
    origin: dict = field(default_factory=dict)

    def expiresIn(self, now: float) -> int:
        return max(0, int(round(self.expiresAt - now)))

    def wire(self, now: float) -> dict:
        """
        The lease as C{gateway.register} answers it.
        """
        return {"lease": {"id": self.id, "token": self.token, "method": self.method,
                          "expires_in": self.expiresIn(now), "config": self.config}}

    def record(self) -> dict:
        return {"id": self.id, "token": self.token, "client_id": self.clientId,
                "client_name": self.clientName, "method": self.method,
                "client_host": self.clientHost, "params": self.params,
                "config": self.config, "created_at": self.createdAt,
                "expires_at": self.expiresAt, "origin": self.origin}

    @classmethod
    def fromRecord(cls, r: dict) -> "Lease":
        """
        Raises KeyError, TypeError or ValueError on a malformed record.
        """
        lease = cls(
            id=r["id"], token=r["token"], clientId=r["client_id"],
            clientName=r["client_name"], method=r["method"],
            clientHost=r["client_host"], params=r["params"], config=r["config"],
            createdAt=float(r["created_at"]), expiresAt=float(r["expires_at"]),
            origin=r.get("origin", {}))  # records written before origins: none
        for name in ("id", "token", "clientId", "clientName", "method", "clientHost"):
            if not isinstance(getattr(lease, name), str):
                raise TypeError(f"lease {name} must be a string")
        if not all(isinstance(d, dict) for d in (lease.params, lease.config, lease.origin)):
            raise TypeError("lease params, config and origin must be objects")
        return lease


def _newToken() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def _newId() -> str:
    return secrets.token_hex(8)


@dataclass
class LeaseBook:
    """
    The live leases.  C{maxClients} bounds how many exist at once, and
    C{maxPerAddress} (0: no bound) how many of them one client address
    (an IPv6 /64: L{addressGroup}) holds; the same client id and method
    always map to at most one lease.
    """
    maxClients: int
    leaseSeconds: int
    maxPerAddress: int = 0
    newToken: object = _newToken
    newId: object = _newId
    byId: dict = field(default_factory=dict)
    byClient: dict = field(default_factory=dict)
    byMethod: dict = field(default_factory=dict)  # method -> {id: lease}
    byGroup: dict = field(default_factory=dict)  # address group -> {id: lease}
    # Ids of leases added, removed or extended since the last takeChanges():
    # what a journaling lease store has to write.
    changed: set = field(default_factory=set)
    held: set = field(default_factory=set)  # ids kept out of the store (holdBack)

    def __len__(self):
        return len(self.byId)

    def find(self, clientId: str, method: str) -> Lease | None:
        return self.byClient.get((clientId, method))

    def live(self, method: str | None = None) -> list[Lease]:
        if method is None:
            return list(self.byId.values())
        return list(self.byMethod.get(method, {}).values())

    def others(self, method: str):
        """
        The live leases of C{method} as a read-only view, made in O(1) (a
        registration hands it to C{allocate}, which rarely looks at it all).
        It follows the book: iterate it before the book changes.
        """
        return self.byMethod.get(method, {}).values()

    def checkRoom(self) -> None:
        if len(self.byId) >= self.maxClients:
            raise RPCError(GATEWAY_FULL, f"gateway full ({self.maxClients} clients)")

    def checkAddressRoom(self, clientId: str, method: str, clientHost: str) -> None:
        """
        Raise 1006 if C{clientHost}'s address group holds its share of
        leases already.  The lease of the same client id and method, which
        a new one replaces, does not count.
        """
        if self.maxPerAddress <= 0:
            return
        held = self.byGroup.get(addressGroup(clientHost), {})
        if len(held) < self.maxPerAddress:
            return
        others = sum(1 for lease in held.values()
                     if (lease.clientId, lease.method) != (clientId, method))
        if others >= self.maxPerAddress:
            raise RPCError(RATE_LIMITED, f"this address holds {others} leases already "
                                         f"(at most {self.maxPerAddress} per address)")

    def draft(self, clientId, clientName, method, clientHost, params, now,
              replacing: Lease | None = None) -> Lease:
        """
        A new lease, not yet in the book (its method still has to allocate
        and grant it).  Raises 1001 if the book is full, unless it is to
        replace the client's lease C{replacing}, and 1006 if the client's
        address holds its share.
        """
        self.checkAddressRoom(clientId, method, clientHost)
        if replacing is None:
            self.checkRoom()
        leaseId = self.newId()
        while leaseId in self.byId:
            leaseId = self.newId()
        return Lease(leaseId, self.newToken(), clientId, clientName, method,
                     clientHost, params, {}, now, now + self.leaseSeconds)

    def add(self, lease: Lease, replacing: Lease | None = None) -> None:
        """
        Put C{lease} in the book.  With C{replacing} (the same client's
        lease for the same method) both are live until C{replacing} is
        removed, and the client's lease is C{lease} from now on.
        """
        key = (lease.clientId, lease.method)
        if lease.id in self.byId or self.byClient.get(key, replacing) is not replacing:
            raise ValueError(f"lease {lease.id} or client {key} already in the book")
        self.byId[lease.id] = lease
        self.byClient[key] = lease
        self.byMethod.setdefault(lease.method, {})[lease.id] = lease
        self.byGroup.setdefault(addressGroup(lease.clientHost), {})[lease.id] = lease
        self.changed.add(lease.id)

    def remove(self, lease: Lease, restoring: Lease | None = None) -> None:
        """
        Take C{lease} out of the book.  C{restoring}: a replacement that
        failed; the client's lease is C{restoring} again.
        """
        if self.byId.get(lease.id) is lease:
            key = (lease.clientId, lease.method)
            del self.byId[lease.id]
            if self.byClient.get(key) is lease:
                del self.byClient[key]
                if restoring is not None and self.byId.get(restoring.id) is restoring:
                    self.byClient[key] = restoring
            del self.byMethod[lease.method][lease.id]
            group = addressGroup(lease.clientHost)
            held = self.byGroup[group]
            del held[lease.id]
            if not held:
                del self.byGroup[group]
            self.changed.add(lease.id)
            self.held.discard(lease.id)

    def holdBack(self, lease: Lease) -> None:
        """
        Leave C{lease} out of what L{takeChanges} and L{records} give until
        L{markChanged}: a lease in the book that is not decided yet (its
        register hook runs) must not reach the lease file, whence a crash
        meanwhile would bring it back.
        """
        self.held.add(lease.id)
        self.changed.discard(lease.id)

    def markChanged(self, lease: Lease) -> None:
        self.held.discard(lease.id)
        self.changed.add(lease.id)

    def extend(self, lease: Lease, now: float) -> Lease:
        lease.expiresAt = now + self.leaseSeconds
        self.changed.add(lease.id)
        return lease

    def authenticate(self, leaseId: str, token: str, now: float) -> Lease:
        lease = self.byId.get(leaseId)
        if lease is None or lease.expiresAt <= now:
            raise RPCError(UNKNOWN_LEASE, "unknown or expired lease")
        if not hmac.compare_digest(lease.token.encode(), token.encode()):
            raise RPCError(WRONG_TOKEN, "wrong token")
        return lease

    def renew(self, leaseId: str, token: str, now: float) -> Lease:
        return self.extend(self.authenticate(leaseId, token, now), now)

    def release(self, leaseId: str, token: str, now: float) -> Lease:
        lease = self.authenticate(leaseId, token, now)
        self.remove(lease)
        return lease

    def expire(self, now: float) -> list[Lease]:
        """
        Remove and return every lease whose time is up.
        """
        gone = [lease for lease in self.byId.values() if lease.expiresAt <= now]
        for lease in gone:
            self.remove(lease)
        return gone

    def releaseAll(self) -> list[Lease]:
        """
        Remove and return every lease.
        """
        gone = list(self.byId.values())
        for lease in gone:
            self.remove(lease)
        return gone

    def records(self) -> dict:
        return {"version": RECORD_VERSION,
                "leases": [lease.record() for lease in self.byId.values()
                           if lease.id not in self.held]}

    def takeChanges(self) -> list[tuple[str, dict | None]]:
        """
        What changed since the last call: (lease id, its record now, or
        None if it is gone), in no particular order.
        """
        changed, self.changed = self.changed - self.held, self.changed & self.held
        return [(leaseId, self.byId[leaseId].record() if leaseId in self.byId else None)
                for leaseId in changed]

    def restore(self, stored: dict, now: float, knownMethods) -> tuple[list[Lease], list[Lease]]:
        """
        Load what L{records} produced.  Returns (restored, dropped): leases
        that expired meanwhile or whose method is no longer configured are
        dropped.  Raises ValueError on a malformed file.
        """
        checkRecords(stored)
        restored, dropped = [], []
        # A replacement stored before the lease it replaced was gone: the
        # newer one (the later expiry) is the client's.
        records = sorted(stored["leases"], key=lambda r: -float(r["expires_at"]))
        for record in records:
            lease = Lease.fromRecord(record)
            if (lease.expiresAt <= now or lease.method not in knownMethods
                    or (lease.clientId, lease.method) in self.byClient):
                dropped.append(lease)
                continue
            self.add(lease)
            restored.append(lease)
        # What was restored is stored already; what was dropped must go.
        self.changed.difference_update(lease.id for lease in restored)
        self.changed.update(lease.id for lease in dropped)
        return restored, dropped


def checkRecords(stored) -> None:
    """
    Raise ValueError/TypeError/KeyError unless C{stored} is a lease file.
    """
    if not isinstance(stored, dict) or stored.get("version") != RECORD_VERSION:
        raise ValueError(f"not a version {RECORD_VERSION} lease file")
    if not isinstance(stored.get("leases"), list):
        raise ValueError("leases must be a list")
    ids = set()
    for record in stored["leases"]:
        lease = Lease.fromRecord(record)
        if lease.id in ids:
            raise ValueError(f"lease {lease.id} appears twice")
        ids.add(lease.id)
