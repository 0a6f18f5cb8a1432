"""Transform-shaped artifacts written directly through library.layouts (gzipped TFRecords per split and length
bucket, model_input.json), so the dataset, model and trainer tests do not depend on the transform
component."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.artifacts import Artifact
from library import layouts
from library.layouts import NUM_CLASSES, ModelInputSpec

UPPER_BOUNDS = (8, 16, 32, 64)
VOCAB_IDS = 60  # ids 1..59 are tokens, 0 is padding


def model_input_spec(embedding_input_dim: int = VOCAB_IDS) -> ModelInputSpec:
    return ModelInputSpec(embedding_input_dim=embedding_input_dim, vocab_size=embedding_input_dim - 2,
                          num_oov_buckets=1, max_length=UPPER_BOUNDS[-1], num_classes=NUM_CLASSES,
                          text_features="title_description", bucket_upper_bounds=UPPER_BOUNDS, padding_id=0,
                          vocab_filename="vocab_tokens")


def _example(token_ids, label: int) -> bytes:
    feature = {
        "token_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=list(token_ids))),
        "length": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(token_ids)])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_transformed_examples(root: Path, rows: dict[str, int], seed: int = 0, empty_rows: int = 3,
                               files_per_bucket: int = 2):
    """Writes transform-shaped outputs under `root`: transform_graph/model_input.json and
    transformed_examples/<split>/bucket_<upper>/part-*.tfrecord.gz with AG-News-like lengths (a long-tailed
    spread around 30 tokens, capped at the last bound, plus a few empty texts).

    The label is the token majority class (token id % 4) so a model can learn something.
    Returns (transform_graph, transformed_examples, {split: [(token_ids tuple, label), ...]}).
    """
    rng = np.random.default_rng(seed)
    graph_dir, examples_dir = root / "transform_graph", root / "transformed_examples"
    graph_dir.mkdir(parents=True)
    written: dict[str, list[tuple[tuple[int, ...], int]]] = {}
    bucket_counts = {}
    for split, count in rows.items():
        lengths = np.minimum(rng.lognormal(3.3, 0.6, count).astype(int), UPPER_BOUNDS[-1])
        lengths[:empty_rows] = 0
        examples = []
        for length in lengths:
            label = int(rng.integers(0, NUM_CLASSES))
            # Tokens mostly from the label's residue class: learnable, but not trivially so.
            ids = rng.integers(1, VOCAB_IDS, length)
            pick = rng.random(length) < 0.6
            ids[pick] = (ids[pick] // NUM_CLASSES) * NUM_CLASSES + label
            ids = np.clip(ids, 1, VOCAB_IDS - 1)
            examples.append((tuple(int(i) for i in ids), label))
        written[split] = examples
        lower = -1
        bucket_counts[split] = {}
        for upper in UPPER_BOUNDS:
            members = [e for e in examples if lower < len(e[0]) <= upper]
            lower = upper
            bucket_dir = layouts.split_dir(examples_dir, split) / layouts.bucket_dir_name(upper)
            bucket_dir.mkdir(parents=True)
            for shard in range(files_per_bucket):
                path = bucket_dir / layouts.shard_file_name(shard, files_per_bucket)
                with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
                    for ids, label in members[shard::files_per_bucket]:
                        writer.write(_example(ids, label))
            bucket_counts[split][layouts.bucket_dir_name(upper)] = len(members)
    layouts.write_model_input(graph_dir, model_input_spec())
    layouts.write_buckets(examples_dir, bucket_counts)
    return (Artifact("transform_graph", graph_dir, {}), Artifact("transformed_examples", examples_dir, {}),
            written)


def shift_eval_labels(examples_dir: Path) -> None:
    """Rewrites the eval split with every label moved to the next class: the train split contradicts it, so a
    model scores worse on eval the better it learned train."""
    for path in sorted(p for p in layouts.split_dir(examples_dir, "eval").rglob("*") if p.is_file()):
        examples = [tf.train.Example.FromString(record.numpy())
                    for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for example in examples:
                label = example.features.feature["label"].int64_list.value
                label[0] = (label[0] + 1) % NUM_CLASSES
                writer.write(example.SerializeToString())
