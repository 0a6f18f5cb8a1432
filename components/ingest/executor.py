"""Ingest: reads AG News, quarantines bad rows, and writes train/eval/test splits of tf.train.Example.

Sources (`ingest.data`):
  * "tfds": TensorFlow Datasets `ag_news_subset` (needs the prepared dataset or a network to download it);
  * "csv:DIR": the original AG News files DIR/train.csv and DIR/test.csv (no header; quoted
    "class","title","description"; class 1-4 becomes label 0-3).

Output folder `examples/`:
  train/, eval/, test/   part-SSSSS-of-NNNNN.tfrecord.gz: tf.train.Example {title: bytes, description: bytes,
                         label: int64 0-3}; the same rows always give the same files (library/tfrecord_io.py)
  quarantine.jsonl       one JSON object per bad row: source, source_split, line, reason, detail,
                         raw (<= 1 KB)
  counts.json            rows per split, quarantined rows per reason, rows read, source

Each line of a CSV file is one row: a bad line goes to quarantine (with its file and line number) and never
affects its neighbours. CRLF endings and any UTF-8 text are valid; the file's final newline ends the last row
(it is not a row), while any blank line, including extra ones at the end, is a bad row (blank_line).

`eval` is a slice of the train source chosen by a hash of each row's content, so a row lands in the same split
on every run, whatever its position in the file. `test` is the source's test split.

Source discovery is in spec.py and, where it may need Beam or TFDS, here (sources, source_rows,
external_fingerprint); the Beam reading is in reading.py, the span reuse of a stream in span_reuse.py, the
quarantine files and their error in quarantine.py, counts.json and the check that every line read arrived
in counts.py.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from components.ingest.counts import sum_counts, summary_json, summary_keys, write_source_counts
from components.ingest.quarantine import (
    join_files,
    quarantine_block,
    too_many_bad_rows,
    write_quarantine_block,
)
from components.ingest.reading import prepare_tfds, read_csv, read_tfds
from components.ingest.span_reuse import plan_reuse
from components.ingest.spec import (
    CSV_FILE_NAMES,
    Source,
    check_one_span,
    csv_dir,
    reads_stream,
    source_name,
    window,
)
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.data_config import IngestConfig
from contract.files import file_sha256, update_digest
from contract.names import EXAMPLES, PREVIOUS_EXAMPLES
from library import span_profiles
from library import spans as span_stream
from library.ag_news_csv import GoodRow, count_lines, open_binary
from library.beam_options import pipeline_options
from library.layouts import (
    SOURCE_SPLITS,
    SPLITS,
    quarantine_file,
    read_counts,
    source_folder,
    split_dir,
    write_counts,
    write_sources,
)

# ---------------------------------------------------------------------------------------------- splits


def eval_hash_fraction(label: int, title: str, description: str) -> float:
    """A number in [0, 1) that depends only on the row's content (never its position)."""
    digest = hashlib.sha256(f"{label}\x1f{title}\x1f{description}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_of(row: GoodRow, eval_fraction: float) -> str:
    if row.source_split == "test":
        return "test"
    return "eval" if eval_hash_fraction(row.label, row.title, row.description) < eval_fraction else "train"


def to_tf_example(row: GoodRow) -> bytes:
    import tensorflow as tf  # imported where used: TF is slow to import and only workers need it here

    feature = {
        "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.title.encode("utf-8")])),
        "description": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[row.description.encode("utf-8")])
        ),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.label])),
    }
    # deterministic=True: protobuf's default order of the feature map changes from process to process.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)



# ---------------------------------------------------------------------------------------------- source files
# What may reach Beam's FileSystems (a remote folder) or TFDS, so not in spec.py.


