"""tf.data input pipelines over the transform's length-bucketed TFRecords.

Reads the transform's bucket folders of one split (found by library.layouts.bucket_files): gzipped tf.Examples
with `token_ids` (variable length int64, ids >= 1, possibly empty) and `label` (int64 0-3).

`bucketed_batches` forms every batch inside one bucket, so a batch is padded only to its own longest sequence
and sequences of similar length share a batch; batches of all buckets are then interleaved in a seeded random
order. `unbucketed_batches` is the notebook-style baseline (same examples, no bucketing) for benchmarks, and
`padding_ratio` measures what a pipeline actually pads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.artifacts import ComponentError
from contract.names import TOKEN_IDS
from library.layouts import NUM_CLASSES, bucket_files

_FEATURES = {
    TOKEN_IDS: tf.io.VarLenFeature(tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


@dataclass(frozen=True)
class Batches:
    """A batched dataset of (token_ids int64 [B, T], label int64 [B]) and what one epoch of it holds."""
    dataset: tf.data.Dataset
    num_examples: int
    num_batches: int
    # bucket upper bound -> examples used from it
    examples_per_bucket: dict[int, int]


def _count_records(files: list[str]) -> int:
    if not files:
        return 0
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(records.reduce(np.int64(0), lambda count, _: count + 1))


def _parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    return tf.sparse.to_dense(parsed[TOKEN_IDS]), parsed["label"]


def _at_least_one_step(token_ids: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    # A batch of empty texts would be [B, 0]; recurrent layers cannot run zero steps, so pad to one
    # (fully masked) step, which the model maps to its "no evidence" output.
    missing = tf.maximum(1 - tf.shape(token_ids)[1], 0)
    return tf.pad(token_ids, [[0, 0], [0, missing]]), label


def _subsample_sizes(counts: list[int], max_examples: int) -> list[int]:
    """Per-bucket sizes proportional to `counts`, summing to min(max_examples, total) exactly."""
    total = sum(counts)
    if not max_examples or max_examples >= total:
        return list(counts)
    shares = [max_examples * c / total for c in counts]
    sizes = [math.floor(s) for s in shares]
    # Hand the remaining examples to the buckets with the largest fractional parts (largest remainder).
    for index in sorted(range(len(counts)), key=lambda i: sizes[i] - shares[i])[:max_examples - sum(sizes)]:
        sizes[index] += 1
    return sizes


def _examples(files: list[str], count: int, keep: int, seed: int) -> tf.data.Dataset:
    """Parsed examples of some files, optionally a seeded random subset of `keep` of the `count`, cached in
    memory after their first pass. The subset is a seeded choice of record positions kept in one reading pass,
    in file
    order: no shuffle buffer the size of the files (at 1.2M rows that buffer held a whole bucket)."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if keep < count:
        chosen = np.zeros(count, dtype=bool)
        chosen[np.random.default_rng(seed).choice(count, keep, replace=False)] = True
        chosen = tf.constant(chosen)
        dataset = (
            dataset.enumerate().filter(lambda position, _: chosen[position]).map(lambda _, record: record)
        )
    return dataset.map(_parse, num_parallel_calls=tf.data.AUTOTUNE).cache()


@dataclass(frozen=True)
class BucketExamples:
    """The parsed examples of one split per length bucket, each cached in memory after its first pass: built
    once, batched any number of times (the tuner's trials share one, so only the first trial reads the
    files)."""
    # bucket upper bound -> its examples (buckets with some examples only)
    datasets: dict[int, tf.data.Dataset]
    # bucket upper bound -> examples used from it (every bucket)
    sizes: dict[int, int]
    # bucket upper bound -> the seed its subsample and shuffles use
    seeds: dict[int, int]
    # examples the split holds
    available: int

    @property
    def num_examples(self) -> int:
        return sum(self.sizes.values())


def bucket_examples(
    examples_dir: Path, split: str, *, max_examples: int = 0, seed: int = 0
) -> BucketExamples:
    """One split's examples per bucket; max_examples > 0 keeps a seeded random subset of that many examples
    with the split's length distribution."""
    files = bucket_files(examples_dir, split)
    uppers = list(files)
    counts = [_count_records(files[upper]) for upper in uppers]
    sizes = _subsample_sizes(counts, max_examples)
    if sum(sizes) == 0:
        raise ComponentError(f"the {split!r} split of {examples_dir} holds no examples")
    seeds = {upper: seed + index for index, upper in enumerate(uppers)}
    datasets = {upper: _examples(files[upper], count, size, seeds[upper])
                for upper, count, size in zip(uppers, counts, sizes) if size}
    return BucketExamples(datasets, dict(zip(uppers, sizes)), seeds, sum(counts))


