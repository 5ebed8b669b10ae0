"""
Tests for L{mnigs.openvpn.management}: the parser replayed over management
sessions captured from a real openvpn 2.6.14 (tests/unit/data/openvpn/, made
by tests/mesh/capture_openvpn.py),
single lines, hostile lines, and the command builders.
"""

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.openvpn import management as m

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "openvpn")

settings.register_profile("mnigs-openvpn", derandomize=True, max_examples=300, deadline=None)


def transcript(name):
    """
    The connections of a capture: each a list of ("recv", line) and
    ("send", command) steps (a sent command takes the unprefixed lines
    after it).
    """
    connections, steps = [], []
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith("#") and not steps and not connections:
                continue
            if line.startswith(">>> "):
                steps.append(("recv", line[4:]))
            elif line.startswith("<<< "):
                steps.append(("send", line[4:]))
            elif line.startswith("--- EOF"):
                connections.append(steps)
                steps = []
            elif steps and steps[-1][0] == "send":
                steps[-1] = ("send", steps[-1][1] + "\n" + line)
            else:
                raise AssertionError(f"unexpected line in {name}: {line!r}")
    if steps:
        connections.append(steps)
    return connections


def replay(steps):
    """Every event the parser makes of a connection, and the commands sent."""
    parser = m.ManagementParser()
    events, sent = [], []
    for kind, text in steps:
        if kind == "send":
            sent.append(text)
            parser.expectReply(m.isMultiline(text))
        else:
            events.extend(parser.feed(text))
    return events, sent


def only(events, kind):
    return [e for e in events if isinstance(e, kind)]


class CapturedServerTests(SynchronousTestCase):
    def test_serverSessionEveryReplyPairsWithItsCommand(self):
        [steps] = transcript("server-session.txt")
        events, sent = replay(steps)
        replies = only(events, m.Reply)
        self.assertEqual(len(replies), len(sent))
        outcome = dict(zip([s.split("\n")[0] for s in sent], [r.ok for r in replies]))
        self.assertEqual(outcome["client-kill 99"], False)
        self.assertEqual(outcome["client-kill 0 HALT"], False)  # replaced already
        self.assertEqual(outcome["client-auth 0 1"], True)
        self.assertEqual(outcome['client-deny 1 1 "bad lease" "no lease"'], True)
        version = replies[[s.split("\n")[0] for s in sent].index("version")]
        self.assertEqual(version.lines[1], "Management Version: 5")
        status = replies[[s.split("\n")[0] for s in sent].index("status 3")]
        self.assertEqual(status.lines[-1], "GLOBAL_STATS\tdco_enabled\t0")
        state = replies[[s.split("\n")[0] for s in sent].index("state")]
        self.assertEqual(state.lines, ("1795561212,CONNECTED,SUCCESS,100.65.0.1,,,,",))

    def test_serverSessionClientEvents(self):
        [steps] = transcript("server-session.txt")
        events, _ = replay(steps)
        connects = only(events, m.ClientConnect)
        self.assertEqual([(c.cid, c.kid) for c in connects], [(0, 1), (1, 1), (2, 1)])
        self.assertEqual([(c.env["username"], c.env["password"]) for c in connects],
                         [("lease1", "tok1"), ("lease1", "wrong"), ("lease1", "tok1")])
        self.assertEqual(connects[0].env["untrusted_ip"], "10.77.0.2")
        self.assertEqual(connects[0].env["IV_CIPHERS"],
                         "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305")
        self.assertEqual([(r.cid, r.kid) for r in only(events, m.ClientReauth)],
                         [(2, 3), (2, 4)])
        self.assertEqual([e.cid for e in only(events, m.ClientEstablished)], [0, 2])
        self.assertEqual([e.cid for e in only(events, m.ClientDisconnect)], [1, 0])
        self.assertEqual(only(events, m.ClientAddress),
                         [m.ClientAddress(0, "100.65.0.2", True),
                          m.ClientAddress(2, "100.65.0.2", True)])
        established = only(events, m.ClientEstablished)[0]
        self.assertEqual(established.env["common_name"], "lease1")
        self.assertNotIn("password", established.env)
        counts = only(events, m.ClientByteCount)
        self.assertEqual(counts[-1], m.ClientByteCount(2, 2780, 4135))
        self.assertEqual({c.cid for c in counts}, {0, 2})

    def test_serverStates(self):
        [steps] = transcript("server-session.txt")
        events, _ = replay(steps)
        states = only(events, m.State)
        self.assertEqual([(s.name, s.description, s.localAddress) for s in states],
                         [("ASSIGN_IP", "", "100.65.0.1"), ("CONNECTED", "SUCCESS", "100.65.0.1")])
        self.assertTrue(states[1].connected)
        self.assertFalse(states[0].connected)
        self.assertEqual(only(events, m.Hold), [m.Hold("Waiting for hold release:0")])
        self.assertEqual(only(events, m.Info),
                         [m.Info("OpenVPN Management Interface Version 5 -- type 'help' for more info")])

    def test_serverHaltSession(self):
        [steps] = transcript("server-halt.txt")
        events, sent = replay(steps)
        replies = only(events, m.Reply)
        self.assertEqual([r.ok for r in replies], [True] * len(sent))
        self.assertEqual(replies[sent.index("client-kill 0 HALT")].text,
                         "client-kill command succeeded")
        self.assertEqual([e.cid for e in only(events, m.ClientDisconnect)], [0, 1])


