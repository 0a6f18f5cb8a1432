"""What several `agnews-pipeline` commands share: UsageError (a bad command line or environment: exit 2), the
check that the pipeline root can be written, a listing printed as JSON or as a table (runs, spans), and where
the libraries' output goes (predict, serve, embeddings)."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.logs import Console, capture_output


def check_root(root: Path) -> None:
    """A pipeline root that cannot be written fails here, in one line, before anything runs."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"the pipeline root {root} is a file, not a folder: choose another --pipeline-root")
    existing = next((p for p in (root, *root.parents) if p.exists()), root)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"the pipeline root {root} is not writable ({existing} is read-only or not ours): "
                         "choose another --pipeline-root or fix its permissions")


def existing_root(root: Path) -> None:
    """A command that reads or changes what runs left (runs, show, diff, spans, rollback, gc) refuses a
    pipeline root that does not exist, in one line, before it creates anything there (no lock file, no
    store)."""
    if not root.is_dir():
        raise UsageError(
            f"no pipeline root at {root}: nothing has run there; give the --pipeline-root (or the "
            "configuration's pipeline.root) of a root a run created"
        )


class UsageError(ValueError):
    """A bad command line or environment found before any work: exit 2."""


def print_listing(rows: list[dict[str, Any]], as_json: bool, empty: str, header: Sequence[str],
                  cells: Callable[[dict[str, Any]], Sequence[Any]]) -> None:
    """Prints `rows` as indented JSON for scripts (--json), or else `empty` when there are none, or a table:
    `header`, then `cells(row)` of each row, in columns as wide as their widest cell."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(empty)
        return
    table = [tuple(header)] + [tuple(str(cell) for cell in cells(row)) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


def library_output(args, console: Console):
    """predict, serve, embeddings: the libraries' output (TensorFlow's start-up lines, ...) goes to
    --log-file, or nowhere; --verbose shows it live. The command's own output goes through the console's
    streams."""
    if args.verbose and not args.log_file:
        return contextlib.nullcontext()
    return capture_output(Path(args.log_file or os.devnull), echo=console.errors if args.verbose else None)
