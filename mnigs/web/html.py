"""
The little HTML the status pages are made of: escaped text, tables,
headings, the page around them.  Pure functions, strings in and out.

Everything shown goes through L{text}: names, notes and reasons come
from the network, so each string is made printable (a bidi override or a
control character shown as an escape, as C{mnigsctl} does) and then
HTML-escaped.  Missing values (absent, C{None}) show as C{-}.
"""

from __future__ import annotations

import html
import math

from mnigs.protocol import printable

MISSING = "-"

#: Inline, so that the page needs nothing from anywhere else; the page
#: reads the same without it (a text browser).
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; margin: .3em 0; }
th, td { border: 1px solid #ccc; padding: .15em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: #555; padding: .2em 0; }
tr.unusable td { color: #888; } tr.current td { background: #eef7ee; }
.note { color: #555; } .bad { color: #a00; } .good { color: #070; }
svg { border: 1px solid #ccc; background: #fcfcfc; max-width: 100%; height: auto; }
"""


def text(value) -> str:
    """C{value} as safe HTML text: printable, escaped; C{-} when missing."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(printable(str(value)), quote=True)


#: Characters of a key id (C{ed25519:...}) shown in a table; the whole
#: id is the cell's tooltip and in C{status.json}.
ID_SHOWN = 20


def ident(value) -> str:
    """A long id cut short for a table cell, whole in its tooltip."""
    if not isinstance(value, str) or len(value) <= ID_SHOWN:
        return text(value)
    return f'<span title="{text(value)}">{text(value[:ID_SHOWN])}&#8230;</span>'


def number(value, digits: int = 2, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return text(value)
    if isinstance(value, float) and math.isinf(value):
        return "&#8734;"
    shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return shown + unit


def duration(seconds) -> str:
    """C{3h 05m}, C{4m 09s}, C{12.5 s}; C{-} when missing."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return text(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if isinstance(seconds, float) else f"{seconds} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def ago(seconds) -> str:
    shown = duration(seconds)
    return shown if shown == MISSING else f"{shown} ago"


def size(count) -> str:
    """Bytes for people: C{512 B}, C{1.5 KiB}, C{3.2 MiB}; C{-} when missing."""
    if not isinstance(count, int) or isinstance(count, bool):
        return text(count)
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Cell(str):
    """A table cell's ready HTML (already escaped), and its class."""

    def __new__(cls, markup: str, kind: str = ""):
        cell = super().__new__(cls, markup)
        cell.kind = kind
        return cell


def num(markup: str) -> Cell:
    return Cell(markup, "num")


def table(headers, rows, caption: str = "", rowClasses=None, tableId: str = "") -> str:
    """
    A table of ready cells (escaped HTML: L{text} and friends, or a
    L{Cell}); C{rowClasses} gives each row's class.  An empty table says
    so in a row of its own.
    """
    out = [f'<table id="{tableId}">' if tableId else "<table>"]
    if caption:
        out.append(f"<caption>{caption}</caption>")
    out.append("<thead><tr>" + "".join(f'<th scope="col">{h}</th>' for h in headers)
               + "</tr></thead><tbody>")
    rows = list(rows)
    for index, row in enumerate(rows):
        kind = rowClasses[index] if rowClasses else ""
        out.append((f'<tr class="{kind}">' if kind else "<tr>") + "".join(
            f'<td class="{cell.kind}">{cell}</td>' if getattr(cell, "kind", "") else f"<td>{cell}</td>"
            for cell in row) + "</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{len(headers)}">none</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def facts(pairs, tableId: str = "") -> str:
    """A two-column table of (label, ready HTML) pairs, labels as row headers."""
    out = [f'<table id="{tableId}">' if tableId else "<table>", "<tbody>"]
    for label, value in pairs:
        out.append(f'<tr><th scope="row">{label}</th><td>{value}</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def section(title: str, body: str, sectionId: str = "") -> str:
    opening = f'<section id="{sectionId}">' if sectionId else "<section>"
    return f"{opening}\n<h2>{title}</h2>\n{body}\n</section>"


def page(title: str, body: str) -> str:
    """The whole document: C{title} is ready HTML (escaped)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")
