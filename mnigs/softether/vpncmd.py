# -*- test-case-name: tests.unit.test_softether -*-
"""
Driving SoftEther through C{vpncmd}, non-interactively.

Every run is one batch: the commands go into a file named by C{/IN:}
(one line each, built here from checked words, never from free text), the
output comes back in CSV mode (C{/CSV}).  Secrets never go on a command
line: vpncmd asks for whatever password is missing from a command
(C{UserPasswordSet NAME} prompts "Password:" and "Confirm input:") and for
the administrator password, and it reads those answers from its standard
input, so the passwords travel on stdin, in the order the prompts come.
The batch file holds no secret.

Two traps, both verified with vpncmd 5.01 build 9674:

  - At a prompt, end of input makes vpncmd spin at full CPU forever
    (it does not treat EOF as Ctrl+D).  A wrong administrator password, or
    a prompt we did not expect, therefore never ends by itself: every run
    has a timeout after which vpncmd is killed.
  - An argument that starts with C{/} is taken as a parameter name, so a
    file name given as a plain argument must be relative (vpncmd runs in a
    directory of our choosing).

The output of a batch echoes each command after its prompt
(C{VPN Server/HUB>UserCreate ...}); what follows, up to the next echo, is
that command's answer: nothing, a CSV table, or
C{Error occurred. (Error code: N)} and a message.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Sequence

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from mnigs.system.command import CommandTimeout, runCommand
from mnigs.softether import VPNCMD

log = Logger()

_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{1,40}$")
_PARAMETER = re.compile(r"^[A-Z]{1,20}$")
# What a word in a batch line may be made of: vpncmd splits lines at
# spaces and gives quotes a meaning, so neither may appear.  Brackets are
# for IPv6 endpoints (/SERVER:[fd00::1]:5555 works).
_WORD = re.compile(r"^[A-Za-z0-9_.:/@,+=\[\]-]*$")
_ERROR = re.compile(r"^Error occurred\. \(Error code: (\d+)\)$")
_NOISE = (
    re.compile(r"^$"),
    re.compile(r"^Please enter the password\. To cancel press the Ctrl\+D key\.$"),
    re.compile(r"^(Password|Confirm input): \**$"),
)
# vpncmd's own complaints about a command line, which come without an
# "Error occurred" line.
_COMPLAINTS = (
    (re.compile(r'^The parameter ".*" has been specified\. It is not possible'), 38),
    (re.compile(r'^".*": Command not found\.'), 38),
)
ERR_CONNECT_FAILED = 1
ERR_OBJECT_NOT_FOUND = 29
ERR_USER_EXISTS = 66
ERR_TIMEOUT = -1


class VpncmdError(Exception):
    """
    One command of a batch failed: C{code} is SoftEther's error code.
    """

    def __init__(self, command: str, code: int, message: str) -> None:
        super().__init__(command, code, message)
        self.command = command
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"vpncmd {self.command}: error {self.code}: {self.message}"


class VpncmdFailed(Exception):
    """
    vpncmd did not get to run the batch (could not connect, refused the
    administrator password, timed out): C{code} is SoftEther's error code
    or L{ERR_TIMEOUT}.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"vpncmd failed: error {self.code}: {self.message}"


def _word(value: object, what: str, positional: bool = False) -> str:
    if not isinstance(value, str) or not _WORD.match(value) or len(value) > 4096:
        raise ValueError(f"{what}: {value!r} cannot go on a vpncmd line")
    if positional and (not value or value.startswith("/")):
        raise ValueError(f"{what}: {value!r} cannot be a plain vpncmd argument")
    return value


@dataclass(frozen=True)
class Command:
    """
    One vpncmd command: its line in the batch file and the answers to the
    prompts it makes (secrets: left out of C{repr}).
    """

    name: str
    args: tuple = ()
    prompts: tuple = field(default=(), repr=False)

    def line(self) -> str:
        return " ".join((self.name,) + self.args)


def command(name: str, *positional: str, prompts: Sequence[str] = (), **named: str) -> Command:
    """
    C{command("UserCreate", "u1", GROUP="none")} is the line
    C{UserCreate u1 /GROUP:none}.  C{prompts} are the lines vpncmd will ask
    for, in order (a password and its confirmation, say).
    """
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a vpncmd command name")
    args = [_word(value, name, positional=True) for value in positional]
    for key, value in named.items():
        if not _PARAMETER.match(key):
            raise ValueError(f"{key!r} is not a vpncmd parameter name")
        args.append(f"/{key}:{_word(value, f'{name} /{key}')}")
    for answer in prompts:
        if not isinstance(answer, str) or not answer or not answer.isprintable() or len(answer) > 255:
            raise ValueError(f"{name}: a prompt answer must be one printable line")
    return Command(name, tuple(args), tuple(prompts))


@dataclass(frozen=True)
class Reply:
    """
    What vpncmd answered to one command.  C{error} is C{None} on success.
    """

    command: Command
    error: Optional[int]
    message: str
    lines: tuple

    @property
    def ok(self) -> bool:
        return self.error is None

    def check(self, *tolerated: int) -> "Reply":
        """
        Raise L{VpncmdError} unless it succeeded or failed with one of
        C{tolerated}.
        """
        if self.error is not None and self.error not in tolerated:
            raise VpncmdError(self.command.name, self.error, self.message)
        return self

    def table(self) -> list[dict]:
        """
        The CSV answer as one dict per row, keyed by the header line.
        """
        self.check()
        if not self.lines:
            return []
        rows = list(csv.reader(self.lines))
        header = rows[0]
        return [dict(zip(header, row)) for row in rows[1:] if row]

    def items(self) -> dict:
        """
        An C{Item,Value} answer (ServerInfoGet, AccountStatusGet) as a dict.
        """
        return {row["Item"]: row["Value"] for row in self.table()
                if "Item" in row and "Value" in row}


