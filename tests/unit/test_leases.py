"""
Lease bookkeeping: expiry, max clients, re-registration, persistence
round trip, and a corrupt state file kept aside.
"""

import json
import os
import shutil

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit, LeaseFile
from mnigs.system.statefile import StateFileCorrupt


def draftAndAdd(book, clientId, now, method="forward"):
    lease = book.draft(clientId, "", method, "10.0.0.1", {}, now)
    lease.config = {"address": "10.0.0.1/32"}
    book.add(lease)
    return lease


class LeaseBookTests(SynchronousTestCase):
    def test_tokensAreLongAndDistinct(self):
        book = LeaseBook(10, 600)
        a, b = draftAndAdd(book, "a", 0), draftAndAdd(book, "b", 0)
        self.assertNotEqual(a.token, b.token)
        self.assertGreaterEqual(len(a.token) * 6, 128)  # url-safe base64: 6 bits a character

    def test_full(self):
        book = LeaseBook(2, 600)
        draftAndAdd(book, "a", 0)
        draftAndAdd(book, "b", 0)
        e = self.assertRaises(protocol.RPCError, book.draft, "c", "", "forward", "h", {}, 0)
        self.assertEqual(e.code, protocol.GATEWAY_FULL)

    def test_renewAndExpire(self):
        book = LeaseBook(10, 600)
        lease = draftAndAdd(book, "a", 0)
        self.assertEqual(book.expire(599), [])
        book.renew(lease.id, lease.token, 500)
        self.assertEqual(book.expire(1099), [])
        self.assertEqual(book.expire(1100), [lease])
        self.assertEqual(len(book), 0)

    def test_renewErrors(self):
        book = LeaseBook(10, 600)
        lease = draftAndAdd(book, "a", 0)
        e = self.assertRaises(protocol.RPCError, book.renew, lease.id, "wrong", 1)
        self.assertEqual(e.code, protocol.WRONG_TOKEN)
        e = self.assertRaises(protocol.RPCError, book.renew, "nope", lease.token, 1)
        self.assertEqual(e.code, protocol.UNKNOWN_LEASE)
        e = self.assertRaises(protocol.RPCError, book.renew, lease.id, lease.token, 600)
        self.assertEqual(e.code, protocol.UNKNOWN_LEASE)

    def test_oneLeasePerClientAndMethod(self):
        book = LeaseBook(10, 600)
        lease = draftAndAdd(book, "a", 0)
        self.assertIs(book.find("a", "forward"), lease)
        self.assertRaises(ValueError, draftAndAdd, book, "a", 0)
        draftAndAdd(book, "a", 0, method="wireguard")
        self.assertEqual(len(book), 2)

    def test_replacementIsTheClientsLeaseOnceAdded(self):
        book = LeaseBook(1, 600)
        old = draftAndAdd(book, "a", 0)
        new = book.draft("a", "", "forward", "10.0.0.2", {}, 10, replacing=old)  # full, yet room
        new.config = {"address": "10.0.0.2/32"}
        book.add(new, replacing=old)
        self.assertIs(book.find("a", "forward"), new)
        self.assertEqual(len(book), 2)  # both live until the old one is revoked
        book.remove(old)
        self.assertIs(book.find("a", "forward"), new)
        self.assertEqual(book.live(), [new])

    def test_failedReplacementRestoresTheOldLease(self):
        book = LeaseBook(5, 600)
        old = draftAndAdd(book, "a", 0)
        new = book.draft("a", "", "forward", "10.0.0.2", {}, 10, replacing=old)
        book.add(new, replacing=old)
        book.remove(new, restoring=old)
        self.assertIs(book.find("a", "forward"), old)
        self.assertEqual(book.live(), [old])

    def test_restoreKeepsTheNewerOfAReplacedPair(self):
        book = LeaseBook(5, 600)
        old = draftAndAdd(book, "a", 0)
        new = book.draft("a", "", "forward", "10.0.0.2", {}, 10, replacing=old)
        new.config = {"address": "10.0.0.2/32"}
        book.add(new, replacing=old)
        again = LeaseBook(5, 600)
        restored, dropped = again.restore(book.records(), 20, {"forward"})
        self.assertEqual(([lease.id for lease in restored], [lease.id for lease in dropped]),
                         ([new.id], [old.id]))

    def test_releaseFreesRoom(self):
        book = LeaseBook(1, 600)
        lease = draftAndAdd(book, "a", 0)
        book.release(lease.id, lease.token, 1)
        draftAndAdd(book, "b", 1)

    @settings(derandomize=True, max_examples=100)
    @given(st.lists(st.tuples(st.sampled_from(["add", "renew", "release", "expire"]),
                              st.integers(0, 5), st.integers(0, 50)), max_size=60))
    def test_invariants(self, operations):
        """
        Whatever happens, the book never exceeds max clients, its two
        indexes agree, and no expired lease survives an expiry sweep.
        """
        book = LeaseBook(3, 10)
        now = 0
        for op, client, dt in operations:
            now += dt
            existing = book.find(f"c{client}", "forward")
            try:
                if op == "add" and existing is None:
                    draftAndAdd(book, f"c{client}", now)
                elif op == "renew" and existing is not None:
                    book.renew(existing.id, existing.token, now)
                elif op == "release" and existing is not None:
                    book.release(existing.id, existing.token, now)
                elif op == "expire":
                    book.expire(now)
                    self.assertTrue(all(lease.expiresAt > now for lease in book.live()))
            except protocol.RPCError as e:
                self.assertIn(e.code, (protocol.GATEWAY_FULL, protocol.UNKNOWN_LEASE))
            self.assertLessEqual(len(book), 3)
            self.assertEqual(sorted(book.byId), sorted(lease.id for lease in book.byClient.values()))
            self.assertEqual(sorted(book.byId),
                             sorted(i for leases in book.byMethod.values() for i in leases))
            self.assertEqual(sorted(lease.id for lease in book.others("forward")), sorted(book.byId))


