"""The local runner: executes the DAG's steps in order and owns everything cross-cutting.

For each step it resolves inputs, computes the cache key (step, code version, configuration, input
fingerprints, external data fingerprint), reuses an earlier intact execution or runs the component in a
temporary folder, publishes the outputs by one rename, records the execution in the metadata store, and prints
a progress line. Components never do any of this themselves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline import dag, interrupts
from pipeline.heartbeat import Heartbeat, estimate_for
from contract.artifacts import Artifact, ComponentError, Runtime, fingerprint, write_json_atomic
from contract.disk import (disk_full, disk_full_message, error_paths, filesystem_line, free_bytes, full_path,
                           human_bytes, not_writable, not_writable_message)
from contract.units import parse_size
from pipeline.code_version import code_version
from contract.config import Config
from library.beam_options import all_beam_args, with_log_dir
from library.layouts import step_log_file
from pipeline.logs import Console
from pipeline.metadata import MetadataStore, StoreError, StoredArtifact
from pipeline.report import embeddings_line, headline_facts


class PipelineFailed(RuntimeError):
    """A step failed; the message names the step and the reason, `kind` the component's ComponentError.kind."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


class LockBusy(RuntimeError):
    """Another pipeline process holds the pipeline root's lock."""


@dataclass
class StepResult:
    step: str
    state: str  # ran | cached | skipped | failed
    seconds: float = 0.0
    outputs: dict[str, Artifact] = field(default_factory=dict)
    note: str = ""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    steps: list[StepResult]
    error: str | None = None
    outcome: str | None = None  # see Runner._outcome
    error_kind: str | None = None  # a failed step's ComponentError.kind (e.g. "drift"), if it has one

    @property
    def delivered(self) -> bool:
        """The step that delivers did deliver, in this run or in the earlier execution it reused."""
        return self.outcome is not None and not self.outcome.startswith(("not_", "stopped_"))

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)

    def artifact(self, step: str, output: str) -> Artifact | None:
        result = self.step(step)
        return result.outputs.get(output) if result else None


@contextlib.contextmanager
def root_lock(root: Path, timeout: float = 0.0) -> Iterator[None]:
    """One pipeline process per pipeline root at a time. Waits up to `timeout` seconds, then raises LockBusy.

    flock is released by the kernel when the process dies, so a killed run never leaves a stale lock."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / ".lock", "a+")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another agnews-pipeline process is using {root} "
                                   f"(lock {root / '.lock'})") from None
                time.sleep(0.5)
        handle.seek(0), handle.truncate(), handle.write(f"{os.getpid()}\n"), handle.flush()
        yield
    finally:
        handle.close()


SCRATCH_PREFIX = "scratch-"


@contextlib.contextmanager
def scratch_tempdir(root: Path) -> Iterator[Path]:
    """Python's and every child process's temporary folder (tempfile, TMPDIR) inside the pipeline root while a
    run lasts, removed after it: Beam, TensorFlow's autograph, dask's worker space and the libraries under them
    otherwise leave folders in /tmp on every run. The caller holds root_lock, so any other scratch folder is one a
    killed run left behind, and is removed first."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for stale in tmp.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=tmp))
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(scratch), str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(scratch, ignore_errors=True)


def step_config(config: Config, step: dag.Step) -> Any:
    return getattr(config, step.config_section)


def step_range(step_names: list[str], from_step: str | None, until: str | None,
               only: str | None) -> tuple[str | None, str | None]:
    """(--from, --until) after --only; ValueError for a combination that makes no sense."""
    if only and (from_step or (until and until != only)):
        raise ValueError("--only STEP runs one step; it cannot be combined with --from or a different --until")
    if only:
        return only, only
    if from_step and until and step_names.index(until) < step_names.index(from_step):
        raise ValueError(f"--until {until} comes before --from {from_step}; nothing would run")
    return from_step, until


# pipeline.min_free_space "auto": the free space a step needs before it starts, from the rows of the pipeline's
# input data. A whole default run on the 9,351-row shared AG News wrote 22 MB here (13 MB of it the trainer's
# models, which do not grow with the data; ingest and transform about 0.25 KB per row), plus Beam's and the
# tuner's temporary files while it ran: 64 MB and 2 KB per row is a margin over that, not an exact need.
AUTO_FREE_BASE_BYTES = 64 << 20
AUTO_FREE_BYTES_PER_ROW = 2048