def _csv_files(config: IngestConfig) -> dict[str, str]:
    """{source split: path}, after checking the folder and both files exist."""
    folder = csv_dir(config)
    # another file system (gs://, ...): Beam's FileSystems; a local one needs no Beam
    if "://" in folder:
        from apache_beam.io.filesystems import FileSystems
        exists, join = FileSystems.exists, FileSystems.join
    else:
        exists, join = os.path.exists, os.path.join
    expects = ("--data csv:DIR expects DIR to hold train.csv and test.csv (or test.csv and span subfolders "
               "named like 2026-12-01/ or 0007/, each with a train.csv)")
    if not exists(folder):
        raise ComponentError(
            f"ingest: data folder {folder} does not exist (from --data {config.data}); {expects}"
        )
    files = {split: join(folder, name) for split, name in CSV_FILE_NAMES.items()}
    missing = [name for split, name in CSV_FILE_NAMES.items() if not exists(files[split])]
    if missing:
        raise ComponentError(
            f"ingest: {' and '.join(missing)} not found in {folder} (from --data {config.data}); {expects}"
        )
    folders = [
        name
        for split, name in CSV_FILE_NAMES.items()
        if "://" not in files[split] and Path(files[split]).is_dir()
    ]
    if folders:
        raise ComponentError(
            f"ingest: {' and '.join(folders)} in {folder} is a folder, not a file (from --data "
            f"{config.data}); --data csv:DIR expects DIR to hold the files train.csv and test.csv"
        )
    return files


def sources(config: IngestConfig) -> list[Source]:
    """Every source file of the run; in a stream, the window's spans (oldest first), then the fixed test
    set."""
    if not config.data.startswith("csv:"):
        check_one_span(config)
        return [Source(None, split, f"tfds:{config.tfds_name}/{split}") for split in SOURCE_SPLITS]
    if reads_stream(config):
        spans = window(config)
        test_file = os.path.join(csv_dir(config), span_stream.FIXED_TEST_FILE)
        return [Source(span.name, "train", span.train_file) for span in spans] + [
            Source("", "test", test_file)
        ]
    check_one_span(config)
    return [Source(None, split, path) for split, path in _csv_files(config).items()]


def source_rows(config: IngestConfig) -> int | None:
    """The rows of the CSV source (one a line), for the runner's ETA; None for TFDS (not known cheaply)."""
    if not config.data.startswith("csv:"):
        return None
    return sum(count_lines(source.path) for source in sources(config))


def external_fingerprint(config: IngestConfig) -> str:
    """A fingerprint of the source data, for caching and the scheduler's "no new data" check: of a stream, the
    window's spans (names and contents) and the fixed test set."""
    digest = hashlib.sha256()
    # checks the window first (before any work)
    stream_sources = sources(config)
    if stream_sources[0].name is not None:
        for source in stream_sources:
            digest.update(f"{source.name}\0{file_sha256(source.path)}\0".encode())
        return digest.hexdigest()
    if config.data.startswith("csv:"):
        for source_split, path in _csv_files(config).items():
            digest.update(f"{CSV_FILE_NAMES[source_split]}\0".encode())
            with open_binary(path) as handle:
                update_digest(digest, handle)
            digest.update(b"\0")
        return digest.hexdigest()
    try:
        import tensorflow_datasets as tfds
        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir or None)
    except Exception as error:
        raise ComponentError(f"TFDS has no dataset {config.tfds_name!r} ({type(error).__name__}): point the "
                             "pipeline at the original CSV files with --data csv:PATH") from None
    digest.update(f"tfds\0{config.tfds_name}\0{builder.version}\0{config.tfds_data_dir}\0".encode())
    prepared = Path(str(builder.data_dir))
    if prepared.is_dir():
        from contract.artifacts import fingerprint
        digest.update(fingerprint(prepared).encode())
    return digest.hexdigest()



# ---------------------------------------------------------------------------------------------- the component


def _single_file(path: Path):
    import apache_beam as beam

    return beam.io.WriteToText(
        str(path), shard_name_template="", num_shards=1, append_trailing_newlines=False
    )