class PersistenceTests(SynchronousTestCase):
    def test_roundTrip(self):
        directory = self.mktemp()
        os.makedirs(directory)
        book = LeaseBook(10, 600)
        a = draftAndAdd(book, "a", 100)
        b = draftAndAdd(book, "b", 100, method="wireguard")
        store = LeaseFile(directory)
        store.save(book.records())
        again = LeaseBook(10, 600)
        restored, dropped = again.restore(store.load(), 200, {"forward", "wireguard"})
        self.assertEqual(sorted(lease.id for lease in restored), sorted([a.id, b.id]))
        self.assertEqual(dropped, [])
        self.assertEqual(again.find("a", "forward").record(), a.record())
        self.assertEqual(again.renew(a.id, a.token, 300).expiresAt, 900)

    def test_restoreDropsExpiredAndUnconfigured(self):
        book = LeaseBook(10, 600)
        draftAndAdd(book, "a", 0)
        draftAndAdd(book, "b", 500, method="wireguard")
        draftAndAdd(book, "c", 500)
        again = LeaseBook(10, 600)
        restored, dropped = again.restore(book.records(), 700, {"forward"})
        self.assertEqual([lease.clientId for lease in restored], ["c"])
        self.assertEqual(sorted(lease.clientId for lease in dropped), ["a", "b"])

    def test_missingFileIsEmpty(self):
        self.assertIsNone(LeaseFile(self.mktemp()).load())

    def test_corruptFileKeptAside(self):
        directory = self.mktemp()
        os.makedirs(directory)
        store = LeaseFile(directory)
        for junk in (b'{"version": 1, "leases": [{"id": ', b'{"version": 99, "leases": []}',
                     b'{"version": 1, "leases": [{"id": 5}]}', b"\xff\xfe"):
            with open(store.path, "wb") as f:
                f.write(junk)
            e = self.assertRaises(StateFileCorrupt, store.load)
            self.assertIn(store.path, str(e))
            self.assertFalse(os.path.exists(store.path))
            with open(e.keptAs, "rb") as f:
                self.assertEqual(f.read(), junk)

    def test_atomicWriteLeavesNoTemp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        store = LeaseFile(directory)
        store.save({"version": 1, "leases": []})
        self.assertEqual(os.listdir(directory), ["leases.json"])
        self.assertEqual(os.stat(store.path).st_mode & 0o777, 0o600)
        with open(store.path) as f:
            self.assertEqual(json.load(f), {"version": 1, "leases": []})


