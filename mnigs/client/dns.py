# -*- test-case-name: tests.unit.test_dns -*-
"""
The lease's resolvers, in force while the client is online (C{[dns]},
docs/configuration.md).

L{ResolverKeeper} is told what the client wants (L{ResolverKeeper.online}
when a session goes online, L{ResolverKeeper.offline} when no session is
left or under way) and makes the system follow, one change at a time,
through one backend (L{mnigs.system.resolvers}).  Its machine says what is
wanted:

    original  --apply-->      applied     (the servers of the session)
    applied   --apply-->      applied     (another session: its servers replace the old)
    applied   --restore-->    original    (offline, stopping)
    original  --restore-->    original    (nothing to do)
    original  --recovered-->  applied     (a record left by a run that crashed)

A failover goes straight from one lease's resolvers to the next lease's
(the machine leaves C{applied} only on C{restore}), so there is no moment
with neither; going offline puts the originals back.

Every change is a record in C{STATE_DIR/dns.json}, written before the
system is touched and removed once the change is undone: a client that
restarts after a crash finds it and undoes it first (L{recover}), so
the originals come back exactly even then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.logger import Logger

from mnigs.interfaces import IResolverBackend
from mnigs.protocol import checkResolvers
from mnigs.system.resolvers import checkRecord
from mnigs.system.statefile import StateFileCorrupt, readJSON, writeJSON

log = Logger()

#: The record of what is in force, in the state directory.
RECORD_FILE = "dns.json"


def leaseResolvers(lease: dict, gateway: str) -> tuple[str, ...]:
    """
    The resolvers a lease from the network offers, checked
    (L{checkResolvers}); none, with a warning naming the gateway and what
    is wrong, when they are unusable: the session goes on without them.
    """
    config = lease.get("config") if isinstance(lease, dict) else None
    value = config.get("dns", []) if isinstance(config, dict) else []
    try:
        return checkResolvers(value)
    except ValueError as e:
        log.warn("dns: the resolvers in {gateway}'s lease are refused ({why}); the system's "
                 "own stay in force", gateway=gateway, why=str(e))
        return ()


class RecordFile:
    """
    C{dns.json}: the record of the change in force (written atomically),
    or no file.
    """

    def __init__(self, stateDir: str):
        self.path = os.path.join(stateDir, RECORD_FILE)

    def load(self) -> dict | None:
        try:
            return readJSON(self.path, None, lambda r: r is None or checkRecord(r))
        except StateFileCorrupt as e:
            log.error("dns: {why}; what it recorded cannot be undone", why=str(e))
            return None

    def save(self, record: dict) -> None:
        writeJSON(self.path, record)

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Serial:
    """
    Runs the changes one after the other, in the order asked; a failed
    change is logged and the next one still runs.
    """

    def __init__(self):
        self._tail: defer.Deferred = defer.succeed(None)

    def run(self, work: Callable[[], object], what: str) -> None:
        def step(_):
            d = defer.maybeDeferred(work)
            d.addErrback(lambda f: log.error("dns: could not {what}: {why}", what=what,
                                             why=f.getErrorMessage()))
            return d

        self._tail.addBoth(step)

    def settled(self) -> defer.Deferred:
        "Fires once every change asked for so far is done."
        d = defer.Deferred()

        def fire(result):
            d.callback(None)
            return result

        self._tail.addBoth(fire)
        return d


@dataclass(frozen=True)
class Wanted:
    "The resolvers of the session online, and its device."
    device: str
    servers: tuple[str, ...]


class Keeper(Protocol):
    def apply(self, wanted: Wanted) -> None:
        "Put C{wanted} in force (replacing whatever resolvers are)."

    def restore(self) -> None:
        "Put the system's own resolvers back."

    def recovered(self, record: dict) -> None:
        "A previous run left C{record} in force."

    def describe(self) -> dict:
        "Status."


@dataclass
class KeeperCore:
    backend: IResolverBackend
    backendFor: Callable[[str], IResolverBackend]  # a record's own mode's backend
    records: RecordFile
    work: Serial = field(default_factory=Serial)

    # What the queued changes do; the record file says what is in force
    # when each of them runs, whatever was queued before.
    def put(self, wanted: Wanted) -> None:
        @defer.inlineCallbacks
        def change():
            previous = self.records.load()
            if previous is not None and previous["mode"] != self.backend.mode:
                yield self._undo(previous)  # a record of another mode: undone its own way
                previous = None
            record = self.backend.plan(wanted.device, list(wanted.servers), previous)
            self.records.save(record)
            yield self.backend.put(record, previous)
            log.info("dns: resolvers {servers} in force ({mode}, through {device})",
                     servers=", ".join(wanted.servers), mode=self.backend.mode,
                     device=wanted.device)

        self.work.run(change, f"put the resolvers {', '.join(wanted.servers)} in force")

    def undo(self) -> None:
        def change():
            record = self.records.load()
            if record is not None:
                return self._undo(record)

        self.work.run(change, "put the system's own resolvers back")

    def _undo(self, record):
        d = defer.maybeDeferred(self.backendFor(record["mode"]).undo, record)

        def done(result):
            self.records.clear()
            log.info("dns: the system's own resolvers are back ({mode})", mode=record["mode"])
            return result

        return d.addCallback(done)


@dataclass
class InForce:
    wanted: Wanted | None  # None: a crashed run's record, not ours


def _inForce(keeper, core, wanted_or_record) -> InForce:
    return InForce(wanted_or_record if isinstance(wanted_or_record, Wanted) else None)


def _buildMachine():
    builder = TypeMachineBuilder(Keeper, KeeperCore)
    original = builder.state("original")
    applied = builder.state("applied", _inForce)

    @original.upon(Keeper.apply).to(applied)
    def applyFirst(keeper, core, wanted):
        core.put(wanted)

    @applied.upon(Keeper.apply).loop()
    def replace(keeper, core, inForce: InForce, wanted):
        # Even the same servers on a device of the same name: each session
        # brings its own device up, and per-link settings went with the old.
        inForce.wanted = wanted
        core.put(wanted)

    @applied.upon(Keeper.restore).to(original)
    def restoreOriginals(keeper, core, inForce: InForce):
        core.undo()

    original.upon(Keeper.restore).loop()(lambda keeper, core: None)

    @original.upon(Keeper.recovered).to(applied)
    def noteLeftOver(keeper, core, record):
        log.info("dns: a previous run left resolvers in force ({mode}, through {device}): "
                 "putting the system's own back", mode=record["mode"], device=record["device"])

    applied.upon(Keeper.recovered).loop()(lambda keeper, core, inForce, record: None)

    @original.upon(Keeper.describe).loop()
    def describeOriginal(keeper, core):
        return {"mode": core.backend.mode, "servers": [], "device": None}

    @applied.upon(Keeper.describe).loop()
    def describeApplied(keeper, core, inForce: InForce):
        wanted = inForce.wanted
        return {"mode": core.backend.mode, "servers": list(wanted.servers) if wanted else [],
                "device": wanted.device if wanted else None}

    return builder.build()


KeeperMachine = _buildMachine()


class ResolverKeeper:
    """
    Keeps the system's resolvers as the client's state wants them; the
    plain methods decide, then feed the machine one clean input.

    @param backend: the configured L{IResolverBackend}, or C{None}
        (C{dns.mode = "off"}, or nothing found by auto): nothing is
        applied; a crashed run's record is still undone.
    @param backendFor: the backend of a record's own mode (a record left
        by a run configured otherwise is undone its own way).
    """

    def __init__(self, backend: IResolverBackend | None, stateDir: str,
                 backendFor: Callable[[str], IResolverBackend]):
        self.backend = backend
        self.core = KeeperCore(backend or _Off(), backendFor, RecordFile(stateDir))
        self.machine = KeeperMachine(self.core)

    def recover(self) -> defer.Deferred:
        """
        At start: undo what a run that crashed left in force.  Fires once
        done.
        """
        record = self.core.records.load()
        if record is not None:
            self.machine.recovered(record)
            self.machine.restore()
        return self.settled()

    def online(self, device: str, ownDevice: bool, servers, gateway: str) -> None:
        """
        A session went online through C{device} (C{ownDevice}: a tunnel
        device of its own, not the mesh interface) with the lease's
        checked C{servers}: they replace whatever is in force, or the
        originals come back when there are none or this backend cannot
        apply them here.
        """
        backend = self.backend
        if backend is None:
            if servers:
                log.info("dns: the lease names resolvers ({servers}) but dns.mode applies none",
                         servers=", ".join(servers))
            self.machine.restore()
            return
        if not servers:
            self.machine.restore()
            return
        if backend.needsOwnDevice and not ownDevice:
            log.info("dns: {gateway}'s resolvers are not applied: {mode} sets them per link and "
                     "this session has no device of its own ({device} is the mesh's); use "
                     "dns.mode \"file\", \"resolvconf\" or \"hook\" for forward",
                     gateway=gateway, mode=backend.mode, device=device)
            self.machine.restore()
            return
        self.machine.apply(Wanted(device, tuple(servers)))

    def offline(self) -> None:
        "No session, none under way: the system's own resolvers come back."
        self.machine.restore()

    def settled(self) -> defer.Deferred:
        "Fires once every change asked for so far is done (stopping waits for it)."
        return self.core.work.settled()

    def describe(self) -> dict:
        return self.machine.describe()


class _Off:
    mode = "off"
    needsOwnDevice = False
