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

Records are not shuffled: each bundle sorts its records of each shard into a *run* file (at most
RUN_ROWS records held at a time) under a hidden folder beside the output, and the shuffle moves only the runs'
names. Each shard's writer merges its runs (already in shard order) into the shard file and deletes them; the
folder of runs is removed once every shard is written. So no worker holds a shard's records in memory and a
shuffle moves a few hundred names instead of every record (1,140,302 on dask at 1.2M rows), and the files are
the same as a shuffle of the records would give.

Every shard file is written, even an empty one (so a split with no records can still have one, empty, file),
by whichever worker process holds the shard's runs, to a temporary name beside it that is then renamed into
place. Nothing relies on in-process state, so any runner and DirectRunner mode gives the same bytes.

The records themselves must be deterministic: serialize protos with `SerializeToString(deterministic=True)`
(protobuf's default map order - tf.train.Example's feature map - changes from process to process).
"""
from __future__ import annotations

import collections
import hashlib
import heapq
import math
import os
import struct
import uuid
from typing import Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from contract.files import replaced_atomically
from library.layouts import shard_file_name

# Records per shard file. A shard is sorted in memory by one worker: 100,000 AG News examples are ~30 MB.
DEFAULT_ROWS_PER_SHARD = 100_000
# Records a bundle holds before it writes them out as sorted runs: its memory bound (~40 MB of AG News
# examples).
RUN_ROWS = 100_000
# a run's entry: record length, SHA-256 (raw), then the record
_RUN_HEADER = struct.Struct(">I32s")


def shard_count(num_records: int, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> int:
    return max(1, math.ceil(num_records / rows_per_shard))


def write_tfrecord_file(path: str, records: Iterable[bytes]) -> None:
    """Writes gzip-compressed TFRecords to a temporary file beside `path`, then renames it to `path`.
    A local or mounted path: the rename is contract/files.py's (the pipeline root is local,
    docs/running.md)."""
    import tensorflow as tf  # imported where used: only the writing workers need TensorFlow

    with (
        replaced_atomically(path) as temporary,
        tf.io.TFRecordWriter(str(temporary), options="GZIP") as writer,
    ):
        for record in records:
            writer.write(record)


def _write_run(path: str, items: list[tuple[bytes, bytes]]) -> None:
    """(raw SHA-256, record) items, sorted, to an uncompressed run file (temporary name, then renamed)."""
    with replaced_atomically(path) as temporary, open(temporary, "wb") as out:
        for digest, record in items:
            out.write(_RUN_HEADER.pack(len(record), digest))
            out.write(record)


def _read_run(path: str) -> Iterator[tuple[bytes, bytes]]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as run:
        while header := run.read(_RUN_HEADER.size):
            length, digest = _RUN_HEADER.unpack(header)
            yield digest, run.read(length)


class _WriteRuns(beam.DoFn):
    """((folder, shard, num_shards), (raw SHA-256, record)) -> ((folder, shard, num_shards), run path): the
    records of each shard sorted into run files under runs_dir, written whenever RUN_ROWS records are held and
    at the end of each bundle."""

    def __init__(self, runs_dir: str, run_rows: int):
        super().__init__()
        self._runs_dir, self._run_rows = runs_dir, run_rows

    def start_bundle(self):
        self._held: dict[tuple, list] = collections.defaultdict(list)
        self._count = 0

    def process(self, element):
        key, item = element
        self._held[key].append(item)
        self._count += 1
        if self._count >= self._run_rows:
            yield from self._write_runs()

    def finish_bundle(self):
        for key_and_path in self._write_runs():
            yield GlobalWindows.windowed_value(key_and_path)

    def _write_runs(self):
        import tensorflow as tf

        tf.io.gfile.makedirs(self._runs_dir)
        held, self._held, self._count = self._held, collections.defaultdict(list), 0
        for key, items in held.items():
            items.sort()
            path = f"{self._runs_dir}/{uuid.uuid4().hex}.run"
            _write_run(path, items)
            yield key, path


class _WriteShard(beam.DoFn):
    """((folder, shard, num_shards), [run path or None, ...]) -> the written file's path. The runs are merged
    in (SHA-256, record) order, the order a sort of all the shard's records gives, and deleted."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def process(self, element):
        import tensorflow as tf

        (folder, shard, num_shards), items = element
        # None: the shard's "exists" marker
        runs = sorted(item for item in items if item is not None)
        folder_path = f"{self._output_dir}/{folder}"
        tf.io.gfile.makedirs(folder_path)
        path = f"{folder_path}/{shard_file_name(shard, num_shards)}"
        write_tfrecord_file(path, (record for _, record in heapq.merge(*(_read_run(run) for run in runs))))
        for run in runs:
            tf.io.gfile.remove(run)
        yield path


