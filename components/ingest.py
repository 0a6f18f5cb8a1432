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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations; run() imports Beam when it runs
    import apache_beam as beam

from library.ag_news_csv import (BadRow, Chunk, GoodRow, chunk_lines, count_lines, count_newlines, open_binary,
                                 parse_csv_row,
                                 parse_tfds_row, plan_chunks, quarantine_record)
from library.beam_options import pipeline_options
from library import spans as span_stream
from library.layouts import (COUNTS_FILE, NUM_CLASSES, SOURCE_SPLITS, SPLITS, quarantine_file, read_counts,
                             read_sources, source_folder, split_dir, write_counts, write_sources)
from contract.artifacts import LOST_ROWS_ADVICE, Artifact, ComponentError, Runtime
from contract.names import EXAMPLES, PREVIOUS_EXAMPLES
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


def parse_source_chunk(chunk: Chunk, newline_counts: list[tuple[str, int, int]], sources: list[Source]):
    """Like parse_csv_chunk, with each good row as (source index, row) and each bad row naming its span."""
    from apache_beam.pvalue import TaggedOutput
    index = next(i for i, source in enumerate(sources) if source.path == chunk.path)
    for item in parse_csv_chunk(chunk, newline_counts):
        if isinstance(item, TaggedOutput):
            item.value["source_index"] = index
            if sources[index].name:
                item.value["span"] = sources[index].name
            yield item
        else:
            yield index, item


def _read_csv(pipeline: beam.Pipeline, to_read: list[Source], sources: list[Source]):
    """Reads the files of `to_read`; rows are tagged with their index in `sources`."""
    import apache_beam as beam
    chunks = [chunk for source in to_read for chunk in plan_chunks(source.path, source.split, READ_CHUNK_BYTES)]
    chunk_collection = pipeline | "Chunks" >> beam.Create(chunks) | "SpreadChunks" >> beam.Reshuffle()
    newline_counts = chunk_collection | "CountNewlines" >> beam.Map(count_newlines)
    parsed = chunk_collection | "Parse" >> beam.FlatMap(
        parse_source_chunk, beam.pvalue.AsList(newline_counts), sources).with_outputs("bad", main="good")
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
    good = parsed.good | "TfdsSources" >> beam.Map(lambda row: (SOURCE_SPLITS.index(row.source_split), row))
    bad = parsed.bad | "TfdsBadSources" >> beam.Map(
        lambda record: {**record, "source_index": SOURCE_SPLITS.index(record["source_split"])})
    return good, bad


# ---------------------------------------------------------------------------------------------- source checks


@dataclass(frozen=True)
class Source:
    """One source file and where its rows go: name None (a single folder: rows go to the artifact's own split
    folders), "" (a stream's fixed test set) or a span's name (library/layouts.py source_folder)."""
    name: str | None
    split: str  # the source split: "train" or "test"
    path: str


def _csv_dir(config: IngestConfig) -> str:
    folder = config.data[len("csv:"):]
    return folder if "://" in folder else str(Path(folder).expanduser().resolve())


def _is_stream(config: IngestConfig) -> bool:
    folder = _csv_dir(config)
    return "://" not in folder and span_stream.is_stream(folder, config.window.pattern)


def _csv_files(config: IngestConfig) -> dict[str, str]:
    """{source split: path}, after checking the folder and both files exist."""
    folder = _csv_dir(config)
    if "://" in folder:  # another file system (gs://, ...): Beam's FileSystems; a local one needs no Beam
        from apache_beam.io.filesystems import FileSystems
        exists, join = FileSystems.exists, FileSystems.join
    else:
        exists, join = os.path.exists, os.path.join
    expects = ("--data csv:DIR expects DIR to hold train.csv and test.csv (or test.csv and span subfolders "
               "named like 2026-12-01/ or 0007/, each with a train.csv)")
    if not exists(folder):
        raise ComponentError(f"ingest: data folder {folder} does not exist (from --data {config.data}); {expects}")
    files = {split: join(folder, name) for split, name in CSV_FILE_NAMES.items()}
    missing = [name for split, name in CSV_FILE_NAMES.items() if not exists(files[split])]
    if missing:
        raise ComponentError(f"ingest: {' and '.join(missing)} not found in {folder} (from --data {config.data}); "
                             f"{expects}")
    folders = [name for split, name in CSV_FILE_NAMES.items() if "://" not in files[split] and Path(files[split]).is_dir()]
    if folders:
        raise ComponentError(f"ingest: {' and '.join(folders)} in {folder} is a folder, not a file (from --data "
                             f"{config.data}); --data csv:DIR expects DIR to hold the files train.csv and test.csv")
    return files


