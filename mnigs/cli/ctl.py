"""
C{mnigsctl [--server | --socket PATH] status [--json]}: what a running
mnigs client (default) or server is doing, read from its local admin
socket.  C{mnigsctl --server drain [--timeout SECONDS]} takes a gateway out
of service: no new clients, and its data path goes once the last lease is
gone (or the time is up).  C{mnigsctl --server leases [--json]} lists
every lease with its bytes, and C{mnigsctl --server release LEASE} ends
one.  C{mnigsctl check-config FILE}: whether a
server's or a client's configuration file would start its daemon
(L{mnigs.daemon.configcheck}).  C{mnigsctl --version}: the installed mnigs's
version.  The client's controls and explanations (C{gateways}, C{why},
C{events}, C{rescan}, C{use GATEWAY}, C{block GATEWAY}, C{unblock
GATEWAY}) are in L{mnigs.cli.clientctl}.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys

from mnigs import __version__
from mnigs.cli import clientctl
from mnigs.protocol import printable

CLIENT_SOCKET = "/run/mnigs-client/admin.sock"
SERVER_SOCKET = "/run/mnigs-server/admin.sock"


def ask(path: str, command: str, timeout: float = 5.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode("ascii") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _expires(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds)}s"


def _shown(value):
    """
    C{value} (an admin socket's answer) with every string made printable:
    names, notes and reasons come from the network, and a control
    character or a bidi override printed raw would rewrite the terminal
    or what the operator reads.
    """
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_shown(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def _standbyLines(standby: dict | None) -> list[str]:
    "The hot standbys (C{[standby]}): each one's gateway, device, state and health."
    if not standby or not standby.get("count"):
        return []
    lines = []
    for entry in standby.get("standbys", []):
        held = entry.get("standby") or entry.get("attempt") or {}
        health = (held.get("health") or {}).get("state")
        lines.append(f"standby: {held.get('name')} ({held.get('gateway')}) at {held.get('host')} "
                     f"via {held.get('method')}"
                     + (f" through {held['device']}" if held.get("device") else "")
                     + f": {entry.get('state')}" + (f", health {health}" if health else "")
                     + (f" ({entry['reason']})" if entry.get("reason") else ""))
    if not lines:
        lines.append(f"standby: none ready of {standby['count']}"
                     + (f" ({standby['waiting_for']}; next try in {standby['next_try_in']}s)"
                        if standby.get("waiting_for") else ""))
    return lines


def formatStatus(status: dict) -> str:
    status = _shown(status)
    lines = []
    if "error" in status:
        return f"error: {status['error']}"
    if "leases" in status:  # a server
        lines.append(f"gateway {status.get('name')} ({status.get('gateway')}): {status.get('state')}")
        if status.get("uplink_problem"):
            lines.append(f"  uplink problem: {status['uplink_problem']}")
        if status.get("uptime_s") is not None:
            lines.append(f"  up for {formatDuration(status['uptime_s'])}")
        lines.append(f"  clients: {status.get('clients')}/{status.get('max_clients')}")
        for lease in status["leases"]:
            lines.append(f"  lease {lease['id']} {lease['method']:9} {lease['client']} "
                         f"at {lease['host']} -> {lease.get('address')} "
                         f"expires in {_expires(lease.get('expires_in'))}, "
                         f"in {formatBytes(lease.get('bytes_in'))}, "
                         f"out {formatBytes(lease.get('bytes_out'))}")
        return "\n".join(lines)
    lines.append(f"state: {status.get('state')}")
    current = status.get("current")
    if current:
        lines.append(f"gateway: {current.get('name')} ({current.get('gateway')}) "
                     f"at {current.get('host')} via {current.get('method')}"
                     + (f" through {current['device']}" if current.get("device") else "")
                     + f", lease expires in {_expires(current.get('lease_expires_in'))}")
        health = current.get("health")
        if health:
            lines.append(f"health: {health.get('state')} ({', '.join(health.get('targets', []))})"
                         + (f", {health['missed']} missed in a row" if health.get("missed") else "")
                         + ("" if "gateway_answered_ago" not in health else
                            ", the gateway never answered" if health["gateway_answered_ago"] is None
                            else f", the gateway answered {health['gateway_answered_ago']}s ago"))
            paced = health.get("paced")
            if paced:
                lines.append(f"paced probes: every {paced.get('interval_s')}s, dead after "
                             f"{paced.get('dead_time_s')}s (heard {paced.get('heard_ago_s')}s ago)")
            quality = health.get("quality")
            if quality:
                lines.append(f"quality over {quality.get('span_s')}s: "
                             f"{round(100 * quality.get('loss', 0))}% lost, round trip "
                             f"{quality.get('rtt_ms')} ms")
    lines += _standbyLines(status.get("standby"))
    for kept in status.get("kept") or []:  # the sessions planned moves left
        count = kept.get("connections")
        lines.append(f"kept: {kept.get('gateway')} for its "
                     + ("connections" if count is None else f"{count} connection(s)")
                     + (f", {kept['kept_at_most_for_s']}s more at most"
                        if kept.get("kept_at_most_for_s") is not None else ""))
    dns = status.get("dns")
    if dns and dns.get("servers"):
        lines.append(f"dns: {', '.join(dns['servers'])} ({dns.get('mode')}, through "
                     f"{dns.get('device')})")
    attempt = status.get("attempt")
    if attempt:
        lines.append(f"trying: {attempt.get('name')} ({attempt.get('gateway')}) "
                     f"at {attempt.get('host')} via {attempt.get('method')}"
                     + (f" through {attempt['device']}" if attempt.get("device") else ""))
    if status.get("reason"):
        lines.append(f"reason: {status['reason']}")
    transitions = status.get("transitions") or []
    if transitions:
        lines.append("recent transitions (oldest first):")
        for entry in transitions:
            lines.append(f"  {entry.get('ago')}s ago  {entry.get('transition')}")
    gateways = status.get("gateways", [])
    if gateways:
        lines.append("known gateways (best first; lower score is better):")
        if "switch" in status:
            lines.append("  " + clientctl.switchLine(status["switch"]))
        for g in gateways:
            quality = g.get("quality", {})
            rank = g.get("rank") or "-"
            lines.append(f"  {rank:>3} {g.get('name') or '?':16} {g.get('host')} "
                         f"score {g.get('score') or 0:.2f} distance {g.get('distance')} "
                         f"rtt {g.get('rtt_ms', '-')}ms load {g.get('load', '-')} "
                         f"sessions {quality.get('sessions', 0)} failures {quality.get('failures', 0)}"
                         + ("" if g.get("usable", True) else f"  [{g.get('why_not', 'unusable')}]")
                         + (f"  ({g['cooling']}: tried after the others)" if g.get("cooling") else ""))
    history = status.get("history") or {}
    if history:
        lines.append("not seen in the last scan:")
        for gid, quality in history.items():
            lines.append(f"      {gid}  sessions {quality.get('sessions', 0)} "
                         f"failures {quality.get('failures', 0)}"
                         + (f" (last: {quality['last_failure_reason']})"
                            if quality.get("last_failure_reason") else ""))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mnigsctl", description=__doc__.strip().split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mnigs {__version__}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", action="store_true", help=f"ask the server ({SERVER_SOCKET})")
    where.add_argument("--socket", help=f"admin socket path (default {CLIENT_SOCKET})")
    parser.add_argument("command", choices=["status", "drain", "check-config"]
                        + SERVER_LEASE_COMMANDS + list(clientctl.COMMANDS))
    parser.add_argument("file", nargs="?", metavar="FILE|GATEWAY|LEASE",
                        help="check-config: the configuration file; use, block, unblock: a "
                             "gateway's id, the start of its id, or its name (use -: let the "
                             "ranking choose again); release: the lease id (or a unique prefix)")
    parser.add_argument("--auto", action="store_true",
                        help="use: give the choice back to the ranking (as use -)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument("--timeout", type=float,
                        help="drain: seconds before the leases left are released "
                             "(default: the server's server.drain_timeout)")
    args = parser.parse_args(argv)
    if args.command == "use" and args.auto:
        args.file = args.file or "-"
    takesOne = args.command in ("check-config", "release") or clientctl.COMMANDS.get(args.command)
    if bool(takesOne) != (args.file is not None):
        parser.error("check-config takes one FILE, use/block/unblock one GATEWAY, release one "
                     "LEASE; no other command takes one")
    if args.command == "check-config":
        from mnigs.daemon.configcheck import checkConfigFile
        return checkConfigFile(args.file)
    path = args.socket or (SERVER_SOCKET if args.server else CLIENT_SOCKET)
    command, timeout = args.command, 5.0
    if command == "drain" and args.timeout is not None:
        command = f"drain {args.timeout:g}"
    if command == "release":
        command = releaseCommand(parser, args.file)
    if command in clientctl.COMMANDS:
        timeout = clientctl.TIMEOUTS.get(command, timeout)
        command = clientctl.request(command, args.file)
    try:
        answer = ask(path, command, timeout)
    except (OSError, ValueError) as e:
        print(f"mnigsctl: cannot read {path}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    elif args.command == "drain":
        print(formatDrain(answer))
    elif args.command in SERVER_LEASE_COMMANDS:
        print(formatLeaseAnswer(args.command, answer))
    elif args.command in clientctl.FORMATTERS:
        print(clientctl.FORMATTERS[args.command](_shown(answer)))
    else:
        print(formatStatus(answer))
    return 1 if "error" in answer else 0


def formatDrain(answer: dict) -> str:
    answer = _shown(answer)
    if "error" in answer:
        return f"error: {answer['error']}"
    if answer.get("state") != "draining":
        return f"not draining: the gateway is {answer.get('state')}"
    return (f"draining: no new clients; the data path goes when the last of "
            f"{answer.get('leases')} leases is gone, or in {answer.get('timeout'):g} s")


# -- the server's leases: `leases`, `release LEASE` -----------------------

SERVER_LEASE_COMMANDS = ["leases", "release"]
LEASE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def releaseCommand(parser, leaseId: str) -> str:
    if not LEASE_ID.fullmatch(leaseId):
        parser.error(f"not a lease id: {leaseId[:64]!r}")
    return f"release {leaseId}"


def formatBytes(count) -> str:
    if count is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return "-"


def formatDuration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def formatLeases(answer: dict) -> str:
    leases = answer.get("leases", [])
    lines = [f"{len(leases)} leases, clients {answer.get('clients')}/{answer.get('max_clients')} "
             f"(in: to the client, out: from it)"]
    if not leases:
        return lines[0]
    rows = [("LEASE", "METHOD", "NAME", "CLIENT", "HOST", "ADDRESS", "AGE", "EXPIRES",
             "IN", "OUT", "HANDSHAKE")]
    for lease in leases:
        handshake = lease.get("last_handshake_ago")
        rows.append((lease.get("id", "?"), lease.get("method", "?"), lease.get("name") or "-",
                     (lease.get("client") or "-")[:16], lease.get("host", "-"),
                     lease.get("address") or "-", formatDuration(lease.get("age_s")),
                     formatDuration(lease.get("expires_in")),
                     formatBytes(lease.get("bytes_in")), formatBytes(lease.get("bytes_out")),
                     "-" if handshake is None else f"{formatDuration(handshake)} ago"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def formatLeaseAnswer(command: str, answer: dict) -> str:
    answer = _shown(answer)
    if "error" in answer:
        return f"error: {answer['error']}"
    if command == "leases":
        return formatLeases(answer)
    return (f"released lease {answer.get('released')} ({answer.get('method')}, "
            f"{answer.get('name') or 'no name'}, {answer.get('address')})")


if __name__ == "__main__":
    sys.exit(main())
