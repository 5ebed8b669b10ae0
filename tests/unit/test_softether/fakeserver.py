"""
A stand-in for vpncmd talking to a vpnserver: takes the place of
L{mnigs.system.command.runCommand} for L{mnigs.softether.vpncmd.Vpncmd}, keeps the
server's state (password, listeners, hubs, bridges, users, rules, sessions)
and answers batches the way vpncmd 5.01 does (see the captured outputs),
prompts and their stdin answers included.  Only the commands mnigs uses.
"""

import csv
import io
import os

from twisted.internet import defer

from mnigs.system.command import CommandResult, CommandTimeout

CONNECT_FAILED = ("Error occurred. (Error code: 1)\nConnection to the server failed. Check "
                  "network connection and make sure that address and port number of "
                  "destination server are correct.\n")
FRESH_CONFIG = ("\ufeff# Software Configuration File\ndeclare root\n{\n\tdeclare DDnsClient\n\t{\n"
                "\t\tbool Disabled false\n\t}\n\tdeclare ServerConfiguration\n\t{\n"
                "\t\tbool DisableJsonRpcWebApi false\n\t\tbool DisableNatTraversal false\n"
                "\t\tbool Tls_Disable1_0 false\n\t\tbool Tls_Disable1_1 false\n"
                "\t\tbool UseKeepConnect true\n\t}\n}\n")
PEM = ("-----BEGIN CERTIFICATE-----\nMIIBszCCARygAwIBAgIBADANBgkqhkiG9w0BAQsFADAAMB4XDTI0MDEwMTAwMDAw\n"
       "-----END CERTIFICATE-----\n")


def table(header, rows):
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header] + rows)
    return out.getvalue()


