"""`agnews-pipeline serve`: checks the serving folder and the batching flags, then runs the REST server
(apps/serving) until SIGTERM or SIGINT."""
from __future__ import annotations

import sys
from pathlib import Path

from apps.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from apps.cli.utils import _library_output
from apps.serving.batching import BatchingOptions  # standard library only
from apps.serving.policy import PolicyError, VersionPolicy, read_labels  # no TensorFlow
from pipeline.logs import Console

UNBATCHED_THREADS = 4  # serve --no-batching: requests the model computes at the same time


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
    for flag, value in (("--intra-op-threads", args.intra_op_threads), ("--inter-op-threads", args.inter_op_threads)):
        if value < 0:
            print(f"serve: {flag} must be 0 (TensorFlow's choice) or more, got {value}", file=sys.stderr)
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
                               max_queue_delay_ms=args.max_queue_delay_ms,
                               allowed_batch_sizes=sizes)
    problem = batching.problem()
    if problem:
        print(f"serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        policy = VersionPolicy.parse(args.model_version_policy)
        labels_file = Path(args.version_labels) if args.version_labels else None
        if labels_file is not None:
            read_labels(labels_file)  # a bad file stops the start; later a bad edit keeps the previous labels
    except PolicyError as error:
        print(f"serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from apps.serving.http import serve
    except ImportError as error:
        print(f"serve: {error}; install the serve extra: pip install 'agnews-pipeline[serve]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _library_output(args, console):
            serve(serving_dir, model_name=args.model_name, host=args.host, port=args.port,
                  poll_seconds=args.poll_seconds, max_request_bytes=args.max_request_bytes, batching=batching,
                  log=console, policy=policy, labels_file=labels_file,
                  op_threads=(args.inter_op_threads, args.intra_op_threads))
    except OSError as error:
        console.error(f"serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return EXIT_FAILED
    return EXIT_OK