def window(config: IngestConfig) -> list[span_stream.Span]:
    """The spans of a stream source the run trains on, oldest first (a ComponentError of a window kind
    if it cannot be formed: library/spans.py)."""
    folder = _csv_dir(config)
    test_file = os.path.join(folder, span_stream.FIXED_TEST_FILE)
    if not os.path.isfile(test_file):
        raise ComponentError(f"ingest: {folder} holds span folders but no test.csv (the fixed test set every run "
                             "is evaluated on); add it beside the span folders")
    spans = span_stream.discover_spans(folder, config.window.pattern)
    settings = config.window
    return span_stream.select_window(spans, num_spans=settings.num_spans, min_spans=settings.min_spans,
                                     skip_recent=settings.skip_recent, exclude=settings.exclude,
                                     newest=settings.newest, where=f"--data {config.data}")


def sources(config: IngestConfig) -> list[Source]:
    """Every source file of the run; in a stream, the window's spans (oldest first), then the fixed test set."""
    if not config.data.startswith("csv:"):
        _check_one_span(config)
        return [Source(None, split, f"tfds:{config.tfds_name}/{split}") for split in SOURCE_SPLITS]
    if _is_stream(config):
        spans = window(config)
        test_file = os.path.join(_csv_dir(config), span_stream.FIXED_TEST_FILE)
        return [Source(span.name, "train", span.train_file) for span in spans] + [Source("", "test", test_file)]
    _check_one_span(config)
    return [Source(None, split, path) for split, path in _csv_files(config).items()]


def _check_one_span(config: IngestConfig) -> None:
    """A source that is not a stream is one span: it can neither be pinned nor meet min_spans above 1."""
    where = f"--data {config.data} is one data set, not a stream of spans"
    if config.window.newest:
        raise ComponentError(f"ingest: {where}, so span {config.window.newest!r} cannot be found. Nothing was "
                             "trained.", span_stream.SPAN_NOT_FOUND)
    if config.window.min_spans > 1:
        raise ComponentError(f"ingest: {where}: one span, fewer than ingest.window.min_spans = "
                             f"{config.window.min_spans}. Nothing was trained.", span_stream.TOO_FEW_SPANS)


def source_name(config: IngestConfig) -> str:
    return f"csv:{_csv_dir(config)}" if config.data.startswith("csv:") else f"tfds:{config.tfds_name}"


def source_rows(config: IngestConfig) -> int | None:
    """The rows of the CSV source (one a line), for the runner's ETA; None for TFDS (not known cheaply)."""
    if not config.data.startswith("csv:"):
        return None
    rows = 0
    for source in sources(config):
        with open_binary(source.path) as handle:
            rows += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return rows


def external_fingerprint(config: IngestConfig) -> str:
    """A fingerprint of the source data, for caching and the scheduler's "no new data" check: of a stream, the
    window's spans (names and contents) and the fixed test set."""
    digest = hashlib.sha256()
    stream_sources = sources(config)  # checks the window first (before any work)
    if stream_sources[0].name is not None:
        for source in stream_sources:
            digest.update(f"{source.name}\0{span_stream.file_sha256(source.path)}\0".encode())
        return digest.hexdigest()
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


# ---------------------------------------------------------------------------------------------- span reuse


