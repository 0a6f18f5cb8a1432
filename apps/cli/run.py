"""`agnews-pipeline run` and `retrain` (the pipeline under the pipeline root's lock; retrain skips unchanged
data and exits with the codes schedulers read) and `train-worker` (one worker of a multi-worker training
job)."""
from __future__ import annotations

from pathlib import Path

from apps.cli.exit_codes import (
    EXIT_BACKFILL,
    EXIT_FAILED,
    EXIT_FOR_KIND,
    EXIT_NO_NEW_DATA,
    EXIT_NOT_BLESSED,
    EXIT_OK,
)
from apps.cli.utils import UsageError, check_root
from pipeline import dag
from pipeline.logs import Console


def cmd_run(args, config, console: Console) -> int:
    from pipeline import span_states
    from pipeline.root import root_lock
    from pipeline.runner import Runner, step_range, summarize
    # retrain has no --until/--from/--only: a partial run can never push, and counting it as the last retrain
    # would hide the data from the next.
    from_step, until, only = (getattr(args, name, None) for name in ("from_step", "until", "only"))
    try:
        step_range(list(dag.STEP_NAMES), from_step, until, only)
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_root(config.pipeline_root())
    with root_lock(config.pipeline_root(), args.lock_timeout):
        # quarantined and rejected spans stay out
        config = span_states.resolve(config, log=console)
        runner = Runner(config, log=console)
        try:
            refusal = _backfill_refusal(runner, config, only or until)
            if refusal is not None:
                console.error(f"{args.command}: {refusal}")
                return EXIT_BACKFILL
            data_fingerprint = runner.data_fingerprint()
            if args.command == "retrain":
                last = runner.store.last_successful_run("retrain")
                if not args.force and last is not None and last["data_fingerprint"] == data_fingerprint:
                    console.event(
                        "retrain_skipped",
                        f"retrain: the input data is unchanged since run {last['id']} "
                        f"(fingerprint {data_fingerprint[:12]}); nothing to do (use --force to run anyway)",
                        last_run=last["id"],
                    )
                    return EXIT_NO_NEW_DATA
            result = runner.run(until=until, use_cache=not args.no_cache, rerun=tuple(args.rerun),
                                command=args.command, data_fingerprint=data_fingerprint,
                                from_step=from_step, only=only)
            _record_spans(runner, result, console)
        finally:
            runner.close()
        if (
            args.command == "retrain"
            and config.retention.apply_after_retrain
            and result.status == "succeeded"
        ):
            _apply_retention(config, console)
    console.event("summary", summarize(result), status=result.status, outcome=result.outcome,
                  run_dir=str(result.run_dir))
    if result.status != "succeeded":
        console.error(f"\nERROR: {result.error}")
        return EXIT_FOR_KIND.get(result.error_kind, EXIT_FAILED)
    if args.command == "retrain" and not result.delivered:
        return EXIT_NOT_BLESSED
    return EXIT_OK


def _backfill_refusal(runner, config, last_step: str | None) -> str | None:
    """Why a pinned run that would train must not run (pipeline/rollback.py), or None. `last_step`: the step
    the run stops after (--until or --only; None for the whole pipeline, as `retrain` always runs)."""
    from pipeline.rollback import backfill_refusal
    if last_step and dag.STEP_NAMES.index(last_step) < dag.STEP_NAMES.index("trainer"):
        # it stops before anything is trained: looking at an old window is fine
        return None
    return backfill_refusal(runner.store, config)


def _apply_retention(config, console: Console) -> None:
    """retention.apply_after_retrain: the gc policy, under the lock the retrain holds."""
    from pipeline.gc import collect_garbage
    retention = config.retention
    removed = collect_garbage(config.pipeline_root(), retention.runs, serving_dir=config.serving_dir(),
                              served_versions=retention.served_versions, log=console)
    console.event(
        "retention",
        f"retention: deleted {len(removed)} folders and files (kept the last "
        f"{retention.served_versions or 'all'} served versions' lineage and the {retention.runs} "
        "newest runs)",
        deleted=len(removed),
    )


def _record_spans(runner, result, console: Console) -> None:
    """The run's spans into the store (ingested, checked, quarantined); a store that cannot be written is one
    line: the run's own outcome and exit code stand."""
    from pipeline import span_states
    from pipeline.history import write_history
    from pipeline.store_errors import StoreError
    try:
        span_states.record(runner.store, result)
    except StoreError as error:
        console.error(f"could not record the spans of run {result.run_id}: {error}")
    else:
        # its quarantines, in history.html too
        if result.error_details and result.error_details.get("refused"):
            try:
                write_history(Path(runner.config.pipeline_root()), runner.store)
            # a convenience: the store and the run's message already tell it
            except OSError as error:
                console.error(f"could not rewrite history.html: {error.strerror or error}")
    for refused in (result.error_details or {}).get("refused", []):
        console.event(
            "span_quarantined",
            f"span {refused['span']} quarantined ({refused['reason']}): "
            f"`agnews-pipeline spans accept {refused['span']}` to train on it, `spans reject` to drop it",
            span=refused["span"],
            reason=refused["reason"],
        )


def cmd_train_worker(args) -> int:
    from library import multi_worker
    try:
        workers = multi_worker.parse_workers(args.workers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    from components.trainer import executor as trainer_executor
    return trainer_executor.worker_main(Path(args.pipeline_root).resolve(), workers, args.index, args.timeout)
