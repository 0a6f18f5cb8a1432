"""`agnews-pipeline`: run, retrain, predict, serve, runs, show, diff, gc, embeddings, train-worker."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from apps.batching import BatchingOptions  # standard library only
from pipeline import dag, interrupts
from contract.config import ConfigError, default_config_file, load_config
from library.models import architecture_names  # the registry; imports no Keras
from library.spans import parse_date
from pipeline.logs import LOG_FORMATS, Console, capture_output
from pipeline.runner import LockBusy

# Exit codes of `retrain` (and `run`), documented in the README for schedulers.
EXIT_OK = 0  # retrain: a new model was pushed (run: the run succeeded)
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad flags or configuration; nothing ran
EXIT_NO_NEW_DATA = 3  # retrain: the input data's fingerprint equals the last successful retrain's; nothing ran
EXIT_NOT_BLESSED = 4  # retrain: the pipeline ran, the candidate was not blessed, nothing pushed
EXIT_LOCKED = 5  # another pipeline process held the pipeline root past --lock-timeout
EXIT_TOO_FEW_SPANS = 6  # a stream of spans has fewer than ingest.window.min_spans in the window; nothing ran
EXIT_SPAN_NOT_FOUND = 7  # the span pinned by --span / --date is not in the stream; nothing ran
EXIT_DRIFT = 8  # validate found drift above a threshold with validate.on_drift=fail; nothing trained or pushed
# A failure's kind (ComponentError.kind) -> its exit code; any other failure is EXIT_FAILED.
EXIT_FOR_KIND = {"too_few_spans": EXIT_TOO_FEW_SPANS, "span_not_found": EXIT_SPAN_NOT_FOUND, "drift": EXIT_DRIFT}
UNBATCHED_THREADS = 4  # serve --no-batching: requests the model computes at the same time
EXIT_DEADLINE = interrupts.EXIT_DEADLINE  # 124: the run passed --deadline (pipeline.deadline) and was ended cleanly

# Dedicated flags and the configuration key each one sets.
FLAG_KEYS = {
    "data": "ingest.data",
    "eval_fraction": "ingest.eval_fraction",
    "max_bad_fraction": "ingest.max_bad_row_fraction",
    "model": "tuner.architecture",
    "tuning_trials": "tuner.max_trials",
    "tuning_epochs": "tuner.max_epochs",
    "epochs": "trainer.epochs",
    "min_accuracy": "evaluator.min_accuracy",
    "pipeline_root": "pipeline.root",
    "beam_arg": "pipeline.beam_args",
    "beam_runner": "pipeline.beam_runner",
    "dask_address": "pipeline.dask_address",
    "dask_workers": "pipeline.dask_workers",
    "serving_dir": "pusher.serving_dir",
    "pretrained_embeddings": "trainer.pretrained_embeddings",
    "deadline": "pipeline.deadline",
}


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"YAML configuration file (every key with its default: "
                                         f"{default_config_file()})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any configuration value, e.g. --set transform.vocab_size=10000")
    parser.add_argument("--data", help="'tfds' (TensorFlow Datasets ag_news_subset) or 'csv:DIR' "
                                       "(DIR holds the original train.csv and test.csv)")
    parser.add_argument("--span", metavar="NAME", help="pin the newest span of a stream (ingest.window.newest)")
    parser.add_argument("--date", metavar="YYYY-MM-DD",
                        help="pin the newest span by its date, e.g. the scheduled date (ingest.window.newest)")
    parser.add_argument("--eval-fraction", type=float, help="share of the train source used as the eval split")
    parser.add_argument("--max-bad-fraction", type=float, help="fail ingest above this share of quarantined rows")
    parser.add_argument("--model", choices=architecture_names(), help="architecture to tune and train")
    parser.add_argument("--tuning-trials", type=int, help="KerasTuner trial budget")
    parser.add_argument("--tuning-epochs", type=int, help="max epochs per tuning trial")
    parser.add_argument("--no-tune", action="store_true", help="skip the search; use the model's defaults")
    parser.add_argument("--retune", action="store_true",
                        help="search the hyperparameters in this run whatever tuner.retune says (= --set "
                             "tuner.retune=always)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train from freshly initialised weights, not from the blessed model (= --set "
                             "trainer.warm_start=false)")
    parser.add_argument("--epochs", type=int, help="training epochs for the final model")
    parser.add_argument("--pretrained-embeddings", metavar="PATH",
                        help="start the embedding from these word vectors (word2vec, GloVe, fastText .vec, .kv)")
    parser.add_argument("--min-accuracy", type=float, help="absolute test accuracy needed for blessing")
    parser.add_argument("--pipeline-root", help="where artifacts and the metadata store live "
                                                "(default ./pipeline_root)")
    parser.add_argument("--serving-dir", help="TF Serving model folder for pushed versions "
                                              "(default <pipeline root>/serving/agnews)")
    parser.add_argument("--beam-arg", action="append", metavar="FLAG",
                        help="pass a flag to Beam, e.g. --beam-arg=--direct_running_mode=multi_processing")
    parser.add_argument("--beam-runner", choices=("direct", "dask"),
                        help="where the Beam steps run: direct (default) or dask (a dask.distributed cluster)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                        help="dask scheduler for --beam-runner dask (default: a local cluster per step)")
    parser.add_argument("--dask-workers", type=int, metavar="N",
                        help="worker processes of the local dask cluster (default 2)")
    parser.add_argument("--until", choices=dag.STEP_NAMES, help="stop after this step")
    parser.add_argument("--from", dest="from_step", choices=dag.STEP_NAMES,
                        help="start at this step; earlier steps are not run, their outputs come from their newest "
                             "successful execution with the same cache key")
    parser.add_argument("--only", choices=dag.STEP_NAMES, help="run this one step (--from STEP --until STEP)")
    parser.add_argument("--no-cache", action="store_true", help="run every step even if a cached result exists")
    parser.add_argument("--rerun", action="append", default=[], choices=dag.STEP_NAMES,
                        help="run this step even if cached (later steps re-run when their inputs change)")
    parser.add_argument("--lock-timeout", type=float, default=0.0,
                        help="seconds to wait for another run on the same pipeline root (default 0: fail at once)")
    parser.add_argument("--metrics-file", metavar="PATH",
                        help="write job metrics in Prometheus' text format to PATH when the command ends "
                             "(e.g. node_exporter's textfile collector folder/agnews.prom)")
    parser.add_argument("--deadline", metavar="DURATION",
                        help="end the run cleanly, like SIGTERM, once it has run this long, e.g. 90m or 2h "
                             f"(pipeline.deadline); exit {interrupts.EXIT_DEADLINE}, the run marked timed_out")
    _add_output_flags(parser)


def _add_output_flags(parser: argparse.ArgumentParser, log_file: bool = False) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' output (TensorFlow, Beam, Keras, KerasTuner) live on stderr"
                             + ("" if log_file else "; it is always kept in runs/<run_id>/logs/<step>.log"))
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text (default) or json: one JSON object per line (time, level, run_id, step, event, "
                             "message, fields)")
    if log_file:
        parser.add_argument("--log-file", metavar="PATH",
                            help="keep the libraries' output in this file (default: not kept; --verbose shows it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agnews-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the pipeline: ingest -> ... -> pusher")
    _add_pipeline_flags(run)

    retrain = commands.add_parser("retrain", help="scheduled retraining: locked, skips unchanged data")
    _add_pipeline_flags(retrain)
    retrain.add_argument("--force", action="store_true", help="run even if the data has not changed")

    predict = commands.add_parser("predict", help="classify raw text lines or an AG News CSV with a SavedModel")
    predict.add_argument("--model-dir", required=True, help="a pushed version folder or a SavedModel folder")
    predict.add_argument("--input", default="-", help="text file (one text per line) or AG News CSV; - = stdin")
    predict.add_argument("--output", default="-", help="JSON lines output file; - = stdout")
    predict.add_argument("--batch-size", type=int, default=256)
    predict.add_argument("--line-numbers", action="store_true",
                         help="add the input line number to each output row ({\"line\": N, ...})")
    _add_output_flags(predict, log_file=True)

    serve = commands.add_parser("serve", help="serve the pushed models over TF Serving's REST API")
    serve.add_argument("--config", help="YAML configuration file (its pusher.serving_dir is served)")
    serve.add_argument("--pipeline-root", help="default ./pipeline_root")
    serve.add_argument("--serving-dir", help="folder of numeric versions (default <pipeline root>/serving/agnews)")
    serve.add_argument("--model-name", default="agnews", help="the name in /v1/models/<name> (default agnews)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8501, help="TF Serving's REST port by default; 0 = any free port")
    serve.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for a new version")
    serve.add_argument("--max-request-bytes", type=int, default=8 << 20, help="larger bodies get 413")
    # TF Serving's batching parameters (--enable_batching, --batching_parameters_file), as flags.
    batching = BatchingOptions()
    serve.add_argument("--no-batching", action="store_true",
                       help="run every request alone instead of merging concurrent ones into one model call")
    serve.add_argument("--max-batch-size", type=int, default=batching.max_batch_size,
                       help=f"most rows in one model call (default {batching.max_batch_size})")
    serve.add_argument("--batch-timeout-micros", type=int, default=batching.batch_timeout_micros,
                       help="longest wait for more requests before a batch thread takes a partly filled batch "
                            f"(default {batching.batch_timeout_micros}: batches fill while the model is busy)")
    serve.add_argument("--max-enqueued-batches", type=int, default=batching.max_enqueued_batches,
                       help="batches' worth of rows (x --max-batch-size, also with --no-batching) a version's "
                            f"queue holds before answering 503 (default {batching.max_enqueued_batches})")
    serve.add_argument("--num-batch-threads", "--threads", dest="threads", type=int,
                       help="model calls running at the same time (default: the number of cores, "
                            f"{batching.num_batch_threads} here; {UNBATCHED_THREADS} with --no-batching)")
    serve.add_argument("--allowed-batch-sizes", metavar="N,N,...",
                       help="batch sizes to pad to, ending with --max-batch-size (default: 1, 2, 3, 4, 6, 8, 12, "
                            "... below it, and it)")
    _add_output_flags(serve, log_file=True)

    embeddings = commands.add_parser(
        "embeddings", help="train Word2Vec vectors on a run's train split text (for --pretrained-embeddings)")
    embeddings.add_argument("--from-run", required=True, metavar="RUN", help="run id whose train split to use")
    embeddings.add_argument("--out", required=True, metavar="PATH",
                            help="vectors file: .kv (gensim), .bin (word2vec binary), .txt or .vec (word2vec text)")
    embeddings.add_argument("--dim", type=int, default=100, help="vector size (default 100)")
    embeddings.add_argument("--window", type=int, default=5, help="context window (default 5)")
    embeddings.add_argument("--min-count", type=int, default=2, help="ignore rarer words (default 2)")
    embeddings.add_argument("--word2vec-epochs", type=int, default=10, help="passes over the text (default 10)")
    embeddings.add_argument("--config", help="YAML configuration file")
    embeddings.add_argument("--pipeline-root", help="default ./pipeline_root")
    _add_output_flags(embeddings, log_file=True)

    worker = commands.add_parser(
        "train-worker", help="one worker of a multi-worker training job (trainer.strategy multi_worker_mirrored)")
    worker.add_argument("--pipeline-root", required=True, help="the run's pipeline root, shared with this machine")
    worker.add_argument("--workers", required=True, metavar="H0:P0,H1:P1,...",
                        help="the run's trainer.workers, the chief first")
    worker.add_argument("--index", type=int, required=True, help="this worker's position in --workers (1, 2, ...)")
    worker.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the run's training job, and for the workers to join (default 600)")

    for name, help_text in (("runs", "list runs"), ("show", "show a run's model lineage and artifacts"),
                            ("diff", "compare two runs: config, hyperparameters, data, code, metrics, outcome"),
                            ("gc", "delete artifacts that no kept run or pushed model needs")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", help="YAML configuration file")
        sub.add_argument("--pipeline-root", help="default ./pipeline_root")
        if name in ("runs", "show", "diff"):
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        if name == "runs":
            sub.add_argument("--limit", type=int, default=20)
        if name == "show":
            sub.add_argument("run_id", nargs="?", help="run id (default: the latest run)")
        if name == "diff":
            sub.add_argument("run_a")
            sub.add_argument("run_b")
        if name == "gc":
            sub.add_argument("--keep", type=int, required=True, help="keep the N most recent runs")
            sub.add_argument("--dry-run", action="store_true")
    return parser


def _config_from_args(args: argparse.Namespace):
    flags = {}
    for attribute, key in FLAG_KEYS.items():
        value = getattr(args, attribute, None)
        if value is not None:
            flags[key] = list(value) if attribute == "beam_arg" else value
    if getattr(args, "no_tune", False):
        flags["tuner.enabled"] = False
    if getattr(args, "retune", False):
        flags["tuner.retune"] = "always"
    if getattr(args, "from_scratch", False):
        flags["trainer.warm_start"] = False
    span, date = getattr(args, "span", None), getattr(args, "date", None)
    if span and date:
        raise ConfigError("--span and --date both pin the newest span; give one of them")
    if date and parse_date(date) is None:
        raise ConfigError(f"--date must be a date YYYY-MM-DD, got {date!r}")
    if span or date:
        flags["ingest.window.newest"] = span or date
    config = load_config(args.config, getattr(args, "set", []), flags)
    dag.check_config(config)
    return config


def _check_root(root: Path) -> None:
    """A pipeline root that cannot be written fails here, in one line, before anything runs."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"the pipeline root {root} is a file, not a folder: choose another --pipeline-root")
    existing = next((p for p in (root, *root.parents) if p.exists()), root)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"the pipeline root {root} is not writable ({existing} is read-only or not ours): "
                         "choose another --pipeline-root or fix its permissions")


