"""What the run summary, the report, `show` and `runs` print about a run's outputs: display tables, kept apart
from the DAG's wiring (pipeline/dag.py) and checked against it when this module is imported.

HEADLINES names, for each output, its headline properties (the facts printed about it); a property a step
`delivers` (ComponentSpec.delivers) and one a Resolver looks for (`where`) are headline properties. PRODUCT is
what the pipeline makes (`show` prints its lineage and where it was delivered), VOCABULARY the output holding
the vocabulary (`embeddings` tokenizes text with the configuration section of its step), RUN_COLUMNS the
columns `runs` (and `runs --json`) adds for each run: name -> "output.property" of a headline.
"""
from __future__ import annotations

from contract.names import (
    ANOMALIES,
    BEST_HYPERPARAMETERS,
    BLESSING,
    EVALUATION,
    EXAMPLES,
    MODEL,
    PUSHED_MODEL,
    STATISTICS,
    TRANSFORM_GRAPH,
    TRANSFORMED_EXAMPLES,
)
from pipeline import dag

HEADLINES: dict[str, tuple[str, ...]] = {
    EXAMPLES: ("train_rows", "eval_rows", "test_rows", "quarantined_rows", "quarantined_by_reason",
               "window_summary", "spans_ingested", "spans_reingested", "spans_reused"),
    ANOMALIES: ("count",),
    STATISTICS: ("drift_detected", "drift_span"),
    TRANSFORM_GRAPH: ("vocab_size",),
    TRANSFORMED_EXAMPLES: ("train_bucket_examples", "padding_batch_size", "padding_ratio_bucketed",
                           "padding_ratio_unbucketed"),
    BEST_HYPERPARAMETERS: ("architecture", "tuned", "reused", "tuned_from", "retune", "best_score", "values"),
    MODEL: ("architecture", "epochs_trained", "parameters", "warm_start"),
    EVALUATION: ("accuracy", "loss", "macro_f1", "newest_span_accuracy", "newest_span_baseline_accuracy"),
    BLESSING: ("blessed", "reason", "baseline_accuracy", "p_value", "anchor_accuracy"),
    PUSHED_MODEL: ("pushed", "version", "path", "rolled_back_to"),
}

PRODUCT = "trainer.model"
VOCABULARY = "transform.transform_graph"
RUN_COLUMNS = {"window": f"{EXAMPLES}.window_summary", "drift": f"{STATISTICS}.drift_detected",
               "newest_span_accuracy": f"{EVALUATION}.newest_span_accuracy",
               "accuracy": f"{EVALUATION}.accuracy", "blessed": f"{BLESSING}.blessed",
               "pushed_version": f"{PUSHED_MODEL}.version"}


def headline_table(steps: tuple[dag.Step, ...] = dag.STEPS) -> dict[str, tuple[str, ...]]:
    """Output name -> its headline properties, for the outputs of `steps`."""
    outputs = {output for step in steps for output in step.spec.outputs}
    return {output: properties for output, properties in HEADLINES.items() if output in outputs}


def _is_headline(reference: str, headlines: dict[str, tuple[str, ...]]) -> bool:
    output, _, name = reference.partition(".")
    return name in headlines.get(output, ())


def _fail(message: str) -> None:
    raise dag.DagError(f"pipeline headlines: {message}")


def check_headlines(steps: tuple[dag.Step, ...], headlines: dict[str, tuple[str, ...]], product: str,
                    vocabulary: str, run_columns: dict[str, str]) -> None:
    """Every table names what the DAG has: headlines are outputs, what a step delivers and what a resolver
    looks for are headline properties, PRODUCT and VOCABULARY are "step.output", run columns are headline
    properties. Raises dag.DagError with one line for the first fault."""
    outputs = {output: step.name for step in steps for output in step.spec.outputs}
    for output in headlines:
        if output not in outputs:
            _fail(f"a headline for {output!r}, which no step outputs")
    for step in dag.delivering_steps(steps):
        if not _is_headline(step.spec.delivers, headlines):
            _fail(f"step {step.name!r} delivers {step.spec.delivers!r}: that property must be in its "
                  "headline")
    for resolver in dag.resolvers(steps):
        where = f"{resolver.judged_by.partition('.')[2]}.{resolver.where}"
        if not _is_headline(where, headlines):
            _fail(f"resolver {resolver.name!r} looks for {where!r}, which is not a headline property")
    known = {f"{step}.{output}" for output, step in outputs.items()}
    for name, reference in (("product", product), ("vocabulary", vocabulary)):
        if reference not in known:
            _fail(f"the {name} {reference!r} is no step's output")
    for column, reference in run_columns.items():
        if not _is_headline(reference, headlines):
            _fail(f"run column {column!r} shows {reference!r}, which is not a headline property of an output")


# at import, as the DAG's wiring
check_headlines(dag.STEPS, HEADLINES, PRODUCT, VOCABULARY, RUN_COLUMNS)
