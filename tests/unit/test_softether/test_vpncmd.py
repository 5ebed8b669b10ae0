"""
Tests for L{mnigs.softether.vpncmd}: command lines, what goes on stdin,
and vpncmd's output as it really comes (captured), plus the runner.
"""

import csv
import io
import ipaddress
import os
import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.command import CommandResult, CommandTimeout
from mnigs.softether import hub as h
from mnigs.softether.vpncmd import (
    ERR_CONNECT_FAILED,
    ERR_OBJECT_NOT_FOUND,
    ERR_TIMEOUT,
    ERR_USER_EXISTS,
    Command,
    Vpncmd,
    VpncmdError,
    VpncmdFailed,
    batchArgv,
    batchStdin,
    clientTarget,
    command,
    parseBatchOutput,
    serverTarget,
)
from tests.unit.test_softether import captured

settings.register_profile("mnigs-softether", derandomize=True, max_examples=300, deadline=None)


class CommandTests(SynchronousTestCase):
    def test_positionalThenNamedParameters(self):
        self.assertEqual(command("UserCreate", "u1", GROUP="none", NOTE="").line(),
                         "UserCreate u1 /GROUP:none /NOTE:")

    def test_anIPv6Endpoint(self):
        self.assertEqual(command("AccountCreate", "a", SERVER="[fd00::1]:5555").line(),
                         "AccountCreate a /SERVER:[fd00::1]:5555")

    def test_namedValuesMayBeAbsolutePaths(self):
        self.assertEqual(command("AccountServerCertSet", "a", LOADCERT="/x/y.pem").line(),
                         "AccountServerCertSet a /LOADCERT:/x/y.pem")

    def test_wordsThatVpncmdWouldSplitOrQuoteAreRefused(self):
        for bad in ("a b", 'a"b', "a\nb", "a\tb", "a'b", "a;b", "a\\b", "é"):
            self.assertRaises(ValueError, command, "UserCreate", bad)
            self.assertRaises(ValueError, command, "UserCreate", "u", NOTE=bad)

    def test_aPlainArgumentCannotLookLikeAParameter(self):
        self.assertRaises(ValueError, command, "ServerCertGet", "/etc/cert.pem")
        self.assertRaises(ValueError, command, "UserDelete", "")

    def test_namesAreChecked(self):
        self.assertRaises(ValueError, command, "user create")
        self.assertRaises(ValueError, command, "UserCreate", "u", note="x")
        self.assertRaises(ValueError, command, "UserCreate", "u", **{"NO TE": "x"})

    def test_promptAnswersAreSingleLinesAndStayOutOfRepr(self):
        cmd = command("UserPasswordSet", "u", prompts=("s3cret-password", "s3cret-password"))
        self.assertNotIn("s3cret", repr(cmd))
        self.assertNotIn("s3cret", cmd.line())
        for bad in ("", "a\nb", "a\rb", "x" * 256):
            self.assertRaises(ValueError, command, "UserPasswordSet", "u", prompts=(bad,))

    def test_stdinHasTheAdminPasswordFirstThenEveryPromptInOrder(self):
        commands = [command("HubCreate", "h", prompts=("hub1", "hub1")),
                    command("UserList"),
                    command("UserPasswordSet", "u", prompts=("pw", "pw"))]
        self.assertEqual(batchStdin("admin", commands), b"admin\nhub1\nhub1\npw\npw\n")
        self.assertEqual(batchStdin(None, commands), b"hub1\nhub1\npw\npw\n")

    def test_argv(self):
        self.assertEqual(batchArgv("/v", serverTarget("127.0.0.1", 5555), "/s/b.txt", hub="mnigs"),
                         ["/v", "127.0.0.1:5555", "/SERVER", "/ADMINHUB:mnigs", "/CSV",
                          "/IN:/s/b.txt"])
        self.assertEqual(batchArgv("/v", clientTarget(), "/s/b.txt"),
                         ["/v", "localhost", "/CLIENT", "/CSV", "/IN:/s/b.txt"])
        self.assertRaises(ValueError, batchArgv, "/v", clientTarget(), "/s/a b.txt")


