"""Data that arrives in spans: finding the spans of a source folder and choosing the window a run trains on.

A `csv:DIR` source is either one folder (DIR/train.csv and DIR/test.csv: one span, as always) or a stream:
DIR/test.csv (the fixed test set, the same rows on every run) and subfolders named like `ingest.window.pattern`
(by default a date, 2026-12-01, or a number, 0007), each holding a train.csv: the spans, oldest first. The
window is the newest `num_spans` of them after `exclude` and `skip_recent`, or ending at a pinned span
(`newest`: a span name or a date). TF- and Beam-free: the CLI and the DAG call it before any work.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from contract.artifacts import ComponentError

SPAN_TRAIN_FILE = "train.csv"
FIXED_TEST_FILE = "test.csv"


# Why a window cannot be formed: the kind of the ComponentError (the CLI maps each to an exit code).
TOO_FEW_SPANS = "too_few_spans"
SPAN_NOT_FOUND = "span_not_found"


@dataclass(frozen=True)
class Span:
    name: str
    folder: str

    @property
    def train_file(self) -> str:
        return os.path.join(self.folder, SPAN_TRAIN_FILE)


def _order(name: str) -> tuple:
    """Numbers by value (7 before 10), everything else (ISO dates) by name."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def discover_spans(folder: str, pattern: str) -> list[Span]:
    """The span subfolders of `folder` (names fully matching `pattern`, holding a train.csv), oldest first."""
    regex = re.compile(pattern)
    spans = [Span(entry.name, entry.path) for entry in os.scandir(folder)
             if entry.is_dir() and regex.fullmatch(entry.name) and os.path.isfile(os.path.join(entry.path,
                                                                                               SPAN_TRAIN_FILE))]
    return sorted(spans, key=lambda span: _order(span.name))


def is_stream(folder: str, pattern: str) -> bool:
    """A folder without train.csv whose subfolders are spans (a folder with train.csv is one span)."""
    return (os.path.isdir(folder) and not os.path.exists(os.path.join(folder, SPAN_TRAIN_FILE))
            and bool(discover_spans(folder, pattern)))


def parse_date(text: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _is_pinned(span: Span, newest: str) -> bool:
    """`newest` names the span, or is a date the span's name spells (2026-12-01, 20261201, 2026_12_01)."""
    if span.name == newest:
        return True
    date = parse_date(newest)
    return date is not None and re.sub(r"\D", "", span.name) == date.strftime("%Y%m%d")


def select_window(spans: list[Span], *, num_spans: int, min_spans: int, skip_recent: int,
                  exclude: tuple[str, ...], newest: str, where: str) -> list[Span]:
    """The spans a run trains on, oldest first; a ComponentError of kind TOO_FEW_SPANS or SPAN_NOT_FOUND
    when the window cannot be formed."""
    candidates = [span for span in spans if span.name not in exclude]
    if newest:
        pinned = next((i for i, span in enumerate(candidates) if _is_pinned(span, newest)), None)
        if pinned is None:
            excluded = " (it is excluded)" if any(_is_pinned(span, newest) for span in spans) else ""
            known = ", ".join(span.name for span in spans[-5:]) or "none"
            raise ComponentError(f"ingest: the pinned span {newest!r} is not among the spans of {where}{excluded}; "
                                 f"newest spans: {known}. Nothing was trained.", SPAN_NOT_FOUND)
        candidates = candidates[:pinned + 1]
    elif skip_recent:
        candidates = candidates[:-skip_recent]
    window = candidates[-num_spans:] if num_spans else candidates
    if len(window) < min_spans:
        raise ComponentError(f"ingest: {len(window)} span(s) in the window of {where}, fewer than "
                             f"ingest.window.min_spans = {min_spans} (spans found: {len(spans)}, excluded: "
                             f"{sum(span.name in exclude for span in spans)}, skip_recent: {skip_recent}). "
                             "Nothing was trained.", TOO_FEW_SPANS)
    return window


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def span_date(name: str) -> datetime.date | None:
    """The date a span's name spells (2026-12-01, 20261201, 2026_12_01), or None (0007, other names)."""
    digits = re.sub(r"\D", "", name)
    if len(digits) != 8 or (name != digits and not re.fullmatch(r"\d{4}\D\d{2}\D\d{2}", name)):
        return None
    try:
        return datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def span_time(span: Span) -> float:
    """When a span's data was current (Unix time): midnight UTC of the date its name spells, else its folder's
    modification time (a numbered span, a single data folder)."""
    date = span_date(span.name)
    if date is None:
        return os.stat(span.folder).st_mtime
    return datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.timezone.utc).timestamp()