def _keyed_by_shard(folder_and_record: tuple[str, bytes], counts: dict[str, int], rows_per_shard: int):
    folder, record = folder_and_record
    # raw bytes sort like the hex digest and give the same shard
    digest = hashlib.sha256(record).digest()
    num_shards = shard_count(counts[folder], rows_per_shard)
    return (folder, int.from_bytes(digest, "big") % num_shards, num_shards), (digest, record)


def _shard_markers(_, counts: dict[str, int], folders: tuple[str, ...], rows_per_shard: int):
    for folder in sorted(set(counts) | set(folders)):
        num_shards = shard_count(counts.get(folder, 0), rows_per_shard)
        for shard in range(num_shards):
            yield (folder, shard, num_shards), None


def _remove_runs(paths: list[str], runs_dir: str) -> Iterator[str]:
    """After every shard is written: the folder of runs goes (with any run of a retried bundle left in it)."""
    import tensorflow as tf

    if tf.io.gfile.exists(runs_dir):
        tf.io.gfile.rmtree(runs_dir)
    yield from sorted(paths)


class WriteDeterministicTFRecords(beam.PTransform):
    """PCollection of (folder, serialized record) -> `output_dir/<folder>/<shard_file_name(...)>`
    files whose names and bytes depend only on each folder's set of records (see the module docstring).

    `folders` are written even if no record goes to them (as one empty shard, for readers that expect at
    least one file); any other folder exists only if it receives records. One transform writes all folders
    with a single shuffle, which costs less than one transform per folder. Returns the PCollection of the
    written files' paths. `output_dir` is a local or mounted path, as the pipeline root is.
    """

    def __init__(self, output_dir: str, folders: Iterable[str] = (), rows_per_shard: int | None = None):
        super().__init__()
        rows_per_shard = DEFAULT_ROWS_PER_SHARD if rows_per_shard is None else rows_per_shard
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        output_dir = str(output_dir).rstrip("/")
        # workers may run in other processes or places: give them an absolute path
        if "://" not in output_dir:
            output_dir = os.path.abspath(output_dir)
        self._output_dir = output_dir
        self._folders = tuple(folders)
        self._rows_per_shard = rows_per_shard
        # Hidden (never a part-* file) and this transform's own: several writers may share an output_dir.
        self._runs_dir = f"{output_dir}/.runs-{uuid.uuid4().hex}"

    def expand(self, folders_and_records):
        counts = beam.pvalue.AsDict(folders_and_records | "CountPerFolder" >> beam.combiners.Count.PerKey())
        runs = (folders_and_records
                | "KeyByShard" >> beam.Map(_keyed_by_shard, counts, self._rows_per_shard)
                | "WriteRuns" >> beam.ParDo(_WriteRuns(self._runs_dir, RUN_ROWS)))
        # One marker per shard, so that a shard no record hashed to (or the one shard of an empty folder in
        # `folders`) is still written, as an empty file.
        markers = (
            folders_and_records.pipeline
            | "Once" >> beam.Create([None])
            | "ShardMarkers" >> beam.FlatMap(_shard_markers, counts, self._folders, self._rows_per_shard)
        )
        return ((runs, markers)
                | "WithMarkers" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(_WriteShard(self._output_dir))
                | "AllShards" >> beam.combiners.ToList()
                | "RemoveRuns" >> beam.FlatMap(_remove_runs, self._runs_dir))
