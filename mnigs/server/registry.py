"""
Lease operations with their side effects: the lease book decides, the
method grants or revokes access on the data path, the group commit makes
the change durable, and only then does the caller get an answer.
"""

from __future__ import annotations

import functools

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mnigs.daemon.hooks import Verdict
from mnigs.protocol import INTERNAL_ERROR, METHOD_UNAVAILABLE, REFUSED, RPCError
from mnigs.methods.traffic import Traffic

#: Seconds a register hook may take by default (hooks.register_timeout).
DEFAULT_REGISTER_TIMEOUT = 5.0

log = Logger()

#: How a lease ends, as an L{mnigs.interfaces.ILeaseObserver} is told:
#: its client released it, its time ran out, its tunnel never came up, a
#: newer lease of the same client replaced it, or a drain ended it.
LEASE_ENDS = ("released", "expired", "unconfirmed", "replaced", "drained", "operator")


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


def _asReached(method, config: dict, localHost: str) -> dict:
    """
    A lease given again (the same client registering again) with its
    endpoint where this registration reached the gateway, as a new lease
    would have it (the method's offer entry for C{localHost} says where).
    A client that registered at a gateway's node address and comes back
    through its address on a neighbour's link (the node address has no
    route while the mesh relearns it) must not be sent to the old address.
    """
    entry = method.offerEntry(localHost) or {}
    if "endpoint" in config and "endpoint" in entry and config["endpoint"] != entry["endpoint"]:
        return dict(config, endpoint=entry["endpoint"])
    return config


