"""Ingest's reading: the Beam transforms that turn a source into good rows and quarantine records.

A CSV file is split into chunks of READ_CHUNK_BYTES read in parallel; each line belongs to the chunk it starts
in and keeps its line number in the file, so every bad row is quarantined with its file and line, and never
affects its neighbours (line-numbered chunked reading and the row grammar live in library/ag_news_csv.py).
TFDS `ag_news_subset` is read one task per split, after checking the dataset is prepared or its download host
answers. Good rows come out tagged with their source's index in the run's list of sources.
"""
from __future__ import annotations

import json
import socket
import sys
import urllib.parse
from typing import TYPE_CHECKING

# for annotations; run() imports Beam when it runs
if TYPE_CHECKING:
    import apache_beam as beam

from components.ingest.spec import Source
from contract.artifacts import ComponentError
from contract.data_config import IngestConfig
from library.ag_news_csv import (
    BadRow,
    Chunk,
    chunk_lines,
    count_newlines,
    parse_csv_row,
    parse_tfds_row,
    plan_chunks,
    quarantine_record,
)
from library.layouts import SOURCE_SPLITS

# Bytes per read task of a CSV file. A file is split into chunks of this size that are read in parallel; each
# line belongs to the chunk it starts in.
READ_CHUNK_BYTES = 16 << 20
DOWNLOAD_PROBE_SECONDS = 10


# ---------------------------------------------------------------------------------------------- reading CSV


def parse_csv_chunk(chunk: Chunk, newline_counts: list[tuple[str, int, int]]):
    """Chunk -> GoodRow, or a quarantine record on the "bad" output."""
    from apache_beam.pvalue import TaggedOutput
    newlines_before = sum(count for path, start, count in newline_counts
                          if path == chunk.path and start < chunk.start)
    for line_number, raw in chunk_lines(chunk, newlines_before):
        try:
            yield parse_csv_row(chunk.source_split, raw, first_line=line_number == 1)
        except BadRow as error:
            yield TaggedOutput(
                "bad", quarantine_record(chunk.path, chunk.source_split, line_number, error, raw)
            )


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


def read_csv(pipeline: beam.Pipeline, to_read: list[Source], sources: list[Source]):
    """Reads the files of `to_read`; rows are tagged with their index in `sources`."""
    import apache_beam as beam

    chunks = [
        chunk for source in to_read for chunk in plan_chunks(source.path, source.split, READ_CHUNK_BYTES)
    ]
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
            raw = json.dumps(
                {
                    key: value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else int(value)
                    for key, value in row.items()
                },
                ensure_ascii=False,
            )
            yield TaggedOutput(
                "bad", quarantine_record(source, source_split, index, error, raw.encode("utf-8"))
            )


def _check_download_host(builder) -> None:
    """Fails in a second when the dataset's download host cannot be reached; TFDS itself retries an
    unreachable host for minutes (measured here: 204 s) before it gives up."""
    url = getattr(sys.modules.get(type(builder).__module__), "_DOWNLOAD_URL", None)
    host = urllib.parse.urlparse(url).hostname if isinstance(url, str) else None
    if host:
        socket.create_connection((host, 443), timeout=DOWNLOAD_PROBE_SECONDS).close()


def prepare_tfds(config: IngestConfig) -> None:
    try:
        import tensorflow_datasets as tfds
        builder = tfds.builder(config.tfds_name, data_dir=config.tfds_data_dir or None)
        # prepared files need no download machinery at all
        if not builder.is_prepared():
            _check_download_host(builder)
            builder.download_and_prepare()
    # TFDS raises many types here (network, missing modules, unknown name)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ComponentError(
            f"TFDS could not load {config.tfds_name} (no network? {type(error).__name__}: {reason}): "
            "point the "
            "pipeline at the original CSV files with --data csv:PATH (PATH holds train.csv and test.csv)"
        ) from None


def read_tfds(pipeline: beam.Pipeline, config: IngestConfig):
    import apache_beam as beam
    parsed = (pipeline
              | "SourceSplits" >> beam.Create(list(SOURCE_SPLITS))
              | "ReadTfds" >> beam.FlatMap(read_tfds_split, config.tfds_name, config.tfds_data_dir)
              .with_outputs("bad", main="good"))
    good = parsed.good | "TfdsSources" >> beam.Map(lambda row: (SOURCE_SPLITS.index(row.source_split), row))
    bad = parsed.bad | "TfdsBadSources" >> beam.Map(
        lambda record: {**record, "source_index": SOURCE_SPLITS.index(record["source_split"])})
    return good, bad