class CapturedClientTests(SynchronousTestCase):
    def test_denied(self):
        [steps] = transcript("client-denied.txt")
        events, _ = replay(steps)
        self.assertIn(m.Notice("PASSWORD", "Verification Failed: 'Auth' ['no lease']"), events)
        last = only(events, m.State)[-1]
        self.assertEqual((last.name, last.description), ("EXITING", "auth-failure"))

    def test_connectedThenPingExit(self):
        [steps] = transcript("client-pingexit.txt")
        events, _ = replay(steps)
        states = only(events, m.State)
        self.assertEqual([s.name for s in states],
                         ["WAIT", "AUTH", "ASSIGN_IP", "CONNECTED", "EXITING"])
        connected = states[3]
        self.assertEqual(connected, m.State(1795561212, "CONNECTED", "SUCCESS", "100.65.0.2",
                                            "10.251.9.1", "1194"))
        self.assertEqual(states[4].description, "ping-exit")
        self.assertEqual(only(events, m.ByteCount)[-1], m.ByteCount(6107, 4076))

    def test_haltedThenReset(self):
        halted, reset = transcript("client-halted-reset.txt")
        events, _ = replay(halted)
        self.assertIn(m.Notice("NOTIFY", "info,server-pushed-halt,"), events)
        self.assertEqual(only(events, m.State)[-1].description, "server-pushed-halt")
        events, _ = replay(reset)
        names = [s.name for s in only(events, m.State)]
        self.assertEqual(names[-3:], ["CONNECTED", "RECONNECTING", "WAIT"])
        self.assertEqual(only(events, m.Hold), [m.Hold("Waiting for hold release:0"),
                                                m.Hold("Waiting for hold release:1")])


class ParserTests(SynchronousTestCase):
    def setUp(self):
        self.parser = m.ManagementParser()

    def test_stateOverTCPHasLocalAddressFields(self):
        [state] = self.parser.feed(
            ">STATE:1795559728,CONNECTED,SUCCESS,100.65.0.2,10.251.9.1,1194,10.77.0.2,52638")
        self.assertEqual((state.localAddress, state.remoteAddress, state.remotePort),
                         ("100.65.0.2", "10.251.9.1", "1194"))

    def test_shortStateIsPadded(self):
        [state] = self.parser.feed(">STATE:5,EXITING")
        self.assertEqual(state, m.State(5, "EXITING", "", "", "", ""))

    def test_envValueKeepsEqualsAndCommas(self):
        self.parser.feed(">CLIENT:CONNECT,3,7")
        self.parser.feed(">CLIENT:ENV,password=a=b,c")
        [event] = self.parser.feed(">CLIENT:ENV,END")
        self.assertEqual(event.env["password"], "a=b,c")

    def test_reprNeverShowsThePassword(self):
        self.parser.feed(">CLIENT:CONNECT,3,7")
        self.parser.feed(">CLIENT:ENV,username=lease")
        self.parser.feed(">CLIENT:ENV,password=s3cret-token")
        [event] = self.parser.feed(">CLIENT:ENV,END")
        for text in (repr(event), str(event), repr(event.env), str(event.env), f"{event}"):
            self.assertNotIn("s3cret-token", text)
            self.assertIn("lease", text)

    def test_realtimeMessagesBetweenMultilineReplyLines(self):
        self.parser.expectReply(multiline=True)
        self.assertEqual(self.parser.feed("TITLE\tx"), [])
        self.assertEqual(self.parser.feed(">BYTECOUNT_CLI:1,2,3"), [m.ClientByteCount(1, 2, 3)])
        self.assertEqual(self.parser.feed("END"), [m.Reply(True, "", ("TITLE\tx",))])

    def test_multilineCommandAnsweredWithError(self):
        self.parser.expectReply(multiline=True)
        self.assertEqual(self.parser.feed("ERROR: no such thing"),
                         [m.Reply(False, "no such thing")])

    def test_unknownRealtimeMessagesAreNotices(self):
        self.assertEqual(self.parser.feed(">FATAL:cannot open tun"),
                         [m.Notice("FATAL", "cannot open tun")])
        self.assertEqual(self.parser.feed(">CLIENT:CR_RESPONSE,1,2,abc"),
                         [m.Notice("CLIENT", "CR_RESPONSE,1,2,abc")])

    def test_protocolErrors(self):
        bad = [
            "SUCCESS: nobody asked",
            ">NOCOLON",
            ">STATE:notatime,CONNECTED",
            ">BYTECOUNT:1",
            ">BYTECOUNT:-1,2",
            ">BYTECOUNT_CLI:1,2",
            ">CLIENT:CONNECT,1",
            ">CLIENT:CONNECT,x,1",
            ">CLIENT:ESTABLISHED,1,2",
        ]
        for line in bad:
            with self.assertRaises(m.ManagementProtocolError, msg=line):
                m.ManagementParser().feed(line)

    def test_blockMustBeENVLines(self):
        self.parser.feed(">CLIENT:CONNECT,1,1")
        self.assertRaises(m.ManagementProtocolError, self.parser.feed, ">STATE:1,WAIT")
        parser = m.ManagementParser()
        parser.feed(">CLIENT:DISCONNECT,1")
        self.assertRaises(m.ManagementProtocolError, parser.feed, ">CLIENT:ENV,noequals")

    def test_envBlockIsBounded(self):
        self.parser.feed(">CLIENT:CONNECT,1,1")
        for i in range(m.MAX_ENV):
            self.parser.feed(f">CLIENT:ENV,k{i}=v")
        self.assertRaises(m.ManagementProtocolError, self.parser.feed, ">CLIENT:ENV,one=more")

    def test_singleLineReplyMustBeSuccessOrError(self):
        self.parser.expectReply(multiline=False)
        self.assertRaises(m.ManagementProtocolError, self.parser.feed, "something else")

    @settings(settings.get_profile("mnigs-openvpn"))
    @given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                   blacklist_characters="\n"), max_size=80),
                    max_size=20))
    def test_anyLinesEitherParseOrRaiseProtocolError(self, lines):
        parser = m.ManagementParser()
        for line in lines:
            try:
                parser.feed(line)
            except m.ManagementProtocolError:
                parser = m.ManagementParser()

    @settings(settings.get_profile("mnigs-openvpn"))
    @given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
                           st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
                                   max_size=60), max_size=30),
           st.integers(0, 2 ** 32), st.integers(0, 7))
    def test_envBlocksRoundTrip(self, env, cid, kid):
        parser = m.ManagementParser()
        self.assertEqual(parser.feed(f">CLIENT:CONNECT,{cid},{kid}"), [])
        for name, value in env.items():
            self.assertEqual(parser.feed(f">CLIENT:ENV,{name}={value}"), [])
        [event] = parser.feed(">CLIENT:ENV,END")
        self.assertEqual((event.cid, event.kid, dict(event.env)), (cid, kid, env))


