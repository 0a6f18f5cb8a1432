"""Warm start: a new model starts from a trained one's weights, its embedding carried over token by token.

Two models of the same architecture and hyperparameters differ only in the embedding's rows when the
vocabulary changed between their transforms (a new window of data has other frequent words). Rows are matched
by token, never by position: token t's row in the new embedding is t's row in the old one; a token the old
vocabulary lacks starts from the old model's out-of-vocabulary row it was read as until now (its hash bucket),
not from a random row. The padding row and, with the same number of out-of-vocabulary buckets (the same hash
of a token picks the same bucket), the bucket rows carry over by id. Every other layer's weights are copied as
they are.

A base model is only used when it fits (mismatch(): architecture, hyperparameters, classes, and the text the
tokens come from and how many are kept) and when what it learned is still what the data is (clean_base()):
every span it and its own bases were trained on (model_lineage_file) is neither held out of windows now nor
changed since (a corrected span: same name, other SHA-256). Otherwise its newest clean ancestor, followed
through `warm_start_from`, or none.

Keras is imported inside the functions that need it (see contract/artifacts.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.artifacts import ComponentError
from contract.files import read_json, write_json_atomic
from library.layouts import (
    ModelInputSpec,
    keras_model_file,
    model_lineage_file,
    model_vocabulary_file,
    read_model_input,
    trained_hyperparameters_file,
)

if TYPE_CHECKING:
    import keras

# library/models.py names every architecture's token embedding so
EMBEDDING_LAYER = "embedding"


def read_vocabulary(path: Path) -> list[bytes]:
    """A transform vocabulary file: one token per line (as TensorFlow's lookup table reads it, split on \\n
    only); line i is token id i + 1."""
    data = Path(path).read_bytes()
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def row_pairs(old_tokens: list[bytes], new_tokens: list[bytes], old: ModelInputSpec,
              new: ModelInputSpec) -> list[tuple[int, int]]:
    """(new row, old row) for every embedding row the new model takes from the old one by id or token."""
    old_ids = {token: index + 1 for index, token in enumerate(old_tokens)}
    pairs = [(new.padding_id, old.padding_id)]
    pairs += [(index + 1, old_ids[token]) for index, token in enumerate(new_tokens) if token in old_ids]
    if old.num_oov_buckets == new.num_oov_buckets:
        pairs += [
            (len(new_tokens) + 1 + bucket, len(old_tokens) + 1 + bucket)
            for bucket in range(new.num_oov_buckets)
        ]
    return pairs


def oov_pairs(old_tokens: list[bytes], new_tokens: list[bytes], old: ModelInputSpec) -> list[tuple[int, int]]:
    """(new row, old row) for every token new in the vocabulary: the old model's out-of-vocabulary row that
    the token hashed to (what the old model read it as; the transform's lookup table hashes with
    tf.strings.to_hash_bucket_fast)."""
    known = set(old_tokens)
    fresh = [(index + 1, token) for index, token in enumerate(new_tokens) if token not in known]
    if not fresh:
        return []
    if old.num_oov_buckets == 1:
        buckets = [0] * len(fresh)
    else:
        import tensorflow as tf
        buckets = tf.strings.to_hash_bucket_fast([token for _, token in fresh], old.num_oov_buckets).numpy()
    return [(row, len(old_tokens) + 1 + int(bucket)) for (row, _), bucket in zip(fresh, buckets)]


@dataclass(frozen=True)
class BaseModel:
    """A trained model a new one can start from: its folder (a trainer `model` artifact), what it was trained
    with, and its vocabulary."""
    folder: Path
    # its hyperparameters.json: {"architecture", "values", ...}
    chosen: dict[str, Any]
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
    # Rows learned from other text or other truncation would start the model from another task's weights.
    if base.model_input.text_features != spec.text_features:
        return (
            f"its text feature is {base.model_input.text_features}, not {spec.text_features} "
            "(transform.text_features)"
        )
    if base.model_input.max_length != spec.max_length:
        return (
            f"its max_length is {base.model_input.max_length}, not {spec.max_length} (transform.max_length)"
        )
    return None


def carry_weights(
    model: keras.Model, base: BaseModel, new_tokens: list[bytes], spec: ModelInputSpec
) -> dict[str, int]:
    """Sets `model`'s weights from the base model's: every layer as it is, the embedding row by token. Returns
    {"rows_carried", "rows_new"} over the vocabulary's tokens (new ones start from the old OOV row)."""
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
            raise ComponentError(
                f"warm start: the base model {base.folder} has no layer {layer.name!r}"
            ) from None
        if layer.name == EMBEDDING_LAYER:
            matrix = np.array(weights[0])
            pairs = row_pairs(base.tokens, new_tokens, base.model_input, spec)
            everything = pairs + oov_pairs(base.tokens, new_tokens, base.model_input)
            new_rows, old_rows = (np.array(side, dtype=np.int64) for side in zip(*everything))
            matrix[new_rows] = np.asarray(old_weights[0])[old_rows]
            layer.set_weights([matrix])
            carried = sum(1 for new_row, _ in pairs if 1 <= new_row <= len(new_tokens))
        else:
            if [w.shape for w in weights] != [np.shape(w) for w in old_weights]:
                raise ComponentError(
                    f"warm start: layer {layer.name!r} of the base model {base.folder} has other shapes"
                )
            layer.set_weights(old_weights)
    return {"rows_carried": carried, "rows_new": len(new_tokens) - carried}