def _ingest(to_read: list[Source], all_sources: list[Source], config: IngestConfig, output_dir: Path,
            examples_dir: Path, runtime: Runtime) -> None:
    """Runs Beam over `to_read`: example files, counts.json and quarantine.jsonl in each source's folder."""
    # heavy libraries are imported where used, not at the top (see contract/artifacts.py)
    import apache_beam as beam

    from library.tfrecord_io import WriteDeterministicTFRecords
    summary_path = output_dir / ".ingest-summary.json"
    quarantine_blocks = output_dir / ".quarantine-blocks"
    quarantine_blocks.mkdir(exist_ok=True)
    index_of = {id(source): index for index, source in enumerate(all_sources)}
    indexes = [index_of[id(source)] for source in to_read]
    folder_of = {index: source_folder(Path(), all_sources[index].name) for index in indexes}
    written = [str(split_dir(folder_of[i], split)) for i in indexes
               for split in (("test",) if all_sources[i].split == "test" else ("train", "eval"))]
    # a single folder: every split folder exists, as always
    if not all_sources[0].name:
        written = list(SPLITS)
    from_csv = config.data.startswith("csv:")
    eval_fraction = config.eval_fraction

    def to_folder(indexed):
        index, row = indexed
        return index, (split_of(row, eval_fraction), row)

    with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:
        if from_csv:
            good, bad = read_csv(pipeline, to_read, all_sources)
        else:
            good, bad = read_tfds(pipeline, config)
        split_rows = good | "AssignSplit" >> beam.Map(to_folder)
        # Same rows, same files, byte for byte: a re-run's fingerprint matches, so later steps stay cached.
        _ = (split_rows
             | "ToExample" >> beam.MapTuple(
                 lambda index, split_row: (str(split_dir(folder_of[index], split_row[0])),
                                           to_tf_example(split_row[1])))
             | "WriteExamples" >> WriteDeterministicTFRecords(str(examples_dir), folders=written))
        # Bad rows are streamed to files of bounded blocks of lines (memory does not grow with their number;
        # a hostile input can be all bad rows), joined in line order below.
        _ = (bad
             | "QuarantineBlocks" >> beam.Map(quarantine_block)
             | "GroupBlocks" >> beam.GroupByKey()
             | "WriteQuarantine" >> beam.FlatMap(write_quarantine_block, str(quarantine_blocks)))
        _ = ((split_rows, bad)
             | "AllRows" >> beam.Flatten()
             | "SummaryKeys" >> beam.FlatMap(summary_keys)
             | "Count" >> beam.combiners.Count.PerElement()
             | "AllCounts" >> beam.combiners.ToList()
             | "SummaryJson" >> beam.Map(summary_json)
             | "WriteSummary" >> _single_file(summary_path))

    write_source_counts(summary_path, quarantine_blocks, indexes, all_sources, folder_of, config,
                        examples_dir)
    shutil.rmtree(quarantine_blocks, ignore_errors=True)


def run(
    inputs: dict[str, Artifact], output_dir: Path, config: IngestConfig, runtime: Runtime
) -> dict[str, Artifact]:
    output_dir = Path(output_dir)
    examples_dir = output_dir / EXAMPLES
    examples_dir.mkdir(parents=True, exist_ok=True)
    source = source_name(config)
    if not config.data.startswith("csv:"):
        prepare_tfds(config)
    all_sources = sources(config)
    stream = all_sources[0].name is not None
    status: dict[str, str] = {}
    records: dict[str, dict] = {}
    to_read = all_sources
    if stream:
        records, status = plan_reuse(all_sources, inputs.get(PREVIOUS_EXAMPLES), config, examples_dir)
        to_read = [s for s in all_sources if status[s.name] != "reused"]
        write_sources(examples_dir, records)
        _log_plan(status, [s.name for s in all_sources if s.name], source, runtime)
    else:
        runtime.log(f"ingest: reading {source}")
    if to_read:
        _ingest(to_read, all_sources, config, output_dir, examples_dir, runtime)
    for span in to_read if stream else ():
        # each span read now gets its drift profile (a reused one keeps its own)
        if span.name:
            span_profiles.write_profile(examples_dir, span.name, records[span.name]["sha256"])

    quarantine_path = quarantine_file(examples_dir)
    if stream:
        parts = {s.name: read_counts(source_folder(examples_dir, s.name)) for s in all_sources}
        counts = sum_counts(list(parts.values()), source, config.eval_fraction)
        counts["window"] = [s.name for s in all_sources if s.name]
        counts["spans"] = {name: {key: part[key] for key in ("splits", "label_counts", "quarantined_rows")}
                           for name, part in parts.items() if name}
        write_counts(examples_dir, counts)
        join_files(
            [quarantine_file(source_folder(examples_dir, s.name)) for s in all_sources], quarantine_path
        )
    else:
        counts = read_counts(examples_dir)
    runtime.log(f"ingest: {counts['splits']} rows, {counts['quarantined_rows']} quarantined "
                f"{counts['quarantined_by_reason']}")

    _check_good_rows(counts, parts if stream else {}, examples_dir, source, config)

    properties = _properties(counts, source, stream, status, records, config)
    return {EXAMPLES: Artifact(EXAMPLES, examples_dir, properties)}


