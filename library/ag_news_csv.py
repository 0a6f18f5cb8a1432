"""The AG News source files, row by row: the CSV grammar, the checks that make a row good or bad (with a
stable quarantine reason), quarantine records, and line-numbered reading of a file in parallel byte chunks.

CSV rows are the original AG News format: no header; quoted "class","title","description"; class 1-4 becomes
label 0-3. No Beam graph here: the ingest component wires these functions into its pipeline (files are
opened through Beam's FileSystems, so any file system Beam knows works)."""
from __future__ import annotations

import re
from typing import Iterator, NamedTuple

from contract.files import read_blocks
from library.layouts import NUM_CLASSES

# class, title, description
CSV_COLUMNS = 3

QUARANTINE_RAW_BYTES = 1024

# Quarantine reasons: stable ids, used in quarantine.jsonl, counts.json and artifact properties.
BLANK_LINE = "blank_line"
UNDECODABLE_BYTES = "undecodable_bytes"
UNBALANCED_QUOTES = "unbalanced_quotes"
WRONG_COLUMN_COUNT = "wrong_column_count"
CLASS_NOT_INTEGER = "class_not_integer"
CLASS_OUT_OF_RANGE = "class_out_of_range"
EMPTY_TITLE_AND_DESCRIPTION = "empty_title_and_description"
REASONS = (BLANK_LINE, UNDECODABLE_BYTES, UNBALANCED_QUOTES, WRONG_COLUMN_COUNT, CLASS_NOT_INTEGER,
           CLASS_OUT_OF_RANGE, EMPTY_TITLE_AND_DESCRIPTION)

_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


