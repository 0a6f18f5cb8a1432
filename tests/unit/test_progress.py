"""Plan and progress lines: elapsed/ETA arithmetic, and the per-epoch line of a real Keras fit."""
from __future__ import annotations

import numpy as np

from library.progress import EpochProgress, Progress


def test_eta_extrapolates_the_time_per_unit_done():
    now = [100.0]
    progress = Progress(10, clock=lambda: now[0])
    assert progress.line(0).endswith("ETA ?")
    now[0] = 130.0  # 3 units in 30 s: 7 left take 70 s
    assert progress.line(3) == "3/10, elapsed 30s, ETA 1m10s"


def test_each_epoch_logs_its_time_metrics_and_an_eta():
    import keras
    lines = []
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    features, labels = np.zeros((8, 3), "float32"), np.zeros(8, "int32")
    model.fit(features, labels, validation_data=(features, labels), epochs=3, initial_epoch=1, verbose=0,
              callbacks=[EpochProgress(lines.append, "trainer")])
    assert [line.split(" in ")[0] for line in lines] == ["trainer: epoch 2/3", "trainer: epoch 3/3"]
    assert "val_accuracy" in lines[0] and "epochs 1/2, elapsed" in lines[0] and "epochs 2/2" in lines[1]
    assert lines[1].split("ETA ")[1].startswith("0s")
