"""Ingest's counts: the counters the Beam job adds up per source (rows read per source split, rows per split
and label, quarantined rows per reason), the check that every line read arrived, and counts.json of each
source and of the artifact (summed over a stream's spans). Split from executor.py, which runs the Beam job."""
from __future__ import annotations

import json
from pathlib import Path

from components.ingest.quarantine import join_files
from components.ingest.spec import Source, source_name
from contract.artifacts import LOST_ROWS_ADVICE, ComponentError
from contract.data_config import IngestConfig
from library.ag_news_csv import count_lines
from library.layouts import NUM_CLASSES, SOURCE_SPLITS, SPLITS, quarantine_file, write_counts


def summary_keys(indexed) -> list[tuple]:
    """The counters one row adds to, per source: rows read per source split, then rows per split and label
    or quarantined rows per reason."""
    if isinstance(indexed, dict):
        index = indexed["source_index"]
        return [("read", index, indexed["source_split"]), ("quarantined", index, indexed["reason"])]
    index, (split, row) = indexed
    return [("read", index, row.source_split), ("rows", index, split), ("labels", index, split, row.label)]


def summary_json(counted: list[tuple[tuple, int]]) -> str:
    return json.dumps([[list(key), count] for key, count in counted])


def source_counts(summary: dict, index: int, source: str, eval_fraction: float) -> dict:
    """counts.json of one source (or, summed over all sources, of the artifact)."""
    read = {s: summary.get(("read", index, s), 0) for s in SOURCE_SPLITS}
    by_reason = {
        key[2]: count for key, count in summary.items() if key[0] == "quarantined" and key[1] == index
    }
    rows_read, quarantined = sum(read.values()), sum(by_reason.values())
    return {
        "source": source,
        "splits": {split: summary.get(("rows", index, split), 0) for split in SPLITS},
        "label_counts": {split: {str(label): summary.get(("labels", index, split, label), 0)
                                 for label in range(NUM_CLASSES)} for split in SPLITS},
        "rows_read": rows_read,
        "rows_read_by_source_split": read,
        "quarantined_rows": quarantined,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "bad_row_fraction": quarantined / rows_read if rows_read else 0.0,
        "eval_fraction": eval_fraction,
    }


def sum_counts(parts: list[dict], source: str, eval_fraction: float) -> dict:
    summary: dict = {}
    for part in parts:
        for split in SOURCE_SPLITS:
            summary[("read", 0, split)] = (
                summary.get(("read", 0, split), 0) + part["rows_read_by_source_split"][split]
            )
        for reason, count in part["quarantined_by_reason"].items():
            summary[("quarantined", 0, reason)] = summary.get(("quarantined", 0, reason), 0) + count
        for split in SPLITS:
            summary[("rows", 0, split)] = summary.get(("rows", 0, split), 0) + part["splits"][split]
            for label, count in part["label_counts"][split].items():
                key = ("labels", 0, split, int(label))
                summary[key] = summary.get(key, 0) + count
    return source_counts(summary, 0, source, eval_fraction)


def check_every_line_arrived(summary: dict, read: dict[int, Source]) -> None:
    """Every line of every file read must have come out of the pipeline as a good or a quarantined row. A
    runner that loses elements (seen once: DirectRunner multi_processing, 1,185,274 of 1,203,800 rows, no
    error) fails the step here, before anything is published."""
    for index, source in read.items():
        lines = count_lines(source.path)
        arrived = summary.get(("read", index, source.split), 0)
        if arrived != lines:
            raise ComponentError(
                f"ingest: the Beam runner returned {arrived:,} rows for the {lines:,} lines of "
                f"{source.path}; "
                f"{LOST_ROWS_ADVICE}"
            )


def write_source_counts(summary_path: Path, quarantine_blocks: Path, indexes: list[int],
                         all_sources: list[Source], folder_of: dict[int, Path], config: IngestConfig,
                         examples_dir: Path) -> None:
    """After the Beam job: checks that every line read arrived (CSV), then writes counts.json and joins the
    quarantine blocks into quarantine.jsonl, in each source's folder (or once: a single folder, TFDS)."""
    from_csv = config.data.startswith("csv:")
    eval_fraction = config.eval_fraction
    summary = {tuple(key): count for key, count in json.loads(summary_path.read_text(encoding="utf-8"))}
    summary_path.unlink()
    if from_csv:
        check_every_line_arrived(summary, {index: all_sources[index] for index in indexes})
    blocks = sorted(quarantine_blocks.glob("*.jsonl"))
    # one folder (or TFDS): one counts.json and quarantine.jsonl over both files
    if all_sources[0].name is None:
        merged: dict = {}
        for key, count in summary.items():
            merged[(key[0], 0, *key[2:])] = merged.get((key[0], 0, *key[2:]), 0) + count
        summary = merged
        write_counts(examples_dir, source_counts(summary, 0, source_name(config), eval_fraction))
        join_files(blocks, quarantine_file(examples_dir))
    else:
        for index in indexes:
            folder = examples_dir / folder_of[index]
            write_counts(folder, source_counts(summary, index, all_sources[index].path, eval_fraction))
            join_files([b for b in blocks if int(b.name.split("-")[0]) == index], quarantine_file(folder))
