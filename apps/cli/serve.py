"""`agnews-pipeline serve`: checks the serving folder and the batching flags, then runs the REST server
(apps/serving) until SIGTERM or SIGINT; with --workers N, a supervisor of N such servers on the port
(apps/serving/workers.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from apps.cli.exit_codes import EXIT_FAILED, EXIT_OK
from apps.cli.flags import DURATION_HELP, add_output_flags, command, duration_flag, duration_in
from apps.cli.utils import UsageError, library_output
from apps.serving.batching import BatchingOptions  # standard library only
from apps.serving.policy import POLICY_HELP, PolicyError, VersionPolicy, read_labels  # no TensorFlow
from apps.serving.workers import Supervisor, WorkerSeat, reserve_port  # standard library only
from pipeline.logs import Console

# serve --no-batching: requests the model computes at the same time
UNBATCHED_THREADS = 4


def cmd_serve(args, config, console: Console) -> int:
    """Runs the server until SIGTERM or SIGINT. A bad flag or serving folder is a UsageError, shown by
    main()'s one error path like every command's (in JSON with --log-format json)."""
    # --serving-dir sets pusher.serving_dir
    serving_dir = config.serving_dir()
    if not serving_dir.is_dir():
        raise UsageError(f"{serving_dir} does not exist; push a model first (agnews-pipeline run) or pass "
                         "--serving-dir")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be a port from 0 (any free port) to 65535, got {args.port}")
    if args.workers <= 0:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
    if args.max_request_bytes <= 0:
        raise UsageError(f"--max-request-bytes must be positive, got {args.max_request_bytes}")
    if args.poll_seconds <= 0:
        raise UsageError(f"--poll-seconds must be positive, got {args.poll_seconds:g}")
    for flag, value in (
        ("--intra-op-threads", args.intra_op_threads),
        ("--inter-op-threads", args.inter_op_threads),
    ):
        if value is not None and value < 0:
            raise UsageError(f"{flag} must be 0 (TensorFlow's choice) or more, got {value}")
    batching = _batching_options(args)
    intra_op_threads = args.intra_op_threads
    if intra_op_threads is None:
        intra_op_threads = shared_cores(os.cpu_count() or 1, batching.num_batch_threads * args.workers)
    try:
        policy = VersionPolicy.parse(args.model_version_policy)
        labels_file = Path(args.version_labels) if args.version_labels else None
        if labels_file is not None:
            # a bad file stops the start; later a bad edit keeps the previous labels
            read_labels(labels_file)
    except PolicyError as error:
        raise UsageError(str(error)) from None
    seat = WorkerSeat.from_environment()
    if seat is None and args.workers > 1:
        return _supervise(args, console)
    try:
        from apps.serving.http import serve
    except ImportError as error:
        raise UsageError(f"{error}; install the serve extra: pip install 'agnews-pipeline[serve]'") from None
    # a worker's lines say which worker; the supervisor's own lines are the ones that start "serve:"
    log = console if seat is None else (
        lambda message: console(message.replace("serve:", f"serve (worker {seat.index}):", 1)))
    try:
        with library_output(args, console):
            serve(serving_dir, model_name=args.model_name, host=args.host, port=args.port,
                  poll_seconds=args.poll_seconds, max_request_bytes=args.max_request_bytes, batching=batching,
                  log=log, policy=policy, labels_file=labels_file,
                  op_threads=(args.inter_op_threads, intra_op_threads), seat=seat)
    except OSError as error:
        console.error(f"serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return EXIT_FAILED
    return EXIT_OK


def _supervise(args, console: Console) -> int:
    """`serve --workers N`: holds the port, then starts and watches N workers (apps/serving/workers.py)."""
    try:
        reserved = reserve_port(args.host, args.port)
    except OSError as error:
        console.error(f"serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return EXIT_FAILED
    with reserved:
        port = reserved.port
        url = f"http://{args.host}:{port}/v1/models/{args.model_name}"
        code = Supervisor(sys.argv[1:], port, args.workers, console).run(url)
    console("serve: stopped")
    return EXIT_OK if code == 0 else EXIT_FAILED


def worker_share(cores: int, workers: int) -> int:
    """The default batch threads of each of `workers` workers on `cores` cores: its share, at least one. Two
    workers of two batch threads each on 2 cores ran four calls at once, and under a 2x overload their
    accepted requests took 339-343 ms at p99 against 219-232 ms with one each, for 1.15x as many accepted
    (benchmarks/README.md)."""
    return max(1, cores // workers)


def shared_cores(cores: int, batch_threads: int) -> int:
    """The intra-op threads of one model call when `batch_threads` calls may run at once on `cores` cores:
    each its share, at least one. (TensorFlow's own choice, every core per call, made two concurrent calls
    on 2 cores slower: benchmarks/results/serve_intra_op.md.)"""
    return max(1, cores // batch_threads)


def _batching_options(args) -> BatchingOptions:
    """TF Serving's batching parameters from the flags; a UsageError names a bad one."""
    try:
        sizes = (
            tuple(int(size) for size in args.allowed_batch_sizes.split(","))
            if args.allowed_batch_sizes
            else ()
        )
    except ValueError:
        raise UsageError(
            f"--allowed-batch-sizes must be sizes separated by commas, got {args.allowed_batch_sizes!r}"
        ) from None
    threads = args.threads
    if threads is None:
        threads = UNBATCHED_THREADS if args.no_batching else worker_share(os.cpu_count() or 1, args.workers)
    batching = BatchingOptions(enabled=not args.no_batching, max_batch_size=args.max_batch_size,
                               batch_timeout_micros=round(args.batch_timeout_micros),
                               max_enqueued_batches=args.max_enqueued_batches, num_batch_threads=threads,
                               max_queue_delay_ms=args.max_queue_delay_ms, allowed_batch_sizes=sizes)
    problem = batching.problem()
    if problem:
        raise UsageError(problem)
    return batching