class GroupCommitTests(SynchronousTestCase):
    def test_oneWriteForCallsInOneTurn(self):
        clock = Clock()
        saved = []

        class Store:
            def save(self, records):
                saved.append(records)

        n = [0]
        committer = GroupCommit(clock, Store(), lambda: n[0])
        ds = [committer.commit() for _ in range(5)]
        n[0] = 7
        for d in ds:
            self.assertNoResult(d)
        clock.advance(0)
        self.assertEqual(saved, [7])
        for d in ds:
            self.successResultOf(d)

    def test_failureReachesEveryCaller(self):
        clock = Clock()

        class Store:
            def save(self, records):
                raise OSError("disk full")

        committer = GroupCommit(clock, Store(), lambda: None)
        ds = [committer.commit() for _ in range(2)]
        clock.advance(0)
        for d in ds:
            self.failureResultOf(d, OSError)
        self.flushLoggedErrors(OSError)


def byId(records):
    return {record["id"]: record for record in (records or {"leases": []})["leases"]}


class ChangeTrackingTests(SynchronousTestCase):
    def test_addExtendRemoveAreChanges(self):
        book = LeaseBook(10, 600)
        a = draftAndAdd(book, "a", 0)
        b = draftAndAdd(book, "b", 0)
        self.assertEqual(sorted(book.takeChanges(), key=str),
                         sorted([(a.id, a.record()), (b.id, b.record())], key=str))
        self.assertEqual(book.takeChanges(), [])
        book.renew(a.id, a.token, 10)
        book.release(b.id, b.token, 10)
        self.assertEqual(sorted(book.takeChanges(), key=str),
                         sorted([(a.id, a.record()), (b.id, None)], key=str))

    def test_restoredAreNotChangesDroppedAre(self):
        book = LeaseBook(10, 600)
        kept = draftAndAdd(book, "a", 500)
        gone = draftAndAdd(book, "b", 0)
        again = LeaseBook(10, 600)
        again.restore(book.records(), 700, {"forward"})
        self.assertEqual(again.takeChanges(), [(gone.id, None)])
        self.assertIn(kept.id, again.byId)