class CapturedOutputTests(SynchronousTestCase):
    """
    vpncmd 5.01's real output, captured by tests.mesh.capture_softether.
    """

    def parse(self, name):
        commands, output, _ = captured(name)
        return parseBatchOutput(output, commands)

    def test_aFreshServersListings(self):
        listeners, hubs, bridges = self.parse("server_fresh_listing")
        self.assertEqual(h.listenerPorts(listeners.table()), {443, 992, 1194, 5555})
        self.assertEqual(h.hubNames(hubs.table()), {"DEFAULT"})
        self.assertEqual(h.bridges(bridges.table()), set())

    def test_aConfiguredServersListings(self):
        listeners, hubs, bridges = self.parse("server_listing")
        self.assertEqual(h.listenerPorts(listeners.table()), {5555})
        self.assertEqual(h.hubNames(hubs.table()), {"mnigs"})
        self.assertEqual(h.bridges(bridges.table()), {("mnigs", "capture")})

    def test_settingsAllSucceedDespiteThePromptsAndTheBridgeWarning(self):
        replies = self.parse("server_settings")
        self.assertEqual([r.error for r in replies], [None] * len(replies))
        self.assertEqual(replies[-1].command.name, "ServerCertGet")
        self.assertFalse(any(line.startswith("Password") for r in replies for line in r.lines))

    def test_theCapturedBatchesAreWhatTheBuildersMake(self):
        commands, _, _ = captured("hub_add_user")
        user = h.HubUser(h.userName("capture-lease"), "x" * 16,
                         ipaddress.ip_address("100.66.0.2"))
        self.assertEqual([c.line() for c in commands],
                         [c.line() for c in h.addUserCommands(user)])

    def test_addingAUser(self):
        replies = self.parse("hub_add_user")
        self.assertEqual(len(replies), 12)
        self.assertTrue(all(r.ok for r in replies), [r for r in replies if not r.ok])

    def test_hubTables(self):
        nat, users, access, sessions = self.parse("hub_tables")
        name = h.userName("capture-lease")
        self.assertTrue(nat.ok)
        self.assertEqual(h.mnigsUsers(users.table()), {name})
        rules = h.rulesByUser(access.table())
        self.assertEqual(list(rules), [name])
        self.assertEqual(len(rules[name]), 6)
        self.assertTrue(all(rule.isdigit() for rule in rules[name]))
        self.assertEqual(h.sessionsOf(sessions.table(), name), [])

    def test_sessionsOfAUserWhatEverTheCase(self):
        [sessions] = self.parse("hub_sessions")
        name = h.userName("capture-lease")
        self.assertEqual(h.sessionsOf(sessions.table(), name),
                         ["SID-" + name.upper() + "-2"])
        self.assertEqual(h.sessionsOf(sessions.table(), name.upper()),
                         ["SID-" + name.upper() + "-2"])

    def test_errorsAndComplaints(self):
        delete, disconnect, certificate = self.parse("hub_errors")
        self.assertEqual((delete.error, delete.message), (ERR_OBJECT_NOT_FOUND, "Object not found."))
        self.assertEqual(disconnect.error, ERR_OBJECT_NOT_FOUND)
        self.assertIs(delete.check(ERR_OBJECT_NOT_FOUND), delete)
        error = self.assertRaises(VpncmdError, delete.check)
        self.assertEqual((error.command, error.code), ("UserDelete", ERR_OBJECT_NOT_FOUND))
        self.assertEqual(certificate.error, 38)
        self.assertIn('"/absolute"', certificate.message)
        self.assertRaises(VpncmdError, delete.table)

    def test_userExists(self):
        [create] = self.parse("hub_add_user_again")
        self.assertEqual(create.error, ERR_USER_EXISTS)

    def test_connectionFailed(self):
        commands, output, _ = captured("connect_failed")
        error = self.assertRaises(VpncmdFailed, parseBatchOutput, output, commands)
        self.assertEqual(error.code, ERR_CONNECT_FAILED)
        self.assertTrue(error.message.startswith("Connection to the server failed."))

    def test_outputThatStopsHalfWayFails(self):
        commands, output, _ = captured("hub_tables")
        cut = output[:output.index("VPN Server/mnigs>AccessList")]
        error = self.assertRaises(VpncmdFailed, parseBatchOutput, cut, commands)
        self.assertIn("2 of 4", error.message)

    def test_aClientThatAskedForItsPasswordAfterRefusingAnEmptyOne(self):
        accounts, status = self.parse("client_status")
        self.assertEqual(accounts.table()[0]["Status"], "Connected")
        self.assertEqual(status.items()["Session Status"],
                         "Connection Completed (Session Established)")

    def test_clientConnectBatch(self):
        replies = self.parse("client_connect")
        self.assertEqual([r.command.name for r in replies],
                         ["NicCreate", "AccountCreate", "AccountPasswordSet",
                          "AccountServerCertSet", "AccountServerCertEnable", "AccountRetrySet",
                          "AccountConnect"])
        self.assertTrue(all(r.ok for r in replies))


_cell = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


