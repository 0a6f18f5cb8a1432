"""Ingest: reads AG News, quarantines bad rows, and writes train/eval/test splits of tf.train.Example.

Sources (`ingest.data`):
  * "tfds": TensorFlow Datasets `ag_news_subset` (needs the prepared dataset or a network to download it);
  * "csv:DIR": the original AG News files DIR/train.csv and DIR/test.csv (no header; quoted
    "class","title","description"; class 1-4 becomes label 0-3).

Output folder `examples/`:
  train/, eval/, test/   part-SSSSS-of-NNNNN.tfrecord.gz: tf.train.Example {title: bytes, description: bytes,
                         label: int64 0-3}; the same rows always give the same files (library/tfrecord_io.py)
  quarantine.jsonl       one JSON object per bad row: source, source_split, line, reason, detail, raw (<= 1 KB)
  counts.json            rows per split, quarantined rows per reason, rows read, source

Each line of a CSV file is one row: a bad line goes to quarantine (with its file and line number) and never
affects its neighbours. CRLF endings and any UTF-8 text are valid; the file's final newline ends the last row
(it is not a row), while any blank line, including extra ones at the end, is a bad row (blank_line).

`eval` is a slice of the train source chosen by a hash of each row's content, so a row lands in the same split
on every run, whatever its position in the file. `test` is the source's test split.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations; run() imports Beam when it runs
    import apache_beam as beam

from library.ag_news_csv import (BadRow, Chunk, GoodRow, chunk_lines, count_newlines, open_binary, parse_csv_row,
                                 parse_tfds_row, plan_chunks, quarantine_record)
from library.beam_options import pipeline_options
from library.layouts import NUM_CLASSES, SOURCE_SPLITS, SPLITS, quarantine_file, write_counts
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.names import EXAMPLES
from contract.config import IngestConfig

CSV_FILE_NAMES = {"train": "train.csv", "test": "test.csv"}

# Bytes per read task of a CSV file. A file is split into chunks of this size that are read in parallel; each
# line belongs to the chunk it starts in.
READ_CHUNK_BYTES = 16 << 20
DOWNLOAD_PROBE_SECONDS = 10
BAD_ROWS_IN_ERROR = 10  # how many bad rows a "too many bad rows" error quotes
QUARANTINE_BLOCK_LINES = 100_000  # source lines per quarantine block file (its bad rows are sorted in memory)


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
        "description": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.description.encode("utf-8")])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.label])),
    }
    # deterministic=True: protobuf's default order of the feature map changes from process to process.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


# ---------------------------------------------------------------------------------------------- reading CSV
# Line-numbered chunked reading and the row grammar live in library/ag_news_csv.py.


def parse_csv_chunk(chunk: Chunk, newline_counts: list[tuple[str, int, int]]):
    """Chunk -> GoodRow, or a quarantine record on the "bad" output."""
    from apache_beam.pvalue import TaggedOutput
    newlines_before = sum(count for path, start, count in newline_counts
                          if path == chunk.path and start < chunk.start)
    for line_number, raw in chunk_lines(chunk, newlines_before):
        try:
            yield parse_csv_row(chunk.source_split, raw, first_line=line_number == 1)
        except BadRow as error:
            yield TaggedOutput("bad", quarantine_record(chunk.path, chunk.source_split, line_number, error, raw))


def _read_csv(pipeline: beam.Pipeline, files: dict[str, str]):
    import apache_beam as beam
    chunks = [chunk for source_split, path in files.items()
              for chunk in plan_chunks(path, source_split, READ_CHUNK_BYTES)]
    chunk_collection = pipeline | "Chunks" >> beam.Create(chunks) | "SpreadChunks" >> beam.Reshuffle()
    newline_counts = chunk_collection | "CountNewlines" >> beam.Map(count_newlines)
    parsed = chunk_collection | "Parse" >> beam.FlatMap(
        parse_csv_chunk, beam.pvalue.AsList(newline_counts)).with_outputs("bad", main="good")
    return parsed.good, parsed.bad


# ---------------------------------------------------------------------------------------------- reading TFDS


def read_tfds_split(source_split: str, name: str, data_dir: str):
    """Source split name -> GoodRow, or a quarantine record on the "bad" output. One task per split: TFDS
    reads a split sequentially; ag_news_subset is small (127,600 rows)."""
    import tensorflow_datasets as tfds
    from apache_beam.pvalue import TaggedOutput
    builder = tfds.builder(name, data_dir=data_dir or None)
    dataset = builder.as_dataset(split=source_split, shuffle_files=False)
    source = f"tfds:{name}/{source_split}"
    for index, row in enumerate(tfds.as_numpy(dataset), start=1):
        try:
            yield parse_tfds_row(source_split, row)
        except BadRow as error:
            raw = json.dumps({key: value.decode("utf-8", "backslashreplace") if isinstance(value, bytes)
                              else int(value) for key, value in row.items()}, ensure_ascii=False)
            yield TaggedOutput("bad", quarantine_record(source, source_split, index, error, raw.encode("utf-8")))


def _check_download_host(builder) -> None:
    """Fails in a second when the dataset's download host cannot be reached; TFDS itself retries an
    unreachable host for minutes (measured here: 204 s) before it gives up."""
    url = getattr(sys.modules.get(type(builder).__module__), "_DOWNLOAD_URL", None)
    host = urllib.parse.urlparse(url).hostname if isinstance(url, str) else None
    if host:
        socket.create_connection((host, 443), timeout=DOWNLOAD_PROBE_SECONDS).close()


def _prepare_tfds(config: IngestConfig) -> None:
    try:
        import tensorflow_datasets as tfds
        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir or None)
        if not builder.is_prepared():  # prepared files need no download machinery at all
            _check_download_host(builder)
            builder.download_and_prepare()
    except Exception as error:  # TFDS raises many types here (network, missing modules, unknown name)
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ComponentError(
            f"TFDS could not load {config.tfds_name} (no network? {type(error).__name__}: {reason}): point the "
            "pipeline at the original CSV files with --data csv:PATH (PATH holds train.csv and test.csv)") from None


def _read_tfds(pipeline: beam.Pipeline, config: IngestConfig):
    import apache_beam as beam
    parsed = (pipeline
              | "SourceSplits" >> beam.Create(list(SOURCE_SPLITS))
              | "ReadTfds" >> beam.FlatMap(read_tfds_split, config.tfds_name, config.tfds_data_dir)
              .with_outputs("bad", main="good"))
    return parsed.good, parsed.bad


# ---------------------------------------------------------------------------------------------- source checks


def _csv_dir(config: IngestConfig) -> str:
    folder = config.data[len("csv:"):]
    return folder if "://" in folder else str(Path(folder).expanduser().resolve())


def _csv_files(config: IngestConfig) -> dict[str, str]:
    """{source split: path}, after checking the folder and both files exist."""
    folder = _csv_dir(config)
    if "://" in folder:  # another file system (gs://, ...): Beam's FileSystems; a local one needs no Beam
        from apache_beam.io.filesystems import FileSystems
        exists, join = FileSystems.exists, FileSystems.join
    else:
        exists, join = os.path.exists, os.path.join
    if not exists(folder):
        raise ComponentError(f"ingest: data folder {folder} does not exist (from --data {config.data}); "
                             "--data csv:DIR expects DIR to hold train.csv and test.csv")
    files = {split: join(folder, name) for split, name in CSV_FILE_NAMES.items()}
    missing = [name for split, name in CSV_FILE_NAMES.items() if not exists(files[split])]
    if missing:
        raise ComponentError(f"ingest: {' and '.join(missing)} not found in {folder} (from --data {config.data}); "
                             "--data csv:DIR expects DIR to hold train.csv and test.csv")
    folders = [name for split, name in CSV_FILE_NAMES.items() if "://" not in files[split] and Path(files[split]).is_dir()]
    if folders:
        raise ComponentError(f"ingest: {' and '.join(folders)} in {folder} is a folder, not a file (from --data "
                             f"{config.data}); --data csv:DIR expects DIR to hold the files train.csv and test.csv")
    return files


def source_name(config: IngestConfig) -> str:
    return f"csv:{_csv_dir(config)}" if config.data.startswith("csv:") else f"tfds:{config.tfds_name}"


def source_rows(config: IngestConfig) -> int | None:
    """The rows of the CSV source (one a line), for the runner's ETA; None for TFDS (not known cheaply)."""
    if not config.data.startswith("csv:"):
        return None
    rows = 0
    for path in _csv_files(config).values():
        with open_binary(path) as handle:
            rows += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return rows


