"""Keras 3 text classifiers over token ids: a registry of architectures, one builder shared by the tuner and
the trainer.

Each architecture is one `Architecture` entry in `ARCHITECTURES`: its name, default hyperparameters, search
space and build function. The CLI's `--model` choices and the config's `tuner.architecture` check come from
this registry, so adding an architecture is one build function and one entry here.

Every hyperparameter is read from a `keras_tuner.HyperParameters` object through the architecture's search
space, whose default values are the architecture's defaults. So an empty HyperParameters builds the default
model (`--no-tune`), a tuner trial builds a sampled one, and the trainer rebuilds the tuner's best by fixing
its values first (`fixed_hyperparameters`): one code path for all three.

Importing this module loads neither Keras nor KerasTuner (they are imported inside the functions that need
them), so config validation and the CLI parser can ask the registry without paying for TensorFlow.
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import yaml

from contract.names import TOKEN_IDS
from library.layouts import ModelInputSpec

if TYPE_CHECKING:
    import keras
    import keras_tuner
    import numpy as np


# With pretrained vectors the embedding's size is the file's, and two more hyperparameters exist, for every
# architecture: whether the vectors are fine-tuned, and the dropout on the embedding output.
_PRETRAINED_DEFAULTS: Mapping[str, Any] = types.MappingProxyType(
    {"embedding_trainable": True, "embedding_dropout": 0.0})

# Candidate values searched by the tuner; each architecture's default is always among them. The search keeps
# what the trainer then runs on the whole train split affordable: units up to 64 (128 costs about 2.5x per
# token), and the batch size is not searched at all: it sets the speed (batches of 64 train at a third of the
# examples/s of 256, benchmarks/results/throughput.md), and trials of 1-3 epochs favour small batches only
# because they make more updates per epoch. Fix it (tuner.fixed_hyperparameters) to train another.
_EMBEDDING_DIMS = [32, 64, 128]
_UNITS = [32, 64]


@dataclass(frozen=True)
class Architecture:
    name: str
    # Default hyperparameter values: what `--no-tune` trains, and the search space's defaults.
    defaults: Mapping[str, Any]
    # (hp, defaults) -> {name: value}: registers the search space on hp, returns the current values.
    search_space: Callable[[keras_tuner.HyperParameters, Mapping[str, Any]], dict[str, Any]]
    # (complete hyperparameter values, model_input) -> uncompiled Keras model, token ids -> probabilities. Its
    # token embedding layer is named "embedding" (pretrained vectors are loaded into it) and it applies
    # values.get("embedding_dropout") to the embedding's output.
    build: Callable[[dict[str, Any], ModelInputSpec], keras.Model]


def _with_default(choices: list, default) -> list:
    return sorted(set(choices) | {default})


def _recurrent_search_space(hp: keras_tuner.HyperParameters, defaults: Mapping[str, Any],
                            max_layers: int = 2) -> dict[str, Any]:
    values = {
        "embedding_dim": hp.Choice("embedding_dim", _with_default(_EMBEDDING_DIMS, defaults["embedding_dim"]),
                                   default=defaults["embedding_dim"]),
        "units": hp.Choice("units", _with_default(_UNITS, defaults["units"]), default=defaults["units"]),
        "num_layers": hp.Int("num_layers", 1, max_layers, default=defaults["num_layers"]),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1, default=defaults["dropout"]),
        "recurrent_dropout": hp.Float("recurrent_dropout", 0.0, 0.3, step=0.1,
                                      default=defaults["recurrent_dropout"]),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                                  default=defaults["learning_rate"]),
        "batch_size": hp.Choice("batch_size", [defaults["batch_size"]], default=defaults["batch_size"]),
    }
    # an architecture that is bidirectional by definition has no such choice
    if "bidirectional" in defaults:
        values["bidirectional"] = hp.Boolean("bidirectional", default=defaults["bidirectional"])
    return values


def _recurrent_classifier(name: str, layer_type: type, bidirectional: bool, values: dict[str, Any],
                          model_input: ModelInputSpec) -> keras.Model:
    """Embedding(mask_zero) -> num_layers recurrent layers of `layer_type` -> Dense softmax."""
    import keras

    token_ids = keras.Input(shape=(None,), dtype="int64", name=TOKEN_IDS)
    # mask_zero: padded steps are skipped by every recurrent layer, so padding never reaches the decision.
    hidden = keras.layers.Embedding(model_input.embedding_input_dim, values["embedding_dim"],
                                    mask_zero=True, name="embedding")(token_ids)
    if values.get("embedding_dropout"):
        hidden = keras.layers.Dropout(values["embedding_dropout"], name="embedding_dropout")(hidden)
    for index in range(values["num_layers"]):
        last = index == values["num_layers"] - 1
        layer = layer_type(values["units"], return_sequences=not last, dropout=values["dropout"],
                           recurrent_dropout=values["recurrent_dropout"], name=f"{name}_{index}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{index}")
        hidden = layer(hidden)
    probabilities = keras.layers.Dense(model_input.num_classes, activation="softmax", name="probabilities")(
        hidden
    )
    return keras.Model(token_ids, probabilities, name=f"agnews_{name}")


def _build_rnn(values: dict[str, Any], model_input: ModelInputSpec) -> keras.Model:
    import keras
    return _recurrent_classifier("rnn", keras.layers.SimpleRNN, values["bidirectional"], values, model_input)


def _build_lstm(values: dict[str, Any], model_input: ModelInputSpec) -> keras.Model:
    import keras
    return _recurrent_classifier("lstm", keras.layers.LSTM, values["bidirectional"], values, model_input)


def _build_bilstm(values: dict[str, Any], model_input: ModelInputSpec) -> keras.Model:
    import keras
    return _recurrent_classifier("bilstm", keras.layers.LSTM, True, values, model_input)


def _build_gru(values: dict[str, Any], model_input: ModelInputSpec) -> keras.Model:
    import keras
    return _recurrent_classifier("gru", keras.layers.GRU, values["bidirectional"], values, model_input)


def _entry(name: str, build, max_layers: int = 2, **defaults: Any) -> Architecture:
    search = functools.partial(_recurrent_search_space, max_layers=max_layers)
    return Architecture(name, types.MappingProxyType(defaults), search, build)


# bilstm is the course notebook's model (embedding 128, BiLSTM(64), softmax over the 4 classes) with one
# BiLSTM layer instead of two and batches of 256 (learning rate 3e-3): 2.8x the examples/s, no loss of test
# accuracy (benchmarks/results/throughput.md). The tuner keeps it at one layer, since a second costs 1.8x the
# training time without a measured gain; fix num_layers=2 (tuner.fixed_hyperparameters) to train two.
ARCHITECTURES: Mapping[str, Architecture] = types.MappingProxyType({entry.name: entry for entry in (
    _entry("rnn", _build_rnn, embedding_dim=64, units=64, num_layers=1, bidirectional=False, dropout=0.0,
           recurrent_dropout=0.0, learning_rate=1e-3, batch_size=64),
    _entry("lstm", _build_lstm, embedding_dim=128, units=64, num_layers=1, bidirectional=False, dropout=0.0,
           recurrent_dropout=0.0, learning_rate=1e-3, batch_size=64),
    _entry("bilstm", _build_bilstm, max_layers=1, embedding_dim=128, units=64, num_layers=1, dropout=0.0,
           recurrent_dropout=0.0, learning_rate=3e-3, batch_size=256),
    _entry("gru", _build_gru, embedding_dim=128, units=64, num_layers=1, bidirectional=False, dropout=0.0,
           recurrent_dropout=0.0, learning_rate=1e-3, batch_size=64),
)})


def architecture_names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The registry entry; ValueError naming every known architecture if there is none."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def default_hyperparameters(architecture: str, pretrained_dim: int | None = None) -> dict[str, Any]:
    """The architecture's default hyperparameter values (what `--no-tune` trains); with pretrained vectors of
    `pretrained_dim` dimensions, embedding_dim is theirs and the pretrained-only defaults are added."""
    defaults = dict(get_architecture(architecture).defaults)
    if pretrained_dim is None:
        return defaults
    return {**defaults, "embedding_dim": pretrained_dim, **_PRETRAINED_DEFAULTS}


def hyperparameter_names(architecture: str, pretrained: bool = False) -> list[str]:
    return sorted({**get_architecture(architecture).defaults, **(_PRETRAINED_DEFAULTS if pretrained else {})})


# The type and valid range of each hyperparameter's value (checked for fixed values and the trainer's input).
_KINDS: dict[str, tuple[type, float, float]] = {
    "embedding_dim": (int, 1, float("inf")),
    "units": (int, 1, float("inf")),
    "num_layers": (int, 1, 2),
    "batch_size": (int, 1, float("inf")),
    "dropout": (float, 0.0, 0.99),
    "recurrent_dropout": (float, 0.0, 0.99),
    "learning_rate": (float, 1e-8, 10.0),
    "bidirectional": (bool, 0, 1),
    "embedding_trainable": (bool, 0, 1),
    "embedding_dropout": (float, 0.0, 0.99),
}


def check_hyperparameters(
    architecture: str, values: dict[str, Any], pretrained: bool = False
) -> dict[str, Any]:
    """`values` with ints widened to floats where needed; raises ValueError for unknown names, types,
    ranges."""
    known = hyperparameter_names(architecture, pretrained)
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


def parse_fixed_hyperparameters(architecture: str, items: tuple[str, ...] | list[str],
                                pretrained: bool = False) -> dict[str, Any]:
    """["units=32", "bidirectional=true", ...] -> checked {name: value}; values are read as YAML scalars."""
    values = {}
    for item in items:
        name, _, text = item.partition("=")
        values[name.strip()] = yaml.safe_load(text)
    return check_hyperparameters(architecture, values, pretrained)


def search_space(architecture: str, hp: keras_tuner.HyperParameters,
                 pretrained_dim: int | None = None) -> dict[str, Any]:
    """Registers the architecture's search space on `hp` and returns the current value of each hyperparameter.

    Values already present in `hp` (fixed by the caller or chosen by a tuner trial) win; absent ones take the
    architecture's default. With pretrained vectors (`pretrained_dim`), embedding_dim is fixed to their size
    and embedding_trainable and embedding_dropout are searched as well.
    """
    entry = get_architecture(architecture)
    if pretrained_dim is not None:
        # registered first, so the architecture's choice returns it
        hp.Fixed("embedding_dim", pretrained_dim)
    values = entry.search_space(hp, entry.defaults)
    if pretrained_dim is not None:
        values["embedding_trainable"] = hp.Boolean("embedding_trainable",
                                                   default=_PRETRAINED_DEFAULTS["embedding_trainable"])
        values["embedding_dropout"] = hp.Float("embedding_dropout", 0.0, 0.5, step=0.1,
                                               default=_PRETRAINED_DEFAULTS["embedding_dropout"])
    return values


class _SpaceRecorder:
    """Stands in for keras_tuner.HyperParameters to read a search space without loading Keras: every
    hyperparameter the space registers is recorded with its kind, range, choices and default."""

    def __init__(self):
        self.calls: list[dict[str, Any]] = []

    def _record(self, kind: str, name: str, args: tuple, kwargs: dict) -> Any:
        self.calls.append({"kind": kind, "name": name, "args": list(args), **kwargs})
        return args[0] if kind == "Fixed" else kwargs.get("default")

    # keras_tuner's method names
    def Choice(self, name, *args, **kwargs):
        return self._record("Choice", name, args, kwargs)

    def Int(self, name, *args, **kwargs):
        return self._record("Int", name, args, kwargs)

    def Float(self, name, *args, **kwargs):
        return self._record("Float", name, args, kwargs)

    def Boolean(self, name, *args, **kwargs):
        return self._record("Boolean", name, args, kwargs)

    def Fixed(self, name, *args, **kwargs):
        return self._record("Fixed", name, args, kwargs)


def describe_search_space(architecture: str, pretrained: bool = False) -> list[dict[str, Any]]:
    """The architecture's search space as plain data (each hyperparameter's kind, range or choices, default),
    read without Keras: a changed space changes this description. With pretrained vectors the embedding size
    is the file's, which the description leaves to the file's fingerprint (0 stands for it)."""
    recorder = _SpaceRecorder()
    search_space(architecture, recorder, 0 if pretrained else None)
    return recorder.calls


def fixed_hyperparameters(values: dict[str, Any]) -> keras_tuner.HyperParameters:
    """A HyperParameters object whose given values are fixed: building with it reproduces exactly those
    values."""
    import keras_tuner
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def build_model(architecture: str, hp: keras_tuner.HyperParameters, model_input: ModelInputSpec,
                embedding_matrix: np.ndarray | None = None) -> keras.Model:
    """A compiled classifier: token ids [batch, time] (0 = padding) -> class probabilities [batch, classes].

    `model_input` is the transform's description of its output: embedding_input_dim sizes the embedding,
    num_classes the softmax.
    `embedding_matrix` ([embedding_input_dim, D], row i = token id i; library/embeddings.py) starts the
    embedding from pretrained vectors, fine-tuned or frozen as the embedding_trainable hyperparameter says.
    """
    pretrained_dim = None if embedding_matrix is None else int(embedding_matrix.shape[1])
    values = search_space(architecture, hp, pretrained_dim)
    model = get_architecture(architecture).build(values, model_input)
    if embedding_matrix is not None:
        embedding = model.get_layer("embedding")
        embedding.set_weights([embedding_matrix])
        embedding.trainable = values["embedding_trainable"]
    compile_model(model, values["learning_rate"])
    return model


def compile_model(model: keras.Model, learning_rate: float) -> None:
    """(Re)compiles with a fresh optimizer; the trainer recompiles after unfreezing pretrained vectors."""
    import keras
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
