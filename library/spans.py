"""Data that arrives in spans: finding the spans of a source folder and choosing the window a run trains on.

A `csv:DIR` source is either one folder (DIR/train.csv and DIR/test.csv: one span, as always) or a stream:
DIR/test.csv (the fixed test set, the same rows on every run) and subfolders named like
`ingest.window.pattern` (by default a date, 2026-12-01, or a number, 0007), each holding a train.csv: the
spans, oldest first. The window is the newest `num_spans` of them after `exclude`, the spans the metadata
store holds out (quarantined or rejected) and `skip_recent`, or ending at a pinned span (`newest`: a span name
or a date). Span names are all numbers (ordered by value) or all dates (ordered by date, however spelled). TF-
and Beam-free: the CLI and the DAG call it before any work.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

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


_SPELLED_DATE = re.compile(r"(\d{4})([-_]?)(\d{2})\2(\d{2})")


def span_date(name: str) -> datetime.date | None:
    """The date a span's name spells (2026-12-01, 20261201, 2026_12_01), or None."""
    match = _SPELLED_DATE.fullmatch(name)
    try:
        return datetime.date(int(match[1]), int(match[3]), int(match[4])) if match else None
    except ValueError:
        return None


def span_order(names: list[str], where: str) -> dict[str, tuple]:
    """{name: sort key}: numbers by value (0007 before 0010) when every name is a number; otherwise by the
    date each name spells (20261208 after 2026-12-01). A ComponentError when names mix numbers and dates."""
    if all(name.isdigit() for name in names):
        return {name: (int(name), name) for name in names}
    dates = {name: span_date(name) for name in names}
    undated = sorted(name for name, date in dates.items() if date is None)
    if undated:
        dated = next(name for name, date in dates.items() if date is not None)
        raise ComponentError(f"ingest: the span names of {where} mix dates and other names ({dated} beside "
                             f"{', '.join(undated[:3])}), so their order is unknown; rename the spans to one "
                             "scheme (dates like 2026-12-01 or numbers like 0007)")
    return {name: (dates[name].toordinal(), name) for name in names}


def discover_spans(folder: str, pattern: str) -> list[Span]:
    """The span subfolders of `folder` (names fully matching `pattern`, holding a train.csv), oldest first
    (_order)."""
    regex = re.compile(pattern)
    spans = [
        Span(entry.name, entry.path)
        for entry in os.scandir(folder)
        if entry.is_dir()
        and regex.fullmatch(entry.name)
        and os.path.isfile(os.path.join(entry.path, SPAN_TRAIN_FILE))
    ]
    order = span_order([span.name for span in spans], folder)
    return sorted(spans, key=lambda span: order[span.name])


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
    return date is not None and span_date(span.name) == date


def select_window(
    spans: list[Span],
    *,
    num_spans: int,
    min_spans: int,
    skip_recent: int,
    exclude: tuple[str, ...],
    newest: str,
    where: str,
    held_out: tuple[str, ...] = (),
) -> list[Span]:
    """The spans a run trains on, oldest first; a ComponentError of kind TOO_FEW_SPANS or SPAN_NOT_FOUND
    when the window cannot be formed. `exclude` is the configuration's; `held_out` names the spans the
    metadata store keeps out (quarantined or rejected: `agnews-pipeline spans`); both are left out before
    counting."""
    out = set(exclude) | set(held_out)
    candidates = [span for span in spans if span.name not in out]
    if newest:
        pinned = next((i for i, span in enumerate(candidates) if _is_pinned(span, newest)), None)
        if pinned is None:
            named = [span.name for span in spans if _is_pinned(span, newest)]
            excluded = ""
            if named:
                excluded = " (it is excluded)"
            if named and named[0] in held_out:
                excluded = " (it is quarantined or rejected: see `agnews-pipeline spans`)"
            known = ", ".join(span.name for span in spans[-5:]) or "none"
            raise ComponentError(
                f"ingest: the pinned span {newest!r} is not among the spans of {where}{excluded}; "
                f"newest spans: {known}. Nothing was trained.",
                SPAN_NOT_FOUND,
            )
        candidates = candidates[:pinned + 1]
    elif skip_recent:
        candidates = candidates[:-skip_recent]
    window = candidates[-num_spans:] if num_spans else candidates
    if len(window) < min_spans:
        raise ComponentError(f"ingest: {len(window)} span(s) in the window of {where}, fewer than "
                             f"ingest.window.min_spans = {min_spans} (spans found: {len(spans)}, excluded: "
                             f"{sum(span.name in exclude for span in spans)}, quarantined or rejected: "
                             f"{sum(span.name in held_out for span in spans)}, skip_recent: {skip_recent}). "
                             "Nothing was trained.", TOO_FEW_SPANS)
    return window



def span_time(span: Span) -> float:
    """When a span's data was current (Unix time): midnight UTC of the date its name spells, else its folder's
    modification time (a numbered span, a single data folder)."""
    date = span_date(span.name)
    if date is None:
        return os.stat(span.folder).st_mtime
    return datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.timezone.utc).timestamp()
