"""The real `agnews-pipeline` command in a subprocess, and two independent ways to get a run's answers: its
exported SavedModel in a fresh TensorFlow-only process, and its Keras model in this one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from library import layouts
from support.models import keras_reference
from support.paths import CLI, PROJECT


def agnews(*args: str, check_code: int | None = 0, timeout: float = 900,
           env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    # a variable set to None in `env` is left out
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", **(env or {})}
    completed = subprocess.run([*CLI, *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
                               env={name: value for name, value in environment.items() if value is not None})
    if check_code is not None and completed.returncode != check_code:
        raise AssertionError(
            f"exit {completed.returncode} (wanted {check_code}) for {args}\n"
            f"--- stdout\n{completed.stdout[-6000:]}\n--- stderr\n{completed.stderr[-6000:]}"
        )
    return completed


PREDICT_TEXTS = ["Stocks rallied as the Federal Reserve held interest rates steady.",
                 "The striker scored twice as United beat Chelsea in the cup final.",
                 "", "x" * 100_000, "Zürich: Ölpreise steigen, 東京 株価 上昇 — naïve café",
                 "NASA launches a new satellite to study the climate"]
# Serves PREDICT_TEXTS (argv[2], JSON) with the SavedModel in argv[1], in a process that imports TensorFlow
# only.
FRESH_PROCESS_PREDICT = r"""
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
texts = json.loads(sys.argv[2])
out = serve(text=tf.constant(texts))
empty = serve(text=tf.constant([], dtype=tf.string))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "class_name": [c.decode() for c in out["class_name"].numpy()],
                  "empty_batch_shape": list(empty["probabilities"].shape),
                  "modules": sorted({m.split(".")[0] for m in sys.modules}
                                    & {"tensorflow_transform", "tfx_bsl", "apache_beam", "tf_keras"})}))
"""


def serve_in_a_fresh_process(version_dir: Path) -> dict:
    # A serving process knows nothing of tensorflow_transform's TF_USE_LEGACY_KERAS switch.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    completed = subprocess.run([sys.executable, "-c", FRESH_PROCESS_PREDICT, str(version_dir),
                                json.dumps(PREDICT_TEXTS)], capture_output=True, text=True, timeout=300,
                               env={**env, "CUDA_VISIBLE_DEVICES": "-1"})
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def keras_probabilities(run_dir: Path):
    """The run's Keras model on the run's transform of PREDICT_TEXTS, in this process."""
    import keras
    model = keras.saving.load_model(layouts.keras_model_file(run_dir / "trainer" / "model"))
    return keras_reference(model, run_dir / "transform" / "transform_graph", PREDICT_TEXTS)
