"""Keras 3 text classifiers over token ids, one builder shared by the tuner and the trainer.

Every hyperparameter is read from a `keras_tuner.HyperParameters` object through the architecture's search
space, whose default values are the architecture's defaults. So an empty HyperParameters builds the default
model (`--no-tune`), a tuner trial builds a sampled one, and the trainer rebuilds the tuner's best by fixing
its values first (`fixed_hyperparameters`): one code path for all three.
"""
from __future__ import annotations

from typing import Any

import keras
import keras_tuner
import yaml

from pipeline.config import ARCHITECTURES

NUM_CLASSES = 4
TOKEN_IDS_INPUT = "token_ids"

# The architecture's defaults. bilstm follows the course notebook: embedding 128, two BiLSTM(64) layers,
# softmax over the 4 classes.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "rnn": {"embedding_dim": 64, "units": 64, "num_layers": 1, "bidirectional": False, "dropout": 0.0,
            "recurrent_dropout": 0.0, "learning_rate": 1e-3, "batch_size": 64},
    "lstm": {"embedding_dim": 128, "units": 64, "num_layers": 1, "bidirectional": False, "dropout": 0.0,
             "recurrent_dropout": 0.0, "learning_rate": 1e-3, "batch_size": 64},
    "bilstm": {"embedding_dim": 128, "units": 64, "num_layers": 2, "dropout": 0.0,
               "recurrent_dropout": 0.0, "learning_rate": 1e-3, "batch_size": 64},
}

# Candidate values searched by the tuner; each architecture's default is always among them.
_EMBEDDING_DIMS = [32, 64, 128]
_UNITS = [32, 64, 128]
_BATCH_SIZES = [32, 64, 128]


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


def default_hyperparameters(architecture: str) -> dict[str, Any]:
    """The architecture's default hyperparameter values (what `--no-tune` trains)."""
    _check_architecture(architecture)
    return dict(_DEFAULTS[architecture])


def hyperparameter_names(architecture: str) -> list[str]:
    _check_architecture(architecture)
    return sorted(_DEFAULTS[architecture])


# The type and valid range of each hyperparameter's value (checked for fixed values and the trainer's input).
_KINDS: dict[str, tuple[type, float, float]] = {
    "embedding_dim": (int, 1, float("inf")), "units": (int, 1, float("inf")), "num_layers": (int, 1, 2),
    "batch_size": (int, 1, float("inf")), "dropout": (float, 0.0, 0.99), "recurrent_dropout": (float, 0.0, 0.99),
    "learning_rate": (float, 1e-8, 10.0), "bidirectional": (bool, 0, 1),
}


def check_hyperparameters(architecture: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with ints widened to floats where needed; raises ValueError for unknown names, types, ranges."""
    known = hyperparameter_names(architecture)
    checked = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"{architecture} has no hyperparameter {name!r}; known: {', '.join(known)}")
        kind, low, high = _KINDS[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"hyperparameter {name} must be {kind.__name__}, got {value!r}")
        if kind is not bool and not low <= value <= high:
            raise ValueError(f"hyperparameter {name} must be in [{low}, {high}], got {value!r}")
        checked[name] = value
    return checked


def parse_fixed_hyperparameters(architecture: str, items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """["units=32", "bidirectional=true", ...] -> checked {name: value}; values are read as YAML scalars."""
    values = {}
    for item in items:
        name, _, text = item.partition("=")
        values[name.strip()] = yaml.safe_load(text)
    return check_hyperparameters(architecture, values)


def _with_default(choices: list, default) -> list:
    return sorted(set(choices) | {default})


def search_space(architecture: str, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """Registers the architecture's search space on `hp` and returns the current value of each hyperparameter.

    Values already present in `hp` (fixed by the caller or chosen by a tuner trial) win; absent ones take the
    architecture's default.
    """
    _check_architecture(architecture)
    defaults = _DEFAULTS[architecture]
    values = {
        "embedding_dim": hp.Choice("embedding_dim", _with_default(_EMBEDDING_DIMS, defaults["embedding_dim"]),
                                   default=defaults["embedding_dim"]),
        "units": hp.Choice("units", _with_default(_UNITS, defaults["units"]), default=defaults["units"]),
        "num_layers": hp.Int("num_layers", 1, 2, default=defaults["num_layers"]),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1, default=defaults["dropout"]),
        "recurrent_dropout": hp.Float("recurrent_dropout", 0.0, 0.3, step=0.1,
                                      default=defaults["recurrent_dropout"]),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                                  default=defaults["learning_rate"]),
        "batch_size": hp.Choice("batch_size", _with_default(_BATCH_SIZES, defaults["batch_size"]),
                                default=defaults["batch_size"]),
    }
    if "bidirectional" in defaults:  # bilstm is bidirectional by definition, so it has no such choice
        values["bidirectional"] = hp.Boolean("bidirectional", default=defaults["bidirectional"])
    return values


def fixed_hyperparameters(values: dict[str, Any]) -> keras_tuner.HyperParameters:
    """A HyperParameters object whose given values are fixed: building with it reproduces exactly those values."""
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def build_model(architecture: str, hp: keras_tuner.HyperParameters, model_input: dict) -> keras.Model:
    """A compiled classifier: token ids [batch, time] (0 = padding) -> class probabilities [batch, 4].

    `model_input` is the transform's model_input.json; its embedding_input_dim sizes the embedding.
    """
    chosen = search_space(architecture, hp)
    layer_type = keras.layers.SimpleRNN if architecture == "rnn" else keras.layers.LSTM

    token_ids = keras.Input(shape=(None,), dtype="int64", name=TOKEN_IDS_INPUT)
    # mask_zero: padded steps are skipped by every recurrent layer, so padding never reaches the decision.
    hidden = keras.layers.Embedding(int(model_input["embedding_input_dim"]), chosen["embedding_dim"],
                                    mask_zero=True, name="embedding")(token_ids)
    for index in range(chosen["num_layers"]):
        last = index == chosen["num_layers"] - 1
        layer = layer_type(chosen["units"], return_sequences=not last, dropout=chosen["dropout"],
                           recurrent_dropout=chosen["recurrent_dropout"], name=f"{architecture}_{index}")
        if chosen.get("bidirectional", architecture == "bilstm"):
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{index}")
        hidden = layer(hidden)
    probabilities = keras.layers.Dense(int(model_input.get("num_classes", NUM_CLASSES)), activation="softmax",
                                       name="probabilities")(hidden)
    model = keras.Model(token_ids, probabilities, name=f"agnews_{architecture}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=chosen["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