# ---------------------------------------------------------------------------------------------- lineage


def write_lineage(model_dir: Path, training_spans: dict[str, str], base_dir: Path | None) -> None:
    """Records with a trained model the spans it was trained on ({span: sha256}, empty for one folder) and,
    when it was warm-started, its base and everything the base learned from (model_lineage_file)."""
    own = sorted([name, sha256] for name, sha256 in training_spans.items())
    inherited = read_lineage(base_dir).get("lineage_spans", []) if base_dir is not None else []
    lineage = sorted({tuple(pair) for pair in own + inherited})
    write_json_atomic(model_lineage_file(model_dir), {
        "training_spans": own, "lineage_spans": [list(pair) for pair in lineage],
        "warm_start_from": str(Path(base_dir).resolve()) if base_dir is not None else None})


def read_lineage(model_dir: Path) -> dict[str, Any]:
    """A model's lineage record; {} for a model trained before models recorded one."""
    path = model_lineage_file(model_dir)
    return read_json(path) if path.is_file() else {}


def stale_span(lineage: dict[str, Any], current: dict[str, str], held_out: set[str]) -> str | None:
    """Why a model with this lineage learned from data that is no longer the stream's, or None: a span it (or
    a base of it) was trained on is held out of windows now, or is in the window with other bytes (corrected).
    A span that has only left the window is still valid data."""
    for name, sha256 in lineage.get("lineage_spans", []):
        if name in held_out:
            return f"it learned span {name}, which is held out now (excluded, quarantined or rejected)"
        if name in current and current[name] != sha256:
            return (f"it learned span {name} as it was before it changed (SHA-256 {sha256[:12]}, now "
                    f"{current[name][:12]})")
    return None


def clean_base(base_dir: Path, current: dict[str, str], held_out: set[str]) -> tuple[Path | None, str | None]:
    """(the model to warm-start from, why not `base_dir` itself or None): `base_dir` when everything it
    learned is still valid (stale_span), else the newest of its ancestors (followed through warm_start_from,
    as long as their folders exist) learned only from valid spans, else None (train from scratch)."""
    why = stale_span(read_lineage(base_dir), current, held_out)
    if why is None:
        return base_dir, None
    folder: Path | None = Path(base_dir)
    while folder is not None:
        parent = read_lineage(folder).get("warm_start_from")
        folder = Path(parent) if parent and Path(parent).is_dir() else None
        if folder is not None and stale_span(read_lineage(folder), current, held_out) is None:
            return folder, why
    return None, why
