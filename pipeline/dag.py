"""The whole pipeline, top to bottom: wiring only, as Kedro's pipeline of nodes.

Each step is a package components/<step>/: spec.py declares it (its SPEC, a
contract.component_spec.ComponentSpec: outputs, configuration section, executor module path and the hooks the
runner calls), executor.py runs it. A Step here names the step, its spec, and where each input comes from
("step.output", or a Resolver that asks the metadata store). This module imports the seven specs and never an
executor: the runner imports a step's executor by its module path when the step runs (ComponentSpec.run) or
calls a hook the spec names in it, so `runs`, `show` and `gc` load no TensorFlow, TFT or Beam. A step's code
version covers its spec and its executor (library/code_version.py). What the run summary, the report, `show`
and `runs` print about the outputs is pipeline/headlines.py's. The runner executes the steps in this order;
the wiring is checked when this module is imported.

Adding a step: a package components/<step>/ (spec.py with SPEC, executor.py with run), its spec's import and
one Step line below, and its configuration section (a dataclass and a Config field in contract/config.py);
docs/development.md lists the edits and tests/system/test_add_a_step.py makes them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from components.evaluator import spec as evaluator_spec
from components.ingest import spec as ingest_spec
from components.pusher import spec as pusher_spec
from components.trainer import spec as trainer_spec
from components.transform import spec as transform_spec
from components.tuner import spec as tuner_spec
from components.validate import spec as validate_spec
from contract.component_spec import ComponentSpec
from contract.names import (
    ANCHOR_BLESSINGS,
    BASELINE_MODEL,
    BEST_HYPERPARAMETERS,
    BLESSING,
    EXAMPLES,
    MODEL,
    MODEL_RUN,
    PREVIOUS_EXAMPLES,
    SCHEMA,
    TRANSFORM_GRAPH,
    TRANSFORMED_EXAMPLES,
)
from library.folder_layouts import serving_version_dir, serving_versions
from library.layouts import has_saved_model


class DagError(ValueError):
    """The steps are wired wrongly (a programming error): raised when the DAG is built, at import."""


@dataclass(frozen=True)
class Resolver:
    """An input taken from the metadata store instead of this run, like TFX's Resolver node: the newest
    `artifact` ("step.output") that an execution of `judged_by`'s step consumed while its `judged_by` output
    had the property `where` true; with `judged_by` equal to `artifact`, the newest such artifact whose own
    property `where` is true and whose properties hold `matching`'s values. It is never the artifact the step
    also receives from this run (a candidate is not its own baseline), nor one that the consuming step itself
    computed from the very inputs it has now (so an unchanged re-run stays cached), and it is optional: the
    input is absent until such an artifact exists."""
    name: str
    artifact: str
    # = artifact: the newest `artifact` whose own property `where` is true (earlier examples)
    judged_by: str
    where: str
    # Where the artifact is found when the store knows none at all (a lost or replaced store), from the
    # configuration: a folder, recorded as an external artifact, or None.
    fallback: Callable[[Any], Path | None] | None = None
    # Properties the artifact must have, from the configuration (the tuner's search fingerprint); None: any.
    matching: Callable[[Any], dict[str, Any]] | None = None
    # The input only saves work (the outputs are the same without it): not in the cache key or the lineage.
    saves_work_only: bool = False
    # Inputs of the consuming step: an artifact whose producer consumed exactly these (same fingerprints) is
    # passed over, as a step's own earlier output computed from the inputs it has now always is.
    same_inputs: tuple[str, ...] = ()

    def resolve(
        self,
        store,
        steps: tuple[Step, ...],
        exclude_fingerprint: str | None = None,
        config: Any = None,
        exclude_inputs: dict[str, str] | None = None,
    ):
        """Asks the metadata store (a MetadataStore) for the artifact; None if there is none yet. `config`
        (the whole Config) feeds `matching`; without it any match is accepted (gc keeps every candidate).
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
    serving folder (a retrain's push or a rollback's re-publish). With `count`, a list: the newest
    `count(config)` served versions' artifacts, each with its `served_version` property, never in the lineage
    (the step's `decision` puts them in its cache key). A version the store knows nothing of (pushed by
    another root, a lost store) is the version folder itself, recorded as an external artifact. Without
    `config` (gc) it resolves
    nothing: the retention policy protects the served versions itself. The exclusions are Resolver's: a served
    version whose artifact is excluded is passed over for the next lower one. With `via`, the input of that
    name of the execution that wrote the artifact (the examples the served model was trained on) instead."""
    count: Callable[[Any], int] | None = None
    via: str | None = None

    def resolve(
        self,
        store,
        steps: tuple[Step, ...],
        exclude_fingerprint: str | None = None,
        config: Any = None,
        exclude_inputs: dict[str, str] | None = None,
    ):
        # gc, or "does the store know any?" (the runner's fallback rule): the newest pushed one
        if config is None:
            return (
                None
                if self.count is not None
                else super().resolve(store, steps, exclude_fingerprint, None, exclude_inputs)
            )
        serving_dir = config.serving_dir()
        wanted = self.count(config) if self.count is not None else 1
        found = []
        for version, artifact in served_artifacts(store, steps, self, serving_dir):
            if len(found) >= wanted:
                break
            if artifact is None:
                if self.count is None:
                    # Unknown to this store (published by a push killed before its record, by another root, or
                    # the store was lost): the newest pushed model the store knows, as the resolver of the
                    # newest blessed model did, so an unchanged re-run stays cached; with none at all the
                    # runner takes the version folder itself (`fallback`) and says so.
                    return super().resolve(store, steps, exclude_fingerprint, config, exclude_inputs)
                continue
            if (artifact.deleted or artifact.fingerprint == exclude_fingerprint
                    or store.computed_from(artifact.id, exclude_inputs)):
                continue
            found.append(
                dataclasses.replace(artifact, properties={**artifact.properties, "served_version": version})
            )
        if self.via is not None:
            found = [item for item in (self._via(store, artifact) for artifact in found) if item is not None]
        if self.count is not None:
            return found
        return found[0] if found else None

    def _via(self, store, artifact):
        producer = store.producer(artifact.id)
        return store.artifacts_of(producer["id"], "input").get(self.via) if producer is not None else None


def served_artifacts(store, steps: tuple[Step, ...], resolver: Resolver, serving_dir: Path):
    """(version, the artifact its publisher consumed as `resolver.artifact`, or None), highest version first,
    for every complete version in the serving folder, except the versions a rollback rolled away from: after
    `rollback X` published as version Y, the versions between X and Y were judged bad by the operator, so they
    are neither a baseline nor part of the gate's anchor."""
    judge_name, judgement = resolver.judged_by.split(".")
    consumed_as = next(name for name, source in step_named(judge_name, steps).inputs.items()
                       if source == resolver.artifact)
    # version -> the newest execution that published it there
    published: dict[int, Any] = {}
    rolled_away: set[int] = set()
    for execution, pushed in store.outputs_where(judge_name, judgement, resolver.where):
        version, path = pushed.properties.get("version"), pushed.properties.get("path")
        if isinstance(version, int) and path and Path(path) == serving_version_dir(serving_dir, version):
            published[version] = execution
            rolled_back_to = pushed.properties.get("rolled_back_to")
            if isinstance(rolled_back_to, int):
                rolled_away.update(range(rolled_back_to + 1, version))
    for version in reversed(serving_versions(serving_dir)):
        if version in rolled_away or not has_saved_model(serving_version_dir(serving_dir, version)):
            continue
        execution = published.get(version)
        consumed = store.artifacts_of(execution["id"], "input").get(consumed_as) if execution else None
        yield version, consumed


