"""Deterministic TFRecord output: the same set of records always gives the same files, byte for byte.

Beam's WriteToTFRecord names and fills shards after how the runner happened to bundle the data, so two runs
over the same input give different files (and different artifact fingerprints, so nothing downstream of a
re-run step is ever cached). WriteDeterministicTFRecords makes every choice a pure function of the records
of each output folder:

  * the number of shards follows from the number of records: max(1, ceil(count / rows_per_shard));
  * a record's shard follows from its SHA-256: int(sha256, 16) % num_shards;
  * inside a shard, records are ordered by (SHA-256, record): a fixed pseudo-random order, which also
    spreads each class and length over the whole file;
  * files are named by library.layouts.shard_file_name (part-SSSSS-of-NNNNN.tfrecord.gz), gzip-compressed by
    TensorFlow's writer, whose gzip header holds no time stamp or file name (the bytes can change with
    TensorFlow's zlib, not from run to run).

Every shard file is written, even an empty one (so a split with no records can still have one, empty, file),
by whichever worker process holds the shard's records, to a temporary name beside it that is then renamed into
place. Nothing relies on in-process state, so any runner and DirectRunner mode gives the same bytes.

The records themselves must be deterministic: serialize protos with `SerializeToString(deterministic=True)`
(protobuf's default map order - tf.train.Example's feature map - changes from process to process).
"""
from __future__ import annotations

import hashlib
import math
import os
import uuid
from typing import Iterable

import apache_beam as beam

from library.layouts import shard_file_name
# Records per shard file. A shard is sorted in memory by one worker: 100,000 AG News examples are ~30 MB.
DEFAULT_ROWS_PER_SHARD = 100_000


def shard_count(num_records: int, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> int:
    return max(1, math.ceil(num_records / rows_per_shard))


def record_digest(record: bytes) -> str:
    return hashlib.sha256(record).hexdigest()


def shard_of(digest: str, num_shards: int) -> int:
    return int(digest, 16) % num_shards


def write_tfrecord_file(path: str, records: Iterable[bytes]) -> None:
    """Writes gzip-compressed TFRecords to a temporary file beside `path`, then renames it to `path`.
    Works for any file system TensorFlow knows (local, gs://, ...)."""
    import tensorflow as tf  # imported where used: only the writing workers need TensorFlow

    folder, name = path.rsplit("/", 1)
    temporary = f"{folder}/.{name}.tmp-{uuid.uuid4().hex}"  # hidden, not part-*: never globbed by a reader
    try:
        with tf.io.TFRecordWriter(temporary, options="GZIP") as writer:
            for record in records:
                writer.write(record)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise


class _WriteShard(beam.DoFn):
    """((folder, shard, num_shards), [(digest, record) or None, ...]) -> the written file's path."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def process(self, element):
        import tensorflow as tf

        (folder, shard, num_shards), items = element
        records = sorted(item for item in items if item is not None)  # None: the shard's "exists" marker
        folder_path = f"{self._output_dir}/{folder}"
        tf.io.gfile.makedirs(folder_path)
        path = f"{folder_path}/{shard_file_name(shard, num_shards)}"
        write_tfrecord_file(path, (record for _, record in records))
        yield path


def _keyed_by_shard(folder_and_record: tuple[str, bytes], counts: dict[str, int], rows_per_shard: int):
    folder, record = folder_and_record
    digest = record_digest(record)
    num_shards = shard_count(counts[folder], rows_per_shard)
    return (folder, shard_of(digest, num_shards), num_shards), (digest, record)


def _shard_markers(_, counts: dict[str, int], folders: tuple[str, ...], rows_per_shard: int):
    for folder in sorted(set(counts) | set(folders)):
        num_shards = shard_count(counts.get(folder, 0), rows_per_shard)
        for shard in range(num_shards):
            yield (folder, shard, num_shards), None


class WriteDeterministicTFRecords(beam.PTransform):
    """PCollection of (folder, serialized record) -> `output_dir/<folder>/<shard_file_name(...)>`
    files whose names and bytes depend only on each folder's set of records (see the module docstring).

    `folders` are written even if no record goes to them (as one empty shard, for readers that expect at
    least one file); any other folder exists only if it receives records. One transform writes all folders
    with a single shuffle, which costs less than one transform per folder. Returns the PCollection of the
    written files' paths. `output_dir` is a local path or any URL TensorFlow's file system can write to.
    """

    def __init__(self, output_dir: str, folders: Iterable[str] = (), rows_per_shard: int | None = None):
        super().__init__()
        rows_per_shard = DEFAULT_ROWS_PER_SHARD if rows_per_shard is None else rows_per_shard
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        output_dir = str(output_dir).rstrip("/")
        if "://" not in output_dir:  # workers may run in other processes or places: give them an absolute path
            output_dir = os.path.abspath(output_dir)
        self._output_dir = output_dir
        self._folders = tuple(folders)
        self._rows_per_shard = rows_per_shard

    def expand(self, folders_and_records):
        counts = beam.pvalue.AsDict(folders_and_records | "CountPerFolder" >> beam.combiners.Count.PerKey())
        keyed = folders_and_records | "KeyByShard" >> beam.Map(_keyed_by_shard, counts, self._rows_per_shard)
        # One marker per shard, so that a shard no record hashed to (or the one shard of an empty folder in
        # `folders`) is still written, as an empty file.
        markers = (folders_and_records.pipeline
                   | "Once" >> beam.Create([None])
                   | "ShardMarkers" >> beam.FlatMap(_shard_markers, counts, self._folders, self._rows_per_shard))
        return ((keyed, markers)
                | "WithMarkers" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(_WriteShard(self._output_dir)))
