"""
No daemon in a namespace test may log a critical line: in twistd's text
log that is an event at level critical (C{[namespace#critical]}: what
C{log.failure} and C{log.critical} write, and an unhandled error in a
Deferred), or a legacy C{log.err} line, which carries a system instead of
a level (C{[-] Unhandled Error}).  L{GatewayProcess} and L{ClientProcess}
check their log whenever they are stopped, which every test does in a
cleanup, so a critical line fails the test that caused it.
"""

import re

# "2026-12-06T00:34:36+0000 [system] text"; continuation lines start with a tab.
_LINE = re.compile(r"^\S+ \[(?P<system>[^\]]*)\] (?P<text>.*)$")
_LEGACY_ERRORS = ("Unhandled Error", "Unhandled error in Deferred")
_CONTEXT = 8  # the last continuation lines (a traceback's end) quoted per critical line


def criticalLines(text):
    """
    Every critical event in a twistd text log: its line, with the last
    C{_CONTEXT} of the continuation lines that follow it (where a
    traceback names the exception).
    """
    found = []
    current = None
    for line in text.splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line)
            continue
        current = None
        match = _LINE.match(line)
        if match is None:
            continue
        if match["system"].endswith("#critical") or match["text"].startswith(_LEGACY_ERRORS):
            current = [line]
            found.append(current)
    return ["\n".join(lines[:1] + lines[1:][-_CONTEXT:]) for lines in found]


def assertNoCriticalLines(path, daemon):
    """
    Raise AssertionError quoting the critical lines in the log at C{path}
    (none if it was never written).
    """
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return
    found = criticalLines(text)
    if found:
        raise AssertionError(f"{daemon} logged {len(found)} critical line(s) in {path}:\n"
                             + "\n".join(found[:5]))
