"""
Lease operations with their side effects: the lease book decides, the
method grants or revokes access on the data path, the group commit makes
the change durable, and only then does the caller get an answer.
"""

from __future__ import annotations

import functools

from twisted.internet import defer
from twisted.logger import Logger

from mnigs.protocol import INTERNAL_ERROR, METHOD_UNAVAILABLE, RPCError

log = Logger()

#: How a lease ends, as an L{mnigs.interfaces.ILeaseObserver} is told:
#: its client released it, its time ran out, its tunnel never came up, a
#: newer lease of the same client replaced it, or a drain ended it.
LEASE_ENDS = ("released", "expired", "unconfirmed", "replaced", "drained")


def _carriedThrough(operation):
    """
    A lease operation that runs to its end once asked for: cancelling what
    the caller holds (the RPC server does when the client hangs up) only
    stops the wait.  Cut off halfway, a grant or a revoke would leave the
    method's state (a hub user, a WireGuard peer) out of step with the
    book, and the cut shows as an error in the log.
    """
    @functools.wraps(operation)
    def run(*args, **kwargs):
        caller = defer.Deferred()
        defer.maybeDeferred(operation, *args, **kwargs).chainDeferred(caller)
        return caller

    return run


class Registry:
    """
    @param observer: told about the end of every lease (an
        L{mnigs.interfaces.ILeaseObserver}: the gateway's metrics), or None.
    """

    def __init__(self, clock, book, methods: dict, committer, hooks, observer=None):
        self.clock = clock
        self.book = book
        self.methods = methods
        self.committer = committer
        self.hooks = hooks
        self.observer = observer
        # One registration at a time per (client, method): a second one
        # for the same pair waits until the first has answered, so a
        # retry that overlaps a slow grant or revoke sees the finished
        # lease instead of racing it into the book.
        self._locks: dict[tuple[str, str], defer.DeferredLock] = {}

    def startMethods(self):
        """
        Start every method with the leases it already has (restored from
        the state file).
        """
        return defer.gatherResults(
            [defer.maybeDeferred(method.start, self.book.live(name))
             for name, method in self.methods.items()], consumeErrors=True)

    def stopMethods(self):
        return self._everyMethod("stop")

    def leaveMethods(self):
        """
        Leave every method's data path for the next start to adopt.
        """
        return self._everyMethod("leave")

    def _everyMethod(self, action):
        def failed(failure, name):
            log.failure("method {method} could not {action}", failure, method=name, action=action)

        return defer.DeferredList(
            [defer.maybeDeferred(getattr(method, action)).addErrback(failed, name)
             for name, method in self.methods.items()])

    def _method(self, name):
        method = self.methods.get(name)
        if method is None:
            raise RPCError(METHOD_UNAVAILABLE, f"method {name!r} is not offered here")
        return method

    @_carriedThrough
    def register(self, request, clientHost: str, localHost: str):
        key = (request.clientId, request.method)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = defer.DeferredLock()

        def forget(result):
            if not (lock.locked or lock.waiting) and self._locks.get(key) is lock:
                del self._locks[key]
            return result

        return lock.run(self._register, request, clientHost, localHost).addBoth(forget)

    @defer.inlineCallbacks
    def _register(self, request, clientHost: str, localHost: str):
        """
        The caller has checked the request's proof: it comes from the
        holder of the client id's key.
        """
        method = self._method(request.method)
        params = method.checkParams(request.params)
        method.checkClient(clientHost, localHost)
        now = self.clock.seconds()
        existing = self.book.find(request.clientId, request.method)
        if existing is not None and existing.params == params and existing.clientHost == clientHost:
            self.book.extend(existing, now)
            yield self.committer.commit()
            return existing.wire(now)
        # A new lease; for a client that holds one already (a new key, a
        # new address) it replaces that one once it is granted: the old
        # grant is revoked only then, so the client is never without one.
        lease = self.book.draft(request.clientId, request.clientName, request.method,
                                clientHost, params, now, replacing=existing)
        lease.config = method.allocate(lease, self.book.others(request.method), localHost)
        self.book.add(lease, replacing=existing)
        try:
            yield method.grant(lease)
        except Exception:
            log.failure("could not grant lease {lease} ({method})", lease=lease.id, method=lease.method)
            self.book.remove(lease, restoring=existing)
            yield defer.maybeDeferred(method.revoke, lease).addErrback(lambda _: None)
            raise RPCError(INTERNAL_ERROR, "internal error: could not set up access") from None
        if existing is not None and self.book.byId.get(existing.id) is existing:
            self.book.remove(existing)
            yield self._revoke(existing, f"replaced by {lease.id}", "replaced")
        yield self.committer.commit()
        # Client ids stay out of info lines (an id names a person's
        # device); the lease id ties the lines together.
        log.info("lease {lease} granted: {method} at {host}",
                 lease=lease.id, method=lease.method, host=clientHost)
        log.debug("lease {lease} is client {client}'s", lease=lease.id, client=lease.clientId)
        self.hooks.run("register", lease.id, lease.method, clientHost, lease.config.get("address", ""))
        return lease.wire(now)

    @_carriedThrough
    @defer.inlineCallbacks
    def renew(self, leaseId: str, token: str):
        now = self.clock.seconds()
        lease = self.book.renew(leaseId, token, now)
        yield self.committer.commit()
        return {"expires_in": lease.expiresIn(now)}

    @_carriedThrough
    @defer.inlineCallbacks
    def unregister(self, leaseId: str, token: str):
        lease = self.book.release(leaseId, token, self.clock.seconds())
        yield self._revoke(lease, "released")
        yield self.committer.commit()
        return {"released": True}

    @defer.inlineCallbacks
    def sweep(self):
        """
        End every lease whose time is up, and every lease whose tunnel
        never came up within its method's grace time.
        """
        gone = [(lease, "expired", "expired") for lease in self.book.expire(self.clock.seconds())]
        for lease in (yield self._unconfirmed()):
            if self.book.byId.get(lease.id) is lease:  # not released or replaced meanwhile
                self.book.remove(lease)
                gone.append((lease, "ended: its tunnel never came up", "unconfirmed"))
        if not gone:
            return []
        yield defer.DeferredList([self._revoke(lease, why, end) for lease, why, end in gone],
                                 consumeErrors=True)
        yield self.committer.commit()
        return [lease for lease, _, _ in gone]

    @defer.inlineCallbacks
    def _unconfirmed(self):
        found = []
        for name, method in self.methods.items():
            try:
                found.extend((yield defer.maybeDeferred(method.unconfirmed)))
            except Exception:
                log.failure("method {method} could not tell unconfirmed leases", method=name)
        return found

    @defer.inlineCallbacks
    def releaseAll(self, why: str):
        """
        End every live lease (the end of a drain).
        """
        gone = self.book.releaseAll()
        if gone:
            yield defer.DeferredList([self._revoke(lease, why, "drained") for lease in gone],
                                     consumeErrors=True)
            yield self.committer.commit()
        return gone

    def _revoke(self, lease, why, end="released"):
        """
        Take C{lease}'s access away; C{why} says it in the log, C{end} (one
        of L{LEASE_ENDS}) to the observer.
        """
        if self.observer is not None:
            self.observer.leaseEnded(lease, end)
        d = defer.maybeDeferred(self.methods[lease.method].revoke, lease)

        def done(result):
            log.info("lease {lease} {why}: {method} at {host}",
                     lease=lease.id, why=why, method=lease.method, host=lease.clientHost)
            self.hooks.run("release", lease.id, lease.method, lease.clientHost,
                           lease.config.get("address", ""))
            return result

        def failed(failure):
            log.failure("could not revoke lease {lease}", failure, lease=lease.id)

        return d.addCallbacks(done, failed)

    def describe(self) -> dict:
        now = self.clock.seconds()
        return {
            "clients": len(self.book),
            "max_clients": self.book.maxClients,
            "leases": [{"id": lease.id, "client": lease.clientId, "name": lease.clientName,
                        "method": lease.method, "host": lease.clientHost,
                        "address": lease.config.get("address"),
                        "expires_in": lease.expiresIn(now)}
                       for lease in self.book.live()][:1000],
            "methods": {name: method.describe() for name, method in self.methods.items()},
        }