class JournalTests(SynchronousTestCase):
    """
    L{LeaseFile} as snapshot plus append-only journal.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.book = LeaseBook(1000, 600)
        self.store = LeaseFile(self.directory)
        self.addCleanup(self.store.close)

    def commit(self, store=None):
        (store or self.store).commit(self.book.takeChanges(), self.book.records)

    def reload(self):
        store = LeaseFile(self.directory)
        self.addCleanup(store.close)
        return store, store.load()

    def test_commitAppendsOnlyWhatChanged(self):
        leases = [draftAndAdd(self.book, f"c{i}", 0) for i in range(5)]
        self.store.save(self.book.records())
        self.book.takeChanges()
        with open(self.store.path, "rb") as f:
            snapshot = f.read()
        self.book.renew(leases[0].id, leases[0].token, 10)
        self.book.release(leases[1].id, leases[1].token, 10)
        self.commit()
        with open(self.store.path, "rb") as f:
            self.assertEqual(f.read(), snapshot)
        with open(self.store.journalPath, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(sorted((json.loads(line) for line in lines), key=str),
                         sorted([{"put": leases[0].record()}, {"del": leases[1].id}], key=str))
        _, loaded = self.reload()
        self.assertEqual(byId(loaded), byId(self.book.records()))

    def test_journalWithoutSnapshot(self):
        draftAndAdd(self.book, "a", 0)
        self.commit()
        self.assertFalse(os.path.exists(self.store.path))
        _, loaded = self.reload()
        self.assertEqual(byId(loaded), byId(self.book.records()))

    def test_nothingStoredIsNone(self):
        self.commit()
        self.assertIsNone(self.reload()[1])

    def test_compactionRewritesTheSnapshotAndDropsTheJournal(self):
        store = LeaseFile(self.directory, compactMinBytes=2000)
        self.addCleanup(store.close)
        lease = draftAndAdd(self.book, "a", 0)
        commits = 0
        while not os.path.exists(store.path):
            self.book.renew(lease.id, lease.token, commits)
            self.commit(store)
            commits += 1
            self.assertLess(commits, 100)
        self.assertFalse(os.path.exists(store.journalPath))
        self.assertEqual(byId(self.reload()[1]), byId(self.book.records()))
        # ...and journaling goes on after it.
        draftAndAdd(self.book, "b", 0)
        self.commit(store)
        self.assertTrue(os.path.exists(store.journalPath))
        self.assertEqual(byId(self.reload()[1]), byId(self.book.records()))

    def test_crashBetweenSnapshotAndJournalDeletion(self):
        """
        The old journal replayed over the new snapshot changes nothing.
        """
        leases = [draftAndAdd(self.book, f"c{i}", 0) for i in range(3)]
        self.commit()
        self.book.release(leases[0].id, leases[0].token, 1)
        self.book.renew(leases[1].id, leases[1].token, 1)
        draftAndAdd(self.book, "new", 1)
        self.commit()
        with open(self.store.journalPath, "rb") as f:
            oldJournal = f.read()
        self.store.save(self.book.records())
        with open(self.store.journalPath, "wb") as f:
            f.write(oldJournal)  # as if the crash came before the unlink
        store, loaded = self.reload()
        self.assertEqual(byId(loaded), byId(self.book.records()))
        # Appending after the stale journal still loads right.
        self.book.release(leases[2].id, leases[2].token, 2)
        self.commit(store)
        self.assertEqual(byId(self.reload()[1]), byId(self.book.records()))

    def test_tornLastEntryIsDroppedAndTruncated(self):
        a = draftAndAdd(self.book, "a", 0)
        self.commit()
        good = byId(self.book.records())
        with open(self.store.journalPath, "rb") as f:
            size = len(f.read())
        with open(self.store.journalPath, "ab") as f:
            f.write(b'{"put":{"client_host":"10.')
        store, loaded = self.reload()
        self.assertEqual(byId(loaded), good)
        self.assertEqual(os.path.getsize(store.journalPath), size)
        self.assertEqual([name for name in os.listdir(self.directory) if "corrupt" in name], [])
        self.book.renew(a.id, a.token, 5)
        self.commit(store)
        self.assertEqual(byId(self.reload()[1]), byId(self.book.records()))

    def test_unreadableEntriesInTheMiddleAreKeptAside(self):
        draftAndAdd(self.book, "a", 0)
        self.commit()
        good = byId(self.book.records())
        with open(self.store.journalPath, "ab") as f:
            f.write(b"\x00\x00garbage\n" + json.dumps({"del": "x"}).encode() + b"\n")
        with open(self.store.journalPath, "rb") as f:
            whole = f.read()
        store, loaded = self.reload()
        self.assertEqual(byId(loaded), good)
        [keptAs] = [name for name in os.listdir(self.directory) if "corrupt" in name]
        with open(os.path.join(self.directory, keptAs), "rb") as f:
            self.assertEqual(f.read(), whole)

    def test_corruptSnapshotSetsTheJournalAsideToo(self):
        draftAndAdd(self.book, "a", 0)
        self.commit()
        with open(self.store.path, "wb") as f:
            f.write(b'{"version": 1, "leases": [{"id": ')
        e = self.assertRaises(StateFileCorrupt, LeaseFile(self.directory).load)
        self.assertTrue(os.path.exists(e.keptAs))
        self.assertFalse(os.path.exists(self.store.journalPath))
        self.assertIsNone(LeaseFile(self.directory).load())

    def test_failedAppendRewritesEverythingNext(self):
        a = draftAndAdd(self.book, "a", 0)
        self.commit()

        def diskFull(data):
            raise OSError("disk full")

        self.store._append = diskFull
        self.book.renew(a.id, a.token, 5)
        self.assertRaises(OSError, self.commit)
        del self.store._append
        draftAndAdd(self.book, "b", 5)
        self.commit()  # the renewal's change was taken by the failed commit
        self.assertFalse(os.path.exists(self.store.journalPath))
        self.assertEqual(byId(self.reload()[1]), byId(self.book.records()))

    @settings(derandomize=True, max_examples=100, deadline=None)
    @given(st.lists(st.lists(st.tuples(st.sampled_from(["add", "renew", "release"]),
                                       st.integers(0, 4)), min_size=1, max_size=4),
                    min_size=1, max_size=8))
    def test_crashAtAnyByteLosesNothingAcknowledged(self, commits):
        """
        Cut the journal where a crash in the middle of an append could:
        loading never fails, and every lease is as of the last acknowledged
        commit or as of the commit being written.  Cuts inside one line all
        behave alike, so each line is cut at its ends and in its middle.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        book = LeaseBook(1000, 600)
        store = LeaseFile(directory, compactMinBytes=10 ** 9)
        self.addCleanup(store.close)
        draftAndAdd(book, "seed", 0)
        store.save(book.records())
        book.takeChanges()
        states = [byId(book.records())]
        ends = [0]
        now = 0
        for batch in commits:
            now += 1
            for op, client in batch:
                existing = book.find(f"c{client}", "forward")
                if op == "add" and existing is None:
                    draftAndAdd(book, f"c{client}", now)
                elif op == "renew" and existing is not None:
                    book.renew(existing.id, existing.token, now)
                elif op == "release" and existing is not None:
                    book.release(existing.id, existing.token, now)
            store.commit(book.takeChanges(), book.records)
            states.append(byId(book.records()))
            ends.append(os.path.getsize(store.journalPath) if os.path.exists(store.journalPath) else 0)
        store.close()
        if not os.path.exists(store.journalPath):
            return
        with open(store.journalPath, "rb") as f:
            journal = f.read()
        cuts = {0, len(journal)}
        start = 0
        for end in (i + 1 for i, byte in enumerate(journal) if byte == ord("\n")):
            cuts.update({start + 1, (start + end) // 2, end - 2, end - 1, end})
            start = end
        crashed = self.mktemp()
        os.makedirs(crashed)
        shutil.copyfile(store.path, os.path.join(crashed, "leases.json"))
        for cut in sorted(c for c in cuts if 0 <= c <= len(journal)):
            with open(os.path.join(crashed, "leases.journal"), "wb") as f:
                f.write(journal[:cut])
            loaded = byId(LeaseFile(crashed).load())
            acknowledged = max(i for i, end in enumerate(ends) if end <= cut)
            before = states[acknowledged]
            after = states[min(acknowledged + 1, len(states) - 1)]
            for leaseId in set(loaded) | set(before) | set(after):
                self.assertIn(loaded.get(leaseId), (before.get(leaseId), after.get(leaseId)),
                              f"cut at {cut}: lease {leaseId}")


class GroupCommitJournalTests(SynchronousTestCase):
    def test_changesGoToTheStoresCommit(self):
        clock = Clock()
        calls = []

        class Store:
            def commit(self, changes, snapshot):
                calls.append((changes, snapshot()))

        batches = [[("a", None)], [("b", {"id": "b"})]]
        committer = GroupCommit(clock, Store(), lambda: "everything", lambda: batches.pop(0))
        ds = [committer.commit(), committer.commit()]
        clock.advance(0)
        self.assertEqual(calls, [([("a", None)], "everything")])
        for d in ds:
            self.successResultOf(d)
