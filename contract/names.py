"""The names of the artifacts the steps exchange, spelled once (as TFX's standard_component_specs does): each
component reads its inputs and names its outputs with these, and pipeline/dag.py wires the steps with them,
so a misspelled name is a NameError when a module loads (and `ruff` finds it), not a KeyError inside a run.
The same name goes from the DAG through the metadata store to the output's folder on disk."""

# ingest
EXAMPLES = "examples"
# an input: its newest earlier examples (unchanged spans are reused)
PREVIOUS_EXAMPLES = "previous_examples"
# validate
SCHEMA = "schema"
STATISTICS = "statistics"
ANOMALIES = "anomalies"
# transform
TRANSFORM_GRAPH = "transform_graph"
TRANSFORMED_EXAMPLES = "transformed_examples"
# tuner
BEST_HYPERPARAMETERS = "best_hyperparameters"
# trainer
MODEL = "model"
MODEL_RUN = "model_run"
# evaluator
EVALUATION = "evaluation"
BLESSING = "blessing"
# an input: the served model (the highest served version), from the store
BASELINE_MODEL = "baseline_model"
# an input: the blessings of the last served versions (a list)
ANCHOR_BLESSINGS = "anchor_blessings"
# pusher
PUSHED_MODEL = "pushed_model"

# The feature of a transformed example that the model reads: the transform writes it, the trainer's datasets,
# the model's input layer and the serving signatures name it.
TOKEN_IDS = "token_ids"