class UsageError(ValueError):
    """A bad command line or environment found before any work: exit 2."""


def _cmd_run(args, config, console: Console) -> int:
    from pipeline.runner import Runner, root_lock, step_range, summarize
    if args.command == "retrain" and (args.until or args.from_step or args.only):
        # A partial run can never push, and counting it as the last retrain would hide the data from the next.
        raise UsageError("--until, --from and --only are not allowed with retrain (it always runs the whole "
                         "pipeline); use `agnews-pipeline run --until/--from/--only STEP`")
    try:
        step_range(list(dag.STEP_NAMES), args.from_step, args.until, args.only)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_root(config.pipeline_root())
    with root_lock(config.pipeline_root(), args.lock_timeout):
        runner = Runner(config, log=console)
        try:
            data_fingerprint = runner.data_fingerprint()
            if args.command == "retrain":
                last = runner.store.last_successful_run("retrain")
                if not args.force and last is not None and last["data_fingerprint"] == data_fingerprint:
                    console.event("retrain_skipped", f"retrain: the input data is unchanged since run {last['id']} "
                                  f"(fingerprint {data_fingerprint[:12]}); nothing to do (use --force to run anyway)",
                                  last_run=last["id"])
                    return EXIT_NO_NEW_DATA
            result = runner.run(until=args.until, use_cache=not args.no_cache, rerun=tuple(args.rerun),
                                command=args.command, data_fingerprint=data_fingerprint,
                                from_step=args.from_step, only=args.only)
        finally:
            runner.close()
    console.event("summary", summarize(result), status=result.status, outcome=result.outcome,
                  run_dir=str(result.run_dir))
    if result.status != "succeeded":
        console.error(f"\nERROR: {result.error}")
        return EXIT_FOR_KIND.get(result.error_kind, EXIT_FAILED)
    if args.command == "retrain" and not result.delivered:
        return EXIT_NOT_BLESSED
    return EXIT_OK


