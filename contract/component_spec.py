"""What a step declares about itself, as TFX's component spec does: the ComponentSpec that each
components/<step>/spec.py defines as SPEC. The DAG (pipeline/dag.py) wires specs together and never imports an
executor; the runner imports a step's executor by its module path when the step runs.

The executor contract is `run(inputs, output_dir, config, runtime) -> {output name: Artifact}`: `inputs` maps
input names to Artifacts, `output_dir` is a temporary folder the runner publishes by one rename, `config` is
the step's configuration section, `runtime` the run's Runtime (contract/artifacts.py).

A hook is either a function (of the spec module, so it costs no heavy import) or the name of a function of the
executor, for what needs modules a spec may not import (TFDS, the model registry, pretrained vectors): the
executor is then imported when the hook is first called, never when the DAG is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

Hook = Callable[..., Any] | str | None


@dataclass(frozen=True)
class ComponentSpec:
    # The spec's own module (pass __name__): a step's code version covers it and the executor.
    module: str
    # The executor's module path, "components.<step>.executor" (its function run), or "module:function".
    executor: str
    outputs: tuple[str, ...]
    # The configuration section (an attribute of contract.config.Config) the executor receives.
    config_section: str
    # The result depends on the pipeline's random seed, which is then part of the step's cache key.
    seeded: bool = False
    # The runner keeps an interrupted execution's temporary folder so the executor can resume from it.
    resumable: bool = False
    # The executor prints its own progress lines (elapsed time, ETA); the runner's heartbeat stays quiet.
    reports_progress: bool = False
    # The configuration key naming the outside data of the pipeline's source step; its `external` fingerprint
    # is the run's data fingerprint, which `retrain` compares.
    source: str = ""
    # "output.property": when true, that output was delivered outside the pipeline root (a pushed model). It
    # decides the run's outcome and retrain's exit code; gc keeps such outputs and their lineage for good.
    delivers: str = ""
    # (config section) -> fingerprint of data outside the pipeline root the step reads (a source file, a
    # schema, pretrained vectors), part of the step's cache key; None: it reads none.
    external: Hook = None
    # (config section) -> the rows of the outside data it reads, counted cheaply (None: not known): the
    # heartbeat scales its ETA by them. Steps with input artifacts are measured by their row properties.
    input_rows: Hook = None
    # (config section) -> None: checks the section against the libraries it uses (ConfigError), before any
    # step runs.
    check_config: Hook = None
    # (inputs, config section) -> JSON-able: what the step decides where that can change while neither its
    # inputs nor its configuration do (the tuner's search-or-reuse depends on the clock); part of its cache
    # key.
    decision: Hook = None
    # (serving folder) -> what a killed execution of it left in the folder it delivers to; gc removes it.
    leftovers: Hook = None

    @property
    def executor_module(self) -> str:
        return self.executor.partition(":")[0]

    def executor_function(self, name: str) -> Callable[..., Any]:
        """The executor's function `name`, importing the executor module now."""
        return getattr(importlib.import_module(self.executor_module), name)

    def run(self, inputs: dict[str, Any], output_dir: Path, config: Any, runtime: Any) -> dict[str, Any]:
        """Imports the executor and runs it: the only place a step's heavy code is loaded."""
        run = self.executor_function(self.executor.partition(":")[2] or "run")
        return run(inputs, output_dir, config, runtime)

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The hook `name` (a field above) as a function, or None if the step declares none."""
        hook = getattr(self, name)
        if isinstance(hook, str):
            return self.executor_function(hook)
        return hook
