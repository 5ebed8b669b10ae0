"""
What a text browser gets from a page: its headings, its tables (cell
text by row) and its plain text, read with the standard library's
C{html.parser}, without CSS or scripts.  For the status page tests.
"""

from __future__ import annotations

from html.parser import HTMLParser


class PageView(HTMLParser):
    """
    @ivar headings: (tag, text) of every h1..h6, in order.
    @ivar tables: table id (or C{table-N}) -> rows, each a list of cell
        texts (header cells included).
    @ivar tags: every start tag's name, in order.
    @ivar elements: every start tag as (name, attributes dict), in order.
    @ivar text: the page's text outside C{<style>}, C{<title>} of the
        head, and C{<svg>}.
    @ivar svgText: the text inside C{<svg>} elements.
    """

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.headings, self.tables, self.tags, self.elements = [], {}, [], []
        self._heading = None
        self._tableStack = []
        self._cell = None
        self._skip = 0
        self._svg = 0
        self._text, self._svgText = [], []
        self.feed(markup)
        self.close()
        self.text = " ".join("".join(self._text).split())
        self.svgText = " ".join("".join(self._svgText).split())

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag in ("style", "head"):
            self._skip += 1
        elif tag == "svg":
            self._svg += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = (tag, [])
        elif tag == "table":
            name = attrs.get("id") or f"table-{len(self.tables)}"
            self.tables[name] = []
            self._tableStack.append(name)
        elif tag == "tr" and self._tableStack:
            self.tables[self._tableStack[-1]].append([])
        elif tag in ("td", "th") and self._tableStack:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("style", "head"):
            self._skip -= 1
        elif tag == "svg":
            self._svg -= 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading:
            self.headings.append((tag, " ".join("".join(self._heading[1]).split())))
            self._heading = None
        elif tag == "table" and self._tableStack:
            self._tableStack.pop()
        elif tag in ("td", "th") and self._cell is not None and self._tableStack:
            rows = self.tables[self._tableStack[-1]]
            if rows:
                rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._skip:
            return
        if self._svg:
            self._svgText.append(data)
            return
        self._text.append(data)
        if self._heading is not None:
            self._heading[1].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def column(self, tableId: str, header: str) -> list[str]:
        """The cells under C{header} in table C{tableId}, below its header row."""
        header_row, *rows = self.tables[tableId]
        index = header_row.index(header)
        return [row[index] for row in rows]

    def fact(self, tableId: str, label: str) -> str:
        """The value next to row header C{label} in a two-column table."""
        return dict((row[0], row[1]) for row in self.tables[tableId] if len(row) == 2)[label]
