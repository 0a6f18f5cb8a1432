"""The trainer's spec: the name of its warm-start input, the served model (dag.SERVED_MODEL), which training
starts from when it matches (trainer.warm_start).

Its external fingerprint (of the pretrained vectors) is the executor's external_fingerprint:
library/embeddings.py imports TensorFlow inside a function, which this module must not reach (pyproject.toml's
import contracts).
"""
from contract.component_spec import ComponentSpec
from contract.names import MODEL, MODEL_RUN

# the served model: what a warm start starts from
BASE_MODEL_INPUT = "base_model"

SPEC = ComponentSpec(__name__, executor="components.trainer.executor", outputs=(MODEL, MODEL_RUN),
                     config_section="trainer", external="external_fingerprint", seeded=True,
                     reports_progress=True)
