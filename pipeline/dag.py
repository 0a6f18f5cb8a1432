"""The whole pipeline, top to bottom.

Each step names its component module, where each input comes from ("step.output"), the outputs it
publishes, and the configuration section it receives. The runner executes the steps in this order.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

# An input resolved by the runner from the metadata store rather than from this run: the model of the
# most recent blessing. Optional: absent on the first run.
LAST_BLESSED_MODEL = "store:last_blessed_model"


@dataclass(frozen=True)
class Step:
    name: str
    component: str  # module with run(inputs, output_dir, config, runtime), e.g. "components.ingest"
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> "step.output" or a store: query
    outputs: tuple[str, ...] = ()
    config_section: str = ""
    # Modules whose source is part of this step's code version (its own module is always included).
    code: tuple[str, ...] = ()
    # The runner keeps an interrupted execution's temporary folder so the component can resume from it.
    resumable: bool = False
    # The result depends on the pipeline's random seed, which is then part of the step's cache key.
    seeded: bool = False

    def module(self) -> ModuleType:
        return importlib.import_module(self.component)


STEPS: tuple[Step, ...] = (
    Step("ingest", "components.ingest",
         outputs=("examples",),
         config_section="ingest",
         code=("library.ag_news_csv", "library.tfrecord_io", "library.layouts")),
    Step("validate", "components.validate",
         inputs={"examples": "ingest.examples"},
         outputs=("schema", "statistics", "anomalies"),
         config_section="validate",
         code=("library.layouts",)),
    Step("transform", "components.transform",
         inputs={"examples": "ingest.examples", "schema": "validate.schema"},
         outputs=("transform_graph", "transformed_examples"),
         config_section="transform",
         code=("library.text", "library.tfrecord_io", "library.layouts", "library.reproducible_saved_model")),
    Step("tuner", "components.tuner",
         inputs={"transformed_examples": "transform.transformed_examples",
                 "transform_graph": "transform.transform_graph"},
         outputs=("best_hyperparameters",),
         config_section="tuner",
         code=("library.models", "library.dataset", "library.layouts", "library.embeddings"),
         resumable=True,
         seeded=True),
    Step("trainer", "components.trainer",
         inputs={"transformed_examples": "transform.transformed_examples",
                 "transform_graph": "transform.transform_graph",
                 "best_hyperparameters": "tuner.best_hyperparameters"},
         outputs=("model", "model_run"),
         config_section="trainer",
         code=("library.models", "library.dataset", "library.layouts", "library.export", "library.embeddings"),
         seeded=True),
    Step("evaluator", "components.evaluator",
         inputs={"model": "trainer.model",
                 "examples": "ingest.examples",
                 "transformed_examples": "transform.transformed_examples",
                 "model_run": "trainer.model_run",
                 "baseline_model": LAST_BLESSED_MODEL},
         outputs=("evaluation", "blessing"),
         config_section="evaluator",
         code=("library.export", "library.evaluation_report", "library.layouts")),
    Step("pusher", "components.pusher",
         inputs={"model": "trainer.model", "blessing": "evaluator.blessing"},
         outputs=("pushed_model",),
         config_section="pusher",
         code=("library.layouts",)),
)

STEP_NAMES = tuple(step.name for step in STEPS)


def step_named(name: str) -> Step:
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")
