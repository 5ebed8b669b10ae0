"""
The client's status page: L{renderClientPage} turns the client's status
(C{ClientAgent.describe()}, the admin socket's C{status}) into a whole
HTML document.  Pure; a key that is missing shows as C{-}.
"""

from __future__ import annotations

from mnigs.web.html import (
    ago,
    duration,
    facts,
    ident,
    num,
    number,
    page,
    section,
    table,
    text,
)
from mnigs.web.meshsvg import meshSVG

#: The parts of a gateway's score, in the order the table shows them.
SCORE_PARTS = ("distance", "rtt", "load", "fee", "history")


def _connection(status: dict) -> str:
    current = status.get("current") or {}
    attempt = status.get("attempt") or {}
    pairs = [("State", f'<strong id="state">{text(status.get("state"))}</strong>'),
             ("In this state for", duration(status.get("state_for_s")))]
    if status.get("reason"):
        pairs.append(("Why", text(status["reason"])))
    if status.get("retry_in") is not None:
        pairs.append(("Next scan in", duration(status["retry_in"])))
    if current:
        pairs += [("Gateway", f'<span id="current-gateway">{text(current.get("name"))}</span> '
                              f'<span class="note">{text(current.get("gateway"))}</span>'),
                  ("At", text(current.get("host"))),
                  ("Method", text(current.get("method"))),
                  ("Tunnel device", text(current.get("device"))),
                  ("Address", text(current.get("address")))]
        if current.get("address6"):  # IPv6 egress in use
            pairs.append(("IPv6 address", text(current["address6"])))
        pairs += [("Online for", duration(current.get("online_for"))),
                  ("Lease expires in", duration(current.get("lease_expires_in")))]
        for entry in (status.get("standby") or {}).get("standbys", []):
            held = entry.get("standby") or entry.get("attempt") or {}
            pairs.append(("Hot standby", f'{text(held.get("name"))} '
                                         f'<span class="note">{text(held.get("gateway"))}</span> '
                                         f'{text(held.get("method"))} '
                                         f'{text(held.get("device") or "")}: '
                                         f'{text(entry.get("state"))}'))
    elif attempt:
        pairs += [("Trying", f'{text(attempt.get("name"))} '
                             f'<span class="note">{text(attempt.get("gateway"))}</span>'),
                  ("At", text(attempt.get("host"))),
                  ("Method", text(attempt.get("method")))]
    else:
        pairs.append(("Gateway", "none"))
    return section("Connection", facts(pairs, "connection"), "connection-section")


def _health(status: dict) -> str:
    health = (status.get("current") or {}).get("health")
    if not health:
        return section("Health probes", '<p class="note">No session: nothing is probed.</p>',
                       "health")
    summary = [("Monitor", text(health.get("state")))]
    if health.get("missed"):
        summary.append(("Missed in a row", text(health["missed"])))
    if health.get("reason"):
        summary.append(("Lost because", text(health["reason"])))
    paced = health.get("paced")
    if paced:
        summary.append(("Paced probes", text(f"every {paced.get('interval_s')} s, dead after "
                                             f"{paced.get('dead_time_s')} s")))
        summary.append(("Last heard", text(f"{paced.get('heard_ago_s')} s ago")))
    quality = health.get("quality")
    if quality:
        summary.append(("Quality", text(f"{round(100 * quality.get('loss', 0))} % lost, round "
                                        f"trip {quality.get('rtt_ms')} ms over "
                                        f"{quality.get('span_s')} s")))
    answers = health.get("answers")
    if answers is None:  # a status without per-target answers
        answers = [{"target": target} for target in health.get("targets", [])]
    rows = [[text(a.get("target")), text(a.get("kind")), num(number(a.get("rtt_ms"), 1, " ms")),
             _lastAnswer(a)] for a in answers]
    return section("Health probes", facts(summary) + table(
        ["Target", "Kind", "Last RTT", "Last answer"], rows,
        "Each target's last answer. With Internet targets only their answers count, and a "
        "round ends at the first of them: the gateway's own answer is often not waited for.",
        tableId="probes"), "health")


def _lastAnswer(answer: dict) -> str:
    if "answered_ago" not in answer:
        return "-"
    if answer["answered_ago"] is None:
        return "none seen"
    return ago(answer["answered_ago"])


def _switch(status: dict) -> str:
    switch = status.get("switch")
    if not switch:
        return ('<p id="switch" class="note">No better gateway is waiting: the client stays '
                'where it is.</p>')
    # better_by and margin are score differences (lower is better); the
    # fraction is the difference as a share of the current score.
    betterBy, margin = switch.get("better_by"), switch.get("margin")
    fraction = switch.get("better_by_fraction")
    number = (lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else text(v))
    if isinstance(betterBy, (int, float)):
        how = f"it scores {number(betterBy)} lower (better)" + (
            f", {fraction * 100:.0f} % of the current score" if isinstance(fraction, (int, float))
            else "") + f"; the switch margin is {number(margin)}"
    else:
        how = text(switch.get("reason") or "the current gateway is not usable now")
    return (f'<p id="switch"><strong>Waiting to switch</strong> to {text(switch.get("name"))} '
            f'<span class="note">{text(switch.get("gateway"))}</span>: {how}; the client moves in '
            f'{duration(switch.get("hold_left_s"))} if that holds.</p>')


