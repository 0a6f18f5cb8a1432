"""Model builders (library/models.py): every architecture, its defaults, search space and hyperparameter
checks. The input pipeline they train on is tested in tests/unit/test_dataset.py."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from support.datasets import model_input_spec

from library import models
from library.layouts import NUM_CLASSES

MODEL_INPUT = model_input_spec()
TINY = {"embedding_dim": 8, "units": 6}


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
    # The notebook's model with one of its two bidirectional LSTM(64) layers: embedding 128, softmax over 4
    # classes, batches of 256 (benchmarks/results/throughput.md).
    bilstm = models.default_hyperparameters("bilstm")
    assert (bilstm["embedding_dim"], bilstm["units"], bilstm["num_layers"], bilstm["batch_size"]) == (
        128,
        64,
        1,
        256,
    )
    assert built["bilstm"].get_layer("bidirectional_0").forward_layer.units == 64
    assert "bidirectional_1" not in [layer.name for layer in built["bilstm"].layers]
    assert built["bilstm"].get_layer("probabilities").activation.__name__ == "softmax"


def test_fixed_values_win_over_defaults_and_the_search_space_holds_every_default():
    hp = models.fixed_hyperparameters(
        {"units": 5, "num_layers": 1, "bidirectional": False, "learning_rate": 0.01}
    )
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
    token_ids = np.array(
        [[5, 9, 13, 2, 0], [7, 0, 0, 0, 0], [3, 4, 5, 6, 7], [8, 8, 0, 0, 0]], dtype=np.int64
    )
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
    both_ways = models.build_model(
        "gru", models.fixed_hyperparameters({**TINY, "bidirectional": True}), MODEL_INPUT
    )
    backward = both_ways.get_layer("bidirectional_0").backward_layer
    assert (
        isinstance(backward, keras.layers.GRU) and backward.go_backwards and backward.units == TINY["units"]
    )
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
    with pytest.raises(
        ValueError, match="unknown architecture 'cnn'; known: " + ", ".join(models.ARCHITECTURES)
    ):
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


def test_the_search_keeps_training_affordable_and_fixed_values_still_build_more():
    import keras_tuner
    space = keras_tuner.HyperParameters()
    models.search_space("bilstm", space)
    layers = next(p for p in space.space if p.name == "num_layers")
    assert (layers.min_value, layers.max_value) == (1, 1)
    # a speed knob: not searched
    assert next(p for p in space.space if p.name == "batch_size").values == [256]
    assert max(next(p for p in space.space if p.name == "units").values) == 64
    lstm = keras_tuner.HyperParameters()
    models.search_space("lstm", lstm)
    assert next(p for p in lstm.space if p.name == "num_layers").max_value == 2
    two = models.build_model("bilstm", models.fixed_hyperparameters({**TINY, "num_layers": 2}), MODEL_INPUT)
    assert two.get_layer("bidirectional_1").forward_layer.units == TINY["units"]
