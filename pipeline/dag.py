"""The whole pipeline, top to bottom.

Each step names its component (the function the runner calls: run(inputs, output_dir, config, runtime)), where
each input comes from ("step.output", or a Resolver that asks the metadata store), the outputs it publishes, and
the configuration section it receives. What is special about a step is declared here too, so the runner, the
store and the views name no step: its headline properties (the facts the run summary, the report, `show` and
`runs` print), the outside data it reads (part of its cache key; the source step's is the pipeline's input
data), and what it delivers outside the pipeline root. A step's code version is derived from the project modules
its component imports (pipeline/code_version.py). The runner executes the steps in this order.

Each step is a package components/<step>/: its spec (input names and the helpers read without running the
step) and its executor (run() and the rest). Importing this module imports every step's spec and executor, which
is cheap: executors import TensorFlow, TFT and Beam inside run() (see contract/artifacts.py), so `runs`, `show`,
`gc` and a fully cached run never load them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from components.evaluator import executor as evaluator_executor
from components.ingest import executor as ingest_executor
from components.pusher import executor as pusher_executor, spec as pusher_spec
from components.trainer import executor as trainer_executor, spec as trainer_spec
from components.transform import executor as transform_executor
from components.tuner import executor as tuner_executor, spec as tuner_spec
from components.validate import executor as validate_executor, spec as validate_spec
from contract.names import (ANCHOR_BLESSINGS, ANOMALIES, BASELINE_MODEL, BEST_HYPERPARAMETERS, BLESSING, EVALUATION, EXAMPLES,
                            MODEL, MODEL_RUN, PREVIOUS_EXAMPLES, PUSHED_MODEL, SCHEMA, STATISTICS, TRANSFORM_GRAPH,
                            TRANSFORMED_EXAMPLES)
from contract.artifacts import fingerprint
from library import beam_options
from library.layouts import has_saved_model, serving_version_dir, serving_versions


class DagError(ValueError):
    """The steps are wired wrongly (a programming error): raised when the DAG is built, at import."""


@dataclass(frozen=True)
class Resolver:
    """An input taken from the metadata store instead of this run, like TFX's Resolver node: the newest
    `artifact` ("step.output") that an execution of `judged_by`'s step consumed while its `judged_by` output had
    the property `where` true; with `judged_by` equal to `artifact`, the newest such artifact whose own property
    `where` is true and whose properties hold `matching`'s values. It is never the artifact the step also
    receives from this run (a candidate is not its own baseline), nor one that the consuming step itself computed
    from the very inputs it has now (so an unchanged re-run stays cached), and it is optional: the input is
    absent until such an artifact exists."""
    name: str
    artifact: str
    judged_by: str  # = artifact: the newest `artifact` whose own property `where` is true (earlier examples)
    where: str
    # Where the artifact is found when the store knows none at all (a lost or replaced store), from the
    # configuration: a folder, recorded as an external artifact, or None.
    fallback: Callable[[Any], Path | None] | None = None
    # Properties the artifact must have, from the configuration (the tuner's search fingerprint); None: any.
    matching: Callable[[Any], dict[str, Any]] | None = None
    # The input only saves work (the outputs are the same without it): not in the cache key or the lineage.
    saves_work_only: bool = False

    def resolve(self, store, steps: tuple[Step, ...], exclude_fingerprint: str | None = None, config: Any = None,
                exclude_inputs: dict[str, str] | None = None):
        """Asks the metadata store (a MetadataStore) for the artifact; None if there is none yet. `config` (the
        whole Config) feeds `matching`; without it any match is accepted (gc keeps every candidate).
        `exclude_inputs` ({input name: fingerprint}) skips artifacts whose producer consumed exactly those."""
        if self.judged_by == self.artifact:
            step, output = self.artifact.split(".")
            wanted = self.matching(config) if self.matching is not None and config is not None else {}
            return store.newest_output(step, output, self.where, wanted, exclude_fingerprint, exclude_inputs)
        judge_name, judgement = self.judged_by.split(".")
        judge = step_named(judge_name, steps)
        consumed_as = next(name for name, source in judge.inputs.items() if source == self.artifact)
        return store.newest_judged_input(judge_name, consumed_as, judgement, self.where, exclude_fingerprint,
                                         exclude_inputs)


@dataclass(frozen=True)
class ServedResolver(Resolver):
    """What TF Serving serves, not what was blessed last: the `artifact` ("step.output") that the execution of
    `judged_by`'s step ("pusher.pushed_model") consumed when it published the highest complete version of the
    serving folder (a retrain's push or a rollback's re-publish). With `count`, a list: the newest `count(config)`
    served versions' artifacts, each with its `served_version` property, never in the lineage (the step's
    `decision` puts them in its cache key). A version the store knows nothing of (pushed by another root, a lost
    store) is the version folder itself, recorded as an external artifact. Without `config` (gc) it resolves
    nothing: the retention policy protects the served versions itself. The exclusions are Resolver's: a served
    version whose artifact is excluded is passed over for the next lower one."""
    count: Callable[[Any], int] | None = None

    def resolve(self, store, steps: tuple[Step, ...], exclude_fingerprint: str | None = None, config: Any = None,
                exclude_inputs: dict[str, str] | None = None):
        if config is None:
            return None
        serving_dir = config.serving_dir()
        wanted = self.count(config) if self.count is not None else 1
        found = []
        for version, artifact in served_artifacts(store, steps, self, serving_dir):
            if len(found) >= wanted:
                break
            if artifact is None:
                if self.count is None:  # the served model, unknown to this store: its folder is the baseline
                    folder = serving_version_dir(serving_dir, version)
                    return store.external_artifact(self.artifact.split(".")[1], folder, fingerprint(folder), {})
                continue
            if (artifact.deleted or artifact.fingerprint == exclude_fingerprint
                    or store.computed_from(artifact.id, exclude_inputs)):
                continue
            found.append(dataclasses.replace(artifact, properties={**artifact.properties, "served_version": version}))
        if self.count is not None:
            return found
        return found[0] if found else None


def served_artifacts(store, steps: tuple[Step, ...], resolver: Resolver, serving_dir: Path):
    """(version, the artifact its publisher consumed as `resolver.artifact`, or None), highest version first,
    for every complete version in the serving folder."""
    judge_name, judgement = resolver.judged_by.split(".")
    consumed_as = next(name for name, source in step_named(judge_name, steps).inputs.items()
                       if source == resolver.artifact)
    published: dict[int, Any] = {}  # version -> the newest execution that published it there
    for execution, pushed in store.outputs_where(judge_name, judgement, resolver.where):
        version, path = pushed.properties.get("version"), pushed.properties.get("path")
        if isinstance(version, int) and path and Path(path) == serving_version_dir(serving_dir, version):
            published[version] = execution
    for version in reversed(serving_versions(serving_dir)):
        if not has_saved_model(serving_version_dir(serving_dir, version)):
            continue
        execution = published.get(version)
        consumed = store.artifacts_of(execution["id"], "input").get(consumed_as) if execution else None
        yield version, consumed


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
    # Checks its configuration section against the libraries it uses (ConfigError), before any step runs.
    check_config: Callable[[Any], None] | None = None
    # What the step decides from its inputs and configuration where that can change while neither does (the
    # tuner's search-or-reuse depends on the clock): (inputs, config section) -> JSON-able, part of its cache key.
    decision: Callable[[dict[str, Any], Any], Any] | None = None


# The evaluator's baseline and the trainer's warm-start base: the served model (the highest served version),
# so after `rollback` the next retrain compares with, and starts from, the model rolled back to.
SERVED_MODEL = ServedResolver("served_model", artifact="trainer.model", judged_by="pusher.pushed_model",
                              where="pushed")
# The blessings (per-row test results) of the last evaluator.anchor_versions served versions: the gate's anchor.
SERVED_BLESSINGS = ServedResolver("served_blessings", artifact="evaluator.blessing",
                                  judged_by="pusher.pushed_model", where="pushed",
                                  count=lambda config: config.evaluator.anchor_versions)
# The newest hyperparameters this root tuned for the same search (the tuner reuses them unless tuner.retune or
# drift asks for a new search).
LATEST_TUNED_HYPERPARAMETERS = Resolver(
    "latest_tuned_hyperparameters", artifact="tuner.best_hyperparameters", judged_by="tuner.best_hyperparameters",
    where="tuned", matching=lambda config: {"search_fingerprint": tuner_executor.search_fingerprint(config.tuner)})

# Ingest's earlier examples of a stream of spans: spans whose files are unchanged are carried over from them.
LATEST_EXAMPLES = Resolver("latest_examples", artifact="ingest.examples", judged_by="ingest.examples",
                           where="window_summary", saves_work_only=True)

STEPS: tuple[Step, ...] = (
    Step("ingest", ingest_executor.run,
         inputs={PREVIOUS_EXAMPLES: LATEST_EXAMPLES},
         outputs=(EXAMPLES,),
         config_section="ingest",
         external=ingest_executor.external_fingerprint,
         source="data",
         input_rows=ingest_executor.source_rows,
         headline={EXAMPLES: ("train_rows", "eval_rows", "test_rows", "quarantined_rows", "quarantined_by_reason",
                              "window_summary", "spans_ingested", "spans_reingested", "spans_reused")}),
    Step("validate", validate_executor.run,
         inputs={EXAMPLES: "ingest.examples"},
         outputs=(SCHEMA, STATISTICS, ANOMALIES),
         config_section="validate",
         external=validate_spec.external_fingerprint,
         headline={ANOMALIES: ("count",), STATISTICS: ("drift_detected", "drift_span")}),
    Step("transform", transform_executor.run,
         inputs={EXAMPLES: "ingest.examples", SCHEMA: "validate.schema"},
         outputs=(TRANSFORM_GRAPH, TRANSFORMED_EXAMPLES),
         config_section="transform",
         headline={TRANSFORM_GRAPH: ("vocab_size",),
                   TRANSFORMED_EXAMPLES: ("train_bucket_examples", "padding_batch_size", "padding_ratio_bucketed",
                                          "padding_ratio_unbucketed")}),
    Step("tuner", tuner_executor.run,
         inputs={TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                 TRANSFORM_GRAPH: "transform.transform_graph",
                 tuner_spec.DRIFT_INPUT: "validate.statistics",
                 tuner_spec.TUNED_INPUT: LATEST_TUNED_HYPERPARAMETERS},
         outputs=(BEST_HYPERPARAMETERS,),
         config_section="tuner",
         external=tuner_executor.external_fingerprint,
         check_config=tuner_executor.check_config,
         resumable=True,
         seeded=True,
         reports_progress=True,
         decision=tuner_executor.decision_facts,
         headline={BEST_HYPERPARAMETERS: ("architecture", "tuned", "reused", "tuned_from", "retune", "best_score",
                                          "values")}),
    Step("trainer", trainer_executor.run,
         inputs={TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                 TRANSFORM_GRAPH: "transform.transform_graph",
                 BEST_HYPERPARAMETERS: "tuner.best_hyperparameters",
                 EXAMPLES: "ingest.examples",  # its spans (names and SHA-256) are recorded with the model
                 trainer_spec.BASE_MODEL_INPUT: SERVED_MODEL},  # warm start (trainer.warm_start)
         outputs=(MODEL, MODEL_RUN),
         config_section="trainer",
         external=trainer_executor.external_fingerprint,
         seeded=True,
         reports_progress=True,
         headline={MODEL: ("architecture", "epochs_trained", "parameters", "warm_start")}),
    Step("evaluator", evaluator_executor.run,
         inputs={MODEL: "trainer.model",
                 EXAMPLES: "ingest.examples",
                 TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                 MODEL_RUN: "trainer.model_run",
                 BASELINE_MODEL: SERVED_MODEL,
                 ANCHOR_BLESSINGS: SERVED_BLESSINGS},
         outputs=(EVALUATION, BLESSING),
         config_section="evaluator",
         decision=evaluator_executor.anchor_facts,
         headline={EVALUATION: ("accuracy", "loss", "macro_f1", "newest_span_accuracy",
                                "newest_span_baseline_accuracy"),
                   BLESSING: ("blessed", "reason", "baseline_accuracy", "p_value", "anchor_accuracy")}),
    Step("pusher", pusher_executor.run,
         inputs={MODEL: "trainer.model", BLESSING: "evaluator.blessing"},
         outputs=(PUSHED_MODEL,),
         config_section="pusher",
         headline={PUSHED_MODEL: ("pushed", "version", "path", "rolled_back_to")},
         delivers="pushed_model.pushed",
         leftovers=pusher_spec.stale_push_folders),
)

# What the pipeline makes: `show` prints its lineage and where it was delivered.
PRODUCT = "trainer.model"
# The output holding the vocabulary: `embeddings` tokenizes text with the configuration section of its step.
VOCABULARY = "transform.transform_graph"
# The columns `runs` (and `runs --json`) adds for each run: name -> a headline property, "output.property".
RUN_COLUMNS = {"window": "examples.window_summary", "drift": "statistics.drift_detected",
               "newest_span_accuracy": "evaluation.newest_span_accuracy", "accuracy": "evaluation.accuracy",
               "blessed": "blessing.blessed", "pushed_version": "pushed_model.version"}


def check_steps(steps: tuple[Step, ...], product: str = "", run_columns: dict[str, str] | None = None) -> None:
    """Checks the wiring when the DAG is built, as Kedro checks a node: every input names an output of an
    earlier step, outputs are unique, headlines and `delivers` name the step's outputs, a resolver is judged by
    a step that consumes its artifact, and `product` ("step.output") and `run_columns` ("output.property" of a
    headline) name what exists. Raises DagError with one line for the first fault."""
    def fail(message: str) -> None:
        raise DagError(f"pipeline DAG: {message}")

    produced: dict[str, str] = {}  # output name -> its step
    known: set[str] = set()  # "step.output" of the steps so far
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        fail(f"two steps share a name: {names}")
    for step in steps:
        for name, source in step.inputs.items():
            if isinstance(source, Resolver):
                continue  # checked below, once every step is known
            if source not in known:
                fail(f"step {step.name!r} input {name!r} reads {source!r}, which no earlier step outputs "
                     f"(known: {', '.join(sorted(known)) or 'none'})")
        for output in step.outputs:
            if output in produced:
                fail(f"output {output!r} of step {step.name!r} is also an output of step {produced[output]!r}")
            produced[output] = step.name
            known.add(f"{step.name}.{output}")
        for output in step.headline:
            if output not in step.outputs:
                fail(f"step {step.name!r} has a headline for {output!r}, not one of its outputs {step.outputs}")
        if step.delivers and step.delivers.partition(".")[0] not in step.outputs:
            fail(f"step {step.name!r} delivers {step.delivers!r}, not one of its outputs {step.outputs}")
        if step.delivers and step.delivers.partition(".")[2] not in step.headline.get(
                step.delivers.partition(".")[0], ()):
            fail(f"step {step.name!r} delivers {step.delivers!r}: that property must be in its headline")
    for step in steps:
        for source in step.inputs.values():
            if not isinstance(source, Resolver):
                continue
            if source.artifact not in known:
                fail(f"resolver {source.name!r} of step {step.name!r} resolves {source.artifact!r}, which no step outputs")
            judge, _, judgement = source.judged_by.partition(".")
            if f"{judge}.{judgement}" not in known:
                fail(f"resolver {source.name!r} is judged by {source.judged_by!r}, which no step outputs")
            if source.judged_by != source.artifact and source.artifact not in step_named(judge, steps).inputs.values():
                fail(f"resolver {source.name!r} is judged by step {judge!r}, which does not consume {source.artifact!r}")
    if product and product not in known:
        fail(f"the product {product!r} is no step's output")
    headlines = headline_table(steps)
    for column, reference in (run_columns or {}).items():
        output, _, name = reference.partition(".")
        if name not in headlines.get(output, ()):
            fail(f"run column {column!r} shows {reference!r}, which is not a headline property of an output")


def check_config(config, steps: tuple[Step, ...] | None = None) -> None:
    """What the configuration schema (contract/config.py) cannot check alone, because it imports no library:
    the Beam flags (with Beam's own option classes) and each step's section against the libraries that use
    it (e.g. the architecture against the model registry). Raises ConfigError before any work starts."""
    beam_options.check_pipeline_options(config.pipeline)
    for step in STEPS if steps is None else steps:
        if step.check_config is not None:
            step.check_config(getattr(config, step.config_section))


def step_config(config, step: Step) -> Any:
    """The section of the whole Config that `step` receives (Step.config_section)."""
    return getattr(config, step.config_section)


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


check_steps(STEPS, PRODUCT, RUN_COLUMNS)  # at import: a wiring fault fails every command at once, with one line