def fault_message(error: BaseException, path: Path, what: str) -> str | None:
    """The one line for a full disk or a refused write (None for any other error): the filesystem that is full,
    with the path the error names if it names one."""
    if disk_full(error):
        return disk_full_message(full_path(error, path), what)
    if not_writable(error):
        return not_writable_message(next(iter(error_paths(error)), path), what, error)
    return None


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Runner:
    def __init__(self, config: Config, log=print, steps: tuple[dag.Step, ...] = dag.STEPS):
        self.config = config
        self.steps = steps
        self.root = config.pipeline_root()
        self.log = log
        self.store = MetadataStore(self.root / "metadata.sqlite")
        dag.check_config(config, steps)  # before the store is opened: a bad value is exit 2, nothing touched
        self.runtime = Runtime(beam_args=all_beam_args(config.pipeline), seed=config.pipeline.seed, log=log,
                               pipeline_root=self.root)

    def close(self) -> None:
        self.store.close()

    def data_fingerprint(self) -> str | None:
        """The fingerprint of the outside data the DAG's source step reads (None if no step is a source)."""
        source = dag.source_step(self.steps)
        if source is None or source.external is None:
            return None
        return source.external(step_config(self.config, source))

    def run(self, *, until: str | None = None, use_cache: bool = True, rerun: tuple[str, ...] = (),
            command: str = "run", data_fingerprint: str | None = None, from_step: str | None = None,
            only: str | None = None) -> RunResult:
        """Runs the pipeline; the caller holds root_lock. Temporary files go to the pipeline root's tmp/ folder
        (scratch_tempdir).

        `from_step` (--from) and `only` (--only: from and until that step) skip the steps before it: their
        outputs are those of their newest successful execution with the same cache key, or the run fails
        naming the step that has none."""
        with scratch_tempdir(self.root):
            return self._run(until=until, use_cache=use_cache, rerun=rerun, command=command,
                             data_fingerprint=data_fingerprint, from_step=from_step, only=only)

    def _run(self, *, until: str | None, use_cache: bool, rerun: tuple[str, ...], command: str,
             data_fingerprint: str | None, from_step: str | None, only: str | None) -> RunResult:
        known = [step.name for step in self.steps]
        for name in (*rerun, *[n for n in (until, from_step, only) if n]):  # unknown names fail before any work
            if name not in known:
                raise ValueError(f"unknown step {name!r}; steps: {', '.join(known)}")
        from_step, until = step_range(known, from_step, until, only)
        first = known.index(from_step) if from_step else 0
        for stale in self.store.mark_interrupted():
            self.log(f"note: run {stale} was interrupted earlier; its completed steps can be reused")
        run_id = new_run_id()
        run_dir = self.root / "runs" / run_id
        run_dir.mkdir(parents=True)
        self.runtime = dataclasses.replace(self.runtime, run_id=run_id)
        self.store.start_run(run_id, command, self.config.redacted_dict(), data_fingerprint)
        if isinstance(self.log, Console):
            self.log.run_id = run_id
        self._event("run_started", f"run {run_id}: pipeline root {self.root}", root=str(self.root))
        produced: dict[str, Artifact] = {}  # "step.output" -> artifact
        artifact_ids: dict[str, int] = {}
        results: list[StepResult] = []
        stop_reason = None
        started = time.monotonic()
        for index, step in enumerate(self.steps, 1):
            prefix = f"[{index}/{len(self.steps)}] {step.name:<10}"
            if stop_reason:
                self.store.record_skipped(run_id, step.name, stop_reason)
                results.append(StepResult(step.name, "skipped", note=stop_reason))
                self._event("step_skipped", f"{prefix} skipped ({stop_reason})", step=step.name, reason=stop_reason)
                continue
            try:
                result = self._run_step(step, run_id, run_dir, produced, artifact_ids,
                                        use_cache and step.name not in rerun, prefix,
                                        upstream_of=from_step if index - 1 < first else None)
            except KeyboardInterrupt:  # SIGINT or SIGTERM: nothing half-published; completed steps stay reusable
                results.append(StepResult(step.name, "interrupted", note=interrupts.name()))
                # The deadline (--deadline) is marked as such: a run that ran out of time, not one stopped by hand.
                status = "timed_out" if interrupts.deadline_exceeded() else "interrupted"
                with contextlib.suppress(StoreError, OSError):  # a full disk must not hide the interruption
                    self.store.mark_interrupted()
                    if status == "timed_out":
                        self.store.finish_run(run_id, status, error=f"interrupted by {interrupts.name()}")
                    self._write_run_record(run_id, run_dir, results, status, f"interrupted by {interrupts.name()}")
                raise
            except (PipelineFailed, StoreError, OSError) as error:
                message = str(error)
                if isinstance(error, OSError):  # the runner's own writes (folders, the publishing rename)
                    message = fault_message(error, run_dir, f"running {step.name}") or f"{step.name}: {error}"
                    message = message if message.startswith(f"{step.name}: ") else f"{step.name}: {message}"
                return self._failed(run_id, run_dir, results, StepResult(step.name, "failed", note=message),
                                    kind=getattr(error, "kind", None))
            results.append(result)
            if step.name == until:
                stop_reason = f"--until {until}"
        outcome = self._outcome(results)
        try:
            self.store.finish_run(run_id, "succeeded", outcome=outcome)
            self._write_run_record(run_id, run_dir, results, "succeeded", None)
        except (StoreError, OSError) as error:
            message = str(error) if isinstance(error, StoreError) else (
                fault_message(error, run_dir, "writing the run report") or f"writing the run report: {error}")
            return self._failed(run_id, run_dir, results, None, message)
        self._event("run_succeeded", f"run {run_id} succeeded in {time.monotonic() - started:.1f}s ({outcome})",
                    seconds=round(time.monotonic() - started, 1), outcome=outcome)
        return RunResult(run_id, run_dir, "succeeded", results, outcome=outcome)

    def _failed(self, run_id: str, run_dir: Path, results: list[StepResult], failed: StepResult | None,
                message: str | None = None, kind: str | None = None) -> RunResult:
        """Records a failed run as far as the disk allows: the store first (so `runs` shows it failed), then
        run.json and the reports. When the store cannot be written either (its disk is full) the run stays
        'running' there and the next run marks it interrupted; the message says so."""
        if failed is not None:
            results.append(failed)
            message = failed.note
        try:
            self.store.finish_run(run_id, "failed", error=message)
        except StoreError as error:
            message += f" (the run could not be recorded as failed: {error}; the next run marks it interrupted)"
        try:
            self._write_run_record(run_id, run_dir, results, "failed", message)
        except OSError as error:
            if fault_message(error, run_dir, "") is None:
                raise
            # run.json and the reports are a convenience: the store and the message already tell the failure.
        return RunResult(run_id, run_dir, "failed", results, message, error_kind=kind)

    def _resolve_inputs(self, step: dag.Step, produced, artifact_ids) -> tuple[dict[str, Artifact], dict[str, int]]:
        inputs, ids = {}, {}
        for name, source in step.inputs.items():
            if not isinstance(source, dag.Resolver):
                inputs[name], ids[name] = produced[source], artifact_ids[source]
        for name, source in step.inputs.items():
            if isinstance(source, dag.Resolver):
                # A candidate is never its own baseline: a re-run of an already blessed model keeps the baseline
                # it had, so its evaluation stays cached.
                this_run = artifact_ids.get(source.artifact)
                exclude = self.store.artifact(this_run).fingerprint if this_run is not None else None
                # Nor is a step's earlier output that it computed from the inputs it has now (the tuner's
                # previous search, the model a warm start would start from): an unchanged re-run resolves what
                # the first run resolved, so it stays cached.
                same_inputs = ({n: self.store.artifact(i).fingerprint for n, i in ids.items()}
                               if source.artifact.split(".")[0] == step.name else None)
                resolved = source.resolve(self.store, self.steps, exclude_fingerprint=exclude, config=self.config,
                                          exclude_inputs=same_inputs)
                if resolved is None and source.fallback is not None and source.resolve(self.store, self.steps) is None:
                    resolved = self._fallback(source)
                if resolved is not None and resolved.uri.exists():
                    inputs[name] = resolved.as_artifact()
                    if not source.saves_work_only:  # one that only saves work is neither cache key nor lineage
                        ids[name] = resolved.id
        return inputs, ids

    def _fallback(self, resolver: dag.Resolver) -> StoredArtifact | None:
        """The resolver's artifact found outside the store (dag.Resolver.fallback), for when the store knows none
        at all (a lost or replaced store): the gate that input feeds must not silently disappear."""
        path = resolver.fallback(self.config)
        if path is None:
            return None
        self.log(f"note: the metadata store knows no {resolver.name}; using {path}")
        return self.store.external_artifact(resolver.artifact.split(".")[1], path, fingerprint(path), {})

    def _cache_key(self, step: dag.Step, step_cfg: Any, input_ids: dict[str, int], code: str,
                   inputs: dict[str, Artifact]) -> str:
        external = step.external(step_cfg) if step.external is not None else None
        key = {
            "step": step.name,
            "code_version": code,
            "config": json.loads(json.dumps(dataclasses.asdict(step_cfg), default=str)),
            "inputs": {name: self.store.artifact(i).fingerprint for name, i in sorted(input_ids.items())},
            "external": external,
            "seed": self.runtime.seed if step.seeded else None,
        }
        if step.decision is not None:  # only then: the keys of other steps stay those of earlier versions
            key["decision"] = step.decision(inputs, step_cfg)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def _reusable(self, step: dag.Step, cache_key: str) -> tuple[int, dict[str, StoredArtifact]] | None:
        """An earlier successful execution with this key whose outputs are all still present and intact."""
        for execution in self.store.find_cached(step.name, cache_key):
            outputs = self.store.artifacts_of(execution["id"], "output")
            if set(outputs) != set(step.outputs):
                continue
            intact = all(not a.deleted and a.uri.exists() and fingerprint(a.uri) == a.fingerprint
                         for a in outputs.values())
            if intact:
                return execution["id"], outputs
            self.log(f"    cached outputs of execution {execution['id']} are missing or changed; recomputing")
        return None

    def _run_step(self, step, run_id, run_dir, produced, artifact_ids, use_cache, prefix,
                  upstream_of: str | None = None) -> StepResult:
        """Runs or reuses `step`. With `upstream_of` (the --from step) it never runs: it must be reusable."""
        step_cfg = step_config(self.config, step)
        try:
            inputs, input_ids = self._resolve_inputs(step, produced, artifact_ids)
            code = code_version(step.component.__module__)
            cache_key = self._cache_key(step, step_cfg, input_ids, code, inputs)
        except ComponentError as error:
            self._event("step_failed", f"{prefix} FAILED: {error}", level="error", step=step.name)
            message = str(error)
            raise PipelineFailed(message if message.startswith(f"{step.name}: ") else f"{step.name}: {message}",
                                 getattr(error, "kind", None)) from None
        execution_id = self.store.start_execution(run_id, step.name, cache_key, code,
                                                  dataclasses.asdict(step_cfg))
        started = time.monotonic()
        reusable = self._reusable(step, cache_key) if use_cache or upstream_of else None
        if reusable is None and upstream_of:
            message = (f"--from {upstream_of} needs the outputs of {step.name}, but {step.name} has no successful "
                       f"execution with this configuration and these inputs; run it first "
                       f"(agnews-pipeline run --until {step.name})")
            self.store.fail_execution(execution_id, message)
            self._event("step_failed", f"{prefix} FAILED: {message}", level="error", step=step.name)
            raise PipelineFailed(message)
        if reusable is not None:
            reused_id, outputs = reusable
            self.store.record_cached(execution_id, reused_id, input_ids, {n: a.id for n, a in outputs.items()})
            for name, stored in outputs.items():
                produced[f"{step.name}.{name}"] = stored.as_artifact()
                artifact_ids[f"{step.name}.{name}"] = stored.id
            origin = self.store.execution(reused_id)
            self._event("step_cached", f"{prefix} cached ({time.monotonic() - started:.1f}s, from run "
                        f"{origin['run_id']})", step=step.name, from_run=origin["run_id"])
            return StepResult(step.name, "cached", time.monotonic() - started,
                              {n: a.as_artifact() for n, a in outputs.items()}, note=origin["run_id"])

        self._check_free_space(step, execution_id, prefix)
        # A fixed temporary folder per cache key lets a resumable step pick up an interrupted attempt.
        work_dir = self.root / "tmp" / f"{step.name}-{cache_key[:16]}"
        if work_dir.exists() and not step.resumable:
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        self._event("step_started", f"{prefix} running ...", step=step.name)
        log_file = step_log_file(run_dir, step.name)
        try:
            with self._heartbeat(step, step_cfg, inputs, prefix, started), self._capture(log_file, step.name):
                # On dask, a stalled step leaves the cluster's state in its own folder (kept as <step>.failed).
                runtime = dataclasses.replace(self.runtime, beam_args=with_log_dir(self.runtime.beam_args, work_dir))
                outputs = step.component(inputs, work_dir, step_cfg, runtime)
            missing = set(step.outputs) - set(outputs)
            if missing:
                raise ComponentError(f"component returned no {sorted(missing)} output")
        except Exception as error:  # every failure is recorded, then reported
            if interrupts.received():  # a signal that a library wrapped into another exception (Beam does)
                raise interrupts.Interrupted(interrupts.received()) from None
            message = str(error) if isinstance(error, ComponentError) else f"{type(error).__name__}: {error}"
            stored = message if isinstance(error, ComponentError) else f"{message}\n{traceback.format_exc()}"
            fault = fault_message(error, work_dir, f"running {step.name}")
            if fault is not None and disk_full(error) and not step.resumable:
                # The half-written attempt is what filled the disk and nothing can use it: give the space back
                # (a resumable step keeps its folder: its finished work is reused when the run is started again).
                shutil.rmtree(work_dir, ignore_errors=True)
                fault += " (the failed attempt's partial output was removed to free its space)"
            elif not step.resumable:  # keep the failed attempt for inspection, under a name that is not final
                failed_dir = run_dir / f"{step.name}.failed"
                os.replace(work_dir, failed_dir)
                message = message.replace(str(work_dir), str(failed_dir))  # paths the message names moved too
                message += f"\n(partial output kept in {failed_dir})"
            message = fault or message
            # The store keeps the traceback of an unexpected error; the user sees its message.
            with contextlib.suppress(StoreError):  # its disk may be full too: _failed reports that
                self.store.fail_execution(execution_id, stored)
            seen = f" (what the libraries printed: {log_file})" if log_file.is_file() else ""
            self._event("step_failed", f"{prefix} FAILED after {time.monotonic() - started:.1f}s{seen}",
                        level="error", step=step.name, seconds=round(time.monotonic() - started, 1))
            if not message.startswith(f"{step.name}: "):  # components may name themselves already
                message = f"{step.name}: {message}"
            raise PipelineFailed(message, getattr(error, "kind", None)) from None

        fingerprints = {name: fingerprint(a.uri) for name, a in outputs.items()}
        final_dir = run_dir / step.name
        os.replace(work_dir, final_dir)  # the publish: one rename, after which the outputs are complete
        published = {name: a.relocated(work_dir, final_dir) for name, a in outputs.items()}
        ids = self.store.complete_execution(execution_id, final_dir, input_ids,
                                            {n: (published[n], fingerprints[n]) for n in step.outputs})
        for name in step.outputs:
            produced[f"{step.name}.{name}"] = published[name]
            artifact_ids[f"{step.name}.{name}"] = ids[name]
        seconds = time.monotonic() - started
        self._event("step_done", f"{prefix} done in {seconds:.1f}s -> {final_dir}", step=step.name,
                    seconds=round(seconds, 1), outputs=str(final_dir))
        return StepResult(step.name, "ran", seconds, {n: published[n] for n in step.outputs})

    def _check_free_space(self, step: dag.Step, execution_id: int, prefix: str) -> None:
        """Fails a step before it starts when the pipeline root's filesystem has less free space than
        pipeline.min_free_space ("auto": from the rows of the input data; "0": no check), instead of an hour
        into training."""
        needed = self._min_free_bytes()
        if needed <= 0 or free_bytes(self.root) >= needed:
            return
        message = (f"{step.name}: not started, too little free space: {filesystem_line(self.root)}, less than "
                   f"the {human_bytes(needed)} pipeline.min_free_space asks for; free some space there (or set "
                   "pipeline.min_free_space lower, 0 = no check) and run again")
        with contextlib.suppress(StoreError):
            self.store.fail_execution(execution_id, message)
        self._event("step_failed", f"{prefix} FAILED: not enough free space", level="error", step=step.name)
        raise PipelineFailed(message)

    def _min_free_bytes(self) -> int:
        setting = self.config.pipeline.min_free_space
        if setting != "auto":
            return parse_size(setting)
        if not hasattr(self, "_auto_free_bytes"):  # counted once per run (it reads the source data)
            source = dag.source_step(self.steps)
            rows = None
            if source is not None and source.input_rows is not None:
                with contextlib.suppress(Exception):  # an uncountable source only lowers the minimum
                    rows = source.input_rows(step_config(self.config, source))
            self._auto_free_bytes = AUTO_FREE_BASE_BYTES + AUTO_FREE_BYTES_PER_ROW * (rows or 0)
        return self._auto_free_bytes

    def _heartbeat(self, step: dag.Step, step_cfg: Any, inputs: dict[str, Artifact], prefix: str,
                   started: float) -> Heartbeat | contextlib.nullcontext:
        """Progress lines while the step runs (pipeline.progress_seconds; none for a step that prints its own)."""
        period = self.config.pipeline.progress_seconds
        if period <= 0 or step.reports_progress:
            return contextlib.nullcontext()
        return Heartbeat(lambda line: self._event("progress", line, step=step.name), prefix, period,
                         estimate_for(self.store, step, step_cfg, inputs), started)

    def _event(self, event: str, message: str, level: str = "info", **fields: Any) -> None:
        """One of the runner's own lines: a Console gets its kind and fields (--log-format json), a plain
        callable the text."""
        if isinstance(self.log, Console):
            self.log.event(event, message, level=level, **fields)
        else:
            self.log(message)

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

    def _outcome(self, results: list[StepResult]) -> str | None:
        """Whether the run delivered, from the step that delivers (`Step.delivers`, e.g. "pushed_model.pushed"):
        "pushed", "already_pushed" (a cached delivery), "not_pushed", or "stopped_early" if it did not run."""
        delivering = dag.delivering_steps(self.steps)
        if not delivering:
            return None
        step = delivering[-1]
        output, prop = step.delivers.split(".")
        result = next((r for r in results if r.step == step.name), None)
        if result is None or result.state == "skipped":
            return "stopped_early"
        delivered = result.outputs.get(output)
        if delivered is not None and delivered.properties.get(prop):
            return prop if result.state == "ran" else f"already_{prop}"
        return f"not_{prop}"

    def _write_run_record(self, run_id: str, run_dir: Path, results: list[StepResult], status: str,
                          error: str | None) -> None:
        record = {
            "run_id": run_id,
            "status": status,
            "error": error,
            "steps": [{"step": r.step, "state": r.state, "seconds": round(r.seconds, 2), "note": r.note,
                       "outputs": {n: {"uri": str(a.uri), "properties": a.properties}
                                   for n, a in r.outputs.items()}} for r in results],
        }
        write_json_atomic(run_dir / "run.json", record)
        from pipeline import report, report_html
        report.write_run_report(run_dir, record, dag.headline_table(self.steps))
        report_html.write_run_report_html(run_dir, record, self.steps)
        from pipeline.history import write_history
        write_history(self.root, self.store)


def summarize(result: RunResult, steps: tuple[dag.Step, ...] = dag.STEPS) -> str:
    """The final summary printed after a run: the headline properties of every output (see dag.Step.headline)."""
    headline = dag.headline_table(steps)
    lines = [f"Run {result.run_id}: {result.status}" + (f" ({result.outcome})" if result.outcome else "")]
    for step_result in result.steps:
        for name, artifact in step_result.outputs.items():
            facts = headline_facts(artifact.properties, headline.get(name, ()))
            if facts:
                lines.append(f"  {name}: {facts}")
            if embeddings_line(artifact.properties):  # an artifact that records pretrained vectors
                lines.append(f"  {embeddings_line(artifact.properties)}")
        if step_result.state == "failed":
            lines.append(f"  FAILED at {step_result.step}: {step_result.note}")
    lines.append(f"  run folder: {result.run_dir}")
    return "\n".join(lines)


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
