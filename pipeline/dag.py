"""The whole pipeline, top to bottom.

Each step names its component (the function the runner calls: run(inputs, output_dir, config, runtime)), where
each input comes from ("step.output", or a Resolver that asks the metadata store), the outputs it publishes, and
the configuration section it receives. What is special about a step is declared here too, so the runner, the
store and the views name no step: its headline properties (the facts the run summary, the report, `show` and
`runs` print), the outside data it reads (part of its cache key; the source step's is the pipeline's input
data), and what it delivers outside the pipeline root. A step's code version is derived from the project modules
its component imports (pipeline/code_version.py). The runner executes the steps in this order.

Importing this module imports every component module, which is cheap: components import TensorFlow, TFT and
Beam inside run() (see contract/artifacts.py), so `runs`, `show`, `gc` and a fully cached run never load them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from components import evaluator, ingest, pusher, trainer, transform, tuner, validate


@dataclass(frozen=True)
class Resolver:
    """An input taken from the metadata store instead of this run, like TFX's Resolver node: the newest
    `artifact` ("step.output") that an execution of `judged_by`'s step consumed while its `judged_by` output had
    the property `where` true. It is never the artifact the step also receives from this run (a candidate is
    not its own baseline), and it is optional: the input is absent until such an artifact exists."""
    name: str
    artifact: str
    judged_by: str  # "": the newest `artifact` whose own property `where` is true (e.g. earlier examples)
    where: str
    # Where the artifact is found when the store knows none at all (a lost or replaced store), from the
    # configuration: a folder, recorded as an external artifact, or None.
    fallback: Callable[[Any], Path | None] | None = None
    # The input only saves work (the outputs are the same without it): not in the cache key or the lineage.
    saves_work_only: bool = False

    def resolve(self, store, steps: tuple[Step, ...], exclude_fingerprint: str | None = None):
        """Asks the metadata store (a MetadataStore) for the artifact; None if there is none yet."""
        if not self.judged_by:
            step_name, output = self.artifact.split(".")
            found = [artifact for _, artifact in store.outputs_where(step_name, output, self.where)
                     if not artifact.deleted and artifact.fingerprint != exclude_fingerprint]
            return found[-1] if found else None
        judge_name, judgement = self.judged_by.split(".")
        judge = step_named(judge_name, steps)
        consumed_as = next(name for name, source in judge.inputs.items() if source == self.artifact)
        return store.newest_judged_input(judge_name, consumed_as, judgement, self.where, exclude_fingerprint)


@dataclass(frozen=True)
class Step:
    name: str
    component: Callable[..., dict]  # run(inputs, output_dir, config, runtime) -> {output name: Artifact}
    inputs: dict[str, str | Resolver] = field(default_factory=dict)  # input name -> "step.output" or a Resolver
    outputs: tuple[str, ...] = ()
    config_section: str = ""
    # Fingerprint of data outside the pipeline root that the step reads (a source file, a schema, pretrained
    # vectors), from its configuration section: part of the step's cache key.
    external: Callable[[Any], str | None] | None = None
    # The configuration key naming the outside data of the pipeline's source step; its `external` fingerprint
    # is the run's data fingerprint, which `retrain` compares.
    source: str = ""
    # The runner keeps an interrupted execution's temporary folder so the component can resume from it.
    resumable: bool = False
    # The result depends on the pipeline's random seed, which is then part of the step's cache key.
    seeded: bool = False
    # Output name -> the properties printed about it by the run summary, the report, `show` and `runs`.
    headline: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # "output.property": when true, that output was delivered outside the pipeline root (a pushed model). It
    # decides the run's outcome and retrain's exit code; gc keeps such outputs and their lineage for good.
    delivers: str = ""
    # The component prints its own progress lines (elapsed time, ETA); the runner's heartbeat stays quiet.
    reports_progress: bool = False
    # The rows of the outside data it reads, counted cheaply from its configuration (None: not known): the
    # heartbeat scales its ETA by them. Steps with input artifacts are measured by their row properties instead.
    input_rows: Callable[[Any], int | None] | None = None
    # Given the folder it delivers to (the serving folder), what a killed execution of it left there; gc removes it.
    leftovers: Callable[[Path], list[Path]] | None = None


# The evaluator's baseline; with no blessing on record at all, the newest served version is the baseline.
LATEST_BLESSED_MODEL = Resolver("latest_blessed_model", artifact="trainer.model", judged_by="evaluator.blessing",
                                where="blessed", fallback=lambda config: pusher.newest_version(config.serving_dir()))

# Ingest's earlier examples of a stream of spans: spans whose files are unchanged are carried over from them.
PREVIOUS_EXAMPLES = Resolver("previous_examples", artifact="ingest.examples", judged_by="", where="window_summary",
                             saves_work_only=True)

STEPS: tuple[Step, ...] = (
    Step("ingest", ingest.run,
         inputs={"previous_examples": PREVIOUS_EXAMPLES},
         outputs=("examples",),
         config_section="ingest",
         external=ingest.external_fingerprint,
         source="data",
         input_rows=ingest.source_rows,
         headline={"examples": ("train_rows", "eval_rows", "test_rows", "quarantined_rows", "quarantined_by_reason",
                                "window_summary", "spans_ingested", "spans_reingested", "spans_reused")}),
    Step("validate", validate.run,
         inputs={"examples": "ingest.examples"},
         outputs=("schema", "statistics", "anomalies"),
         config_section="validate",
         external=validate.external_fingerprint,
         headline={"anomalies": ("count",), "statistics": ("drift_detected", "drift_span")}),
    Step("transform", transform.run,
         inputs={"examples": "ingest.examples", "schema": "validate.schema"},
         outputs=("transform_graph", "transformed_examples"),
         config_section="transform",
         headline={"transform_graph": ("vocab_size",),
                   "transformed_examples": ("train_bucket_examples", "padding_batch_size", "padding_ratio_bucketed",
                                            "padding_ratio_unbucketed")}),
    Step("tuner", tuner.run,
         inputs={"transformed_examples": "transform.transformed_examples",
                 "transform_graph": "transform.transform_graph"},
         outputs=("best_hyperparameters",),
         config_section="tuner",
         external=tuner.external_fingerprint,
         resumable=True,
         seeded=True,
         reports_progress=True,
         headline={"best_hyperparameters": ("architecture", "tuned", "best_score", "values")}),
    Step("trainer", trainer.run,
         inputs={"transformed_examples": "transform.transformed_examples",
                 "transform_graph": "transform.transform_graph",
                 "best_hyperparameters": "tuner.best_hyperparameters"},
         outputs=("model", "model_run"),
         config_section="trainer",
         external=trainer.external_fingerprint,
         seeded=True,
         reports_progress=True,
         headline={"model": ("architecture", "epochs_trained", "parameters")}),
    Step("evaluator", evaluator.run,
         inputs={"model": "trainer.model",
                 "examples": "ingest.examples",
                 "transformed_examples": "transform.transformed_examples",
                 "model_run": "trainer.model_run",
                 "baseline_model": LATEST_BLESSED_MODEL},
         outputs=("evaluation", "blessing"),
         config_section="evaluator",
         headline={"evaluation": ("accuracy", "loss", "macro_f1", "newest_span_accuracy",
                                  "newest_span_baseline_accuracy"),
                   "blessing": ("blessed", "reason", "baseline_accuracy")}),
    Step("pusher", pusher.run,
         inputs={"model": "trainer.model", "blessing": "evaluator.blessing"},
         outputs=("pushed_model",),
         config_section="pusher",
         headline={"pushed_model": ("pushed", "version", "path")},
         delivers="pushed_model.pushed",
         leftovers=pusher.stale_push_folders),
)

# What the pipeline makes: `show` prints its lineage and where it was delivered.
PRODUCT = "trainer.model"
# The columns `runs` (and `runs --json`) adds for each run: name -> a headline property, "output.property".
RUN_COLUMNS = {"window": "examples.window_summary", "drift": "statistics.drift_detected",
               "newest_span_accuracy": "evaluation.newest_span_accuracy", "accuracy": "evaluation.accuracy",
               "blessed": "blessing.blessed", "pushed_version": "pushed_model.version"}

STEP_NAMES = tuple(step.name for step in STEPS)


def step_named(name: str, steps: tuple[Step, ...] = STEPS) -> Step:
    for step in steps:
        if step.name == name:
            return step
    raise KeyError(f"unknown step {name!r}; steps: {', '.join(s.name for s in steps)}")


def headline_table(steps: tuple[Step, ...] = STEPS) -> dict[str, tuple[str, ...]]:
    """Output name -> its headline properties, for every step."""
    return {output: properties for step in steps for output, properties in step.headline.items()}


def source_step(steps: tuple[Step, ...] = STEPS) -> Step | None:
    return next((step for step in steps if step.source), None)


def delivering_steps(steps: tuple[Step, ...] = STEPS) -> list[Step]:
    return [step for step in steps if step.delivers]


def resolvers(steps: tuple[Step, ...] = STEPS) -> list[Resolver]:
    return [source for step in steps for source in step.inputs.values() if isinstance(source, Resolver)]
