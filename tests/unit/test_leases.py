"""
Lease bookkeeping: expiry, max clients, re-registration, persistence
round trip, and a corrupt state file kept aside.
"""

import json
import os

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit, LeaseFile
from mnigs.statefile import StateFileCorrupt


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
