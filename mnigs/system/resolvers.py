# -*- test-case-name: tests.unit.test_resolvers -*-
"""
Putting a client's resolvers in force and taking them out again, the ways
a system takes them (L{IResolverBackend}):

  - C{resolved}: systemd-resolved's per-link DNS on the tunnel device
    (C{resolvectl dns DEVICE A B}, C{resolvectl domain DEVICE ~.}, undone
    by C{resolvectl revert DEVICE}); only for a session with a device of
    its own (not C{forward}: the mesh interface's own settings would go);
  - C{resolvconf}: a record C{DEVICE.mnigs} (C{resolvconf -a NAME} with
    the text on stdin, undone by C{resolvconf -d NAME -f});
  - C{file}: the resolv.conf file itself, replaced whole (the original's
    C{search}, C{domain} and C{options} lines kept) and put back byte for
    byte, with its mode and owner (or as the symlink, or the absence, it
    was), unless someone else rewrote it meanwhile;
  - C{hook}: an operator's executable, C{HOOK apply DEVICE A B ...} and
    C{HOOK restore DEVICE}.

Each backend's C{plan} says, as a JSON record, what it will change and how
to undo it; the caller keeps the record in its state directory before
C{put} changes anything, so that a restart after a crash can C{undo} it.
Commands are argument vectors, never a shell; the servers are checked
addresses (L{mnigs.protocol.checkResolvers}) by the time they get here,
and a record read back from disk is checked again (L{checkRecord}).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shlex
import shutil
import stat

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import IResolverBackend
from mnigs.protocol import checkResolvers

log = Logger()

MODES = ("resolved", "resolvconf", "file", "hook")
#: What commands and hooks get as PATH.
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: glibc reads at most this many nameserver lines (MAXNS).
FILE_NAMESERVERS = 3
#: A resolv.conf bigger than this is not a resolv.conf: refused.
MAX_FILE_BYTES = 64 * 1024
#: resolvconf's record names are DEVICE + this.
RESOLVCONF_SUFFIX = ".mnigs"
#: systemd-resolved sends every name not routed more specifically elsewhere
#: to a link with this routing domain.
RESOLVED_DOMAIN = "~."
#: Where a running systemd-resolved answers (what auto looks for).
RESOLVED_SOCKET = "/run/systemd/resolve/io.systemd.Resolve"


class CommandFailed(Exception):
    def __init__(self, argv, result):
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()[:200]
        super().__init__(f"{shlex.join(argv)} exited with status {result.exitCode}"
                         + (f": {detail}" if detail else ""))


def commandRunner(reactor, timeout: float = 10.0):
    """
    C{run(argv, stdin=b"")}: a Deferred that fires when C{argv} (a list,
    no shell, PATH L{SAFE_PATH}) exits 0, or fails with L{CommandFailed}.
    """
    from mnigs.system.command import runCommand

    def run(argv, stdin=b""):
        d = runCommand(reactor, list(argv), stdin, env={"PATH": SAFE_PATH}, timeout=timeout)

        def checked(result):
            if result.exitCode != 0:
                raise CommandFailed(argv, result)
            return result

        return d.addCallback(checked)

    return run


def which(name: str) -> str | None:
    return shutil.which(name, path=SAFE_PATH)


def detectMode(exists=os.path.exists, find=which) -> str | None:
    """
    What C{dns.mode = "auto"} uses here: C{resolved} when systemd-resolved
    runs (its varlink socket is there) and C{resolvectl} is installed,
    else C{resolvconf} when that is installed, else C{None} (nothing:
    the file is only written when asked for).
    """
    if exists(RESOLVED_SOCKET) and find("resolvectl"):
        return "resolved"
    if find("resolvconf"):
        return "resolvconf"
    return None


def _ifname(value) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= 15 and "/" not in value
            and value.isprintable() and not any(c.isspace() for c in value)
            and value not in (".", "..") and not value.startswith("-")):
        raise ValueError(f"{ascii(value)[:40]} is not an interface name")
    return value


def checkRecord(record) -> dict:
    """
    A record read back from the state directory, checked as if it came
    from anywhere: every part that reaches a command line or a path.
    Raises ValueError.
    """
    if not isinstance(record, dict) or record.get("mode") not in MODES:
        raise ValueError("not a resolver record")
    _ifname(record.get("device"))
    checkResolvers(record.get("servers"))
    mode = record["mode"]
    if mode == "resolvconf":
        if record.get("name") != record["device"] + RESOLVCONF_SUFFIX:
            raise ValueError("resolvconf record name does not match its device")
    elif mode == "file":
        if not (isinstance(record.get("path"), str) and os.path.isabs(record["path"])):
            raise ValueError("file record without an absolute path")
        if not isinstance(record.get("written"), str):
            raise ValueError("file record without the digest of what was written")
        _snapshotFrom(record.get("original"))
    elif mode == "hook":
        if not (isinstance(record.get("hook"), str) and os.path.isabs(record["hook"])):
            raise ValueError("hook record without an absolute path")
    return record


def _plainRecord(mode, device, servers, **extra) -> dict:
    return {"mode": mode, "device": _ifname(device), "servers": list(checkResolvers(list(servers))),
            **extra}


class _Commands:
    """
    A backend that runs commands (C{run}, L{commandRunner}) naming the
    session's device: a failover to another device sets the new one,
    then undoes the old.
    """
    needsOwnDevice = False
    mode = ""

    def __init__(self, run, command: str):
        self.run = run
        self.command = command

    def plan(self, device, servers, previous):
        return _plainRecord(self.mode, device, servers, **self._extra(device))

    def _extra(self, device) -> dict:
        return {}

    def _setting(self, record):
        "The (argv, stdin) that put C{record} in force."
        raise NotImplementedError

    @defer.inlineCallbacks
    def put(self, record, previous):
        for argv, stdin in self._setting(record):
            yield self.run(argv, stdin)
        if previous is not None and previous["device"] != record["device"]:
            yield self.undo(previous)


# -- systemd-resolved ------------------------------------------------------

@implementer(IResolverBackend)
class ResolvedLink(_Commands):
    """
    Per-link DNS on the session's own device, with the routing domain
    C{~.} so that names go to it rather than to the other links.  A link
    that is gone has lost its settings with it: its revert failing is no
    error.
    """
    mode = "resolved"
    needsOwnDevice = True

    def __init__(self, run, command: str = "resolvectl"):
        super().__init__(run, command)

    def _setting(self, record):
        device = record["device"]
        return [([self.command, "dns", device, *record["servers"]], b""),
                ([self.command, "domain", device, RESOLVED_DOMAIN], b"")]

    def undo(self, record):
        d = self.run([self.command, "revert", record["device"]])
        d.addErrback(lambda f: log.info("dns: {why} (a link that is gone has no settings left)",
                                        why=f.getErrorMessage()))
        return d


# -- resolvconf ------------------------------------------------------------

def nameserverText(servers) -> bytes:
    return "".join(f"nameserver {server}\n" for server in servers).encode("ascii")


@implementer(IResolverBackend)
class Resolvconf(_Commands):
    """
    A resolvconf record C{DEVICE.mnigs} (Debian's resolvconf, openresolv,
    or systemd's resolvconf, which takes the part before the dot as the
    link).
    """
    mode = "resolvconf"

    def __init__(self, run, command: str = "resolvconf"):
        super().__init__(run, command)

    def _extra(self, device):
        return {"name": device + RESOLVCONF_SUFFIX}

    def _setting(self, record):
        return [([self.command, "-a", record["name"]], nameserverText(record["servers"]))]

    def undo(self, record):
        return self.run([self.command, "-d", record["name"], "-f"])


# -- a hook ----------------------------------------------------------------

@implementer(IResolverBackend)
class ResolverHook(_Commands):
    """
    The operator's executable: C{HOOK apply DEVICE SERVER...} (again, with
    the new servers, on a failover: they replace the old; then C{HOOK
    restore OLD_DEVICE} if the device changed) and C{HOOK restore DEVICE}
    when the originals are to come back.  Exit status 0 means done.  A
    record names its hook: a restart undoes with the hook that applied.
    """
    mode = "hook"

    def _extra(self, device):
        return {"hook": self.command}

    def _setting(self, record):
        return [([record["hook"], "apply", record["device"], *record["servers"]], b"")]

    def undo(self, record):
        return self.run([record["hook"], "restore", record["device"]])


# -- the file itself -------------------------------------------------------

def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(path: str) -> dict:
    """
    What C{path} is now, enough to make it again byte for byte: a file
    (contents, mode, owner), a symlink (its target) or nothing.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "absent"}
    if stat.S_ISLNK(info.st_mode):
        return {"kind": "symlink", "target": os.readlink(path)}
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, f"{path} is neither a file nor a symlink")
    if info.st_size > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"{path} is larger than {MAX_FILE_BYTES} bytes")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    return {"kind": "file", "data": base64.b64encode(data).decode("ascii"),
            "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid}


def _snapshotFrom(original) -> dict:
    if not isinstance(original, dict):
        raise ValueError("no original in the record")
    kind = original.get("kind")
    if kind == "file":
        base64.b64decode(original.get("data"), validate=True)
        for key in ("mode", "uid", "gid"):
            if type(original.get(key)) is not int or original[key] < 0:
                raise ValueError(f"original {key} malformed")
    elif kind == "symlink":
        if not isinstance(original.get("target"), str) or not original["target"]:
            raise ValueError("original symlink target malformed")
    elif kind != "absent":
        raise ValueError("original of an unknown kind")
    return original


def _originalBytes(original) -> bytes:
    return base64.b64decode(original["data"])


def renderResolvConf(device: str, servers, original: dict) -> bytes:
    """
    The resolv.conf mnigs writes: the lease's first L{FILE_NAMESERVERS}
    resolvers, and the original's C{search}, C{domain} and C{options}
    lines (local search domains and resolver options still apply).
    """
    lines = [f"# mnigs-client: the resolvers of its gateway's lease, through {device}.",
             "# The file it replaced comes back when the client goes offline or stops."]
    lines += [f"nameserver {server}" for server in servers[:FILE_NAMESERVERS]]
    if original["kind"] == "file":
        for line in _originalBytes(original).decode("utf-8", "replace").splitlines():
            words = line.split()
            if words and words[0] in ("search", "domain", "options"):
                lines.append(" ".join(words))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _currentBytes(path: str) -> bytes | None:
    try:
        if os.path.islink(path):
            return None
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None


def _writeFile(path: str, data: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    """
    C{path} made a file holding C{data} with C{mode} (and owner): a new
    file renamed over it; where C{path} is a mount point (a bind-mounted
    resolv.conf: containers, C{ip netns exec}) renaming cannot work
    (EBUSY), and the file is rewritten in place instead.
    """
    tmp = _tmpBeside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _fill(fd, data, mode, uid, gid)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if e.errno not in (errno.EBUSY, errno.EXDEV) or os.path.islink(path):
            raise
        _fill(os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), data, mode, uid, gid)


def _tmpBeside(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.mnigs-{os.getpid()}")


def _fill(fd: int, data: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    "Write C{data} to the open C{fd}, give it C{mode} (and owner), sync, close."
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if uid is not None:
            os.fchown(f.fileno(), uid, gid)
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())


def _makeSymlink(path: str, target: str) -> None:
    tmp = _tmpBeside(path)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _matches(path: str, original: dict) -> bool:
    "Whether C{path} is what C{original} says already (a restore already done)."
    try:
        return snapshot(path) == original
    except OSError:
        return False


@implementer(IResolverBackend)
class ResolvFile:
    """
    The resolv.conf file at C{path}, replaced while online and put back
    exactly as it was (L{snapshot}) when the originals are to come back,
    unless someone else (a DHCP client, an operator) rewrote it meanwhile:
    then theirs stays, and a warning says so.  A failover replaces the
    servers and keeps the first original.
    """
    mode = "file"
    needsOwnDevice = False

    def __init__(self, path: str = "/etc/resolv.conf"):
        self.path = path

    def plan(self, device, servers, previous):
        if previous is not None and previous.get("path") == self.path:
            original = previous["original"]
        else:
            original = snapshot(self.path)
        record = _plainRecord(self.mode, device, servers, path=self.path, original=original)
        record["written"] = _digest(renderResolvConf(device, record["servers"], original))
        return record

    def put(self, record, previous):
        return defer.maybeDeferred(self._put, record)

    def _put(self, record):
        original = record["original"]
        data = renderResolvConf(record["device"], record["servers"], original)
        if original["kind"] == "file":
            _writeFile(record["path"], data, original["mode"], original["uid"], original["gid"])
        else:
            _writeFile(record["path"], data, 0o644, None, None)

    def undo(self, record):
        return defer.maybeDeferred(self._undo, record)

    def _undo(self, record):
        path, original = record["path"], record["original"]
        current = _currentBytes(path)
        if current is None or _digest(current) != record["written"]:
            if not _matches(path, original):
                log.warn("dns: {path} was changed by someone else while mnigs's resolvers were "
                         "in force: left as it is, not restored", path=path)
            return
        kind = original["kind"]
        if kind == "file":
            _writeFile(path, _originalBytes(original), original["mode"], original["uid"],
                       original["gid"])
        elif kind == "symlink":
            _makeSymlink(path, original["target"])
        else:
            os.unlink(path)


def makeBackend(mode: str, run, file: str = "/etc/resolv.conf", hook: str = "",
                find=which) -> IResolverBackend:
    """
    The backend for C{mode} (one of L{MODES}); C{run} runs its commands.
    """
    if mode == "resolved":
        return ResolvedLink(run, find("resolvectl") or "resolvectl")
    if mode == "resolvconf":
        return Resolvconf(run, find("resolvconf") or "resolvconf")
    if mode == "file":
        return ResolvFile(file)
    if mode == "hook":
        return ResolverHook(run, hook)
    raise ValueError(f"no resolver backend {mode!r}")
