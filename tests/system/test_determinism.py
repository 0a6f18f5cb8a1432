"""Byte-reproducible outputs: the same input gives the same files (names and bytes) in every run, runner mode,
process and folder, so the runner's content fingerprints match and steps after a re-run one stay cached."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
from support.hooks import after_import_hook

from components.ingest import executor as ingest
from components.ingest import reading as ingest_reading
from components.transform import executor as transform
from contract import config as config_module
from contract.artifacts import Runtime, fingerprint
from library import ag_news_csv, tfrecord_io
from library.beam_options import pipeline_options

IN_MEMORY = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
# The configuration of conftest's transformed_sample.
SAMPLE_TRANSFORM = config_module.TransformConfig(
    vocab_size=5000, max_length=64, bucket_boundaries=(8, 16, 32, 64)
)


def files_and_digests(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def read_records(path: Path) -> list[bytes]:
    return [record.numpy() for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


# ---------------------------------------------------------------------------------------------- the writer


def write(folder: Path, folders_and_records: list[tuple[str, bytes]], beam_args=IN_MEMORY, **options) -> None:
    with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
        _ = (pipeline
             | beam.Create(folders_and_records)
             | tfrecord_io.WriteDeterministicTFRecords(str(folder), **options))


def test_writer_output_depends_only_on_the_records(tmp_path):
    records = [("a", f"record {i} ".encode() * (i % 5 + 1)) for i in range(25)] + [("a", b"record 3 " * 4)]
    records += [("c", b"one record")]
    write(tmp_path / "first", records, folders=("a", "b"), rows_per_shard=10)
    write(tmp_path / "second", list(reversed(records)), folders=("a", "b"), rows_per_shard=10)

    first = files_and_digests(tmp_path / "first")
    assert first == files_and_digests(tmp_path / "second")  # input order does not matter
    assert sorted(first) == ["a/part-00000-of-00003.tfrecord.gz", "a/part-00001-of-00003.tfrecord.gz",
                             "a/part-00002-of-00003.tfrecord.gz",  # ceil(26 / 10) shards
                             "b/part-00000-of-00001.tfrecord.gz",  # asked for, no records: one empty shard
                             "c/part-00000-of-00001.tfrecord.gz"]  # not asked for, but has a record
    written = []
    for shard in range(3):
        shard_records = read_records(tmp_path / "first" / "a" / f"part-{shard:05d}-of-00003.tfrecord.gz")
        keys = [(hashlib.sha256(r).hexdigest(), r) for r in shard_records]
        assert keys == sorted(keys)  # a fixed pseudo-random order: by SHA-256
        assert all(int(digest, 16) % 3 == shard for digest, _ in keys)
        written += shard_records
    # duplicates kept
    assert Counter(written) == Counter(record for folder, record in records if folder == "a")
    assert read_records(tmp_path / "first" / "b" / "part-00000-of-00001.tfrecord.gz") == []
    assert read_records(tmp_path / "first" / "c" / "part-00000-of-00001.tfrecord.gz") == [b"one record"]
    header = (tmp_path / "first" / "b" / "part-00000-of-00001.tfrecord.gz").read_bytes()[:10]
    assert header[:4] == b"\x1f\x8b\x08\x00" and header[4:8] == b"\0\0\0\0"  # gzip: no file name, no mtime


def test_writer_holds_at_most_run_rows_records_and_merges_its_runs_into_the_same_files(tmp_path, monkeypatch):
    records = [("a", f"record {i} ".encode() * (i % 7 + 1)) for i in range(40)] + [("b", b"x"), ("b", b"y")]
    write(tmp_path / "one_run", records, folders=("a", "b", "empty"), rows_per_shard=10)
    runs = []
    real_write_run = tfrecord_io._write_run

    def spy(path, items):
        runs.append(len(items))
        real_write_run(path, items)

    monkeypatch.setattr(tfrecord_io, "RUN_ROWS", 4)
    monkeypatch.setattr(tfrecord_io, "_write_run", spy)  # the in_memory runner runs the DoFns in this process
    write(tmp_path / "many_runs", records, folders=("a", "b", "empty"), rows_per_shard=10)
    assert sum(runs) == len(records) and len(runs) >= len(records) // 4 and max(runs) <= 4
    assert files_and_digests(tmp_path / "many_runs") == files_and_digests(tmp_path / "one_run")
    # runs removed
    assert sorted(path.name for path in (tmp_path / "many_runs").iterdir()) == ["a", "b", "empty"]


def test_writer_rejects_a_nonpositive_shard_size():
    with pytest.raises(ValueError, match="rows_per_shard"):
        tfrecord_io.WriteDeterministicTFRecords("/tmp/unused", rows_per_shard=0)


def test_serialized_example_bytes_do_not_depend_on_the_process():
    # protobuf orders tf.train.Example's feature map differently in every process unless asked not to; this
    # pins ingest's serialization to the canonical (sorted-key) form.
    row = ag_news_csv.GoodRow("train", 2, "a title", "a description")
    serialized = ingest.to_tf_example(row)
    assert serialized == tf.train.Example.FromString(serialized).SerializeToString(deterministic=True)
    assert serialized.index(b"description") < serialized.index(b"label") < serialized.index(b"title")


# ---------------------------------------------------------------------------------------------- ingest


# Wraps ingest's CSV row parser (called inside the Parse DoFn) so that every process that parses a row leaves
# an empty file named by its process id in $PARSING_PIDS_DIR: which processes did the work, seen from inside
# Beam.
RECORD_PARSING_PID = """
import os
parse = module.parse_csv_row
def parse_csv_row(*args, **kwargs):
    open(os.path.join(os.environ["PARSING_PIDS_DIR"], str(os.getpid())), "a").close()
    return parse(*args, **kwargs)
