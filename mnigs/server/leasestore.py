"""
The lease file in the state directory, and group commit: every change
asked for within one reactor turn is written by one atomic write, and each
caller hears back only once its change is on disk.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import ILeaseStore
from mnigs.server.leases import checkRecords
from mnigs.statefile import readJSON, writeJSON

log = Logger()

LEASE_FILE = "leases.json"


@implementer(ILeaseStore)
class LeaseFile:
    def __init__(self, stateDir: str):
        self.path = os.path.join(stateDir, LEASE_FILE)

    def load(self):
        return readJSON(self.path, None, validate=checkRecords)

    def save(self, records):
        writeJSON(self.path, records)


class GroupCommit:
    """
    C{commit()} returns a Deferred that fires once C{snapshot()} has been
    saved by C{store}, taken no earlier than the call.
    """

    def __init__(self, reactor, store, snapshot):
        self.reactor = reactor
        self.store = store
        self.snapshot = snapshot
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
