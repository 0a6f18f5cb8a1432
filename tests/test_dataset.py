"""The tf.data input pipelines over the transform's length buckets (library/dataset.py).

The fixtures write transform-shaped artifacts themselves through library.layouts (gzipped TFRecords per split
and length bucket, model_input.json), so these tests do not depend on the transform component;
tests/test_models.py and tests/test_tuner_trainer.py use the same writer.
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from library import dataset, layouts
from library.layouts import NUM_CLASSES, ModelInputSpec
from contract.artifacts import Artifact, ComponentError

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


@pytest.fixture(scope="module")
def fake_transformed(tmp_path_factory):
    return write_transformed_examples(tmp_path_factory.mktemp("fake_transform"),
                                      {"train": 400, "eval": 80, "test": 80})


def _epoch(batches: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(ids.numpy(), labels.numpy()) for ids, labels in batches]


def _rows(epoch) -> collections.Counter:
    """Every example of an epoch as (token ids without padding, label)."""
    return collections.Counter((tuple(int(t) for t in row if t != 0), int(label))
                               for ids, labels in epoch for row, label in zip(ids, labels))


def _bucket_of(length: int) -> int:
    return next(i for i, upper in enumerate(UPPER_BOUNDS) if length <= upper)


def test_each_batch_holds_one_bucket_and_is_padded_to_its_longest(fake_transformed):
    _, examples, _ = fake_transformed
    batches = dataset.bucketed_batches(examples.uri, "train", 16, seed=3)
    epoch = _epoch(batches.dataset)
    assert len(epoch) == batches.num_batches
    buckets_seen = []
    for ids, labels in epoch:
        lengths = np.count_nonzero(ids, axis=1)
        assert ids.dtype == np.int64 and ids.shape[0] == labels.shape[0]
        assert len({_bucket_of(int(n)) for n in lengths}) == 1, f"batch mixes buckets: lengths {sorted(lengths)}"
        assert ids.shape[1] == max(int(lengths.max()), 1)  # padded to its own longest (at least one step)
        buckets_seen.append(_bucket_of(int(lengths.max())))
    # Buckets are interleaved, not served one after another.
    changes = sum(a != b for a, b in zip(buckets_seen, buckets_seen[1:]))
    assert changes > len(set(buckets_seen)) - 1


def test_every_example_appears_exactly_once_per_epoch(fake_transformed):
    _, examples, written = fake_transformed
    expected = collections.Counter(written["train"])
    batches = dataset.bucketed_batches(examples.uri, "train", 32, seed=5)
    assert batches.num_examples == sum(expected.values())
    assert sum(batches.examples_per_bucket.values()) == batches.num_examples
    first, second = _epoch(batches.dataset), _epoch(batches.dataset)
    assert _rows(first) == expected
    assert _rows(second) == expected
    unshuffled = dataset.bucketed_batches(examples.uri, "eval", 32, shuffle=False)
    assert _rows(_epoch(unshuffled.dataset)) == collections.Counter(written["eval"])


def test_shuffling_is_seeded_and_reshuffles_each_epoch(fake_transformed):
    _, examples, _ = fake_transformed

    def order(batches_epoch):
        return [tuple(map(tuple, ids)) for ids, _ in batches_epoch]

    seeded = dataset.bucketed_batches(examples.uri, "train", 16, seed=11).dataset
    same_seed = dataset.bucketed_batches(examples.uri, "train", 16, seed=11).dataset
    other_seed = dataset.bucketed_batches(examples.uri, "train", 16, seed=12).dataset
    first_epoch = order(_epoch(seeded))
    assert first_epoch == order(_epoch(same_seed))
    assert first_epoch != order(_epoch(other_seed))
    second_epoch = order(_epoch(seeded))
    assert second_epoch == order(_epoch(same_seed)) and second_epoch != first_epoch
    fixed = dataset.bucketed_batches(examples.uri, "eval", 16, shuffle=False).dataset
    assert order(_epoch(fixed)) == order(_epoch(fixed))


def test_subsample_keeps_the_length_distribution_and_is_seeded(fake_transformed):
    _, examples, written = fake_transformed
    full = dataset.bucketed_batches(examples.uri, "train", 16, shuffle=False)
    sample = dataset.bucketed_batches(examples.uri, "train", 16, seed=1, max_examples=100)
    assert sample.num_examples == 100
    rows = _rows(_epoch(sample.dataset))
    assert sum(rows.values()) == 100
    assert not rows - collections.Counter(written["train"])  # a subset of the split
    for upper, count in full.examples_per_bucket.items():
        assert abs(sample.examples_per_bucket[upper] - count * 100 / full.num_examples) < 1
    again = dataset.bucketed_batches(examples.uri, "train", 16, seed=1, max_examples=100)
    assert _rows(_epoch(again.dataset)) == rows


def test_bucketing_pads_less_than_the_unbucketed_baseline(fake_transformed):
    _, examples, written = fake_transformed
    real_tokens = sum(len(ids) for ids, _ in written["train"])
    bucketed = dataset.padding_ratio(dataset.bucketed_batches(examples.uri, "train", 32, seed=0).dataset)
    per_batch = dataset.unbucketed_batches(examples.uri, "train", 32, seed=0)
    fixed = dataset.unbucketed_batches(examples.uri, "train", 32, seed=0, pad_to="max_length", max_length=64)
    per_batch_ratio = dataset.padding_ratio(per_batch.dataset)
    fixed_ratio = dataset.padding_ratio(fixed.dataset)
    assert bucketed["real_tokens"] == per_batch_ratio["real_tokens"] == fixed_ratio["real_tokens"] == real_tokens
    assert bucketed["examples"] == per_batch_ratio["examples"] == len(written["train"])
    assert _rows(_epoch(per_batch.dataset)) == collections.Counter(written["train"])
    assert bucketed["padding_ratio"] < per_batch_ratio["padding_ratio"] <= fixed_ratio["padding_ratio"]
    assert bucketed["padding_ratio"] < 0.5 * per_batch_ratio["padding_ratio"]


def test_a_batch_of_empty_texts_is_one_masked_step(tmp_path):
    _, examples, _ = write_transformed_examples(tmp_path, {"train": 6}, empty_rows=6, files_per_bucket=1)
    (ids, labels), = _epoch(dataset.bucketed_batches(examples.uri, "train", 8).dataset)
    assert ids.shape == (6, 1) and not ids.any()
    assert labels.shape == (6,)


def test_a_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(ComponentError, match="no 'test' split"):
        dataset.bucketed_batches(tmp_path, "test", 8)
