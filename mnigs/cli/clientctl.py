# -*- test-case-name: tests.unit.test_clientctl -*-
"""
The client's controls and explanations in C{mnigsctl} (the admin socket's
C{gateways}, C{why}, C{events}, C{rescan}, C{use}, C{block}, C{unblock};
L{mnigs.client.agent.ClientAgent.adminCommands}): the request line for
each and its human output.  Every answer is made printable first
(L{mnigs.cli.ctl._shown}): names and reasons come from the network.
"""

from __future__ import annotations

from mnigs.client.ranking import PARTS

#: command -> the argument it takes (None: none)
COMMANDS = {"gateways": None, "why": None, "events": None, "rescan": None,
            "use": "GATEWAY", "block": "GATEWAY", "unblock": "GATEWAY"}

#: Seconds mnigsctl waits for an answer: use waits for the chosen
#: gateway's lease (every method's registration, with retries).
TIMEOUTS = {"use": 60.0}


def request(command: str, argument: str | None) -> str:
    "The admin socket's request line."
    return command if argument is None else f"{command} {argument}"


def _num(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _name(entry: dict) -> str:
    return entry.get("name") or entry.get("gateway") or "?"


def switchLine(switch: dict | None) -> str:
    "The hysteresis wait, in words."
    if not switch:
        return "switch: no better gateway is waited for"
    fraction = switch.get("better_by_fraction")
    better = _num(switch.get("better_by")) + ("" if fraction is None else f" ({fraction * 100:.0f} %)")
    return (f"switch: {_name(switch)} scores {better} lower (better); the client moves if that "
            f"holds {switch.get('hold_left_s'):g} s more (switch_hold {switch.get('hold'):g} s; "
            f"a gateway must score more than switch_margin {switch.get('margin'):g} lower)")


def _parts(parts: dict | None) -> str:
    if not parts:
        return ""
    return " + ".join(f"{name} {parts.get(name, 0):.3f}" for name in PARTS)


def formatGateways(answer: dict) -> str:
    if "error" in answer:
        return f"error: {answer['error']}"
    current, chosen = answer.get("current"), answer.get("chosen")
    lines = [f"state: {answer.get('state')}; {answer.get('better', 'lower score is better')}; "
             f"* current, + chosen with mnigsctl use",
             switchLine(answer.get("switch")),
             f"{'rank':>4}   {'name':16} {'score':>7} = " + " + ".join(f"{p:>8}" for p in PARTS)]
    for g in answer.get("gateways", []):
        mark = ("*" if g.get("gateway") == current else " ") + ("+" if g.get("gateway") == chosen else " ")
        parts = g.get("score_parts") or {}
        line = (f"{g.get('rank') or '-':>4} {mark} {_name(g)[:16]:16} {g.get('score') or 0:7.3f} = "
                + " + ".join(f"{parts.get(p, 0):8.3f}" for p in PARTS))
        if not g.get("usable", True):
            line += f"  [{g.get('why_not') or 'unusable'}]"
        if g.get("cooling"):
            line += f"  ({g['cooling']}: tried after the others)"
        lines.append(line)
    if answer.get("blocked_now"):
        lines.append("blocked at run time (until unblock or a restart): "
                     + ", ".join(answer["blocked_now"]))
    return "\n".join(lines)


def formatWhy(answer: dict) -> str:
    if "error" in answer:
        return f"error: {answer['error']}"
    better = answer.get("better", "lower score is better")
    current = answer.get("current")
    if not current:
        lines = [f"state: {answer.get('state')}: no current gateway"]
    else:
        lines = [f"on {_name(current)} ({current.get('gateway')}) via {current.get('method')}: "
                 f"score {_num(current.get('score'))} ({better})"
                 + (f" = {_parts(current.get('score_parts'))}" if current.get("score_parts") else "")]
    lines.append(f"what would move the client: {answer.get('summary')}")
    lines.append(switchLine(answer.get("switch")))
    others = answer.get("others") or []
    if others:
        lines.append("the others:")
        for other in others:
            lines.append(f"  {_name(other)[:16]:16} score {_num(other.get('score'))}: "
                         f"{other.get('verdict')}")
    return "\n".join(lines)


def formatEvents(answer: dict) -> str:
    if "error" in answer:
        return f"error: {answer['error']}"
    events = answer.get("events") or []
    lines = [f"state: {answer.get('state')}; the last {len(events)} events, oldest first:"]
    for event in events:
        lines.append(f"  {event.get('ago'):>8}s ago  {event.get('event')}"
                     + (f"  ({event['reason']})" if event.get("reason") else ""))
    return "\n".join(lines)


def formatSteering(answer: dict) -> str:
    "The answers to rescan, use, block and unblock."
    if "error" in answer:
        return f"error: {answer['error']}"
    if "rescan" in answer:
        return f"rescan {answer['rescan']}"
    if "blocked" in answer:
        return (f"blocked {answer.get('name')} ({answer['blocked']}) until unblock or a restart "
                "(not written to the configuration)"
                + ("; the client left it" if answer.get("left") else ""))
    if "unblocked" in answer:
        return f"unblocked {answer['unblocked']} (a run-time block; the configuration is unchanged)"
    if answer.get("chosen") is None:
        return "the ranking chooses the gateway again"
    if "method" in answer:
        return (f"{_name(answer)} granted a lease over {answer['method']}: the client is moving "
                "to it (for this run only; `mnigsctl use -` gives the choice back)")
    return f"{_name(answer)}: {answer.get('note')}"


FORMATTERS = {"gateways": formatGateways, "why": formatWhy, "events": formatEvents,
              "rescan": formatSteering, "use": formatSteering, "block": formatSteering,
              "unblock": formatSteering}