@dataclass(frozen=True)
class Step:
    """One node of the DAG: its name, its spec (what it declares about itself), and where each input comes
    from (input name -> "step.output" of an earlier step, or a Resolver)."""
    name: str
    spec: ComponentSpec
    inputs: dict[str, str | Resolver] = field(default_factory=dict)


# The evaluator's baseline and the trainer's warm-start base: the served model (the highest served version),
# so after `rollback` the next retrain compares with, and starts from, the model rolled back to.
SERVED_MODEL = ServedResolver("served_model", artifact="trainer.model", judged_by="pusher.pushed_model",
                              where="pushed",
                              fallback=lambda config: pusher_spec.newest_version(config.serving_dir()))
# The blessings (per-row test results) of the last evaluator.anchor_versions served versions: the gate's
# anchor.
SERVED_BLESSINGS = ServedResolver("served_blessings", artifact="evaluator.blessing",
                                  judged_by="pusher.pushed_model", where="pushed",
                                  count=lambda config: config.evaluator.anchor_versions)
# The same model, for the tuner's one search per drift episode: only whether its hyperparameters came from the
# search that answered a drift counts, and that is in the tuner's decision (its cache key), so the model
# itself is neither in the key nor in the lineage.
SERVED_FOR_TUNER = dataclasses.replace(SERVED_MODEL, saves_work_only=True, fallback=None)
# Validate's reference: the served model (its vocabulary, its predictions, its training spans) and the
# examples it was trained on (their cached span profiles). Not one trained on the very examples validate
# checks now (an unchanged re-run after a push resolves what the first run resolved, so it stays cached); no
# version-folder
# fallback: without a model the store knows, validate keeps the window rule.
SERVED_FOR_VALIDATE = dataclasses.replace(SERVED_MODEL, fallback=None, same_inputs=(EXAMPLES,))
SERVED_EXAMPLES = dataclasses.replace(SERVED_FOR_VALIDATE, name="served_examples", via=EXAMPLES)
# The newest hyperparameters this root tuned for the same search (the tuner reuses them unless tuner.retune or
# drift asks for a new search).
LATEST_TUNED_HYPERPARAMETERS = Resolver(
    "latest_tuned_hyperparameters",
    artifact="tuner.best_hyperparameters",
    judged_by="tuner.best_hyperparameters",
    where="tuned",
    matching=lambda config: {"search_fingerprint": tuner_spec.search_fingerprint(config.tuner)},
)

