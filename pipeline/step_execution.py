"""Executing one step of a run, for the runner: it resolves the step's inputs, computes the cache key (step,
code version, configuration, input fingerprints, external data fingerprint), reuses an earlier intact
execution or runs the component in a temporary folder, publishes the outputs by one rename, records the
execution in the metadata store, and prints the step's progress lines. Components never do any of this
themselves."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from contract.artifacts import Artifact, ComponentError, Runtime, fingerprint
from contract.config import Config
from contract.disk import disk_full
from library.beam_options import with_log_dir
from library.code_version import step_code_version
from library.folder_layouts import step_log_file
from pipeline import dag, interrupts
from pipeline.heartbeat import Heartbeat, estimate_for
from pipeline.logs import Console, log_event
from pipeline.metadata import MetadataStore, StoredArtifact
from pipeline.root import FreeSpacePolicy, fault_message
from pipeline.store_errors import StoreError


class PipelineFailed(RuntimeError):
    """A step failed; the message names the step and the reason, `kind`, `details` and `facts` the component's
    ComponentError.kind, .details and .facts (what it measured before refusing)."""

    def __init__(self, message: str, kind: str | None = None, details: dict | None = None,
                 facts: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.details = details
        self.facts = facts or {}


@dataclass
class StepResult:
    step: str
    # ran | cached | skipped | failed
    state: str
    seconds: float = 0.0
    outputs: dict[str, Artifact] = field(default_factory=dict)
    note: str = ""
    # a failed step's ComponentError.facts
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)


class StepExecution:
    """Runs or reuses the steps of one run, one at a time (Runner.run makes one per run)."""

    def __init__(self, config: Config, steps: tuple[dag.Step, ...], root: Path, store: MetadataStore,
                 runtime: Runtime, log, free_space: FreeSpacePolicy):
        self.config = config
        self.steps = steps
        self.root = root
        self.store = store
        self.runtime = runtime
        self.log = log
        self.free_space = free_space

    def _resolve_inputs(
        self, step: dag.Step, produced, artifact_ids
    ) -> tuple[dict[str, Artifact], dict[str, int]]:
        inputs, ids = {}, {}
        for name, source in step.inputs.items():
            if not isinstance(source, dag.Resolver):
                inputs[name], ids[name] = produced[source], artifact_ids[source]
        for name, source in step.inputs.items():
            if isinstance(source, dag.Resolver):
                # A candidate is never its own baseline: a re-run of an already blessed model keeps the
                # baseline it had, so its evaluation stays cached.
                this_run = artifact_ids.get(source.artifact)
                exclude = self.store.artifact(this_run).fingerprint if this_run is not None else None
                # Nor is a step's earlier output that it computed from the inputs it has now (the tuner's
                # previous search, the model a warm start would start from): an unchanged re-run resolves what
                # the first run resolved, so it stays cached.
                names = tuple(ids) if source.artifact.split(".")[0] == step.name else source.same_inputs
                same_inputs = {n: self.store.artifact(ids[n]).fingerprint for n in names if n in ids} or None
                resolved = source.resolve(
                    self.store,
                    self.steps,
                    exclude_fingerprint=exclude,
                    config=self.config,
                    exclude_inputs=same_inputs,
                )
                if (
                    resolved is None
                    and source.fallback is not None
                    and source.resolve(self.store, self.steps) is None
                ):
                    resolved = self._fallback(source)
                # a list (dag.ServedResolver.count): never cache key nor lineage
                if isinstance(resolved, list):
                    inputs[name] = [item.as_artifact() for item in resolved if item.uri.exists()]
                    continue
                if resolved is not None and resolved.uri.exists():
                    inputs[name] = resolved.as_artifact()
                    # one that only saves work is neither cache key nor lineage
                    if not source.saves_work_only:
                        ids[name] = resolved.id
        return inputs, ids

    def _fallback(self, resolver: dag.Resolver) -> StoredArtifact | None:
        """The resolver's artifact found outside the store (dag.Resolver.fallback), for when the store knows
        none at all (a lost or replaced store): the gate that input feeds must not silently disappear."""
        path = resolver.fallback(self.config)
        if path is None:
            return None
        self.log(f"note: the metadata store knows no {resolver.name}; using {path}")
        return self.store.external_artifact(resolver.artifact.split(".")[1], path, fingerprint(path), {})

    def _cache_key(self, step: dag.Step, step_cfg: Any, input_ids: dict[str, int], code: str,
                   inputs: dict[str, Artifact]) -> str:
        external_hook = step.spec.hook("external")
        external = external_hook(step_cfg) if external_hook is not None else None
        key = {
            "step": step.name,
            "code_version": code,
            "config": json.loads(json.dumps(dataclasses.asdict(step_cfg), default=str)),
            "inputs": {name: self.store.artifact(i).fingerprint for name, i in sorted(input_ids.items())},
            "external": external,
            "seed": self.runtime.seed if step.spec.seeded else None,
        }
        decision = step.spec.hook("decision")
        # only then: the keys of other steps stay those of earlier versions
        if decision is not None:
            key["decision"] = decision(inputs, step_cfg)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def _reusable(self, step: dag.Step, cache_key: str) -> tuple[int, dict[str, StoredArtifact]] | None:
        """An earlier successful execution with this key whose outputs are all still present and intact."""
        for execution in self.store.find_cached(step.name, cache_key):
            outputs = self.store.artifacts_of(execution["id"], "output")
            if set(outputs) != set(step.spec.outputs):
                continue
            intact = all(not a.deleted and a.uri.exists() and fingerprint(a.uri) == a.fingerprint
                         for a in outputs.values())
            if intact:
                return execution["id"], outputs
            self.log(f"    cached outputs of execution {execution['id']} are missing or changed; recomputing")
        return None

    def run_step(self, step, run_id, run_dir, produced, artifact_ids, use_cache, prefix,
                 upstream_of: str | None = None) -> StepResult:
        """Runs or reuses `step`. With `upstream_of` (the --from step) it never runs: it must be reusable."""
        step_cfg = dag.step_config(self.config, step)
        inputs, input_ids, code, cache_key = self._prepare(step, step_cfg, produced, artifact_ids, prefix)
        execution_id = self.store.start_execution(run_id, step.name, cache_key, code,
                                                  dataclasses.asdict(step_cfg))
        started = time.monotonic()
        reusable = self._reusable(step, cache_key) if use_cache or upstream_of else None
        if reusable is None and upstream_of:
            message = (
                f"--from {upstream_of} needs the outputs of {step.name}, but {step.name} has no successful "
                f"execution with this configuration and these inputs; run it first "
                f"(agnews-pipeline run --until {step.name})"
            )
            self.store.fail_execution(execution_id, message)
            log_event(self.log, "step_failed", f"{prefix} FAILED: {message}", level="error", step=step.name)
            raise PipelineFailed(message)
        if reusable is not None:
            return self._reuse(step, execution_id, reusable, input_ids, produced, artifact_ids, prefix,
                               started)

        self._check_free_space(step, execution_id, prefix)
        # A fixed temporary folder per cache key lets a resumable step pick up an interrupted attempt.
        work_dir = self.root / "tmp" / f"{step.name}-{cache_key[:16]}"
        if work_dir.exists() and not step.spec.resumable:
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        log_event(self.log, "step_started", f"{prefix} running ...", step=step.name)
        log_file = step_log_file(run_dir, step.name)
        try:
            with self._heartbeat(step, step_cfg, inputs, prefix, started), self._capture(log_file, step.name):
                # On dask, a stalled step leaves the cluster's state in its own folder (kept as
                # <step>.failed).
                runtime = dataclasses.replace(
                    self.runtime, beam_args=with_log_dir(self.runtime.beam_args, work_dir)
                )
                # imports the executor
                outputs = step.spec.run(inputs, work_dir, step_cfg, runtime)
            missing = set(step.spec.outputs) - set(outputs)
            if missing:
                raise ComponentError(f"component returned no {sorted(missing)} output")
        # every failure is recorded, then reported
        except Exception as error:
            raise self._failed(step, error, work_dir, run_dir, log_file, execution_id, prefix,
                               started) from None
        return self._publish(step, outputs, work_dir, run_dir, execution_id, input_ids, produced,
                             artifact_ids, prefix, started)

    def _prepare(self, step, step_cfg, produced, artifact_ids, prefix) -> tuple:
        """The step's inputs, their artifact ids, its code version and its cache key; a missing input fails
        the step with one line."""
        try:
            inputs, input_ids = self._resolve_inputs(step, produced, artifact_ids)
            code = step_code_version(step)
            cache_key = self._cache_key(step, step_cfg, input_ids, code, inputs)
        except ComponentError as error:
            log_event(self.log, "step_failed", f"{prefix} FAILED: {error}", level="error", step=step.name)
            message = str(error)
            raise PipelineFailed(
                message if message.startswith(f"{step.name}: ") else f"{step.name}: {message}",
                getattr(error, "kind", None),
            ) from None
        return inputs, input_ids, code, cache_key

    def _reuse(self, step, execution_id, reusable, input_ids, produced, artifact_ids, prefix,
               started) -> StepResult:
        """Records `step` as cached from an earlier execution's intact outputs and hands them on."""
        reused_id, outputs = reusable
        self.store.record_cached(execution_id, reused_id, input_ids, {n: a.id for n, a in outputs.items()})
        for name, stored in outputs.items():
            produced[f"{step.name}.{name}"] = stored.as_artifact()
            artifact_ids[f"{step.name}.{name}"] = stored.id
        origin = self.store.execution(reused_id)
        log_event(self.log, "step_cached", f"{prefix} cached ({time.monotonic() - started:.1f}s, from run "
                  f"{origin['run_id']})", step=step.name, from_run=origin["run_id"])
        return StepResult(step.name, "cached", time.monotonic() - started,
                          {n: a.as_artifact() for n, a in outputs.items()}, note=origin["run_id"])

    def _failed(self, step, error, work_dir, run_dir, log_file, execution_id, prefix,
                started) -> BaseException:
        """The exception that ends the run after `step` raised `error`: the failure recorded in the store, the
        failed attempt kept as <step>.failed (or removed when it filled the disk), one line for the user."""
        # a signal that a library wrapped into another exception (Beam does)
        if interrupts.received():
            return interrupts.Interrupted(interrupts.received())
        message = str(error) if isinstance(error, ComponentError) else f"{type(error).__name__}: {error}"
        stored = message if isinstance(error, ComponentError) else f"{message}\n{traceback.format_exc()}"
        fault = fault_message(error, work_dir, f"running {step.name}")
        if fault is not None and disk_full(error) and not step.spec.resumable:
            # The half-written attempt is what filled the disk and nothing can use it: give the space back
            # (a resumable step keeps its folder: its finished work is reused when the run is started again).
            shutil.rmtree(work_dir, ignore_errors=True)
            fault += " (the failed attempt's partial output was removed to free its space)"
        # keep the failed attempt for inspection, under a non-final name
        elif not step.spec.resumable:
            failed_dir = run_dir / f"{step.name}.failed"
            os.replace(work_dir, failed_dir)
            # paths the message names moved too
            message = message.replace(str(work_dir), str(failed_dir))
            message += f"\n(partial output kept in {failed_dir})"
        message = fault or message
        # The store keeps the traceback of an unexpected error; the user sees its message.
        # its disk may be full too: Runner._failed reports that
        with contextlib.suppress(StoreError):
            self.store.fail_execution(execution_id, stored)
        seen = f" (what the libraries printed: {log_file})" if log_file.is_file() else ""
        log_event(self.log, "step_failed", f"{prefix} FAILED after {time.monotonic() - started:.1f}s{seen}",
                  level="error", step=step.name, seconds=round(time.monotonic() - started, 1))
        # components may name themselves already
        if not message.startswith(f"{step.name}: "):
            message = f"{step.name}: {message}"
        return PipelineFailed(message, getattr(error, "kind", None), getattr(error, "details", None),
                              getattr(error, "facts", None))

    def _publish(self, step, outputs, work_dir, run_dir, execution_id, input_ids, produced, artifact_ids,
                 prefix, started) -> StepResult:
        """Publishes the step's finished outputs by renaming its temporary folder to runs/<run>/<step>, then
        records them in the store."""
        fingerprints = {name: fingerprint(a.uri) for name, a in outputs.items()}
        final_dir = run_dir / step.name
        # A stop the component swallowed (or Python discarded) ends the run before the publish: nothing of
        # this step is published; its temporary folder stays for a resumable step, as after any interruption.
        interrupts.stop_if_received()
        # the publish: one rename, after which the outputs are complete
        os.replace(work_dir, final_dir)
        published = {name: a.relocated(work_dir, final_dir) for name, a in outputs.items()}
        ids = self.store.complete_execution(execution_id, final_dir, input_ids,
                                            {n: (published[n], fingerprints[n]) for n in step.spec.outputs})
        for name in step.spec.outputs:
            produced[f"{step.name}.{name}"] = published[name]
            artifact_ids[f"{step.name}.{name}"] = ids[name]
        seconds = time.monotonic() - started
        log_event(self.log, "step_done", f"{prefix} done in {seconds:.1f}s -> {final_dir}", step=step.name,
                  seconds=round(seconds, 1), outputs=str(final_dir))
        return StepResult(step.name, "ran", seconds, {n: published[n] for n in step.spec.outputs})

    def _check_free_space(self, step: dag.Step, execution_id: int, prefix: str) -> None:
        """Fails a step before it starts, recorded as failed, when the pipeline root's filesystem has less
        free space than pipeline.min_free_space (root.FreeSpacePolicy)."""
        message = self.free_space.shortage(step)
        if message is None:
            return
        with contextlib.suppress(StoreError):
            self.store.fail_execution(execution_id, message)
        log_event(self.log, "step_failed", f"{prefix} FAILED: not enough free space", level="error",
                  step=step.name)
        raise PipelineFailed(message)

    def _heartbeat(self, step: dag.Step, step_cfg: Any, inputs: dict[str, Artifact], prefix: str,
                   started: float) -> Heartbeat | contextlib.nullcontext:
        """Progress lines while the step runs (pipeline.progress_seconds; none for a step that prints its
        own)."""
        period = self.config.pipeline.progress_seconds
        if period <= 0 or step.spec.reports_progress:
            return contextlib.nullcontext()
        return Heartbeat(lambda line: log_event(self.log, "progress", line, step=step.name), prefix, period,
                         estimate_for(self.store, step, step_cfg, inputs), started)

    @contextlib.contextmanager
    def _capture(self, log_file: Path, step: str) -> Iterator[None]:
        """While a step runs: the libraries' output (fd 1 and 2) goes to its log file in the run folder, and
        the console's lines name the step."""
        if not isinstance(self.log, Console):
            yield
            return
        self.log.step = step
        try:
            with self.log.capture(log_file):
                yield
        finally:
            self.log.step = None
