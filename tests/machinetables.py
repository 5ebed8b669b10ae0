"""
The transition table of every Automat machine in mnigs, as Markdown: what
docs/machines/tables.md holds (tests/unit/test_machinetables.py checks that
it still matches the code).  Loops (an input that leaves the machine where
it is: status, ignored stragglers) are left out; every change of state is a
row.

    PYTHONPATH=. .venv/bin/python -m tests.machinetables > docs/machines/tables.md
"""

import importlib
import pkgutil

import mnigs
from automat._typed import TypeMachine

HEADER = (
    "# The machines as tables\n\n"
    "Every change of state of every Automat machine in `mnigs/`, made from the\n"
    "code by `PYTHONPATH=. .venv/bin/python -m tests.machinetables`\n"
    "(`tests/unit/test_machinetables.py` fails when this page and the code\n"
    "part).  Inputs that leave a machine where it is (status, late\n"
    "stragglers) are left out; the drawings next to this page show them too.\n"
)


def machines():
    """(dotted name, TypeMachine) of every machine in mnigs, sorted."""
    found = {}
    for info in pkgutil.walk_packages(mnigs.__path__, "mnigs."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, TypeMachine):
                found.setdefault(id(value), (f"{info.name}.{name}", value))
    return sorted(found.values())


def table(machine) -> list[tuple[str, str, str]]:
    """
    (from, input, to) of every change of state, the states in the order a
    breadth-first walk from the initial state meets them.
    """
    automaton = machine.__automat_automaton__
    rows = {(old.name, name, new.name) for old, name, new, outputs in automaton.allTransitions()
            if old.name != new.name}
    rank = {automaton.initialState.name: 0}
    frontier = [automaton.initialState.name]
    while frontier:
        state = frontier.pop(0)
        for old, name, new in sorted(rows):
            if old == state and new not in rank:
                rank[new] = len(rank)
                frontier.append(new)
    return sorted(rows, key=lambda row: (rank.get(row[0], len(rank)), row[0], row[1], row[2]))


def markdown() -> str:
    parts = [HEADER]
    for name, machine in machines():
        parts.append(f"\n## `{name}`\n\n| from | input | to |\n| --- | --- | --- |\n")
        parts.extend(f"| {old} | `{event}` | {new} |\n" for old, event, new in table(machine))
    return "".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
