"""Early stopping in the trainer's fit (components/trainer/fitting.py): an epoch counts as better only when it
lowers val_loss by more than trainer.early_stopping_min_delta, and the model keeps the weights of the last
epoch that did. A real Keras fit on a small regression whose eval loss falls every epoch."""
from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf

from components.trainer import fitting


def _regression() -> tuple[SimpleNamespace, SimpleNamespace]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    return SimpleNamespace(dataset=batches), SimpleNamespace(dataset=batches)


def _fit(min_delta: float) -> tuple[dict, int, list[list[np.ndarray]], list[np.ndarray]]:
    """Fits 6 epochs at most with patience 1; returns the history, the epoch the fit names as kept, the
    weights after each epoch and the weights the model kept."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    # a small step: the loss falls every epoch, by about 1-5% of itself
    model.compile(optimizer=keras.optimizers.SGD(0.002), loss="mse")
    after_epoch: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: after_epoch.append(model.get_weights()))
    train, evaluation = _regression()
    history, kept_epoch = fitting._fit(model, train, evaluation, patience=1, callbacks=[record], epochs=6,
                                       min_delta=min_delta)
    return history, kept_epoch, after_epoch, model.get_weights()


def test_every_improving_epoch_is_trained_when_any_decrease_counts():
    history, kept_epoch, after_epoch, kept = _fit(min_delta=0.0)
    losses = history["val_loss"]
    assert len(losses) == 6 and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert kept_epoch == 6
    for kept_array, last_array in zip(kept, after_epoch[-1]):
        np.testing.assert_array_equal(kept_array, last_array)


def test_an_epoch_that_improves_by_less_than_min_delta_ends_training_and_is_not_kept():
    history, kept_epoch, after_epoch, kept = _fit(min_delta=1e6)
    # epoch 2 lowered val_loss, but by less than min_delta: patience 1 ends the fit there
    assert len(history["val_loss"]) == 2 and history["val_loss"][1] < history["val_loss"][0]
    assert kept_epoch == 1
    for kept_array, first_array, second_array in zip(kept, after_epoch[0], after_epoch[1]):
        np.testing.assert_array_equal(kept_array, first_array)
        assert not np.array_equal(kept_array, second_array)
