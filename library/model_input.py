"""The transform's model sizing facts (`model_input.json`, written next to the transform graph), read by the
tuner, the trainer and the benchmarks. TensorFlow-free, so readers pay for no heavy import."""
from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import ComponentError, read_json

MODEL_INPUT_FILE = "model_input.json"


def read_model_input(transform_graph_dir: Path) -> dict:
    """The transform's model sizing facts; embedding_input_dim and num_classes are required."""
    path = Path(transform_graph_dir) / MODEL_INPUT_FILE
    if not path.is_file():
        raise ComponentError(f"{path} is missing: transform_graph was not written by the transform component")
    model_input = read_json(path)
    for key in ("embedding_input_dim", "num_classes"):
        if not isinstance(model_input.get(key), int) or model_input[key] < 1:
            raise ComponentError(f"{path}: {key} must be a positive integer, got {model_input.get(key)!r}")
    return model_input
