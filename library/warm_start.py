"""Warm start: a new model starts from a trained one's weights, its embedding carried over token by token.

Two models of the same architecture and hyperparameters differ only in the embedding's rows when the vocabulary
changed between their transforms (a new window of data has other frequent words). Rows are matched by token,
never by position: token t's row in the new embedding is t's row in the old one; tokens the old vocabulary lacks
keep the new model's freshly initialised rows. The padding row and, with the same number of out-of-vocabulary
buckets (the same hash of a token picks the same bucket), the bucket rows carry over by id. Every other layer's
weights are copied as they are.

Keras is imported inside the functions that need it (see contract/artifacts.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.artifacts import ComponentError
from contract.files import read_json
from library.layouts import (
    ModelInputSpec,
    keras_model_file,
    model_vocabulary_file,
    read_model_input,
    trained_hyperparameters_file,
)

if TYPE_CHECKING:
    import keras

EMBEDDING_LAYER = "embedding"  # library/models.py names every architecture's token embedding so


def read_vocabulary(path: Path) -> list[bytes]:
    """A transform vocabulary file: one token per line (as TensorFlow's lookup table reads it, split on \\n
    only); line i is token id i + 1."""
    data = Path(path).read_bytes()
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def row_pairs(old_tokens: list[bytes], new_tokens: list[bytes], old: ModelInputSpec,
              new: ModelInputSpec) -> list[tuple[int, int]]:
    """(new row, old row) for every embedding row the new model takes from the old one."""
    old_ids = {token: index + 1 for index, token in enumerate(old_tokens)}
    pairs = [(new.padding_id, old.padding_id)]
    pairs += [(index + 1, old_ids[token]) for index, token in enumerate(new_tokens) if token in old_ids]
    if old.num_oov_buckets == new.num_oov_buckets:
        pairs += [(len(new_tokens) + 1 + bucket, len(old_tokens) + 1 + bucket) for bucket in range(new.num_oov_buckets)]
    return pairs


@dataclass(frozen=True)
class BaseModel:
    """A trained model a new one can start from: its folder (a trainer `model` artifact), what it was trained
    with, and its vocabulary."""
    folder: Path
    chosen: dict[str, Any]  # its hyperparameters.json: {"architecture", "values", ...}
    model_input: ModelInputSpec
    tokens: list[bytes]


def base_model(folder: Path) -> BaseModel | str:
    """The base model in `folder`, or why it cannot be warm-started from (a pushed version folder holds only
    the SavedModel, not the Keras model and its vocabulary)."""
    folder = Path(folder)
    for needed in (keras_model_file(folder), trained_hyperparameters_file(folder)):
        if not needed.is_file():
            return f"{folder} holds no {needed.relative_to(folder)} (not a trainer model artifact)"
    spec = read_model_input(folder)
    vocabulary = model_vocabulary_file(folder, spec)
    if not vocabulary.is_file():
        return f"{folder} holds no vocabulary ({vocabulary.relative_to(folder)})"
    tokens = read_vocabulary(vocabulary)
    if len(tokens) != spec.vocab_size:
        return f"{vocabulary} holds {len(tokens)} tokens, its model input says {spec.vocab_size}"
    return BaseModel(folder, read_json(trained_hyperparameters_file(folder)), spec, tokens)


def mismatch(base: BaseModel, architecture: str, values: dict[str, Any], spec: ModelInputSpec) -> str | None:
    """Why `base` cannot start a model of this architecture, hyperparameters and input, or None."""
    if base.chosen.get("architecture") != architecture:
        return f"its architecture is {base.chosen.get('architecture')}, not {architecture}"
    if base.chosen.get("values") != values:
        differing = sorted(k for k in set(values) | set(base.chosen.get("values", {}))
                           if values.get(k) != base.chosen.get("values", {}).get(k))
        return f"its hyperparameters differ ({', '.join(differing)})"
    if base.model_input.num_classes != spec.num_classes:
        return f"it has {base.model_input.num_classes} classes, not {spec.num_classes}"
    return None


def carry_weights(model: keras.Model, base: BaseModel, new_tokens: list[bytes], spec: ModelInputSpec) -> dict[str, int]:
    """Sets `model`'s weights from the base model's: every layer as it is, the embedding row by token. Returns
    {"rows_carried", "rows_new"} over the vocabulary's tokens."""
    import keras
    import numpy as np
    old = keras.saving.load_model(keras_model_file(base.folder), compile=False)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            old_weights = old.get_layer(layer.name).get_weights()
        except ValueError:
            raise ComponentError(f"warm start: the base model {base.folder} has no layer {layer.name!r}") from None
        if layer.name == EMBEDDING_LAYER:
            matrix = np.array(weights[0])
            pairs = row_pairs(base.tokens, new_tokens, base.model_input, spec)
            new_rows, old_rows = (np.array(side, dtype=np.int64) for side in zip(*pairs))
            matrix[new_rows] = np.asarray(old_weights[0])[old_rows]
            layer.set_weights([matrix])
            carried = sum(1 for new_row, _ in pairs if 1 <= new_row <= len(new_tokens))
        else:
            if [w.shape for w in weights] != [np.shape(w) for w in old_weights]:
                raise ComponentError(f"warm start: layer {layer.name!r} of the base model {base.folder} has other "
                                     "shapes")
            layer.set_weights(old_weights)
    return {"rows_carried": carried, "rows_new": len(new_tokens) - carried}
