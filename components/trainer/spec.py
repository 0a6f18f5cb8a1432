"""The trainer's light side, read by the DAG without running the step: the name of its warm-start input, the
served model (dag.SERVED_MODEL, the highest served version), which training starts from when it matches
(trainer.warm_start).

The trainer's external_fingerprint (of the pretrained vectors) is in executor.py: library/embeddings.py imports
TensorFlow inside a function, which this module must not reach (pyproject.toml's import contracts).
"""

BASE_MODEL_INPUT = "base_model"  # the served model: what a warm start starts from