def external_fingerprint(config: IngestConfig) -> str:
    """A fingerprint of the source data, for caching and the scheduler's "no new data" check."""
    digest = hashlib.sha256()
    if config.data.startswith("csv:"):
        for source_split, path in _csv_files(config).items():
            digest.update(f"{CSV_FILE_NAMES[source_split]}\0".encode())
            with open_binary(path) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
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


def _summary_keys(row_or_record) -> list[tuple]:
    """The counters one row adds to: rows read per source split, then rows per split and label or quarantined
    rows per reason."""
    if isinstance(row_or_record, dict):
        return [("read", row_or_record["source_split"]), ("quarantined", row_or_record["reason"])]
    split, row = row_or_record
    return [("read", row.source_split), ("rows", split), ("labels", split, row.label)]


def _summary_json(counted: list[tuple[tuple, int]]) -> str:
    return json.dumps([[list(key), count] for key, count in counted])


def _quarantine_block(record: dict) -> tuple[tuple[int, int], tuple[str, int, str]]:
    """A bad row keyed by its block of consecutive lines in its source split, with its JSON line."""
    split_index = SOURCE_SPLITS.index(record["source_split"])
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    return (split_index, record["line"] // QUARANTINE_BLOCK_LINES), (record["source"], record["line"], line)


def write_quarantine_block(element, folder: str):
    """One block of at most QUARANTINE_BLOCK_LINES bad rows -> one file, in line order; the block files are
    joined in name order afterwards, so quarantine.jsonl lists every bad row in source order while no step
    holds more than one block in memory."""
    (split_index, block), rows = element
    path = Path(folder) / f"{split_index}-{block:010d}.jsonl"
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        for _, _, line in sorted(rows):
            handle.write(line)
    os.replace(temporary, path)
    yield str(path)


def _join_quarantine_blocks(folder: Path, destination: Path) -> None:
    """Concatenates the block files in order into `destination` (streamed), then removes them."""
    with open(destination, "wb") as out:
        for block in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            with open(block, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    shutil.rmtree(folder, ignore_errors=True)


def _single_file(path: Path):
    import apache_beam as beam
    return beam.io.WriteToText(str(path), shard_name_template="", num_shards=1, append_trailing_newlines=False)


def _too_many_bad_rows(counts: dict, quarantine_path: Path, limit: float) -> ComponentError:
    by_reason = ", ".join(f"{reason}={count}" for reason, count in sorted(counts["quarantined_by_reason"].items()))
    lines = [f"ingest: {counts['quarantined_rows']} of {counts['rows_read']} rows are bad "
             f"({counts['bad_row_fraction']:.2%}), above ingest.max_bad_row_fraction = {limit:.2%}.",
             f"Bad rows by reason: {by_reason}.",
             f"First {min(BAD_ROWS_IN_ERROR, counts['quarantined_rows'])} of {counts['quarantined_rows']} bad rows:"]
    with open(quarantine_path, encoding="utf-8") as handle:
        for _, text in zip(range(BAD_ROWS_IN_ERROR), handle):
            record = json.loads(text)
            from_tfds = record["source"].startswith("tfds:")  # TFDS rows are numbered in reading order
            where = f"{record['source']} row" if from_tfds else f"{Path(record['source']).name} line"
            lines.append(f"  {where} {record['line']}: {record['reason']} "
                         f"({record['detail']}): {record['raw'][:120]!r}")
    lines.append(f"All bad rows are listed in {quarantine_path}. "
                 "Fix the source rows, or raise the limit with --set ingest.max_bad_row_fraction=...")
    return ComponentError("\n".join(lines))


def run(inputs: dict[str, Artifact], output_dir: Path, config: IngestConfig, runtime: Runtime) -> dict[str, Artifact]:
    import apache_beam as beam  # heavy libraries are imported in run(), not at the top (see contract/artifacts.py)
    from library.tfrecord_io import WriteDeterministicTFRecords
    del inputs  # ingest reads the external source only
    output_dir = Path(output_dir)
    examples_dir = output_dir / EXAMPLES
    examples_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / ".ingest-summary.json"
    quarantine_path = quarantine_file(examples_dir)
    quarantine_blocks = output_dir / ".quarantine-blocks"
    quarantine_blocks.mkdir(exist_ok=True)
    source = source_name(config)
    from_csv = config.data.startswith("csv:")
    files = _csv_files(config) if from_csv else {}
    if not from_csv:
        _prepare_tfds(config)
    runtime.log(f"ingest: reading {source}")

    eval_fraction = config.eval_fraction
    with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:
        good, bad = _read_csv(pipeline, files) if from_csv else _read_tfds(pipeline, config)
        split_rows = good | "AssignSplit" >> beam.Map(lambda row: (split_of(row, eval_fraction), row))
        # Same rows, same files, byte for byte: a re-run's fingerprint matches, so later steps stay cached.
        # Every split gets at least one (possibly empty) file.
        _ = (split_rows
             | "ToExample" >> beam.MapTuple(lambda split, row: (split, to_tf_example(row)))
             | "WriteExamples" >> WriteDeterministicTFRecords(str(examples_dir), folders=SPLITS))
        # Bad rows are streamed to files of bounded blocks of lines (memory does not grow with their number;
        # a hostile input can be all bad rows), joined in line order below.
        _ = (bad
             | "QuarantineBlocks" >> beam.Map(_quarantine_block)
             | "GroupBlocks" >> beam.GroupByKey()
             | "WriteQuarantine" >> beam.FlatMap(write_quarantine_block, str(quarantine_blocks)))
        _ = ((split_rows, bad)
             | "AllRows" >> beam.Flatten()
             | "SummaryKeys" >> beam.FlatMap(_summary_keys)
             | "Count" >> beam.combiners.Count.PerElement()
             | "AllCounts" >> beam.combiners.ToList()
             | "SummaryJson" >> beam.Map(_summary_json)
             | "WriteSummary" >> _single_file(summary_path))

    summary = {tuple(key): count for key, count in json.loads(summary_path.read_text(encoding="utf-8"))}
    summary_path.unlink()
    _join_quarantine_blocks(quarantine_blocks, quarantine_path)
    read = {s: summary.get(("read", s), 0) for s in SOURCE_SPLITS}
    rows_read = sum(read.values())
    by_reason = {key[1]: count for key, count in summary.items() if key[0] == "quarantined"}
    quarantined = sum(by_reason.values())
    counts = {
        "source": source,
        "splits": {split: summary.get(("rows", split), 0) for split in SPLITS},
        "label_counts": {split: {str(label): summary.get(("labels", split, label), 0) for label in range(NUM_CLASSES)}
                         for split in SPLITS},
        "rows_read": rows_read,
        "rows_read_by_source_split": read,
        "quarantined_rows": quarantined,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "bad_row_fraction": quarantined / rows_read if rows_read else 0.0,
        "eval_fraction": eval_fraction,
    }
    write_counts(examples_dir, counts)
    runtime.log(f"ingest: {counts['splits']} rows, {quarantined} quarantined {counts['quarantined_by_reason']}")

    if counts["bad_row_fraction"] > config.max_bad_row_fraction:
        raise _too_many_bad_rows(counts, quarantine_path, config.max_bad_row_fraction)
    good_rows = {"train": counts["splits"]["train"] + counts["splits"]["eval"], "test": counts["splits"]["test"]}
    empty_sources = [s for s in SOURCE_SPLITS if good_rows[s] == 0]
    if empty_sources:
        raise ComponentError(f"ingest: the {' and '.join(empty_sources)} source of {source} has no good rows "
                             f"(rows read: {read}; quarantined: {counts['quarantined_by_reason']})")

    properties = {
        "train_rows": counts["splits"]["train"],
        "eval_rows": counts["splits"]["eval"],
        "test_rows": counts["splits"]["test"],
        "quarantined_rows": quarantined,
        "quarantined_by_reason": counts["quarantined_by_reason"],
        "source": source,
    }
    return {EXAMPLES: Artifact(EXAMPLES, examples_dir, properties)}