class ParserProperties(SynchronousTestCase):
    @settings(settings.get_profile("mnigs-softether"))
    @given(st.lists(st.tuples(st.sampled_from(["UserList", "AccessList", "SessionList"]),
                              st.lists(st.lists(_cell, min_size=3, max_size=3), max_size=4),
                              st.one_of(st.none(), st.integers(1, 200))),
                    min_size=1, max_size=6))
    def test_tablesAndErrorsComeBackAsWritten(self, answers):
        """
        Whatever the cells hold (commas, quotes, prompt-like text), each
        command gets its own table or error back.
        """
        commands, output = [], ["The commands written in the file ... will be used.",
                                "Password: ****", ""]
        for index, (name, rows, error) in enumerate(answers):
            cmd = Command(name, (f"arg{index}",))
            commands.append(cmd)
            output.append(f"VPN Server/hub>{cmd.line()}")
            if error is not None:
                output += [f"Error occurred. (Error code: {error})", "Some message."]
            else:
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows([["A", "B", "C"]] + rows)
                output += text.getvalue().splitlines()
        replies = parseBatchOutput("\n".join(output) + "\n", commands)
        self.assertEqual([r.command for r in replies], commands)
        for reply, (name, rows, error) in zip(replies, answers):
            self.assertEqual(reply.error, error)
            if error is None:
                self.assertEqual(reply.table(), [dict(zip("ABC", row)) for row in rows])


class FakeRun:
    """runCommand's stand-in: records each call, answers when told."""

    def __init__(self):
        self.calls = []

    def __call__(self, reactor, argv, stdin=b"", env=None, timeout=30, path=None):
        batch = argv[-1][len("/IN:"):]
        with open(batch) as f:
            lines = f.read()
        d = defer.Deferred()
        self.calls.append(dict(argv=argv, stdin=stdin, path=path, lines=lines, batch=batch,
                               timeout=timeout, deferred=d))
        return d

    def answer(self, index, stdout, exitCode=0):
        call = self.calls[index]
        call["deferred"].callback(CommandResult(tuple(call["argv"]), exitCode, None,
                                                stdout.encode(), b""))


class RunnerTests(SynchronousTestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.scratch, ignore_errors=True)
        self.run = FakeRun()
        self.vpncmd = Vpncmd(Clock(), serverTarget("127.0.0.1", 5555),
                             os.path.join(self.scratch, "s"), password="admin", vpncmd="/v",
                             timeout=7, run=self.run)

    def test_oneBatchFileNoSecretsOnTheCommandLine(self):
        commands = [command("UserCreate", "m" + "1" * 24, GROUP="none"),
                    command("UserPasswordSet", "m" + "1" * 24, prompts=("pw-pw", "pw-pw"))]
        d = self.vpncmd.run(commands, hub="mnigs")
        [call] = self.run.calls
        self.assertEqual(call["lines"], "".join(c.line() + "\n" for c in commands))
        self.assertEqual(call["stdin"], b"admin\npw-pw\npw-pw\n")
        self.assertEqual(call["path"], os.path.join(self.scratch, "s"))
        self.assertEqual(call["timeout"], 7)
        self.assertNotIn("pw-pw", " ".join(call["argv"]))
        self.assertNotIn("admin", " ".join(call["argv"][1:]))
        self.assertEqual(os.stat(call["path"]).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(call["batch"]).st_mode & 0o777, 0o600)
        output = "".join(f"VPN Server/mnigs>{c.line()}\n" for c in commands)
        self.run.answer(0, output)
        replies = self.successResultOf(d)
        self.assertEqual([r.ok for r in replies], [True, True])
        self.assertFalse(os.path.exists(call["batch"]))

    def test_batchesRunOneAtATime(self):
        first = self.vpncmd.run([command("UserList")])
        second = self.vpncmd.run([command("AccessList")])
        self.assertEqual(len(self.run.calls), 1)
        self.run.answer(0, "VPN Server>UserList\n")
        self.successResultOf(first)
        self.assertEqual(len(self.run.calls), 2)
        self.run.answer(1, "VPN Server>AccessList\n")
        self.successResultOf(second)

    def test_aPasswordOverrideAndNoPassword(self):
        self.vpncmd.run([command("UserList")], password=None)
        self.assertEqual(self.run.calls[0]["stdin"], b"")
        self.run.answer(0, "VPN Server>UserList\n")
        self.vpncmd.run([command("UserList")], password="other")
        self.assertEqual(self.run.calls[1]["stdin"], b"other\n")

    def test_aTimeoutIsAFailureThatSaysWhy(self):
        d = self.vpncmd.run([command("UserList")])
        call = self.run.calls[0]
        call["deferred"].errback(CommandTimeout(call["argv"], 7))
        error = self.failureResultOf(d, VpncmdFailed).value
        self.assertEqual(error.code, ERR_TIMEOUT)
        self.assertIn("administrator password", error.message)
        self.assertFalse(os.path.exists(call["batch"]))