class Registry:
    """
    @param traffic: the L{mnigs.server.traffic.TrafficMeter} whose counts
        the status and the release hook give (C{None}: nothing counted).
    @param registerTimeout: seconds the C{register} hook may take.
    @param allowOnTimeout: whether a C{register} hook that took longer
        grants the lease (with a warning) rather than refusing it.
    @param observer: told about the end of every lease (an
        L{mnigs.interfaces.ILeaseObserver}: the gateway's metrics), or None.
    """

    def __init__(self, clock, book, methods: dict, committer, hooks, traffic=None,
                 registerTimeout: float = DEFAULT_REGISTER_TIMEOUT, allowOnTimeout: bool = False,
                 observer=None):
        self.clock = clock
        self.book = book
        self.methods = methods
        self.committer = committer
        self.hooks = hooks
        self.traffic = traffic
        self.registerTimeout = registerTimeout
        self.allowOnTimeout = allowOnTimeout
        # Revokes under way (an unregister's, a sweep's): the end of a
        # drain waits for them before the methods stop.
        self._revoking: set = set()
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
            existing.config = _asReached(method, existing.config, localHost)
            yield self.committer.commit()
            return existing.wire(now)
        # A new lease; for a client that holds one already (a new key, a
        # new address) it replaces that one once it is granted: the old
        # grant is revoked only then, so the client is never without one.
        lease = self.book.draft(request.clientId, request.clientName, request.method,
                                clientHost, params, now, replacing=existing)
        lease.config = method.allocate(lease, self.book.others(request.method), localHost)
        self.book.add(lease, replacing=existing)
        verdict = self.hooks.ask("register", self.registerTimeout, *_who(lease))
        if verdict is not None:
            # In the book while the hook decides, so that no other
            # registration is given the same address meanwhile, but not
            # stored by their commits.
            self.book.holdBack(lease)
            admitted = self._admits((yield verdict), lease)
            self.book.markChanged(lease)
            if not admitted:
                yield self._undo(method, lease, existing)
                raise RPCError(REFUSED, "refused by the gateway's register policy")
        try:
            yield method.grant(lease)
        except RPCError as e:
            # The method's own answer (its daemon is being relaunched:
            # 1005), for the client as it is: an expected refusal, not a
            # fault of ours.
            log.warn("lease {lease} not granted ({method}): {error}", lease=lease.id,
                     method=lease.method, error=str(e))
            yield self._undo(method, lease, existing)
            raise RPCError(e.code, e.message) from None
        except Exception:
            log.failure("could not grant lease {lease} ({method})", lease=lease.id, method=lease.method)
            yield self._undo(method, lease, existing)
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
        return lease.wire(now)

    def _undo(self, method, lease, existing):
        """
        Take a lease that was not granted (refused, or its grant failed)
        out of the book and whatever its method allocated or half set up
        (an address, a peer, a gate element) with it.
        """
        self.book.remove(lease, restoring=existing)
        return defer.maybeDeferred(method.revoke, lease).addErrback(lambda _: None)

    def _admits(self, verdict, lease) -> bool:
        if verdict is Verdict.allowed:
            return True
        if verdict is Verdict.timedOut and self.allowOnTimeout:
            log.warn("register hook took over {timeout} s for lease {lease}: granted anyway "
                     "(hooks.on_register_timeout = \"allow\")",
                     timeout=self.registerTimeout, lease=lease.id)
            return True
        log.info("lease {lease} refused by the register hook ({verdict}): {method} at {host}",
                 lease=lease.id, verdict=verdict.value, method=lease.method, host=lease.clientHost)
        return False

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

    @_carriedThrough
    @defer.inlineCallbacks
    def release(self, leaseId: str):
        """
        End a lease on the operator's word (C{mnigsctl --server release}),
        as an unregister would, without its token.  C{leaseId} may be a
        prefix that names one lease.  Raises ValueError for no such lease.
        """
        lease = self.findLease(leaseId)
        self.book.remove(lease)
        yield self._revoke(lease, "released by the operator", "operator")
        yield self.committer.commit()
        return {"released": lease.id, "method": lease.method, "name": lease.clientName,
                "address": lease.config.get("address")}

    def findLease(self, leaseId: str):
        lease = self.book.byId.get(leaseId)
        if lease is not None:
            return lease
        matches = [lease for lid, lease in self.book.byId.items()
                   if leaseId and lid.startswith(leaseId)] if len(leaseId) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"{leaseId!r} names {len(matches)} leases; give more of the id")
        raise ValueError(f"no lease {leaseId[:32]!r}")

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
        End every live lease (the end of a drain), and wait for the revokes
        already under way: the methods stop next, and a revoke still
        talking to a stopped daemon would fail.
        """
        gone = self.book.releaseAll()
        if gone:
            yield defer.DeferredList([self._revoke(lease, why, "drained") for lease in gone],
                                     consumeErrors=True)
            yield self.committer.commit()
        if self._revoking:
            yield defer.DeferredList(list(self._revoking), consumeErrors=True)
        return gone

    def _counted(self, lease):
        """
        The lease's counters for its release: read now when a release
        hook will be given them (the peer is still there), else as last
        counted (no wait on the unregister path).
        """
        if self.traffic is None:
            return defer.succeed(Traffic())
        if self.hooks.has("release"):
            return self.traffic.final(lease)
        return defer.succeed(self.traffic.forLease(lease.id))

    def _revoke(self, lease, why, end="released"):
        """
        Take C{lease}'s access away; C{why} says it in the log and to the
        release hook, C{end} (one of L{LEASE_ENDS}) to the observer.
        """
        if self.observer is not None:
            self.observer.leaseEnded(lease, end)
        counted = {}

        def revoke(traffic):
            counted["traffic"] = traffic
            return self.methods[lease.method].revoke(lease)

        d = self._counted(lease).addBoth(
            lambda result: result if not isinstance(result, Failure) else Traffic())
        d.addCallback(revoke)

        def done(result):
            traffic = counted["traffic"]
            duration = max(0, int(round(self.clock.seconds() - lease.createdAt)))
            log.info("lease {lease} {why}: {method} at {host}, {bytesIn} bytes in, "
                     "{bytesOut} bytes out, {duration} s",
                     lease=lease.id, why=why, method=lease.method, host=lease.clientHost,
                     bytesIn=_known(traffic.bytesIn), bytesOut=_known(traffic.bytesOut),
                     duration=duration)
            if self.traffic is not None:
                self.traffic.forget(lease.id)
            self.hooks.run("release", *_who(lease), traffic.bytesIn, traffic.bytesOut,
                           duration, why)
            return result

        def failed(failure):
            log.failure("could not revoke lease {lease}", failure, lease=lease.id)

        d.addCallbacks(done, failed)
        waiter = defer.Deferred()
        self._revoking.add(waiter)

        def over(result):
            self._revoking.discard(waiter)
            waiter.callback(None)
            return result

        return d.addBoth(over)

    def leaseEntries(self, now: float, limit: int | None = None) -> list[dict]:
        """
        Every live lease (at most C{limit}) for status output, with its
        counters as last counted.
        """
        entries = []
        for lease in self.book.live()[:limit]:
            traffic = Traffic() if self.traffic is None else self.traffic.forLease(lease.id)
            handshake = traffic.lastHandshake
            entries.append({
                "id": lease.id, "client": lease.clientId, "name": lease.clientName,
                "method": lease.method, "host": lease.clientHost,
                "address": lease.config.get("address"),
                "expires_in": lease.expiresIn(now),
                "age_s": max(0, int(now - lease.createdAt)),
                "bytes_in": traffic.bytesIn, "bytes_out": traffic.bytesOut,
                "last_handshake_ago": (None if not handshake
                                       else max(0, int(now - handshake)))})
        return entries

    @defer.inlineCallbacks
    def leases(self):
        """
        C{mnigsctl --server leases}: every live lease with its counters
        read now.
        """
        if self.traffic is not None:
            yield self.traffic.refresh()
        now = self.clock.seconds()
        return {"clients": len(self.book), "max_clients": self.book.maxClients,
                "leases": self.leaseEntries(now)}

    def trafficByLease(self) -> dict:
        """
        {lease id: (method, bytes in, bytes out)} for every live lease, as
        last counted (every C{server.traffic_interval}), without I/O: for
        the metrics.  Bytes are C{None} where the method does not count
        them (cjdns today).
        """
        counted = Traffic()
        result = {}
        for lease in self.book.live():
            if self.traffic is not None:
                counted = self.traffic.forLease(lease.id)
            result[lease.id] = (lease.method, counted.bytesIn, counted.bytesOut)
        return result

    def describe(self) -> dict:
        now = self.clock.seconds()
        return {
            "clients": len(self.book),
            "max_clients": self.book.maxClients,
            "leases": self.leaseEntries(now, 1000),
            "methods": {name: method.describe() for name, method in self.methods.items()},
        }


def _who(lease) -> tuple:
    """
    The hook arguments every lease event starts with (docs/operations.md).
    """
    return (lease.id, lease.method, lease.clientHost, lease.config.get("address", ""),
            lease.clientId, lease.clientName)


def _known(count) -> str:
    return "?" if count is None else str(count)