def bucketed_batches(examples_dir: Path, split: str, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                     max_examples: int = 0, shuffle_buffer: int = 10_000,
                     examples: BucketExamples | None = None) -> Batches:
    """One epoch of batches, each batch from a single length bucket, padded to its own longest sequence.

    shuffle: examples are shuffled within each bucket (buffer `shuffle_buffer`) and the batches of all buckets
    are interleaved in a random order, both seeded by `seed` and reshuffled every epoch. Without shuffle the
    order is fixed: bucket after bucket, file order. max_examples > 0 keeps a seeded random subset of that
    many examples with the split's length distribution (for tuning). `examples` (from bucket_examples, built
    with the same max_examples and seed) reuses examples already built instead of reading the files again. The
    dataset does not repeat.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    examples = examples or bucket_examples(examples_dir, split, max_examples=max_examples, seed=seed)
    per_bucket, choices = [], []
    for upper, bucket in examples.datasets.items():
        size = examples.sizes[upper]
        if shuffle:
            bucket = bucket.shuffle(min(size, max(shuffle_buffer, 1)), seed=examples.seeds[upper],
                                    reshuffle_each_iteration=True)
        batches = bucket.padded_batch(batch_size, padded_shapes=([None], []))
        choices += [len(per_bucket)] * math.ceil(size / batch_size)
        per_bucket.append(batches.map(_at_least_one_step))

    # Which bucket each batch of the epoch comes from: exactly ceil(size / batch_size) picks per bucket, so
    # every example is seen once per epoch; shuffling the picks interleaves buckets in a seeded random order.
    order = tf.data.Dataset.from_tensor_slices(tf.constant(choices, tf.int64))
    if shuffle:
        order = order.shuffle(len(choices), seed=seed, reshuffle_each_iteration=True)
    dataset = tf.data.Dataset.choose_from_datasets(per_bucket, order)
    # A known length lets Keras show progress and size epochs; it also fails loudly if the counts were wrong.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(choices))).prefetch(tf.data.AUTOTUNE)
    return Batches(dataset=dataset, num_examples=examples.num_examples, num_batches=len(choices),
                   examples_per_bucket=dict(examples.sizes))


def unbucketed_batches(examples_dir: Path, split: str, batch_size: int, *, pad_to: str = "batch",
                       max_length: int | None = None, shuffle: bool = True, seed: int = 0,
                       max_examples: int = 0) -> Batches:
    """The notebook-style baseline over the same examples: no bucketing, the whole split shuffled together.

    pad_to="batch" pads each batch to its longest sequence; pad_to="max_length" pads every batch to
    `max_length` (the notebook's fixed-length tensors).
    """
    if pad_to not in ("batch", "max_length"):
        raise ValueError(f"pad_to must be 'batch' or 'max_length', got {pad_to!r}")
    if pad_to == "max_length" and not max_length:
        raise ValueError("pad_to='max_length' needs max_length")
    files = bucket_files(examples_dir, split)
    all_files = [f for bucket in files.values() for f in bucket]
    count = _count_records(all_files)
    keep = min(max_examples, count) if max_examples else count
    if keep == 0:
        raise ComponentError(f"the {split!r} split of {examples_dir} holds no examples")
    examples = _examples(all_files, count, keep, seed)
    if shuffle:
        examples = examples.shuffle(keep, seed=seed, reshuffle_each_iteration=True)
    width = None if pad_to == "batch" else int(max_length)
    num_batches = math.ceil(keep / batch_size)
    dataset = (examples.padded_batch(batch_size, padded_shapes=([width], [])).map(_at_least_one_step)
               .apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(tf.data.AUTOTUNE))
    return Batches(dataset=dataset, num_examples=keep, num_batches=num_batches, examples_per_bucket={})


def padding_ratio(dataset: tf.data.Dataset) -> dict[str, float]:
    """Iterates one epoch and counts what it pads: padded tokens / real tokens (ids >= 1 are real)."""
    real = padded = examples = batches = 0
    for token_ids, _ in dataset:
        real_here = int(tf.math.count_nonzero(token_ids))
        real += real_here
        padded += int(tf.size(token_ids)) - real_here
        examples += int(tf.shape(token_ids)[0])
        batches += 1
    return {"padding_ratio": padded / real if real else float("inf"), "real_tokens": real,
            "padded_tokens": padded, "examples": examples, "batches": batches}


def token_id_counts(examples_dir: Path, split: str, size: int) -> np.ndarray:
    """How often each token id (0 .. size - 1) occurs in one split, over every bucket (no padding counted)."""
    files = [f for bucket in bucket_files(examples_dir, split).values() for f in bucket]
    counts = np.zeros(size, dtype=np.int64)
    if not files:
        return counts
    ids = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda serialized: tf.io.parse_single_example(serialized, _FEATURES)[TOKEN_IDS].values)
    for batch in ids.unbatch().batch(1 << 16).as_numpy_iterator():
        counts += np.bincount(batch, minlength=size)[:size]
    return counts


def predicted_class_counts(model, examples_dir: Path, split: str, batch_size: int) -> dict[str, int]:
    """{class id: rows} of a Keras model's predicted classes on a split of transformed examples (the trainer's
    eval split: rows training never fitted on)."""
    evaluation = bucketed_batches(examples_dir, split, batch_size, shuffle=False)
    classes = np.argmax(model.predict(evaluation.dataset, verbose=0), axis=-1)
    return {str(label): int(count) for label, count in enumerate(np.bincount(classes, minlength=NUM_CLASSES))}
