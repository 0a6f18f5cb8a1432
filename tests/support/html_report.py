"""Reads report.html with the standard library's html.parser: its tables (by the heading before them),
images and every external reference, so tests check the page as a browser would get it."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class ReportPage(HTMLParser):
    def __init__(self, path: Path):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}  # heading before the table -> rows of cell texts
        self.images: list[str] = []  # src of every <img>
        self.external: list[str] = []  # src/href that would load something outside the page
        self.headings: list[str] = []
        self._heading = None
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self._table: list[list[str]] | None = None
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith("data:"):
                self.external.append(attrs[name])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("h1", "h2", "td", "th"):
            self._text = []
        elif tag == "table":
            self._table = []
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._heading = "".join(self._text or []).strip()
            self.headings.append(self._heading)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._text or []).strip())
        elif tag == "tr" and self._table is not None:
            self._table.append(self._row or [])
        elif tag == "table":
            self.tables[self._heading] = self._table or []
        if tag in ("h1", "h2", "td", "th"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)
