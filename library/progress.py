"""Plan and progress lines for long steps: elapsed time and an ETA extrapolated from the units done so far."""
from __future__ import annotations

import time
from typing import Callable

import keras

from contract.units import format_duration


class Progress:
    """Elapsed time and ETA for `total` units of similar cost (epochs, trials)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.clock = clock
        self.started = clock()

    def line(self, done: int) -> str:
        elapsed = self.clock() - self.started
        left = max(self.total - done, 0)
        eta = elapsed / done * left if done else float("nan")
        return (
            f"{done}/{self.total}, elapsed {format_duration(elapsed)}, ETA "
            f"{format_duration(eta) if done else '?'}"
        )


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch: its time, the validation metrics, elapsed time and the ETA of the remaining epochs
    (an upper bound: early stopping may end training sooner)."""

    def __init__(self, log: Callable[[str], None], prefix: str):
        super().__init__()
        self.log = log
        self.prefix = prefix

    def on_train_begin(self, logs=None):
        self._initial = None
        self._progress = None

    def on_epoch_begin(self, epoch, logs=None):
        # fit(initial_epoch=...) starts counting there
        if self._progress is None:
            self._initial = epoch
            self._progress = Progress(self.params["epochs"] - epoch)
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        metrics = ", ".join(
            f"{name} {logs[name]:.4f}" for name in ("val_loss", "val_accuracy") if name in logs
        )
        self.log(f"{self.prefix}: epoch {epoch + 1}/{self.params['epochs']} in "
                 f"{format_duration(time.monotonic() - self._epoch_started)} ({metrics}); epochs "
                 f"{self._progress.line(epoch + 1 - self._initial)} (at most; early stopping may end sooner)")
