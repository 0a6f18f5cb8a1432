"""Ingest's quarantine: bad rows, written in source order to quarantine.jsonl, and the error that quotes them.

Bad rows are streamed to files of bounded blocks of QUARANTINE_BLOCK_LINES source lines (memory does not grow
with their number; a hostile input can be all bad rows), each block sorted by line, then the block files are
joined in name order, so quarantine.jsonl lists every bad row in source order. Above
ingest.max_bad_row_fraction the step fails with an error naming the first BAD_ROWS_IN_ERROR bad rows.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from contract.artifacts import ComponentError
from contract.files import replaced_atomically

# how many bad rows a "too many bad rows" error quotes
BAD_ROWS_IN_ERROR = 10
# source lines per quarantine block file (its bad rows are sorted in memory)
QUARANTINE_BLOCK_LINES = 100_000


def quarantine_block(record: dict) -> tuple[tuple[int, int], tuple[str, int, str]]:
    """A bad row keyed by its source and its block of consecutive lines there, with its JSON line."""
    record = dict(record)
    index = record.pop("source_index")
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    return (index, record["line"] // QUARANTINE_BLOCK_LINES), (record["source"], record["line"], line)


def write_quarantine_block(element, folder: str):
    """One block of at most QUARANTINE_BLOCK_LINES bad rows -> one file, in line order; the block files are
    joined in name order afterwards, so quarantine.jsonl lists every bad row in source order while no step
    holds more than one block in memory."""
    (index, block), rows = element
    path = Path(folder) / f"{index:05d}-{block:010d}.jsonl"
    with replaced_atomically(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for _, _, line in sorted(rows):
            handle.write(line)
    yield str(path)


def join_files(files: list[Path], destination: Path) -> None:
    """Concatenates `files` in order into `destination` (streamed)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "wb") as out:
        for block in files:
            with open(block, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)


def too_many_bad_rows(counts: dict, quarantine_path: Path, limit: float) -> ComponentError:
    by_reason = ", ".join(
        f"{reason}={count}" for reason, count in sorted(counts["quarantined_by_reason"].items())
    )
    lines = [
        f"ingest: {counts['quarantined_rows']} of {counts['rows_read']} rows are bad "
        f"({counts['bad_row_fraction']:.2%}), above ingest.max_bad_row_fraction = {limit:.2%}.",
        f"Bad rows by reason: {by_reason}.",
        f"First {min(BAD_ROWS_IN_ERROR, counts['quarantined_rows'])} of {counts['quarantined_rows']} "
        "bad rows:",
    ]
    with open(quarantine_path, encoding="utf-8") as handle:
        for _, text in zip(range(BAD_ROWS_IN_ERROR), handle):
            record = json.loads(text)
            # TFDS rows are numbered in reading order
            from_tfds = record["source"].startswith("tfds:")
            where = f"{record['source']} row" if from_tfds else f"{Path(record['source']).name} line"
            if record.get("span"):
                where = f"span {record['span']} {where}"
            lines.append(f"  {where} {record['line']}: {record['reason']} "
                         f"({record['detail']}): {record['raw'][:120]!r}")
    lines.append(f"All bad rows are listed in {quarantine_path}. "
                 "Fix the source rows, or raise the limit with --set ingest.max_bad_row_fraction=...")
    return ComponentError("\n".join(lines))
