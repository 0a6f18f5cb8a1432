"""The `agnews-pipeline` command's entry point: main(argv) parses the command line, dispatches to the
command's module, writes --metrics-file whatever the outcome, and turns the errors a command can meet into
one line and an exit code; entry_point() is the console script."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# before anything imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from apps.cli.exit_codes import EXIT_FAILED, EXIT_FOR_KIND, EXIT_LOCKED, EXIT_USAGE
from apps.cli.history import cmd_diff, cmd_runs, cmd_show
from apps.cli.maintenance import cmd_embeddings, cmd_gc, cmd_rollback
from apps.cli.parser import build_parser, config_from_args
from apps.cli.predict import cmd_predict
from apps.cli.run import cmd_run, cmd_train_worker
from apps.cli.serve import cmd_serve
from apps.cli.spans import cmd_spans
from apps.cli.utils import UsageError, existing_root, library_output
from contract.config_checks import ConfigError
from contract.config_loading import load_config
from pipeline import interrupts
from pipeline.logs import Console
from pipeline.root import LockBusy, library_home


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    code = _main(args)
    if getattr(args, "metrics_file", None):
        _write_metrics(args, code, started)
    return code


def _write_metrics(args, code: int, started: float) -> None:
    """--metrics-file, whatever the outcome; a file that cannot be written is one line, not a new exit
    code."""
    from apps.job_metrics import write_job_metrics
    try:
        config = config_from_args(args)
    except ConfigError:
        # a bad configuration is itself an outcome worth reporting
        config = load_config()
    try:
        write_job_metrics(Path(args.metrics_file), command=args.command, exit_code=code, started=started,
                          ended=time.time(), root=config.pipeline_root(), serving_dir=config.serving_dir(),
                          spans=_span_states(config))
    except OSError as error:
        print(
            f"{args.command}: could not write --metrics-file {args.metrics_file}: {error.strerror or error}",
            file=sys.stderr,
        )


def _span_states(config) -> list:
    """The data's spans with their states for the metrics file: the window as the run resolves it (the store's
    quarantined and rejected spans held out), those held-out spans with their stored state."""
    from apps.job_metrics import span_states
    from contract.artifacts import ComponentError
    from pipeline import span_states as stored
    from pipeline.store_errors import StoreError
    try:
        config = stored.resolve(config, log=lambda line: None)
        held_out = {row["span"]: row["state"] for row in stored.listing(config) if row["span"] in
                    config.ingest.window.held_out}
    # no readable store or stream: the configuration's window
    except (StoreError, OSError, ComponentError):
        held_out = {}
    return span_states(config.ingest, held_out)


def _main(args: argparse.Namespace) -> int:
    # `serve` drains on SIGTERM by itself; predict's stop removes its partial output and temporary folder
    if args.command in ("run", "retrain", "predict"):
        interrupts.install()
    # The command's own lines: text or JSON (--log-format), on stdout (serve: stderr, like its request log).
    console = Console(stream=sys.stderr if args.command == "serve" else sys.stdout,
                      log_format=getattr(args, "log_format", "text"), verbose=getattr(args, "verbose", False))
    config = None
    try:
        # The commands that load TensorFlow without a pipeline root: their libraries' home-folder files in a
        # temporary folder (run and retrain: in the run's scratch folder).
        if args.command == "predict":
            with library_output(args, console), library_home():
                return cmd_predict(args, console)
        if args.command == "train-worker":
            with library_home():
                return cmd_train_worker(args)
        config = config_from_args(args)
        if args.command in ("run", "retrain"):
            if config.pipeline.deadline:
                interrupts.set_deadline(config.pipeline.deadline_seconds())
            return cmd_run(args, config, console)
        if args.command in ("serve", "embeddings"):
            with library_home():
                return {"serve": cmd_serve, "embeddings": cmd_embeddings}[args.command](args, config, console)
        # Read what runs left (or change it): never on a root that does not exist, which would create it.
        existing_root(config.pipeline_root())
        return {"runs": cmd_runs, "show": cmd_show, "gc": cmd_gc, "diff": cmd_diff,
                "spans": cmd_spans, "rollback": cmd_rollback}[args.command](args, config)
    except ConfigError as error:
        console.error(f"configuration error: {error}")
        return EXIT_USAGE
    except UsageError as error:
        console.error(f"{args.command}: {error}")
        return EXIT_USAGE
    except LockBusy as error:
        console.error(f"{args.command}: {error}")
        return EXIT_LOCKED
    except KeyboardInterrupt as error:
        kept = (
            "; completed steps are kept and the next run reuses them"
            if args.command in ("run", "retrain")
            else ""
        )
        console.error(f"{args.command}: interrupted by {interrupts.name()}{kept}")
        return interrupts.exit_code(error)
    # one readable line instead of a traceback wall
    except Exception as error:
        code = _failure_exit_code(error, args, config, console)
        if code is None:
            raise
        return code


def _failure_exit_code(error: Exception, args: argparse.Namespace, config, console: Console) -> int | None:
    """One readable line instead of a traceback wall for an error of the store, a component, a lookup or the
    filesystem, and the exit code; None for any other error, which the caller re-raises."""
    import sqlite3

    from contract.artifacts import ComponentError
    from contract.disk import disk_full, disk_full_message, full_path
    from pipeline.store_errors import StoreError, store_error
    # a store that opened but breaks on reading
    if isinstance(error, sqlite3.DatabaseError):
        store = (config.pipeline_root() if config else Path(".")) / "metadata.sqlite"
        error = store_error(store, error)
    if isinstance(error, (ComponentError, StoreError, LookupError)):
        console.error(f"{args.command}: {error}")
        return EXIT_FOR_KIND.get(getattr(error, "kind", None), EXIT_FAILED)
    if isinstance(error, OSError) and disk_full(error):
        where = full_path(error, config.pipeline_root() if config else Path.cwd())
        console.error(f"{args.command}: {disk_full_message(where, f'writing {where}')}")
        return EXIT_FAILED
    # missing, unreadable or unwritable files and folders
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        console.error(f"{args.command}: {error.strerror or error}{where}")
        return EXIT_FAILED
    return None


def entry_point() -> None:
    """The `agnews-pipeline` command: main(), then exit without running interpreter teardown.

    Once TensorFlow, TFT, TFMA and Beam have run in this process, the destructors Python runs at exit (loaded
    SavedModels, their resource handles, library threads) can crash the process with SIGSEGV after the work is
    done and recorded, turning a success into exit -11 (seen after a run whose evaluator loaded two models).
    Everything the pipeline writes is closed or renamed into place before main() returns, so the streams are
    flushed and the process ends with main()'s exit code directly."""
    import logging

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
