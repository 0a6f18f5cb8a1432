"""Model builders (library/models.py) and the bucketed input pipeline (library/dataset.py).

The fixtures write transform-shaped artifacts themselves (gzipped TFRecords per split and length bucket,
model_input.json), so these tests do not depend on the transform component.
"""
from __future__ import annotations

import collections
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from library import dataset, layouts, models
from library.layouts import NUM_CLASSES, ModelInputSpec
from pipeline.artifacts import Artifact

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


MODEL_INPUT = model_input_spec()
TINY = {"embedding_dim": 8, "units": 6}


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("architecture", models.architecture_names())
def test_each_architecture_predicts_probabilities_independent_of_padding(architecture):
    keras.utils.set_random_seed(0)
    overrides = {**TINY, "num_layers": 2}
    if "bidirectional" in models.hyperparameter_names(architecture):
        overrides["bidirectional"] = True  # the backward direction is where right padding could leak in
    model = models.build_model(architecture, models.fixed_hyperparameters(overrides), MODEL_INPUT)
    token_ids = np.array([[5, 9, 13, 2, 0, 0], [7, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]], dtype=np.int64)
    probabilities = model(token_ids, training=False).numpy()
    assert probabilities.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(probabilities[0], probabilities[1]), "different texts should get different outputs"

    more_padding = np.pad(token_ids, [[0, 0], [0, 17]])
    np.testing.assert_allclose(model(more_padding, training=False).numpy(), probabilities, rtol=0, atol=1e-6)
    # Each row alone, trimmed to its own length, is what a perfectly bucketed batch would hold.
    for row, expected in zip(token_ids, probabilities):
        alone = row[:max(int(np.count_nonzero(row)), 1)][None, :]
        np.testing.assert_allclose(model(alone, training=False).numpy()[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("architecture", ["rnn", "bilstm"])
def test_all_empty_batch_padded_to_one_step_predicts(architecture):
    keras.utils.set_random_seed(0)
    model = models.build_model(architecture, models.fixed_hyperparameters(TINY), MODEL_INPUT)
    probabilities = model.predict(np.zeros((4, 1), dtype=np.int64), verbose=0)
    assert probabilities.shape == (4, NUM_CLASSES)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_empty_hyperparameters_build_the_architecture_defaults():
    import keras_tuner
    built = {}
    for architecture in models.architecture_names():
        hp = keras_tuner.HyperParameters()
        built[architecture] = models.build_model(architecture, hp, model_input_spec(embedding_input_dim=100))
        assert hp.values == models.default_hyperparameters(architecture)
        assert built[architecture].get_layer("embedding").output_dim == hp.values["embedding_dim"]
    # The notebook's model: embedding 128, two bidirectional LSTM(64) layers, softmax over 4 classes.
    bilstm = models.default_hyperparameters("bilstm")
    assert (bilstm["embedding_dim"], bilstm["units"], bilstm["num_layers"]) == (128, 64, 2)
    assert built["bilstm"].get_layer("bidirectional_1").forward_layer.units == 64
    assert built["bilstm"].get_layer("probabilities").activation.__name__ == "softmax"


def test_fixed_values_win_over_defaults_and_the_search_space_holds_every_default():
    hp = models.fixed_hyperparameters({"units": 5, "num_layers": 1, "bidirectional": False, "learning_rate": 0.01})
    model = models.build_model("lstm", hp, MODEL_INPUT)
    assert model.get_layer("lstm_0").units == 5
    assert not any(isinstance(layer, keras.layers.Bidirectional) for layer in model.layers)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)

    import keras_tuner
    for architecture in models.architecture_names():
        space = keras_tuner.HyperParameters()
        models.search_space(architecture, space)
        defaults = models.default_hyperparameters(architecture)
        assert sorted(p.name for p in space.space) == sorted(defaults)
        for parameter in space.space:
            assert parameter.default == defaults[parameter.name]


@pytest.mark.parametrize("architecture", models.architecture_names())
def test_each_architecture_trains_one_step(architecture):
    keras.utils.set_random_seed(0)
    model = models.build_model(architecture, models.fixed_hyperparameters(TINY), MODEL_INPUT)
    assert model.name == f"agnews_{architecture}"
    token_ids = np.array([[5, 9, 13, 2, 0], [7, 0, 0, 0, 0], [3, 4, 5, 6, 7], [8, 8, 0, 0, 0]], dtype=np.int64)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(token_ids, np.array([1, 0, 3, 2]), return_dict=True)["loss"]
    assert np.isfinite(loss)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert all(changed), "one optimizer step should move every weight (embedding, recurrent, dense)"


def test_gru_is_unidirectional_or_bidirectional_with_lstm_search_space():
    import keras_tuner
    keras.utils.set_random_seed(0)
    one_way = models.build_model("gru", models.fixed_hyperparameters({**TINY, "num_layers": 2}), MODEL_INPUT)
    assert [type(one_way.get_layer(f"gru_{index}")) for index in (0, 1)] == [keras.layers.GRU] * 2
    assert not any(isinstance(layer, keras.layers.Bidirectional) for layer in one_way.layers)
    both_ways = models.build_model("gru", models.fixed_hyperparameters({**TINY, "bidirectional": True}), MODEL_INPUT)
    backward = both_ways.get_layer("bidirectional_0").backward_layer
    assert isinstance(backward, keras.layers.GRU) and backward.go_backwards and backward.units == TINY["units"]
    spaces = {}
    for architecture in ("gru", "lstm"):
        spaces[architecture] = keras_tuner.HyperParameters()
        models.search_space(architecture, spaces[architecture])
    assert [p.get_config() for p in spaces["gru"].space] == [p.get_config() for p in spaces["lstm"].space]


def test_registry_is_the_one_list_of_architectures():
    assert models.architecture_names() == tuple(models.ARCHITECTURES)
    for name, entry in models.ARCHITECTURES.items():
        assert entry.name == name and models.get_architecture(name) is entry
        assert models.default_hyperparameters(name) == dict(entry.defaults)
    with pytest.raises(ValueError, match="unknown architecture 'cnn'; known: " + ", ".join(models.ARCHITECTURES)):
        models.get_architecture("cnn")
    with pytest.raises(ValueError, match="unknown architecture 'cnn'"):
        models.build_model("cnn", models.fixed_hyperparameters(TINY), MODEL_INPUT)
    with pytest.raises(TypeError):  # the registry is read-only
        models.ARCHITECTURES["cnn"] = models.ARCHITECTURES["lstm"]


def test_fixed_hyperparameters_are_parsed_and_checked():
    assert models.parse_fixed_hyperparameters("rnn", ["units=16", "bidirectional=true", "dropout=0"]) == {
        "units": 16, "bidirectional": True, "dropout": 0.0}
    with pytest.raises(ValueError, match="no hyperparameter 'bidirectional'"):
        models.parse_fixed_hyperparameters("bilstm", ["bidirectional=false"])
    with pytest.raises(ValueError, match="num_layers must be in"):
        models.check_hyperparameters("lstm", {"num_layers": 3})
    with pytest.raises(ValueError, match="units must be int"):
        models.check_hyperparameters("lstm", {"units": "many"})


# ---------------------------------------------------------------- input pipeline


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

    a = dataset.bucketed_batches(examples.uri, "train", 16, seed=11).dataset
    b = dataset.bucketed_batches(examples.uri, "train", 16, seed=11).dataset
    c = dataset.bucketed_batches(examples.uri, "train", 16, seed=12).dataset
    a1, b1, c1 = order(_epoch(a)), order(_epoch(b)), order(_epoch(c))
    assert a1 == b1
    assert a1 != c1
    a2, b2 = order(_epoch(a)), order(_epoch(b))
    assert a2 == b2 and a2 != a1
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


def test_missing_split_and_model_input_are_clear_errors(tmp_path):
    from pipeline.artifacts import ComponentError
    with pytest.raises(ComponentError, match="no 'test' split"):
        dataset.bucketed_batches(tmp_path, "test", 8)
    with pytest.raises(ComponentError, match="model_input.json is missing"):
        layouts.read_model_input(tmp_path)
