"""`agnews-pipeline predict`: classifies raw text lines or an AG News CSV with a SavedModel, in batches, into
JSON lines; a file output is renamed into place only when complete."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from apps.cli.exit_codes import EXIT_OK
from apps.cli.utils import UsageError
from contract.files import replaced_atomically
from pipeline.logs import Console


def cmd_predict(args, console: Console) -> int:
    from apps import predict
    from contract.artifacts import ComponentError
    from contract.disk import disk_full, disk_full_message
    if args.input != "-" and Path(args.input).is_dir():
        raise UsageError(
            f"--input {args.input} is a folder: give a text file (one text per line), an AG News "
            "CSV, or - for stdin"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    # A wrong --model-dir fails before any input is read.
    predict.resolve_serving_model_dir(Path(args.model_dir))
    if args.output == "-":
        _write_predictions(args, console.stream)
        return EXIT_OK
    # A file output is written beside its name and renamed into place when complete: a full disk (or any
    # failure) never leaves a half-written file that looks like a result.
    output = Path(args.output)
    try:
        with replaced_atomically(output) as partial, open(partial, "w", encoding="utf-8") as sink:
            _write_predictions(args, sink)
    except OSError as error:
        # a write error names no file: name the output
        if disk_full(error):
            raise ComponentError(disk_full_message(output.parent, f"writing {output}")) from None
        raise
    return EXIT_OK


def _write_predictions(args, sink: TextIO) -> None:
    """One JSON line per input text, predicted --batch-size texts at a time."""
    from apps import predict
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
