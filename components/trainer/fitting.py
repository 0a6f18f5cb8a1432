"""How the trainer fits its model: each epoch capped at trainer.max_rows_per_epoch rows (the next epoch going
on where one stopped), early stopping on val_loss (an epoch counts if it lowers it by more than
trainer.early_stopping_min_delta), and with pretrained vectors unfrozen after N epochs, two phases. Split from
executor.py, which calls fit_phases and steps_per_epoch."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

# for annotations; fitting imports TensorFlow when it runs
if TYPE_CHECKING:
    import tensorflow as tf

from contract.config import TrainerConfig
from library.models import compile_model


def _distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Batches come from several bucket pipelines, not one file list, so multi-worker sharding splits batches.
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def steps_per_epoch(train_examples: int, batch_size: int, max_rows: int, workers: int) -> int | None:
    """Batches each worker trains on in one epoch when an epoch is capped at max_rows rows (None: the whole
    split; each worker's share of the batches)."""
    if not max_rows or train_examples <= max_rows:
        return None
    return math.ceil(max_rows / (batch_size * workers))


def _fit(model, train, evaluation, patience: int, callbacks: list, epochs: int, initial_epoch: int = 0,
         steps_per_epoch: int | None = None, min_delta: float = 0.0) -> tuple[dict[str, list[float]], int]:
    """The Keras history {metric: [value per epoch]} and the epoch of this fit (1-based) whose weights the
    model keeps. min_delta: an epoch improves only if it lowers val_loss by more than this (Keras restores the
    weights of the last epoch that did). steps_per_epoch: each epoch trains on that many batches of an endless
    repetition of the train batches, so the next epoch goes on where this one stopped (Keras keeps the
    iterator when steps_per_epoch is set)."""
    import keras

    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, min_delta=min_delta, restore_best_weights=True
    )
    batches = train.dataset.repeat() if steps_per_epoch else train.dataset
    history = model.fit(
        _distributable(batches),
        validation_data=_distributable(evaluation.dataset),
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        verbose=2,
        # tf.data already shuffles
        shuffle=False,
        callbacks=[early_stopping, *callbacks],
    )
    # EarlyStopping counts epochs from 0, and from initial_epoch in a second phase
    return history.history, early_stopping.best_epoch - initial_epoch + 1


def fit_phases(model, train, evaluation, patience: int, callbacks: list, frozen_epochs: int,
               steps: int | None, config: TrainerConfig, strategy, learning_rate: float,
               log: Callable[[str], None]) -> tuple[dict, int]:
    """Fits the model; with pretrained vectors frozen for the first `frozen_epochs` epochs, in two phases.
    Returns the Keras history {metric: [value per epoch]} and the epoch (1-based) whose weights the model
    keeps."""
    min_delta = config.early_stopping_min_delta
    if not 0 < frozen_epochs < config.epochs:
        return _fit(model, train, evaluation, patience, callbacks, config.epochs, 0, steps, min_delta)
    # after_epochs N: train the layers above the frozen vectors first, then fine-tune everything. The
    # optimizer only updates the variables it was compiled with, hence the recompile; the second phase
    # keeps its result only if it beats the frozen phase's kept val_loss.
    frozen, frozen_epoch = _fit(model, train, evaluation, patience, callbacks, frozen_epochs, 0, steps,
                                min_delta)
    frozen_weights = model.get_weights()
    model.get_layer("embedding").trainable = True
    with strategy.scope():
        compile_model(model, learning_rate)
    log(f"trainer: embedding unfrozen after {len(frozen['loss'])} epoch(s)")
    tuned, tuned_epoch = _fit(model, train, evaluation, patience, callbacks, config.epochs,
                              len(frozen["loss"]), steps, min_delta)
    history = {k: frozen[k] + tuned[k] for k in frozen}
    if tuned["val_loss"][tuned_epoch - 1] >= frozen["val_loss"][frozen_epoch - 1]:
        model.set_weights(frozen_weights)
        return history, frozen_epoch
    return history, len(frozen["loss"]) + tuned_epoch
