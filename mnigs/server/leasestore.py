"""
The lease file in the state directory, and group commit: every change
asked for within one reactor turn is written by one write, and each caller
hears back only once its change is on disk.

The store is a snapshot plus a journal:

  - C{leases.json}, the snapshot: every lease record, rewritten whole and
    atomically (L{mnigs.system.statefile.atomicWrite}) only when compacting;
  - C{leases.journal}, appended to on every commit: one JSON line per
    changed lease, C{{"put": record}} or C{{"del": id}}, written with one
    C{write} and made durable with C{fsync} before anyone is answered.

With 10,000 leases the snapshot is ~5 MB and takes ~60 ms to encode and
write; a journal commit costs the changed leases only.  When the journal
outgrows twice the snapshot (and at least L{COMPACT_MIN_BYTES}), the next
commit writes a new snapshot and then deletes the journal.

Crash safety: a crash at any instant leaves a readable store holding every
acknowledged change.
  - Mid-append, the journal ends in a torn line; the write was never
    acknowledged.  Loading stops at the first line that does not parse,
    truncates the journal there and, if more than a torn last line was
    dropped, keeps a copy of the journal aside.
  - Between the new snapshot and the journal's deletion, the old journal
    is replayed over the new snapshot, which changes nothing: each entry
    sets a lease's whole record or removes it, so replaying a journal over
    a state that already ends with its effects is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import ILeaseStore
from mnigs.server.leases import RECORD_VERSION, Lease, checkRecords
from mnigs.system.statefile import StateFileCorrupt, keepAside, readJSON, writeJSON

log = Logger()

LEASE_FILE = "leases.json"
JOURNAL_FILE = "leases.journal"
COMPACT_MIN_BYTES = 256 * 1024


def _fsyncDirectory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def journalLines(changes) -> bytes:
    """
    The journal entries for C{changes}, (lease id, record or None) pairs.
    """
    lines = []
    for leaseId, record in changes:
        entry = {"del": leaseId} if record is None else {"put": record}
        lines.append(json.dumps(entry, separators=(",", ":"), sort_keys=True))
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _replay(leases: dict, line: bytes) -> None:
    """
    Apply one journal line to C{leases} (id -> record); ValueError,
    TypeError or KeyError if it is not a well-formed entry.
    """
    entry = json.loads(line)
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError("a journal entry is one put or one del")
    if "put" in entry:
        record = entry["put"]
        Lease.fromRecord(record)
        leases[record["id"]] = record
    elif isinstance(entry.get("del"), str):
        leases.pop(entry["del"], None)
    else:
        raise ValueError("a journal entry is one put or one del")


@implementer(ILeaseStore)
class LeaseFile:
    def __init__(self, stateDir: str, compactMinBytes: int = COMPACT_MIN_BYTES, clock=time.time):
        self.directory = stateDir
        self.path = os.path.join(stateDir, LEASE_FILE)
        self.journalPath = os.path.join(stateDir, JOURNAL_FILE)
        self.compactMinBytes = compactMinBytes
        self.clock = clock
        self._journal = None  # fd open for appending, once there is a journal
        self._journalBytes = 0
        self._snapshotBytes = 0
        # After a failed commit the journal may lack changes the book has
        # forgotten about: the next commit writes everything.
        self._rewriteNext = False

    def load(self):
        try:
            snapshot = readJSON(self.path, None, validate=checkRecords, clock=self.clock)
        except StateFileCorrupt:
            # The journal only makes sense on top of the lost snapshot.
            if os.path.exists(self.journalPath):
                keepAside(self.journalPath, self.clock)
            raise
        self._snapshotBytes = _sizeOf(self.path)
        try:
            with open(self.journalPath, "rb") as f:
                journal = f.read()
        except FileNotFoundError:
            return snapshot
        leases = {record["id"]: record for record in (snapshot or {"leases": []})["leases"]}
        good = 0
        while good < len(journal):
            end = journal.find(b"\n", good)
            if end < 0:
                break
            try:
                _replay(leases, journal[good:end])
            except (ValueError, TypeError, KeyError, UnicodeDecodeError):
                break
            good = end + 1
        if good < len(journal):
            self._dropTail(journal, good)
        self._journalBytes = good
        if snapshot is None and not leases and good == 0:
            return None
        return {"version": RECORD_VERSION, "leases": list(leases.values())}

    def _dropTail(self, journal: bytes, good: int) -> None:
        dropped = journal[good:]
        if b"\n" in dropped:
            keptAs = f"{self.journalPath}.corrupt-{int(self.clock())}"
            shutil.copyfile(self.journalPath, keptAs)
            log.error("{path}: unreadable entries from byte {offset} on dropped; "
                      "the whole journal is kept as {keptAs}", path=self.journalPath,
                      offset=good, keptAs=keptAs)
        else:
            log.warn("{path}: dropping a torn last entry ({n} bytes) left by a crash",
                     path=self.journalPath, n=len(dropped))
        with open(self.journalPath, "r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())

    def save(self, records):
        """
        Replace everything stored by C{records}: a new snapshot, then no
        journal.
        """
        self._closeJournal()
        writeJSON(self.path, records)
        self._snapshotBytes = _sizeOf(self.path)
        try:
            os.unlink(self.journalPath)
        except FileNotFoundError:
            pass
        else:
            _fsyncDirectory(self.directory)
        self._journalBytes = 0
        self._rewriteNext = False

    def commit(self, changes, snapshot):
        """
        Make C{changes} ((lease id, record or None) pairs) durable: appended
        to the journal, or, when the journal is due for compaction, by
        L{save}ing C{snapshot()}.
        """
        if self._rewriteNext or self._journalBytes >= max(self.compactMinBytes,
                                                          2 * self._snapshotBytes):
            self.save(snapshot())
            return
        data = journalLines(changes)
        if not data:
            return
        try:
            self._append(data)
        except BaseException:
            self._rewriteNext = True
            self._closeJournal()
            raise

    def _append(self, data: bytes) -> None:
        if self._journal is None:
            created = not os.path.exists(self.journalPath)
            self._journal = os.open(self.journalPath,
                                    os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:
                _fsyncDirectory(self.directory)
        written = 0
        while written < len(data):
            written += os.write(self._journal, data[written:])
        os.fsync(self._journal)
        self._journalBytes += len(data)

    def _closeJournal(self) -> None:
        if self._journal is not None:
            fd, self._journal = self._journal, None
            os.close(fd)

    def close(self) -> None:
        self._closeJournal()


def _sizeOf(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


class GroupCommit:
    """
    C{commit()} returns a Deferred that fires once the state as of the call
    is durable.  With C{changes} (a callable returning (lease id, record or
    None) pairs, like L{mnigs.server.leases.LeaseBook.takeChanges}) the
    store's C{commit(changes, snapshot)} is used, else C{save(snapshot())}.
    """

    def __init__(self, reactor, store, snapshot, changes=None):
        self.reactor = reactor
        self.store = store
        self.snapshot = snapshot
        self.changes = changes
        self.waiting = []
        self.scheduled = None

    def commit(self):
        d = defer.Deferred()
        self.waiting.append(d)
        if self.scheduled is None:
            self.scheduled = self.reactor.callLater(0, self._flush)
        return d

    def _flush(self):
        self.scheduled = None
        waiting, self.waiting = self.waiting, []
        try:
            if self.changes is not None:
                self.store.commit(self.changes(), self.snapshot)
            else:
                self.store.save(self.snapshot())
        except Exception as e:
            log.failure("could not save the lease file")
            for d in waiting:
                d.errback(e)
            return
        for d in waiting:
            d.callback(None)

    def flushNow(self):
        if self.scheduled is not None:
            self.scheduled.cancel()
            self._flush()
