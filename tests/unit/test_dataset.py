"""The tf.data input pipelines over the transform's length buckets (library/dataset.py).

The fixtures write transform-shaped artifacts themselves (tests/support/datasets.py), so these tests do not
depend on the transform component; tests/unit/test_models.py and tests/system/test_tuner_trainer.py use the
same writer.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
from support.datasets import UPPER_BOUNDS, write_transformed_examples

from contract.artifacts import ComponentError
from library import dataset


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
        assert len({_bucket_of(int(n)) for n in lengths}) == 1, (
            f"batch mixes buckets: lengths {sorted(lengths)}"
        )
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
    assert (
        bucketed["real_tokens"] == per_batch_ratio["real_tokens"] == fixed_ratio["real_tokens"] == real_tokens
    )
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
