"""A tiny Keras model, the reference answers of a Keras model on the transform's token ids, and the
environment of a fresh serving process."""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def fresh_process_env() -> dict[str, str]:
    # Importing tensorflow_transform in this process set TF_USE_LEGACY_KERAS=1; a server's process has no such
    # setting, and with it `import tensorflow` would load tf_keras on its own.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return {**env, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def tiny_model(embedding_input_dim: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    hidden = keras.layers.Embedding(embedding_input_dim, 8, mask_zero=True)(token_ids)
    hidden = keras.layers.LSTM(4)(hidden)
    model = keras.Model(token_ids, keras.layers.Dense(4, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    model.fit(
        rng.integers(1, embedding_input_dim, size=(8, 6)), rng.integers(0, 4, size=8), epochs=1, verbose=0
    )
    return model


def keras_reference(
    model, transform_graph_dir: Path, texts: list[str], steps: int | None = None
) -> np.ndarray:
    """The Keras model's probabilities on the transform's token ids for `texts` (title=text, description=""),
    cut or 0-padded here to exactly `steps` ids when the model takes a fixed number."""
    import tensorflow_transform as tft

    layer = tft.TFTransformOutput(str(transform_graph_dir)).transform_features_layer()
    transformed = layer({"title": tf.constant(texts, tf.string, shape=[len(texts)]),
                         "description": tf.constant([""] * len(texts), tf.string, shape=[len(texts)])})
    ids = tf.sparse.to_dense(transformed["token_ids"]).numpy()
    if len(texts) == 0:
        return np.zeros((0, 4), np.float32)
    if ids.shape[1] == 0:  # no tokens anywhere in the batch: one fully masked step
        ids = np.zeros((len(texts), 1), np.int64)
    if steps is not None:  # a text's first `steps` ids, then 0s (masked)
        ids = np.pad(ids[:, :steps], [[0, 0], [0, max(steps - ids.shape[1], 0)]])
    return model(ids, training=False).numpy()


def served_probabilities(serving_dir: Path, files: list) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, 4], labels [N]) of a served model's tf.Example signature on gzipped example files:
    the oracle the evaluator's numbers are checked against."""
    signature = tf.saved_model.load(str(serving_dir)).signatures["serving_tf_example"]
    probabilities, labels = [], []
    for batch in tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP").batch(256):
        probabilities.append(signature(examples=batch)["probabilities"].numpy())
        labels.append(
            tf.io.parse_example(batch, {"label": tf.io.FixedLenFeature([], tf.int64)})["label"].numpy()
        )
    return np.concatenate(probabilities), np.concatenate(labels)