def _cmd_train_worker(args) -> int:
    from library import multi_worker
    try:
        workers = multi_worker.parse_workers(args.workers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    from components import trainer
    return trainer.worker_main(Path(args.pipeline_root).resolve(), workers, args.index, args.timeout)


def _library_output(args, console: Console):
    """predict, serve, embeddings: the libraries' output (TensorFlow's start-up lines, ...) goes to --log-file,
    or nowhere; --verbose shows it live. The command's own output goes through the console's streams."""
    if args.verbose and not args.log_file:
        return contextlib.nullcontext()
    return capture_output(Path(args.log_file or os.devnull), echo=console.errors if args.verbose else None)


def _cmd_predict(args, console: Console) -> int:
    from apps import predict
    from contract.artifacts import ComponentError
    from contract.disk import disk_full, disk_full_message
    if args.input != "-" and Path(args.input).is_dir():
        raise UsageError(f"--input {args.input} is a folder: give a text file (one text per line), an AG News "
                         "CSV, or - for stdin")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    predict.resolve_serving_model_dir(Path(args.model_dir))  # a wrong --model-dir fails before reading input
    # A file output is written beside its name and renamed into place when complete: a full disk (or any
    # failure) never leaves a half-written file that looks like a result.
    output = Path(args.output) if args.output != "-" else None
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}") if output else None
    sink = console.stream if output is None else open(partial, "w", encoding="utf-8")
    try:
        batch: list[tuple[int, str]] = []

        def flush():
            rows = predict.predict(Path(args.model_dir), [text for _, text in batch])
            for (line, _), row in zip(batch, rows):
                sink.write(json.dumps({"line": line, **row} if args.line_numbers else row) + "\n")
            batch.clear()

        for numbered in predict.iter_numbered_texts(args.input):
            batch.append(numbered)
            if len(batch) >= args.batch_size:
                flush()
        if batch:
            flush()
        if output is not None:
            sink.close()
            os.replace(partial, output)
    except OSError as error:
        if output is not None and disk_full(error):  # a write error names no file: name the output
            raise ComponentError(disk_full_message(partial, f"writing {output}")) from None
        raise
    finally:
        if output is not None:
            sink.close()
            partial.unlink(missing_ok=True)
    return EXIT_OK