class FakeVpnServer:
    def __init__(self):
        self.password = None
        self.up = True
        self.listeners = {443, 992, 1194, 5555}
        self.hubs = {"DEFAULT": None}
        self.bridges = set()
        self.users = {}
        self.policies = {}
        self.rules = []  # (unique id, memo, text)
        self.sessions = []  # (session name, user name)
        self.settings = set()
        self.nextRule = 1000
        self.batches = []
        self.certificate = PEM
        self.config = FRESH_CONFIG
        self.restarts = 0
        self.restarting = False

    def crash(self, keepConfig=True):
        """Lose sessions (and, unless kept, what was not saved yet)."""
        self.sessions = []
        if not keepConfig:
            self.users, self.rules, self.policies = {}, [], {}

    def connect(self, user):
        name = f"SID-{user.upper()}-{len(self.sessions) + 2}"
        self.sessions.append((name, user))
        return name

    def __call__(self, reactor, argv, stdin=b"", env=None, timeout=30, path=None):
        target = argv[1]
        port = int(target.rsplit(":", 1)[1])
        hub = next((a.split(":", 1)[1] for a in argv if a.startswith("/ADMINHUB:")), None)
        batch = argv[-1][len("/IN:"):]
        with open(batch) as f:
            lines = f.read().splitlines()
        self.batches.append(dict(port=port, hub=hub, lines=lines))
        answers = stdin.decode().splitlines()
        out = [f'The commands written in the file "{batch}" will be used instead of input '
               "from keyboard."]
        if not self.up or self.restarting or port not in self.listeners:
            return self._result(argv, out, CONNECT_FAILED, 1)
        if self.password is not None:
            given = answers.pop(0) if answers else None
            out.append("Password: " + "*" * len(given or ""))
            if given != self.password:
                # vpncmd asks again and spins on end of input until killed.
                return defer.fail(CommandTimeout(tuple(argv), timeout))
        out.append("")
        code = 0
        for line in lines:
            out.append(f"VPN Server{'/' + hub if hub else ''}>{line}")
            words = line.split(" ")
            name, args = words[0], words[1:]
            positional = [a for a in args if not a.startswith("/")]
            named = dict(a[1:].split(":", 1) for a in args if a.startswith("/"))
            try:
                answer = getattr(self, "do_" + name)(hub, positional, named, answers, path) or ""
                code = 0
            except Failed as e:
                answer, code = f"Error occurred. (Error code: {e.code})\n{e.message}\n", e.code
            if answer:
                out.append(answer.rstrip("\n"))
        return self._result(argv, out, "", code)

    def _result(self, argv, out, extra, code):
        stdout = "\n".join(out) + "\n" + extra
        return defer.succeed(CommandResult(tuple(argv), code, None, stdout.encode(), b""))

    def _prompt(self, answers, count=2):
        given = [answers.pop(0) if answers else None for _ in range(count)]
        if None in given:
            raise AssertionError("a prompt would have spun on end of input")
        if len(set(given)) != 1:
            raise Failed(-2, "The confirmation does not match.")
        return given[0]

    # -- server admin ------------------------------------------------------

    def do_ServerPasswordSet(self, hub, positional, named, answers, path):
        self.password = self._prompt(answers)

    def do_ListenerList(self, hub, positional, named, answers, path):
        return table(["Port Number", "Status"],
                     [[f"TCP {p}", "Listening"] for p in sorted(self.listeners)])

    def do_ListenerCreate(self, hub, positional, named, answers, path):
        port = int(positional[0])
        if port in self.listeners:
            raise Failed(54, "The listener of the specified port number already exists.")
        self.listeners.add(port)

    def do_ListenerDelete(self, hub, positional, named, answers, path):
        self.listeners.discard(int(positional[0]))

    def do_HubList(self, hub, positional, named, answers, path):
        return table(["Virtual Hub Name", "Status"], [[h, "Online"] for h in sorted(self.hubs)])

    def do_HubCreate(self, hub, positional, named, answers, path):
        self.hubs[positional[0]] = self._prompt(answers)

    def do_HubDelete(self, hub, positional, named, answers, path):
        self.hubs.pop(positional[0], None)

    def do_BridgeList(self, hub, positional, named, answers, path):
        return table(["Number", "Virtual Hub Name", "Network Adapter or Tap Device Name",
                      "Status"],
                     [[str(i + 1), h, d, "Operating"] for i, (h, d) in
                      enumerate(sorted(self.bridges))])

    def do_BridgeCreate(self, hub, positional, named, answers, path):
        self.bridges.add((positional[0], named["DEVICE"]))
        return "While in the condition that occurs immediately after a new bridge ..."

    def do_ConfigGet(self, hub, positional, named, answers, path):
        with open(os.path.join(path, positional[0]), "w", encoding="utf-8", newline="") as f:
            f.write(self.config)

    def do_ConfigSet(self, hub, positional, named, answers, path):
        with open(os.path.join(path, positional[0]), encoding="utf-8", newline="") as f:
            self.config = f.read()
        self.restarts += 1
        self.sessions = []
        self.restarting = True  # the listener goes away until the test says otherwise

    def do_ServerCertGet(self, hub, positional, named, answers, path):
        with open(os.path.join(path, positional[0]), "w") as f:
            f.write(self.certificate)

    def do_PortsUDPSet(self, *a):
        self.settings.add("PortsUDPSet " + a[1][0])

    def do_ProtoOptionsSet(self, hub, positional, named, answers, path):
        self.settings.add(f"{positional[0]} {named['NAME']}={named['VALUE']}")

    def do_KeepDisable(self, *a):
        self.settings.add("KeepDisable")

    def do_VpnAzureSetEnable(self, *a):
        self.settings.add("VpnAzure " + a[1][0])

    # -- hub admin ---------------------------------------------------------

    def do_SecureNatDisable(self, *a):
        self.settings.add("SecureNatDisable")

    def do_UserList(self, hub, positional, named, answers, path):
        return table(["User Name", "Auth Method"],
                     [[u, "Password Authentication"] for u in sorted(self.users)])

    def do_UserCreate(self, hub, positional, named, answers, path):
        if positional[0] in self.users:
            raise Failed(66, "The user with the specified name already exists on the "
                             "Virtual Hub.")
        self.users[positional[0]] = None

    def do_UserPasswordSet(self, hub, positional, named, answers, path):
        password = self._prompt(answers)
        if positional[0] not in self.users:
            raise Failed(29, "Object not found.")
        self.users[positional[0]] = password

    def do_UserPolicySet(self, hub, positional, named, answers, path):
        if positional[0] not in self.users:
            raise Failed(29, "Object not found.")
        self.policies.setdefault(positional[0], {})[named["NAME"]] = named["VALUE"]

    def do_UserDelete(self, hub, positional, named, answers, path):
        if self.users.pop(positional[0], "gone") == "gone":
            raise Failed(29, "Object not found.")
        self.policies.pop(positional[0], None)

    def do_AccessAdd(self, hub, positional, named, answers, path):
        self.nextRule += 7
        self.rules.append((str(self.nextRule), named["MEMO"],
                           f"{positional[0]} src={named['SRCUSERNAME']}:{named['SRCIP']} "
                           f"dst={named['DESTUSERNAME']}:{named['DESTIP']}"))

    def do_AccessList(self, hub, positional, named, answers, path):
        return table(["ID", "Action", "Unique ID", "Contents", "Memo"],
                     [[str(i + 1), "Pass", uid, text, memo]
                      for i, (uid, memo, text) in enumerate(self.rules)])

    def do_AccessDelete(self, hub, positional, named, answers, path):
        before = len(self.rules)
        self.rules = [r for r in self.rules if r[0] != positional[0]]
        if len(self.rules) == before:
            raise Failed(29, "Object not found.")

    def do_SessionList(self, hub, positional, named, answers, path):
        return table(["Session Name", "VLAN ID", "Location", "User Name"],
                     [["SID-LOCALBRIDGE-1", "-", "Local Session", "Local Bridge"]]
                     + [[s, "-", "Local Session", u] for s, u in self.sessions])

    def do_SessionDisconnect(self, hub, positional, named, answers, path):
        before = len(self.sessions)
        self.sessions = [s for s in self.sessions if s[0] != positional[0]]
        if len(self.sessions) == before:
            raise Failed(29, "Object not found.")

    def rulesOf(self, user):
        return [text for uid, memo, text in self.rules if memo == "mnigs:" + user]


class Failed(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message


class FakeNetlink:
    """The part of L{mnigs.system.netlink.Netlink} the softether code uses."""

    def __init__(self):
        self.links = {}  # name -> {"up": bool, "addresses": [...]}
        self.calls = []

    def linkIndex(self, name):
        return 7 if name in self.links else None

    def linkIsUp(self, name):
        return self.links.get(name, {}).get("up", False)

    def addresses(self, name):
        return list(self.links[name]["addresses"])

    def addAddress(self, name, address):
        self.calls.append(("addAddress", name, str(address)))
        if name not in self.links:
            raise LookupError(name)
        self.links[name]["addresses"].append(address)

    def setLinkUp(self, name):
        self.calls.append(("setLinkUp", name))
        self.links[name]["up"] = True

    def add(self, name, up=False):
        self.links[name] = {"up": up, "addresses": []}
