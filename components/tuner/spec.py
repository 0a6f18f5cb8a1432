"""The tuner's light side, read by the DAG without running the step: the names of its inputs that are not
another step's plain output. `tuned_hyperparameters` is the newest earlier search of this root with the same
search fingerprint (a Resolver), `statistics` is validate's, whose drift verdict forces a new search.

The helpers the DAG also takes from the tuner (search_fingerprint, retune_decision/decision_facts, check_config,
external_fingerprint) are in executor.py: they read the model registry (library/models.py) or the pretrained
vectors (library/embeddings.py), modules that import Keras or TensorFlow inside their functions, which this module
must not reach (pyproject.toml's import contracts).
"""

TUNED_INPUT = "tuned_hyperparameters"  # the newest earlier search of this root with the same search fingerprint
DRIFT_INPUT = "statistics"  # validate's statistics; its drift_detected property forces a search
DRIFT_PROPERTY = "drift_detected"