def _ingest_code_hash() -> str:
    """The code that decides a span's example files: a reused span must hold what ingesting it now would."""
    from library import ag_news_csv, layouts, tfrecord_io
    digest = hashlib.sha256()
    for module_file in (__file__, ag_news_csv.__file__, layouts.__file__, tfrecord_io.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()


def _reuse_key(source: Source, sha256: str, config: IngestConfig, code: str) -> str:
    settings = [source.name, source.split, sha256, config.eval_fraction, code]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()


def _link_tree(source: Path, destination: Path) -> None:
    """Hard-links every file of `source` into `destination` (a copy where links are impossible): the files of
    a published artifact never change, so two artifacts may share them."""
    for path in sorted(source.rglob("*")):
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _plan_reuse(stream_sources: list[Source], previous: Artifact | None, config: IngestConfig,
                examples_dir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """({source name: {sha256, reuse_key}}, {source name: status}) with status ingested | reused |
    re-ingested (its files changed since the previous ingest); reused sources are linked into place."""
    code = _ingest_code_hash()
    before = read_sources(previous.uri) if previous is not None else {}
    records, status = {}, {}
    for source in stream_sources:
        sha256 = span_stream.file_sha256(source.path)
        key = _reuse_key(source, sha256, config, code)
        records[source.name] = {"sha256": sha256, "reuse_key": key}
        earlier = before.get(source.name)
        kept = source_folder(previous.uri, source.name) if previous is not None else None
        if earlier and earlier["reuse_key"] == key and (kept / COUNTS_FILE).is_file():
            _link_tree(kept, source_folder(examples_dir, source.name))
            status[source.name] = "reused"
        else:
            status[source.name] = "re-ingested" if earlier and earlier["sha256"] != sha256 else "ingested"
    return records, status


# ---------------------------------------------------------------------------------------------- the component


def _summary_keys(indexed) -> list[tuple]:
    """The counters one row adds to, per source: rows read per source split, then rows per split and label
    or quarantined rows per reason."""
    if isinstance(indexed, dict):
        index = indexed["source_index"]
        return [("read", index, indexed["source_split"]), ("quarantined", index, indexed["reason"])]
    index, (split, row) = indexed
    return [("read", index, row.source_split), ("rows", index, split), ("labels", index, split, row.label)]


def _summary_json(counted: list[tuple[tuple, int]]) -> str:
    return json.dumps([[list(key), count] for key, count in counted])


def _quarantine_block(record: dict) -> tuple[tuple[int, int], tuple[str, int, str]]:
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
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        for _, _, line in sorted(rows):
            handle.write(line)
    os.replace(temporary, path)
    yield str(path)


def _join_files(files: list[Path], destination: Path) -> None:
    """Concatenates `files` in order into `destination` (streamed)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "wb") as out:
        for block in files:
            with open(block, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)


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
            if record.get("span"):
                where = f"span {record['span']} {where}"
            lines.append(f"  {where} {record['line']}: {record['reason']} "
                         f"({record['detail']}): {record['raw'][:120]!r}")
    lines.append(f"All bad rows are listed in {quarantine_path}. "
                 "Fix the source rows, or raise the limit with --set ingest.max_bad_row_fraction=...")
    return ComponentError("\n".join(lines))


def _source_counts(summary: dict, index: int, source: str, eval_fraction: float) -> dict:
    """counts.json of one source (or, summed over all sources, of the artifact)."""
    read = {s: summary.get(("read", index, s), 0) for s in SOURCE_SPLITS}
    by_reason = {key[2]: count for key, count in summary.items() if key[0] == "quarantined" and key[1] == index}
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


def _sum_counts(parts: list[dict], source: str, eval_fraction: float) -> dict:
    summary: dict = {}
    for part in parts:
        for split in SOURCE_SPLITS:
            summary[("read", 0, split)] = summary.get(("read", 0, split), 0) + part["rows_read_by_source_split"][split]
        for reason, count in part["quarantined_by_reason"].items():
            summary[("quarantined", 0, reason)] = summary.get(("quarantined", 0, reason), 0) + count
        for split in SPLITS:
            summary[("rows", 0, split)] = summary.get(("rows", 0, split), 0) + part["splits"][split]
            for label, count in part["label_counts"][split].items():
                key = ("labels", 0, split, int(label))
                summary[key] = summary.get(key, 0) + count
    return _source_counts(summary, 0, source, eval_fraction)


def _check_every_line_arrived(summary: dict, read: dict[int, Source]) -> None:
    """Every line of every file read must have come out of the pipeline as a good or a quarantined row. A runner
    that loses elements (seen once: DirectRunner multi_processing, 1,185,274 of 1,203,800 rows, no error) fails
    the step here, before anything is published."""
    for index, source in read.items():
        lines = count_lines(source.path)
        arrived = summary.get(("read", index, source.split), 0)
        if arrived != lines:
            raise ComponentError(
                f"ingest: the Beam runner returned {arrived:,} rows for the {lines:,} lines of {source.path}; "
                f"{LOST_ROWS_ADVICE}")


def _ingest(to_read: list[Source], all_sources: list[Source], config: IngestConfig, output_dir: Path,
            examples_dir: Path, runtime: Runtime) -> None:
    """Runs Beam over `to_read`: example files, counts.json and quarantine.jsonl in each source's folder."""
    import apache_beam as beam  # heavy libraries are imported where used, not at the top (see contract/artifacts.py)
    from library.tfrecord_io import WriteDeterministicTFRecords
    summary_path = output_dir / ".ingest-summary.json"
    quarantine_blocks = output_dir / ".quarantine-blocks"
    quarantine_blocks.mkdir(exist_ok=True)
    index_of = {id(source): index for index, source in enumerate(all_sources)}
    indexes = [index_of[id(source)] for source in to_read]
    folder_of = {index: source_folder(Path(), all_sources[index].name) for index in indexes}
    written = [str(split_dir(folder_of[i], split)) for i in indexes
               for split in (("test",) if all_sources[i].split == "test" else ("train", "eval"))]
    if not all_sources[0].name:  # a single folder: every split folder exists, as always
        written = list(SPLITS)
    from_csv = config.data.startswith("csv:")
    eval_fraction = config.eval_fraction

    def to_folder(indexed):
        index, row = indexed
        return index, (split_of(row, eval_fraction), row)

    with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:
        if from_csv:
            good, bad = _read_csv(pipeline, to_read, all_sources)
        else:
            good, bad = _read_tfds(pipeline, config)
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
    if from_csv:
        _check_every_line_arrived(summary, {index: all_sources[index] for index in indexes})
    blocks = sorted(quarantine_blocks.glob("*.jsonl"))
    if all_sources[0].name is None:  # one folder (or TFDS): one counts.json and quarantine.jsonl over both files
        merged: dict = {}
        for key, count in summary.items():
            merged[(key[0], 0, *key[2:])] = merged.get((key[0], 0, *key[2:]), 0) + count
        summary = merged
        write_counts(examples_dir, _source_counts(summary, 0, source_name(config), eval_fraction))
        _join_files(blocks, quarantine_file(examples_dir))
    else:
        for index in indexes:
            folder = examples_dir / folder_of[index]
            write_counts(folder, _source_counts(summary, index, all_sources[index].path, eval_fraction))
            _join_files([b for b in blocks if int(b.name.split("-")[0]) == index], quarantine_file(folder))
    shutil.rmtree(quarantine_blocks, ignore_errors=True)


def run(inputs: dict[str, Artifact], output_dir: Path, config: IngestConfig, runtime: Runtime) -> dict[str, Artifact]:
    output_dir = Path(output_dir)
    examples_dir = output_dir / EXAMPLES
    examples_dir.mkdir(parents=True, exist_ok=True)
    source = source_name(config)
    if not config.data.startswith("csv:"):
        _prepare_tfds(config)
    all_sources = sources(config)
    stream = all_sources[0].name is not None
    status: dict[str, str] = {}
    to_read = all_sources
    if stream:
        records, status = _plan_reuse(all_sources, inputs.get(PREVIOUS_EXAMPLES), config, examples_dir)
        to_read = [s for s in all_sources if status[s.name] != "reused"]
        write_sources(examples_dir, records)
        spans = [s.name for s in all_sources if s.name]
        for verb in ("ingested", "re-ingested", "reused"):
            named = [name or "fixed test set" for name, state in status.items() if state == verb]
            if named:
                why = " (their files changed)" if verb == "re-ingested" else ""
                runtime.log(f"ingest: {verb}{why}: {', '.join(named)}")
        runtime.log(f"ingest: window of {len(spans)} span(s) {spans[0]} .. {spans[-1]} from {source}")
    else:
        runtime.log(f"ingest: reading {source}")
    if to_read:
        _ingest(to_read, all_sources, config, output_dir, examples_dir, runtime)

    quarantine_path = quarantine_file(examples_dir)
    if stream:
        parts = {s.name: read_counts(source_folder(examples_dir, s.name)) for s in all_sources}
        counts = _sum_counts(list(parts.values()), source, config.eval_fraction)
        counts["window"] = [s.name for s in all_sources if s.name]
        counts["spans"] = {name: {key: part[key] for key in ("splits", "label_counts", "quarantined_rows")}
                           for name, part in parts.items() if name}
        write_counts(examples_dir, counts)
        _join_files([quarantine_file(source_folder(examples_dir, s.name)) for s in all_sources], quarantine_path)
    else:
        counts = read_counts(examples_dir)
    runtime.log(f"ingest: {counts['splits']} rows, {counts['quarantined_rows']} quarantined "
                f"{counts['quarantined_by_reason']}")

    if counts["bad_row_fraction"] > config.max_bad_row_fraction:
        raise _too_many_bad_rows(counts, quarantine_path, config.max_bad_row_fraction)
    read = counts["rows_read_by_source_split"]
    good_rows = {"train": counts["splits"]["train"] + counts["splits"]["eval"], "test": counts["splits"]["test"]}
    empty_sources = [s for s in SOURCE_SPLITS if good_rows[s] == 0]
    if empty_sources:
        raise ComponentError(f"ingest: the {' and '.join(empty_sources)} source of {source} has no good rows "
                             f"(rows read: {read}; quarantined: {counts['quarantined_by_reason']})")

    properties = {
        "train_rows": counts["splits"]["train"],
        "eval_rows": counts["splits"]["eval"],
        "test_rows": counts["splits"]["test"],
        "quarantined_rows": counts["quarantined_rows"],
        "quarantined_by_reason": counts["quarantined_by_reason"],
        "source": source,
    }
    if stream:
        properties.update({
            "window": counts["window"], "newest_span": counts["window"][-1],
            "window_summary": f"{counts['window'][0]}..{counts['window'][-1]} ({len(counts['window'])} spans)",
            "spans_ingested": [n for n, state in status.items() if n and state == "ingested"],
            "spans_reingested": [n for n, state in status.items() if n and state == "re-ingested"],
            "spans_reused": [n for n, state in status.items() if n and state == "reused"]})
    return {EXAMPLES: Artifact(EXAMPLES, examples_dir, properties)}