def _cmd_serve(args, config, console: Console) -> int:
    serving_dir = config.serving_dir()  # --serving-dir sets pusher.serving_dir
    if not serving_dir.is_dir():
        print(f"serve: {serving_dir} does not exist; push a model first (agnews-pipeline run) or pass "
              "--serving-dir", file=sys.stderr)
        return EXIT_USAGE
    for flag, value in (("--poll-seconds", args.poll_seconds), ("--max-request-bytes", args.max_request_bytes)):
        if value <= 0:
            print(f"serve: {flag} must be positive, got {value}", file=sys.stderr)
            return EXIT_USAGE
    try:
        sizes = tuple(int(size) for size in args.allowed_batch_sizes.split(",")) if args.allowed_batch_sizes else ()
    except ValueError:
        print(f"serve: --allowed-batch-sizes must be sizes separated by commas, got {args.allowed_batch_sizes!r}",
              file=sys.stderr)
        return EXIT_USAGE
    batching_defaults = BatchingOptions()
    threads = args.threads if args.threads is not None else (
        UNBATCHED_THREADS if args.no_batching else batching_defaults.num_batch_threads)
    batching = BatchingOptions(enabled=not args.no_batching, max_batch_size=args.max_batch_size,
                               batch_timeout_micros=args.batch_timeout_micros,
                               max_enqueued_batches=args.max_enqueued_batches, num_batch_threads=threads,
                               allowed_batch_sizes=sizes)
    problem = batching.problem()
    if problem:
        print(f"serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from apps.serve import serve
    except ImportError as error:
        print(f"serve: {error}; install the serve extra: pip install 'agnews-pipeline[serve]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _library_output(args, console):
            serve(serving_dir, model_name=args.model_name, host=args.host, port=args.port,
                  poll_seconds=args.poll_seconds, max_request_bytes=args.max_request_bytes, batching=batching,
                  log=console)
    except OSError as error:
        console.error(f"serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return EXIT_FAILED
    return EXIT_OK


def _format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _format_value(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _cmd_runs(args, config) -> int:
    from pipeline.inspect import run_rows
    rows = run_rows(config.pipeline_root(), args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no runs under {config.pipeline_root()}")
        return EXIT_OK
    header = ("run", "command", "started", "duration", "status", "cached", *dag.RUN_COLUMNS)  # headline columns
    table = [header] + [(r["id"], r["command"], time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])),
                         _format_seconds(r["duration"]), r["status"], f"{r['cached']}/{r['steps']}",
                         *(_format_value(r[column]) for column in dag.RUN_COLUMNS)) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _cmd_show(args, config) -> int:
    from pipeline.inspect import run_details, show_run
    if args.json:
        print(json.dumps(run_details(config.pipeline_root(), args.run_id), indent=2, default=str))
    else:
        print(show_run(config.pipeline_root(), args.run_id))
    return EXIT_OK


def _cmd_diff(args, config) -> int:
    from pipeline.inspect import diff_runs, format_diff
    diff = diff_runs(config.pipeline_root(), args.run_a, args.run_b)
    print(json.dumps(diff, indent=2, default=str) if args.json else format_diff(diff))
    return EXIT_OK


def _cmd_embeddings(args, config, console: Console) -> int:
    from library import embeddings
    from pipeline.inspect import run_train_text_source
    for name in ("dim", "window", "min_count", "word2vec_epochs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    if out.suffix not in embeddings.OUTPUT_SUFFIXES:
        raise ConfigError(f"--out must end in one of {', '.join(embeddings.OUTPUT_SUFFIXES)}, got {out.name!r}")
    examples_dir, transform = run_train_text_source(config.pipeline_root(), args.from_run)
    with _library_output(args, console):
        sentences = embeddings.tokenized_split(examples_dir, "train", transform["text_features"],
                                               transform["max_length"])
        vectors = embeddings.train_word2vec(sentences, dimension=args.dim, window=args.window,
                                            min_count=args.min_count, epochs=args.word2vec_epochs,
                                            seed=config.pipeline.seed)
        written = embeddings.save_vectors(vectors, out)
    console.event("result", f"embeddings: {len(vectors.index_to_key)} words x {vectors.vector_size} dimensions from "
          f"{len(sentences)} train texts of run {args.from_run} -> {out} ({written}); "
          f"use it with --pretrained-embeddings {out}", path=str(out), words=len(vectors.index_to_key))
    return EXIT_OK


def _cmd_gc(args, config) -> int:
    from pipeline.gc import collect_garbage
    from pipeline.runner import root_lock
    if args.keep < 1:
        raise UsageError(f"--keep must be at least 1 (got {args.keep}): the newest run is always kept")
    _check_root(config.pipeline_root())
    with root_lock(config.pipeline_root()):
        removed = collect_garbage(config.pipeline_root(), args.keep, dry_run=args.dry_run,
                                  serving_dir=config.serving_dir())
    verb = "would delete" if args.dry_run else "deleted"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} folders")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    code = _main(args)
    if getattr(args, "metrics_file", None):
        _write_metrics(args, code, started)
    return code


def _write_metrics(args, code: int, started: float) -> None:
    """--metrics-file, whatever the outcome; a file that cannot be written is one line, not a new exit code."""
    from apps.job_metrics import write_job_metrics
    try:
        config = _config_from_args(args)
    except ConfigError:
        config = load_config()  # a bad configuration is itself an outcome worth reporting
    try:
        write_job_metrics(Path(args.metrics_file), command=args.command, exit_code=code, started=started,
                          ended=time.time(), root=config.pipeline_root(), serving_dir=config.serving_dir())
    except OSError as error:
        print(f"{args.command}: could not write --metrics-file {args.metrics_file}: {error.strerror or error}",
              file=sys.stderr)


def _main(args: argparse.Namespace) -> int:
    if args.command in ("run", "retrain"):  # `serve` drains on SIGTERM by itself
        interrupts.install()
    # The command's own lines: text or JSON (--log-format), on stdout (serve: stderr, like its request log).
    console = Console(stream=sys.stderr if args.command == "serve" else sys.stdout,
                      log_format=getattr(args, "log_format", "text"), verbose=getattr(args, "verbose", False))
    config = None
    try:
        if args.command == "predict":
            with _library_output(args, console):
                return _cmd_predict(args, console)
        if args.command == "train-worker":
            return _cmd_train_worker(args)
        config = _config_from_args(args)
        if args.command in ("run", "retrain"):
            if config.pipeline.deadline:
                interrupts.set_deadline(config.pipeline.deadline_seconds())
            return _cmd_run(args, config, console)
        if args.command in ("serve", "embeddings"):
            return {"serve": _cmd_serve, "embeddings": _cmd_embeddings}[args.command](args, config, console)
        return {"runs": _cmd_runs, "show": _cmd_show, "gc": _cmd_gc, "diff": _cmd_diff}[args.command](args, config)
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
        kept = "; completed steps are kept and the next run reuses them" if args.command in ("run", "retrain") else ""
        console.error(f"{args.command}: interrupted by {interrupts.name()}{kept}")
        return interrupts.exit_code(error)
    except Exception as error:  # one readable line instead of a traceback wall
        import sqlite3

        from contract.artifacts import ComponentError
        from contract.disk import disk_full, disk_full_message, full_path
        from pipeline.metadata import StoreError, store_error
        if isinstance(error, sqlite3.DatabaseError):  # a store that opened but breaks on reading
            store = (config.pipeline_root() if config else Path(".")) / "metadata.sqlite"
            error = store_error(store, error)
        if isinstance(error, (ComponentError, StoreError, LookupError)):
            console.error(f"{args.command}: {error}")
            return EXIT_FOR_KIND.get(getattr(error, "kind", None), EXIT_FAILED)
        if isinstance(error, OSError) and disk_full(error):
            where = full_path(error, config.pipeline_root() if config else Path.cwd())
            console.error(f"{args.command}: {disk_full_message(where, f'writing {where}')}")
            return EXIT_FAILED
        if isinstance(error, OSError):  # missing, unreadable or unwritable files and folders
            where = f": {error.filename}" if error.filename else ""
            console.error(f"{args.command}: {error.strerror or error}{where}")
            return EXIT_FAILED
        raise


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


if __name__ == "__main__":
    entry_point()
