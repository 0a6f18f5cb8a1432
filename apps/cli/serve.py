"""`agnews-pipeline serve`: checks the serving folder and the batching flags, then runs the REST server
(apps/serving) until SIGTERM or SIGINT."""
from __future__ import annotations

import os
from pathlib import Path

from apps.cli.exit_codes import EXIT_FAILED, EXIT_OK
from apps.cli.utils import UsageError, library_output
from apps.serving.batching import BatchingOptions  # standard library only
from apps.serving.policy import PolicyError, VersionPolicy, read_labels  # no TensorFlow
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
        intra_op_threads = shared_cores(os.cpu_count() or 1, batching.num_batch_threads)
    try:
        policy = VersionPolicy.parse(args.model_version_policy)
        labels_file = Path(args.version_labels) if args.version_labels else None
        if labels_file is not None:
            # a bad file stops the start; later a bad edit keeps the previous labels
            read_labels(labels_file)
    except PolicyError as error:
        raise UsageError(str(error)) from None
    try:
        from apps.serving.http import serve
    except ImportError as error:
        raise UsageError(f"{error}; install the serve extra: pip install 'agnews-pipeline[serve]'") from None
    try:
        with library_output(args, console):
            serve(serving_dir, model_name=args.model_name, host=args.host, port=args.port,
                  poll_seconds=args.poll_seconds, max_request_bytes=args.max_request_bytes, batching=batching,
                  log=console, policy=policy, labels_file=labels_file,
                  op_threads=(args.inter_op_threads, intra_op_threads))
    except OSError as error:
        console.error(f"serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return EXIT_FAILED
    return EXIT_OK


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
        threads = UNBATCHED_THREADS if args.no_batching else BatchingOptions().num_batch_threads
    batching = BatchingOptions(enabled=not args.no_batching, max_batch_size=args.max_batch_size,
                               batch_timeout_micros=round(args.batch_timeout_micros),
                               max_enqueued_batches=args.max_enqueued_batches, num_batch_threads=threads,
                               max_queue_delay_ms=args.max_queue_delay_ms, allowed_batch_sizes=sizes)
    problem = batching.problem()
    if problem:
        raise UsageError(problem)
    return batching