def _check_good_rows(counts: dict[str, Any], parts: dict[str, dict], examples_dir: Path, source: str,
                     config: IngestConfig) -> None:
    """Fails the step when too many rows are bad (of a stream, only its fixed test set; parts: counts.json of
    each span, "" the test set, empty for a single folder) or a source split has no good rows."""
    # In a stream a span's bad rows are validate's data-quality check (validate.quality.bad_row_share): a
    # corrupted span is quarantined, not a failure of every later run; here only the fixed test set is held to
    # the limit.
    checked, checked_path = counts, quarantine_file(examples_dir)
    if parts:
        checked, checked_path = parts[""], quarantine_file(source_folder(examples_dir, ""))
    if checked["bad_row_fraction"] > config.max_bad_row_fraction:
        raise too_many_bad_rows(checked, checked_path, config.max_bad_row_fraction)
    read = counts["rows_read_by_source_split"]
    good_rows = {
        "train": counts["splits"]["train"] + counts["splits"]["eval"],
        "test": counts["splits"]["test"],
    }
    empty_sources = [s for s in SOURCE_SPLITS if good_rows[s] == 0]
    if empty_sources:
        raise ComponentError(f"ingest: the {' and '.join(empty_sources)} source of {source} has no good rows "
                             f"(rows read: {read}; quarantined: {counts['quarantined_by_reason']})")


def _log_plan(status: dict[str, str], spans: list[str], source: str, runtime: Runtime) -> None:
    """Which spans of a stream are read, re-read (changed files) or carried over, and the window."""
    for verb in ("ingested", "re-ingested", "reused"):
        named = [name or "fixed test set" for name, state in status.items() if state == verb]
        if named:
            why = " (their files changed)" if verb == "re-ingested" else ""
            runtime.log(f"ingest: {verb}{why}: {', '.join(named)}")
    runtime.log(f"ingest: window of {len(spans)} span(s) {spans[0]} .. {spans[-1]} from {source}")


def _properties(counts: dict[str, Any], source: str, stream: bool, status: dict[str, str],
                records: dict[str, dict], config: IngestConfig) -> dict[str, Any]:
    """The examples artifact's properties: rows per split and quarantined, and for a stream its window."""
    properties = {
        "train_rows": counts["splits"]["train"],
        "eval_rows": counts["splits"]["eval"],
        "test_rows": counts["splits"]["test"],
        "quarantined_rows": counts["quarantined_rows"],
        "quarantined_by_reason": counts["quarantined_by_reason"],
        "source": source,
    }
    if stream:
        properties.update(
            {
                "window": counts["window"],
                "newest_span": counts["window"][-1],
                "window_summary": (
                    f"{counts['window'][0]}..{counts['window'][-1]} ({len(counts['window'])} spans)"
                ),
                "spans_ingested": [n for n, state in status.items() if n and state == "ingested"],
                "spans_reingested": [n for n, state in status.items() if n and state == "re-ingested"],
                "spans_reused": [n for n, state in status.items() if n and state == "reused"],
                "span_sha256": {name: records[name]["sha256"] for name in counts["window"]},
                # Spans no model may have learned from now (excluded, quarantined, rejected): a warm start
                # checks its base against them.
                "spans_held_out": sorted(set(config.window.exclude) | set(config.window.held_out)),
            }
        )
    return properties