module.parse_csv_row = parse_csv_row
"""


def parsing_pids(monkeypatch, tmp_path):
    """Records the pids of the processes that parse CSV rows: this one (in_memory) through monkeypatch, Beam's
    worker processes (multi_processing) through a sitecustomize hook they import at start. Returns a function
    that takes a folder name and points the recording at tmp_path/<name>, returning that folder."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hook = after_import_hook("components.ingest.reading", RECORD_PARSING_PID)
    (hooks / "sitecustomize.py").write_text(hook)
    monkeypatch.setenv("PYTHONPATH",
                       os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    parse = ingest_reading.parse_csv_row

    def recording_parse(*args, **kwargs):
        open(os.path.join(os.environ["PARSING_PIDS_DIR"], str(os.getpid())), "a").close()
        return parse(*args, **kwargs)
    monkeypatch.setattr(ingest_reading, "parse_csv_row", recording_parse)

    def record_into(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setenv("PARSING_PIDS_DIR", str(folder))
        return folder
    return record_into


def test_ingest_twice_in_either_runner_mode_gives_identical_examples(sample_dir, tmp_path, monkeypatch):
    # Small shards, so that several worker processes each write some of a split's files.
    monkeypatch.setattr(tfrecord_io, "DEFAULT_ROWS_PER_SHARD", 250)
    record_into = parsing_pids(monkeypatch, tmp_path)
    config = config_module.IngestConfig(data=f"csv:{sample_dir}")
    in_memory_pids = record_into("in_memory_pids")
    in_memory = ingest.run(
        {}, tmp_path / "in_memory", config, Runtime(beam_args=IN_MEMORY, log=lambda m: None)
    )
    multi_pids = record_into("multi_pids")
    multi = ingest.run(
        {}, tmp_path / "multi", config, Runtime(beam_args=MULTI_PROCESSING, log=lambda m: None)
    )

    # The requested running modes ran: in_memory parsed every row in this process, multi_processing none.
    assert {p.name for p in in_memory_pids.iterdir()} == {str(os.getpid())}
    workers = {p.name for p in multi_pids.iterdir()}
    assert workers and str(os.getpid()) not in workers, workers

    written = files_and_digests(in_memory["examples"].uri)
    assert written == files_and_digests(multi["examples"].uri)
    assert fingerprint(in_memory["examples"].uri) == fingerprint(multi["examples"].uri)
    train_rows = in_memory["examples"].properties["train_rows"]
    shards = -(-train_rows // 250)
    assert shards >= 4 and {name for name in written if name.startswith("train/")} == {
        f"train/part-{shard:05d}-of-{shards:05d}.tfrecord.gz" for shard in range(shards)}
    assert {"counts.json", "quarantine.jsonl", "test/part-00000-of-00002.tfrecord.gz"} <= set(written)
    # nothing temporary left
    assert not any(part.startswith(".") for name in written for part in Path(name).parts)


def test_ingest_rerun_in_the_default_mode_gives_identical_examples(
    ingested_sample, sample_dir, tmp_path, runtime
):
    again = ingest.run({}, tmp_path / "again", config_module.IngestConfig(data=f"csv:{sample_dir}"), runtime)
    assert files_and_digests(again["examples"].uri) == files_and_digests(ingested_sample.uri)
    assert fingerprint(again["examples"].uri) == fingerprint(ingested_sample.uri)


# ---------------------------------------------------------------------------------------------- transform


@pytest.fixture(scope="module")
def transformed_again(tmp_path_factory, ingested_sample, schema_artifact, transformed_sample, runtime):
    """A second transform of the same examples with the same config, in another folder, after the first run
    (so this process has traced other functions before: TensorFlow's function counter is further on)."""
    out = tmp_path_factory.mktemp("transform_again")
    return transform.run(
        {"examples": ingested_sample, "schema": schema_artifact}, out, SAMPLE_TRANSFORM, runtime
    )


def test_transform_twice_gives_identical_outputs(transformed_sample, transformed_again):
    for name in ("transform_graph", "transformed_examples"):
        first, second = transformed_sample[name].uri, transformed_again[name].uri
        assert files_and_digests(first) == files_and_digests(second), name
        assert fingerprint(first) == fingerprint(second), name


def test_transform_graph_holds_no_temporary_path_or_process_counter(transformed_sample):
    import re

    from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    saved_model_dir = Path(transformed_sample["transform_graph"].uri) / "transform_fn"
    model_bytes = (saved_model_dir / "saved_model.pb").read_bytes()
    assert (
        b".transform_tmp" not in model_bytes
        and str(saved_model_dir.parent.parent).encode() not in model_bytes
    )
    assert b"transform-assets-" in model_bytes  # the vocabulary table's shared name, from the assets' digest
    library = saved_model_pb2.SavedModel.FromString(model_bytes).meta_graphs[0].graph_def.library
    names = [function.signature.name for function in library.function]
    assert names == sorted(names)
    # TensorFlow's process-wide counter names functions and some arguments; both are renumbered 0, 1, 2 ...
    numbers = [int(re.search(r"_(\d+)$", name).group(1)) for name in names]
    numbers += [int(arg.attr["_user_specified_name"].s) for function in library.function
                for arg in function.arg_attr.values()
                if "_user_specified_name" in arg.attr and arg.attr["_user_specified_name"].s.isdigit()]
    assert sorted(numbers) == list(range(len(numbers)))
    # fingerprint.pb describes the rewritten saved_model.pb.
    stored = fingerprint_pb2.FingerprintDef.FromString((saved_model_dir / "fingerprint.pb").read_bytes())
    fresh = fingerprint_pb2.FingerprintDef.FromString(
        fingerprinting_utils.fingerprinting_pywrap.CreateFingerprintDef(str(saved_model_dir)))
    assert (stored.saved_model_checksum, stored.graph_def_program_hash, stored.saved_object_graph_hash) == (
        fresh.saved_model_checksum, fresh.graph_def_program_hash, fresh.saved_object_graph_hash)