def _isEcho(line: str, cmd: Command) -> bool:
    return line.startswith("VPN ") and line.endswith(">" + cmd.line())


def _answer(cmd: Command, lines: list[str]) -> Reply:
    kept = [line for line in lines if not any(p.match(line) for p in _NOISE)]
    for index, line in enumerate(kept):
        match = _ERROR.match(line)
        if match:
            message = " ".join(kept[index + 1:index + 2]).strip()
            return Reply(cmd, int(match.group(1)), message, tuple(kept))
        for pattern, code in _COMPLAINTS:
            if pattern.match(line):
                return Reply(cmd, code, line.strip(), tuple(kept))
    return Reply(cmd, None, "", tuple(kept))


def parseBatchOutput(output: str, commands: Sequence[Command]) -> list[Reply]:
    """
    Cut vpncmd's output of a batch into one L{Reply} per command.  Raises
    L{VpncmdFailed} if vpncmd stopped before running them all.
    """
    lines = output.replace("\r\n", "\n").split("\n")
    starts = []
    position = 0
    for cmd in commands:
        while position < len(lines) and not _isEcho(lines[position], cmd):
            position += 1
        if position == len(lines):
            break
        starts.append(position)
        position += 1
    if len(starts) < len(commands):
        before = lines[starts[-1] + 1:] if starts else lines
        failure = _answer(Command("vpncmd"), before)
        ran = len(starts)
        raise VpncmdFailed(failure.error if failure.error is not None else ERR_CONNECT_FAILED,
                           failure.message or f"vpncmd stopped after {ran} of {len(commands)} "
                           "commands")
    ends = starts[1:] + [len(lines)]
    return [_answer(cmd, lines[start + 1:end]) for cmd, start, end in zip(commands, starts, ends)]


CLIENT_PORT = 9931  # a VPN Client's management port, fixed


def portOpen(reactor, host: str, port: int, timeout: float = 1.0):
    """
    Whether something accepts TCP connections on C{host}:C{port}: asked
    before running vpncmd against a daemon that may not listen yet, because
    vpncmd takes about half a second to say it could not connect.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    d = TCP4ClientEndpoint(reactor, host, port, timeout=timeout).connect(
        Factory.forProtocol(Protocol))

    def connected(protocol):
        protocol.transport.abortConnection()
        return True

    return d.addCallbacks(connected, lambda failure: False)


def serverTarget(host: str, port: int) -> list[str]:
    return [f"{_word(host, 'host', positional=True)}:{int(port)}", "/SERVER"]


def clientTarget() -> list[str]:
    # A VPN Client is always managed on localhost (remote management is off).
    return ["localhost", "/CLIENT"]


def batchArgv(vpncmd: str, target: Sequence[str], batchPath: str,
              hub: Optional[str] = None) -> list[str]:
    argv = [vpncmd, *target]
    if hub is not None:
        argv.append(f"/ADMINHUB:{_word(hub, 'hub', positional=True)}")
    argv += ["/CSV", f"/IN:{_word(batchPath, 'batch file')}"]
    return argv


def batchStdin(password: Optional[str], commands: Sequence[Command]) -> bytes:
    """
    The answers to every prompt of the batch, the administrator password
    first (vpncmd asks for it on connecting, when one is set).
    """
    answers = ([password] if password else []) + [a for cmd in commands for a in cmd.prompts]
    return "".join(answer + "\n" for answer in answers).encode("utf-8")


class Vpncmd:
    """
    Runs batches against one SoftEther server or client, one at a time (so
    that a list and the deletes that depend on it are not interleaved with
    other changes).

    @param target: L{serverTarget} or L{clientTarget}.
    @param scratch: a private directory (0700) for batch files; vpncmd runs
        in it, so relative file names in commands land there.
    @param password: the administrator password, or C{None} while the
        daemon has none.
    """

    def __init__(self, reactor, target: Sequence[str], scratch: str,
                 password: Optional[str] = None, vpncmd: str = VPNCMD, timeout: float = 10.0,
                 run=runCommand) -> None:
        self.reactor = reactor
        self.target = list(target)
        self.scratch = scratch
        self.password = password
        self.vpncmd = vpncmd
        self.timeout = timeout
        self._run = run
        self._lock = DeferredLock()

    def run(self, commands: Sequence[Command], hub: Optional[str] = None,
            password: Optional[str] = "default"):
        """
        Run C{commands} as one batch; fires with their L{Reply}s, fails with
        L{VpncmdFailed}.  C{password} overrides the administrator password
        for this batch (C{None}: send none).
        """
        commands = list(commands)
        if password == "default":
            password = self.password
        return self._lock.run(self._batch, commands, hub, password)

    def _batch(self, commands, hub, password):
        os.makedirs(self.scratch, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="batch-", suffix=".txt", dir=self.scratch)
        try:
            os.write(fd, "".join(cmd.line() + "\n" for cmd in commands).encode("ascii"))
        finally:
            os.close(fd)
        argv = batchArgv(self.vpncmd, self.target, path, hub)
        d = self._run(self.reactor, argv, stdin=batchStdin(password, commands), env=None,
                      timeout=self.timeout, path=self.scratch)

        def parsed(result):
            return parseBatchOutput(result.stdout.decode("utf-8", "replace"), commands)

        def timedOut(failure):
            failure.trap(CommandTimeout)
            raise VpncmdFailed(ERR_TIMEOUT, f"vpncmd did not finish within {self.timeout} s "
                               "(a wrong administrator password, or an unexpected prompt)")

        def removeBatch(result):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return result

        d.addCallbacks(parsed, timedOut)
        d.addBoth(removeBatch)
        return d