# Ingest's earlier examples of a stream of spans: spans whose files are unchanged are carried over from them.
LATEST_EXAMPLES = Resolver("latest_examples", artifact="ingest.examples", judged_by="ingest.examples",
                           where="window_summary", saves_work_only=True)

STEPS: tuple[Step, ...] = (
    Step("ingest", ingest_spec.SPEC, inputs={PREVIOUS_EXAMPLES: LATEST_EXAMPLES}),
    Step("validate", validate_spec.SPEC, inputs={EXAMPLES: "ingest.examples",
                                                 validate_spec.SERVED_MODEL_INPUT: SERVED_FOR_VALIDATE,
                                                 validate_spec.SERVED_EXAMPLES_INPUT: SERVED_EXAMPLES}),
    Step("transform", transform_spec.SPEC, inputs={EXAMPLES: "ingest.examples", SCHEMA: "validate.schema"}),
    Step("tuner", tuner_spec.SPEC, inputs={TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                                           TRANSFORM_GRAPH: "transform.transform_graph",
                                           tuner_spec.DRIFT_INPUT: "validate.statistics",
                                           # the drifted spans' label mix
                                           EXAMPLES: "ingest.examples",
                                           tuner_spec.SERVED_INPUT: SERVED_FOR_TUNER,
                                           tuner_spec.TUNED_INPUT: LATEST_TUNED_HYPERPARAMETERS}),
    Step("trainer", trainer_spec.SPEC, inputs={TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                                               TRANSFORM_GRAPH: "transform.transform_graph",
                                               BEST_HYPERPARAMETERS: "tuner.best_hyperparameters",
                                               # its spans (names and SHA-256): recorded with the model, and
                                               # what a warm start's base must have learned from
                                               EXAMPLES: "ingest.examples",
                                               # warm start (trainer.warm_start)
                                               trainer_spec.BASE_MODEL_INPUT: SERVED_MODEL}),
    Step("evaluator", evaluator_spec.SPEC, inputs={MODEL: "trainer.model",
                                                   EXAMPLES: "ingest.examples",
                                                   TRANSFORMED_EXAMPLES: "transform.transformed_examples",
                                                   MODEL_RUN: "trainer.model_run",
                                                   BASELINE_MODEL: SERVED_MODEL,
                                                   ANCHOR_BLESSINGS: SERVED_BLESSINGS}),
    Step("pusher", pusher_spec.SPEC, inputs={MODEL: "trainer.model", BLESSING: "evaluator.blessing"}),
)