def add_serve_command(commands) -> None:
    serve = command(commands, "serve", "serve the pushed models over TF Serving's REST API")
    serve.add_argument("--config", help="YAML configuration file (its pusher.serving_dir is served)")
    serve.add_argument("--pipeline-root", help="default ./pipeline_root")
    serve.add_argument(
        "--serving-dir", help="folder of numeric versions (default <pipeline root>/serving/agnews)"
    )
    serve.add_argument(
        "--model-name", default="agnews", help="the name in /v1/models/<name> (default agnews)"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument(
        "--port", type=int, default=8501, help="TF Serving's REST port by default; 0 = any free port"
    )
    serve.add_argument(
        "--poll-seconds",
        type=duration_flag,
        default=1.0,
        metavar="DURATION",
        help="how often to look for new versions and a changed --version-labels file (default 1); "
        f"{DURATION_HELP}",
    )
    serve.add_argument("--model-version-policy", default="latest", metavar="POLICY",
                       help=f"versions to keep loaded (TF Serving's model_version_policy): {POLICY_HELP}; "
                            "default latest")
    serve.add_argument("--version-labels", metavar="FILE",
                       help="YAML or JSON file {label: version} for /v1/models/<name>/labels/<label>, e.g. "
                            "'stable: 3'; re-read when it changes")
    serve.add_argument("--max-request-bytes", type=int, default=8 << 20, help="larger bodies get 413")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="server processes answering on the port, each a whole server with the model "
                            "loaded and its share of the cores (default 1; one process's model calls do not "
                            "use two cores: 2 workers answered 1.17-1.35x the one-text requests on 2 cores, "
                            "at twice the memory)")
    _add_batching_flags(serve)
    add_output_flags(serve, log_file=True)


def _add_batching_flags(serve: argparse.ArgumentParser) -> None:
    # TF Serving's batching parameters (--enable_batching, --batching_parameters_file), as flags.
    batching = BatchingOptions()
    serve.add_argument("--no-batching", action="store_true",
                       help="run every request alone instead of merging concurrent ones into one model call")
    serve.add_argument("--max-batch-size", type=int, default=batching.max_batch_size,
                       help=f"most rows in one model call (default {batching.max_batch_size})")
    serve.add_argument(
        "--batch-timeout-micros",
        type=duration_in(1e-6),
        default=batching.batch_timeout_micros,
        help="longest wait for more requests for a partly filled batch, only under load (a batch running, "
        "or requests faster than one per timeout) and until every client seen lately is waiting: a lone "
        f"request never waits (default {batching.batch_timeout_micros}; 100000 or more: every request "
        "waits, as in TF Serving; or a duration such as 2ms)",
    )
    serve.add_argument(
        "--max-enqueued-batches",
        type=int,
        default=batching.max_enqueued_batches,
        help="batches' worth of rows (x --max-batch-size, also with --no-batching) a version's "
        f"queue holds before answering 503 (default {batching.max_enqueued_batches})",
    )
    serve.add_argument(
        "--max-queue-delay-ms",
        type=duration_in(1e-3),
        default=batching.max_queue_delay_ms,
        metavar="MS",
        help="answer 503 at arrival when the estimated time to answer (the running and queued batches "
        f"over the batch threads, then its own) is over this (default {batching.max_queue_delay_ms:g}; "
        "0: no check by time, only --max-enqueued-batches; or a duration such as 0.2s)",
    )
    serve.add_argument("--num-batch-threads", "--threads", dest="threads", type=int,
                       help="model calls running at the same time, per worker (default: the number of "
                            f"cores over --workers, at least 1: {batching.num_batch_threads} here with one "
                            f"worker; {UNBATCHED_THREADS} with --no-batching)")
    serve.add_argument(
        "--allowed-batch-sizes",
        metavar="N,N,...",
        help="batch sizes to pad to, ending with --max-batch-size (default: 1, 2, 3, 4, 6, 8, 12, "
        "... below it, and it)",
    )
    serve.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        metavar="N",
        help="TensorFlow's threads within one op (TF Serving's --tensorflow_intra_op_parallelism; default: "
        "cores // (--num-batch-threads x --workers), at least 1; 0: TensorFlow's choice, every core)",
    )
    serve.add_argument("--inter-op-threads", type=int, default=0, metavar="N",
                       help="TensorFlow's threads running independent ops (TF Serving's "
                            "--tensorflow_inter_op_parallelism; default 0: TensorFlow's choice)")
