"""Validate's spec: its outputs, its inputs from the metadata store, and the fingerprint of the schema file
the examples are validated against (`validate.schema`), part of the step's cache key.

In a stream, new spans are checked for drift against what the served model learned: `served_model` (the model
TF Serving serves: its training spans, vocabulary and predicted-class mix) and `served_examples` (the examples
it was trained on: its spans' cached profiles), both resolved by pipeline/dag.py; absent until a model is
served.
"""
from __future__ import annotations

import hashlib

from contract.artifacts import ComponentError
from contract.component_spec import ComponentSpec
from contract.data_config import ValidateConfig
from contract.names import ANOMALIES, SCHEMA, STATISTICS

# the served model: the drift reference
SERVED_MODEL_INPUT = "served_model"
# the examples it was trained on: its window's cached span profiles
SERVED_EXAMPLES_INPUT = "served_examples"


def external_fingerprint(config: ValidateConfig) -> str:
    """SHA-256 of the schema file: validation's result depends on it."""
    path = config.schema_path()
    if not path.is_file():
        raise ComponentError(f"validate: schema file not found: {path} (set validate.schema)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


SPEC = ComponentSpec(__name__, executor="components.validate.executor",
                     outputs=(SCHEMA, STATISTICS, ANOMALIES), config_section="validate",
                     external=external_fingerprint)