class CommandTests(SynchronousTestCase):
    def test_clientAuthWithAddress(self):
        self.assertEqual(
            m.clientAuth(0, 1, [m.ifconfigPush("100.65.0.2", "255.255.252.0")]),
            "client-auth 0 1\nifconfig-push 100.65.0.2 255.255.252.0\nEND")

    def test_otherCommands(self):
        self.assertEqual(m.clientAuthNoConfig(2, 3), "client-auth-nt 2 3")
        self.assertEqual(m.clientDeny(1, 1, "bad lease", "no lease"),
                         'client-deny 1 1 "bad lease" "no lease"')
        self.assertEqual(m.clientKill(4), "client-kill 4 HALT")
        self.assertEqual(m.clientKill(4, "RESTART"), "client-kill 4 RESTART")
        self.assertEqual(m.bytecount(1), "bytecount 1")
        self.assertEqual((m.stateOn(), m.holdRelease()), ("state on", "hold release"))

    def test_nothingUncheckedGetsIn(self):
        hostile = [
            lambda: m.clientAuth("0", 1),
            lambda: m.clientAuth(-1, 1),
            lambda: m.clientAuth(True, 1),
            lambda: m.clientAuth(0, 1, ["ifconfig-push 1.2.3.4 255.0.0.0\nEND\nclient-kill 1"]),
            lambda: m.clientAuth(0, 1, ["END"]),
            lambda: m.clientAuth(0, 1, ["push \"route 0.0.0.0\""]),
            lambda: m.clientDeny(0, 1, 'x" "y', "z"),
            lambda: m.clientDeny(0, 1, "x\nclient-kill 1", "z"),
            lambda: m.clientKill(0, "HALT\nsignal SIGTERM"),
            lambda: m.ifconfigPush("1.2.3.4\n", "255.0.0.0"),
            lambda: m.ifconfigPush("fd00::1", "255.0.0.0"),
            lambda: m.bytecount(-1),
        ]
        for make in hostile:
            self.assertRaises((ValueError, TypeError), make)

    def test_multilineCommands(self):
        for command in ("status", "status 3", "version", "state", "help", "log 5"):
            self.assertTrue(m.isMultiline(command), command)
        for command in ("state on", "log off", "version 3", "hold release", "bytecount 1",
                        "client-auth 0 1\nEND", "client-kill 1 HALT", "pid"):
            self.assertFalse(m.isMultiline(command), command)
        self.assertRaises(ValueError, m.isMultiline, "state on all")