def _fail(message: str) -> None:
    raise DagError(f"pipeline DAG: {message}")


def _check_outputs_and_inputs(steps: tuple[Step, ...]) -> set[str]:
    """Step names and outputs are unique and every plain input is an earlier step's output; returns the known
    "step.output" names."""
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        _fail(f"two steps share a name: {names}")
    # output name -> its step
    produced: dict[str, str] = {}
    # "step.output" of the steps so far
    known: set[str] = set()
    for step in steps:
        for name, source in step.inputs.items():
            # A Resolver is checked once every step is known.
            if not isinstance(source, Resolver) and source not in known:
                _fail(f"step {step.name!r} input {name!r} reads {source!r}, which no earlier step outputs "
                      f"(known: {', '.join(sorted(known)) or 'none'})")
        outputs = step.spec.outputs
        for output in outputs:
            if output in produced:
                _fail(f"output {output!r} of step {step.name!r} is also an output of step "
                      f"{produced[output]!r}")
            produced[output] = step.name
            known.add(f"{step.name}.{output}")
        if step.spec.delivers and step.spec.delivers.partition(".")[0] not in outputs:
            _fail(f"step {step.name!r} delivers {step.spec.delivers!r}, not one of its outputs {outputs}")
    return known


def _check_resolvers(steps: tuple[Step, ...], known: set[str]) -> None:
    for step in steps:
        for source in step.inputs.values():
            if not isinstance(source, Resolver):
                continue
            if source.artifact not in known:
                _fail(
                    f"resolver {source.name!r} of step {step.name!r} resolves {source.artifact!r}, which no "
                    "step outputs"
                )
            judge = source.judged_by.partition(".")[0]
            if source.judged_by not in known:
                _fail(f"resolver {source.name!r} is judged by {source.judged_by!r}, which no step outputs")
            if (
                source.judged_by != source.artifact
                and source.artifact not in step_named(judge, steps).inputs.values()
            ):
                _fail(f"resolver {source.name!r} is judged by step {judge!r}, which does not consume "
                      f"{source.artifact!r}")


def check_steps(steps: tuple[Step, ...]) -> None:
    """Checks the wiring when the DAG is built, as Kedro checks a node: every input names an output of an
    earlier step, outputs are unique, `delivers` names the step's output, and a resolver resolves an output
    and is judged by a step that consumes it. Raises DagError with one line for the first fault."""
    _check_resolvers(steps, _check_outputs_and_inputs(steps))


def step_config(config, step: Step) -> Any:
    """The section of the whole Config that `step` receives (ComponentSpec.config_section)."""
    return getattr(config, step.spec.config_section)


STEP_NAMES = tuple(step.name for step in STEPS)


def step_named(name: str, steps: tuple[Step, ...] = STEPS) -> Step:
    for step in steps:
        if step.name == name:
            return step
    raise KeyError(f"unknown step {name!r}; steps: {', '.join(s.name for s in steps)}")


def source_step(steps: tuple[Step, ...] = STEPS) -> Step | None:
    """The step whose outside data is the pipeline's input data (ComponentSpec.source), if any."""
    return next((step for step in steps if step.spec.source), None)


def delivering_steps(steps: tuple[Step, ...] = STEPS) -> list[Step]:
    return [step for step in steps if step.spec.delivers]


def resolvers(steps: tuple[Step, ...] = STEPS) -> list[Resolver]:
    return [source for step in steps for source in step.inputs.values() if isinstance(source, Resolver)]


# at import: a wiring fault fails every command at once, with one line
check_steps(STEPS)
