"""`agnews-pipeline predict`: classifies raw text lines or an AG News CSV with a SavedModel, in batches, into
JSON lines; a file output is renamed into place only when complete."""
from __future__ import annotations

import json
import os
from pathlib import Path

from apps.cli.exit_codes import EXIT_OK
from apps.cli.utils import UsageError
from pipeline.logs import Console


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