def _gateways(status: dict) -> str:
    gateways = status.get("gateways") or []
    currentId = (status.get("current") or {}).get("gateway")
    rows, classes = [], []
    for g in gateways:
        parts = g.get("score_parts") or {}
        why = g.get("why_not") or ""
        if g.get("cooling"):
            why = (why + "; " if why else "") + f"{g['cooling']}: tried after the others"
        quality = g.get("quality") or {}
        rows.append([num(text(g.get("rank"))),
                     f'{text(g.get("name"))}<br><span class="note">{ident(g.get("gateway"))}</span>',
                     text(g.get("host")),
                     num(f'<strong>{number(g.get("score"), 3)}</strong>')]
                    + [num(number(parts.get(part), 3)) for part in SCORE_PARTS]
                    + [num(number(g.get("distance"), 0)), num(number(g.get("rtt_ms"), 1)),
                       text(g.get("load")), text(g.get("fee")),
                       text(", ".join(str(m) for m in g.get("methods") or [])),
                       num(f'{text(quality.get("sessions", 0))} / {text(quality.get("failures", 0))}'),
                       text(why) if why else "usable"])
        classes.append("current" if g.get("gateway") == currentId else
                       "" if g.get("usable", True) else "unusable")
    headers = (["Rank", "Gateway", "Address", "Score (lower is better)"]
               + [f"{part.capitalize()} part" for part in SCORE_PARTS]
               + ["Distance", "RTT (ms)", "Load", "Fee", "Methods", "Sessions / failures",
                  "Why not"])
    caption = ("Every gateway the last scan heard, best first. <strong>Lower scores are "
               "better</strong>; the score is the sum of its parts (distance, RTT, load, fee, "
               "history), each lower-is-better too.")
    return section("Gateways", _switch(status) + table(headers, rows, caption, classes, "gateways"),
                   "gateways-section")


def _mesh(status: dict) -> str:
    mesh = status.get("mesh") or {}
    nodes = {n.get("id"): n for n in mesh.get("nodes", [])}
    rows = []
    for edge in mesh.get("edges", []):
        target = nodes.get(edge.get("to")) or {}
        if target.get("kind") == "hop":
            continue
        via = edge.get("from")
        rows.append([text(target.get("label")), text(edge.get("to")), text(target.get("kind")),
                     "direct" if via == "self" else text(via),
                     num(number(edge.get("distance"), 0))])
    listing = table(["Node", "Address", "Kind", "Next hop", "Distance"], rows,
                    "The same as a list: each address the route sources listed, by its next hop.",
                    tableId="mesh-list")
    return section("Mesh", '<figure id="mesh">' + meshSVG(mesh) +
                   '<figcaption class="note">The client (left), its next hops, and the addresses '
                   'the route sources listed, further right the further away; squares are '
                   'gateways (green usable, orange not), the thick line the path to the current '
                   'gateway.</figcaption></figure>' + listing, "mesh-section")


def _recent(status: dict) -> str:
    parts = []
    events = status.get("events")
    if events is not None:
        parts.append(table(["When", "Event", "Reason"],
                           [[ago(e.get("ago")), text(e.get("event")), text(e.get("reason"))]
                            for e in reversed(events)],
                           "Events, latest first.", tableId="events"))
    transitions = status.get("transitions") or []
    parts.append(table(["When", "Transition (reason)"],
                       [[ago(t.get("ago")), text(t.get("transition"))]
                        for t in reversed(transitions)],
                       "State changes, latest first.", tableId="transitions"))
    return section("Recent", "\n".join(parts), "recent")


def _history(status: dict) -> str:
    history = status.get("history") or {}
    if not history:
        return ""
    rows = [[ident(gid), num(text(q.get("sessions", 0))), num(text(q.get("failures", 0))),
             text(q.get("last_failure_reason"))] for gid, q in history.items()]
    return section("Not seen in the last scan", table(
        ["Gateway", "Sessions", "Failures", "Last failure"], rows, tableId="history"), "history")


def renderClientPage(status: dict) -> str:
    state = text(status.get("state"))
    current = (status.get("current") or {}).get("name")
    heading = f"mnigs client: {state}" + (f" via {text(current)}" if current else "")
    body = "\n".join([f"<header><h1>{heading}</h1></header>", "<main>",
                      _connection(status), _health(status), _gateways(status), _mesh(status),
                      _recent(status), _history(status), "</main>",
                      '<footer class="note">Read-only; reload for fresh figures. The same '
                      'as JSON: <a href="status.json">status.json</a>.</footer>'])
    return page(heading, body)
