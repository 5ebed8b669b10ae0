# -*- test-case-name: tests.unit.test_softether.test_hubsync -*-
"""
Whether the vpnserver's hub holds what mnigs wants, and so what a user
change does now (L{HubSync}).

The hub is I{synced} from the end of a reconcile (each launch and each
relaunch of the vpnserver makes the hub's users exactly the wanted ones
before the daemon counts as ready, see L{mnigs.softether.server}) until
the daemon dies, is stopped, or is launched again (a readiness check
starts).  While it is not:

  - adding a user waits for the next reconcile, and fails with
    L{NotReady} if none comes within the wait it was given (the method
    answers the registration 1005, temporarily unavailable, and the client
    tries again later): a grant never talks to a vpnserver that is gone or
    not yet configured, whose in-process restart would cut the new session
    anyway;
  - removing a user is left to the next reconcile, which deletes every
    mnigs user that is no longer wanted: nothing is asked of a daemon
    that is not there, and the revoke does not fail (the method has closed
    the data-path gate already).

User changes are fed in under the server's mutex, as the reconcile runs,
so that a reconcile's view of the wanted users and a change never
interleave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.logger import Logger

from mnigs.softether.hub import HubUser
from mnigs.system.waiters import Waiters

log = Logger()


class NotReady(Exception):
    """
    The vpnserver is not (yet, or no longer) configured: it is being
    launched or relaunched.
    """


class Hub(Protocol):
    def reconciled(self) -> None:
        "A reconcile made the hub hold exactly the wanted users."

    def lost(self) -> None:
        "The vpnserver died, stops, or is being launched again: the hub's content is unknown."

    def whenSynced(self) -> defer.Deferred[None]:
        "Fires once the hub is synced (at once if it is)."

    def addUser(self, user: HubUser) -> defer.Deferred[None]:
        "Add C{user} now (under the server's mutex)."

    def removeUser(self, name: str) -> defer.Deferred[None]:
        "Remove user C{name}, now or at the next reconcile (under the server's mutex)."

    def describe(self) -> str:
        "Status."


@dataclass
class HubCore:
    hub: str
    add: Callable[[HubUser], defer.Deferred]
    remove: Callable[[str], defer.Deferred]
    waiters: Waiters[None] = field(default_factory=Waiters)


def _buildMachine():
    builder = TypeMachineBuilder(Hub, HubCore)
    unsynced = builder.state("unsynced")
    synced = builder.state("synced")

    @unsynced.upon(Hub.reconciled).to(synced)
    def nowSynced(hub, core):
        core.waiters.fire(None)

    @synced.upon(Hub.reconciled).loop()
    @synced.upon(Hub.lost).to(unsynced)
    @unsynced.upon(Hub.lost).loop()
    def nothingToDo(hub, core):
        pass

    @synced.upon(Hub.whenSynced).loop()
    def alreadySynced(hub, core):
        return defer.succeed(None)

    @unsynced.upon(Hub.whenSynced).loop()
    def awaitReconcile(hub, core):
        return core.waiters.wait()

    @synced.upon(Hub.addUser).loop()
    def addNow(hub, core, user):
        return core.add(user)

    @unsynced.upon(Hub.addUser).loop()
    def refuseAdd(hub, core, user):
        # Synced when the caller last looked, lost before it got the mutex.
        return defer.fail(NotReady(f"the vpnserver of hub {core.hub} is being launched again"))

    @synced.upon(Hub.removeUser).loop()
    def removeNow(hub, core, name):
        return core.remove(name)

    @unsynced.upon(Hub.removeUser).loop()
    def removeAtReconcile(hub, core, name):
        log.info("vpnserver {hub} is being launched again: hub user {user} is removed when "
                 "it is configured", hub=core.hub, user=name)
        return defer.succeed(None)

    @synced.upon(Hub.describe).loop()
    def describeSynced(hub, core):
        return "synced"

    @unsynced.upon(Hub.describe).loop()
    def describeConfiguring(hub, core):
        return "configuring"

    return builder.build()


HubSync = _buildMachine()

__all__ = ["HubSync", "HubCore", "NotReady"]