class BadRow(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class GoodRow(NamedTuple):
    # "train" or "test": where the row came from
    source_split: str
    # 0-3
    label: int
    title: str
    description: str


# ---------------------------------------------------------------------------------------------- row parsing


def split_csv_line(text: str) -> list[str]:
    """Splits one CSV line into fields. A field is either "quoted" (a literal quote written as "") or bare
    (no quotes at all). Raises BadRow(unbalanced_quotes) for a quote that is never closed or misplaced."""
    fields = []
    position, end = 0, len(text)
    while True:
        if text.startswith('"', position):
            parts = []
            position += 1
            while True:
                closing = text.find('"', position)
                if closing < 0:
                    raise BadRow(UNBALANCED_QUOTES, f"the quoted field starting in column {len(fields) + 1} "
                                                    "is never closed")
                parts.append(text[position:closing])
                # an escaped quote inside the field
                if text.startswith('""', closing):
                    parts.append('"')
                    position = closing + 2
                    continue
                position = closing + 1
                break
            if position < end and text[position] != ",":
                raise BadRow(UNBALANCED_QUOTES, f"text follows the closing quote of column {len(fields) + 1}")
            fields.append("".join(parts))
        else:
            comma = text.find(",", position)
            comma = end if comma < 0 else comma
            field = text[position:comma]
            if '"' in field:
                raise BadRow(UNBALANCED_QUOTES, f"a stray quote inside unquoted column {len(fields) + 1}")
            fields.append(field)
            position = comma
        if position >= end:
            return fields
        # past the comma
        position += 1


def _checked_row(source_split: str, label: int, title: str, description: str) -> GoodRow:
    if not title.strip() and not description.strip():
        raise BadRow(EMPTY_TITLE_AND_DESCRIPTION, "both title and description are empty")
    return GoodRow(source_split, label, title, description)


def _strip_line_end(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    # CRLF files are valid
    return raw[:-1] if raw.endswith(b"\r") else raw


def parse_csv_row(source_split: str, raw: bytes, first_line: bool = False) -> GoodRow:
    """One line of an AG News CSV file (with or without its line ending) -> GoodRow, or raises BadRow."""
    try:
        text = _strip_line_end(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRow(UNDECODABLE_BYTES, f"invalid UTF-8 at byte {error.start}: {error.reason}") from None
    if first_line:
        # a byte-order mark some editors write
        text = text.removeprefix("\ufeff")
    if not text.strip():
        raise BadRow(BLANK_LINE, "the line is blank")
    fields = split_csv_line(text)
    if len(fields) != CSV_COLUMNS:
        raise BadRow(WRONG_COLUMN_COUNT, f"expected {CSV_COLUMNS} columns (class, title, description), "
                                         f"got {len(fields)}")
    class_text, title, description = fields
    if not _INTEGER.fullmatch(class_text):
        raise BadRow(CLASS_NOT_INTEGER, f"class {class_text[:40]!r} is not an integer")
    class_id = int(class_text)
    if not 1 <= class_id <= NUM_CLASSES:
        raise BadRow(CLASS_OUT_OF_RANGE, f"class {class_id} is outside 1-{NUM_CLASSES}")
    return _checked_row(source_split, class_id - 1, title, description)


def parse_tfds_row(source_split: str, row: dict) -> GoodRow:
    """One ag_news_subset example as numpy ({title: bytes, description: bytes, label: int}) -> GoodRow."""
    label = int(row["label"])
    if not 0 <= label < NUM_CLASSES:
        raise BadRow(CLASS_OUT_OF_RANGE, f"label {label} is outside 0-{NUM_CLASSES - 1}")
    try:
        title, description = row["title"].decode("utf-8"), row["description"].decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRow(UNDECODABLE_BYTES, f"invalid UTF-8: {error.reason}") from None
    return _checked_row(source_split, label, title, description)


def quarantine_record(source: str, source_split: str, line: int, error: BadRow, raw: bytes) -> dict:
    raw = _strip_line_end(raw)
    return {"source": source, "source_split": source_split, "line": line, "reason": error.reason,
            "detail": error.detail, "raw": raw[:QUARANTINE_RAW_BYTES].decode("utf-8", "backslashreplace"),
            "raw_bytes": len(raw)}


# ---------------------------------------------------------------------------------------------- reading CSV
#
# Quarantine records need line numbers, which beam.io.ReadFromText cannot give (a split of a file does not
# know how many lines precede it). Instead each file is cut into byte ranges ("chunks") that are read in
# parallel, like ReadFromText's own splits: a first pass counts the newlines of every chunk, and the second
# pass numbers the lines of a chunk from the newlines of the chunks before it. Lines are bytes until parsed,
# so one broken line (bad bytes, an unclosed quote) can never swallow the lines after it. Trade-off: the files
# are read twice (the counting pass is a fast byte scan), and a chunk is the unit of parallelism instead of
# dynamic splitting.


class Chunk(NamedTuple):
    path: str
    source_split: str
    # byte offsets; the chunk holds the lines that START in [start, end)
    start: int
    end: int


def plan_chunks(path: str, source_split: str, chunk_bytes: int) -> list[Chunk]:
    from apache_beam.io.filesystems import FileSystems  # imported where used: Beam is slow to import
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return [Chunk(path, source_split, start, min(start + chunk_bytes, size))
            for start in range(0, size, chunk_bytes)]


def open_binary(path: str):
    """A source file opened for reading bytes: a local one directly (fingerprinting the source needs no Beam),
    any other (gs://, ...) through Beam's FileSystems."""
    if "://" not in path:
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def count_newlines(chunk: Chunk) -> tuple[str, int, int]:
    """(path, start, number of newline bytes in [start, end))."""
    newlines, remaining = 0, chunk.end - chunk.start
    with open_binary(chunk.path) as handle:
        handle.seek(chunk.start)
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                break
            newlines += block.count(b"\n")
            remaining -= len(block)
    return chunk.path, chunk.start, newlines


def count_lines(path: str) -> int:
    """Lines of a file as chunk_lines reads them: every newline ends one, and a last line without one
    counts."""
    lines, last = 0, b"\n"
    with open_binary(path) as handle:
        for block in read_blocks(handle):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def chunk_lines(chunk: Chunk, newlines_before: int) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line with its ending) of every line starting in the chunk, given the number
    of newlines in the file before chunk.start."""
    with open_binary(chunk.path) as handle:
        line_number = newlines_before + 1
        position = chunk.start
        if chunk.start > 0:
            handle.seek(chunk.start - 1)
            # the chunk starts mid-line: that line belongs to the previous chunk
            if handle.read(1) != b"\n":
                position += len(handle.readline())
                line_number += 1
        while position < chunk.end:
            raw = handle.readline()
            if not raw:
                break
            yield line_number, raw
            position += len(raw)
            line_number += 1
