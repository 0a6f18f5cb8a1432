"""The local runner: executes the DAG's steps in order and owns everything cross-cutting.

Runner.run is the run loop: it starts a run in the metadata store, executes each step
(pipeline/step_execution.py: its inputs, cache key, temporary folder, publish by rename and record), takes the
steps before --from from earlier executions, skips those after --until, and records how the run ended
(pipeline/records.py). The pipeline root's lock, scratch folder and free-space policy are pipeline/root.py's.
Components never do any of this themselves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from contract.artifacts import Artifact, Runtime
from contract.config import Config
from library.beam_options import all_beam_args, check_pipeline_options
from pipeline import dag, headlines, interrupts
from pipeline.logs import Console, log_event
from pipeline.metadata import MetadataStore
from pipeline.records import write_run_record
from pipeline.report import embeddings_line, headline_facts
from pipeline.root import FreeSpacePolicy, fault_message, scratch_tempdir
from pipeline.step_execution import PipelineFailed, StepExecution, StepResult
from pipeline.store_errors import StoreError


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    steps: list[StepResult]
    error: str | None = None
    # see Runner._outcome
    outcome: str | None = None
    # a failed step's ComponentError.kind (e.g. "drift"), if it has one
    error_kind: str | None = None
    # and its ComponentError.details (validate: the spans it refused)
    error_details: dict | None = None

    @property
    def delivered(self) -> bool:
        """The step that delivers did deliver, in this run or in the earlier execution it reused."""
        return self.outcome is not None and not self.outcome.startswith(("not_", "stopped_"))

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)

    def artifact(self, step: str, output: str) -> Artifact | None:
        result = self.step(step)
        return result.outputs.get(output) if result else None


def step_range(step_names: list[str], from_step: str | None, until: str | None,
               only: str | None) -> tuple[str | None, str | None]:
    """(--from, --until) after --only; ValueError for a combination that makes no sense."""
    if only and (from_step or (until and until != only)):
        raise ValueError(
            "--only STEP runs one step; it cannot be combined with --from or a different --until"
        )
    if only:
        return only, only
    if from_step and until and step_names.index(until) < step_names.index(from_step):
        raise ValueError(f"--until {until} comes before --from {from_step}; nothing would run")
    return from_step, until


def check_config(config: Config, steps: tuple[dag.Step, ...] = dag.STEPS) -> None:
    """What the configuration schema (contract/config.py) cannot check alone, because it imports no library:
    the Beam flags (with Beam's own option classes) and each step's section against the libraries that use
    it (e.g. the architecture against the model registry). Raises ConfigError before any work starts."""
    check_pipeline_options(config.pipeline)
    for step in steps:
        check = step.spec.hook("check_config")
        if check is not None:
            check(dag.step_config(config, step))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Runner:
    def __init__(self, config: Config, log=print, steps: tuple[dag.Step, ...] = dag.STEPS):
        self.config = config
        self.steps = steps
        self.root = config.pipeline_root()
        self.log = log
        self.store = MetadataStore(self.root / "metadata.sqlite")
        # before the store is opened: a bad value is exit 2, nothing touched
        check_config(config, steps)
        self.runtime = Runtime(
            beam_args=all_beam_args(config.pipeline),
            seed=config.pipeline.seed,
            log=log,
            pipeline_root=self.root,
            stop_requested=lambda: interrupts.received() is not None,
        )
        self.free_space = FreeSpacePolicy(config, steps, self.root)

    def close(self) -> None:
        self.store.close()

    def data_fingerprint(self) -> str | None:
        """The fingerprint of the outside data the DAG's source step reads (None if no step is a source)."""
        source = dag.source_step(self.steps)
        external = source.spec.hook("external") if source is not None else None
        if external is None:
            return None
        return external(dag.step_config(self.config, source))

    def run(self, *, until: str | None = None, use_cache: bool = True, rerun: tuple[str, ...] = (),
            command: str = "run", data_fingerprint: str | None = None, from_step: str | None = None,
            only: str | None = None) -> RunResult:
        """Runs the pipeline; the caller holds root_lock. Temporary files go to the pipeline root's tmp/
        folder (scratch_tempdir).

        `from_step` (--from) and `only` (--only: from and until that step) skip the steps before it: their
        outputs are those of their newest successful execution with the same cache key, or the run fails
        naming the step that has none."""
        with scratch_tempdir(self.root):
            return self._run(until=until, use_cache=use_cache, rerun=rerun, command=command,
                             data_fingerprint=data_fingerprint, from_step=from_step, only=only)

    def _run(self, *, until: str | None, use_cache: bool, rerun: tuple[str, ...], command: str,
             data_fingerprint: str | None, from_step: str | None, only: str | None) -> RunResult:
        known = [step.name for step in self.steps]
        # unknown names fail before any work
        for name in (*rerun, *[n for n in (until, from_step, only) if n]):
            if name not in known:
                raise ValueError(f"unknown step {name!r}; steps: {', '.join(known)}")
        from_step, until = step_range(known, from_step, until, only)
        first = known.index(from_step) if from_step else 0
        run_id, run_dir, execution = self._start_run(command, data_fingerprint)
        # "step.output" -> artifact
        produced: dict[str, Artifact] = {}
        artifact_ids: dict[str, int] = {}
        results: list[StepResult] = []
        stop_reason = None
        started = time.monotonic()
        for index, step in enumerate(self.steps, 1):
            prefix = f"[{index}/{len(self.steps)}] {step.name:<10}"
            if stop_reason:
                self.store.record_skipped(run_id, step.name, stop_reason)
                results.append(StepResult(step.name, "skipped", note=stop_reason))
                log_event(self.log, "step_skipped", f"{prefix} skipped ({stop_reason})", step=step.name,
                          reason=stop_reason)
                continue
            try:
                result = execution.run_step(step, run_id, run_dir, produced, artifact_ids,
                                        use_cache and step.name not in rerun, prefix,
                                        upstream_of=from_step if index - 1 < first else None)
            # SIGINT or SIGTERM: nothing half-published; completed steps stay reusable
            except KeyboardInterrupt:
                results.append(StepResult(step.name, "interrupted", note=interrupts.name()))
                self._record_interrupted(run_id, run_dir, results)
                raise
            except (PipelineFailed, StoreError, OSError) as error:
                message = str(error)
                # the runner's own writes (folders, the publishing rename)
                if isinstance(error, OSError):
                    message = fault_message(error, run_dir, f"running {step.name}") or f"{step.name}: {error}"
                    message = message if message.startswith(f"{step.name}: ") else f"{step.name}: {message}"
                failed = StepResult(step.name, "failed", note=message, facts=getattr(error, "facts", {}))
                return self._failed(run_id, run_dir, results, failed, kind=getattr(error, "kind", None),
                                    details=getattr(error, "details", None))
            results.append(result)
            # a stop swallowed or lost after the step's publish still ends the run
            if interrupts.received():
                self._record_interrupted(run_id, run_dir, results)
                interrupts.stop_if_received()
            if step.name == until:
                stop_reason = f"--until {until}"
        return self._succeeded(run_id, run_dir, results, started)

    def _start_run(self, command: str, data_fingerprint: str | None) -> tuple[str, Path, StepExecution]:
        """A new run: earlier unfinished runs marked interrupted, its folder made, its row in the store."""
        for stale in self.store.mark_interrupted():
            self.log(f"note: run {stale} was interrupted earlier; its completed steps can be reused")
        run_id = new_run_id()
        run_dir = self.root / "runs" / run_id
        run_dir.mkdir(parents=True)
        self.runtime = dataclasses.replace(self.runtime, run_id=run_id)
        execution = StepExecution(self.config, self.steps, self.root, self.store, self.runtime, self.log,
                                  self.free_space)
        self.store.start_run(run_id, command, self.config.redacted_dict(), data_fingerprint)
        if isinstance(self.log, Console):
            self.log.run_id = run_id
        log_event(self.log, "run_started", f"run {run_id}: pipeline root {self.root}", root=str(self.root))
        return run_id, run_dir, execution

    def _succeeded(self, run_id: str, run_dir: Path, results: list[StepResult], started: float) -> RunResult:
        """Records a run whose every step ran, was cached or was skipped by a decision: its outcome in the
        store and its run record (a failure to write them fails the run)."""
        outcome = self._outcome(results)
        try:
            self.store.finish_run(run_id, "succeeded", outcome=outcome)
            write_run_record(self.root, self.store, self.steps, run_id, run_dir, results, "succeeded", None)
        except (StoreError, OSError) as error:
            message = str(error) if isinstance(error, StoreError) else (
                fault_message(error, run_dir, "writing the run report") or f"writing the run report: {error}")
            return self._failed(run_id, run_dir, results, None, message)
        log_event(self.log, "run_succeeded",
                  f"run {run_id} succeeded in {time.monotonic() - started:.1f}s ({outcome})",
                  seconds=round(time.monotonic() - started, 1), outcome=outcome)
        return RunResult(run_id, run_dir, "succeeded", results, outcome=outcome)

    def _record_interrupted(self, run_id: str, run_dir: Path, results: list[StepResult]) -> None:
        """Marks the run interrupted (or timed_out, for the deadline: a run that ran out of time, not one
        stopped by hand) in the store and its run record, as far as the disk allows."""
        status = "timed_out" if interrupts.deadline_exceeded() else "interrupted"
        # a full disk must not hide the interruption
        with contextlib.suppress(StoreError, OSError):
            self.store.mark_interrupted()
            if status == "timed_out":
                self.store.finish_run(run_id, status, error=f"interrupted by {interrupts.name()}")
            write_run_record(self.root, self.store, self.steps, run_id, run_dir, results, status,
                             f"interrupted by {interrupts.name()}")

    def _failed(
        self,
        run_id: str,
        run_dir: Path,
        results: list[StepResult],
        failed: StepResult | None,
        message: str | None = None,
        kind: str | None = None,
        details: dict | None = None,
    ) -> RunResult:
        """Records a failed run as far as the disk allows: the store first (so `runs` shows it failed), then
        run.json and the reports. When the store cannot be written either (its disk is full) the run stays
        'running' there and the next run marks it interrupted; the message says so."""
        if failed is not None:
            results.append(failed)
            message = failed.note
        try:
            self.store.finish_run(run_id, "failed", error=message)
        except StoreError as error:
            message += (
                f" (the run could not be recorded as failed: {error}; the next run marks it interrupted)"
            )
        try:
            write_run_record(self.root, self.store, self.steps, run_id, run_dir, results, "failed", message)
        except OSError as error:
            if fault_message(error, run_dir, "") is None:
                raise
            # run.json and the reports are a convenience: the store and the message already tell the failure.
        return RunResult(run_id, run_dir, "failed", results, message, error_kind=kind, error_details=details)

    def _outcome(self, results: list[StepResult]) -> str | None:
        """Whether the run delivered, from the step that delivers (ComponentSpec.delivers, e.g.
        "pushed_model.pushed"): "pushed", "already_pushed" (a cached or adopted
        delivery), "not_pushed", or "stopped_early" if it did not run."""
        delivering = dag.delivering_steps(self.steps)
        if not delivering:
            return None
        step = delivering[-1]
        output, prop = step.spec.delivers.split(".")
        result = next((r for r in results if r.step == step.name), None)
        if result is None or result.state == "skipped":
            return "stopped_early"
        delivered = result.outputs.get(output)
        if delivered is not None and delivered.properties.get(prop):
            # a cached step, or one that found its delivery already made (the pusher adopting a version)
            fresh = result.state == "ran" and not delivered.properties.get("adopted")
            return prop if fresh else f"already_{prop}"
        return f"not_{prop}"


def summarize(result: RunResult, steps: tuple[dag.Step, ...] = dag.STEPS) -> str:
    """The final summary printed after a run: every output's headline properties (pipeline/headlines.py)."""
    headline = headlines.headline_table(steps)
    lines = [f"Run {result.run_id}: {result.status}" + (f" ({result.outcome})" if result.outcome else "")]
    for step_result in result.steps:
        for name, artifact in step_result.outputs.items():
            facts = headline_facts(artifact.properties, headline.get(name, ()))
            if facts:
                lines.append(f"  {name}: {facts}")
            # an artifact that records pretrained vectors
            if embeddings_line(artifact.properties):
                lines.append(f"  {embeddings_line(artifact.properties)}")
        if step_result.state == "failed":
            lines.append(f"  FAILED at {step_result.step}: {step_result.note}")
    lines.append(f"  run folder: {result.run_dir}")
    return "\n".join(lines)


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
