"""What several `agnews-pipeline` commands share: UsageError (a bad command line or environment: exit 2), the
check that the pipeline root can be written, and where the libraries' output goes (predict, serve,
embeddings)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

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
    """A command that reads or changes what runs left (runs, show, diff, spans, rollback, gc) refuses a pipeline
    root that does not exist, in one line, before it creates anything there (no lock file, no store)."""
    if not root.is_dir():
        raise UsageError(f"no pipeline root at {root}: nothing has run there; give the --pipeline-root (or the "
                         "configuration's pipeline.root) of a root a run created")


class UsageError(ValueError):
    """A bad command line or environment found before any work: exit 2."""


def library_output(args, console: Console):
    """predict, serve, embeddings: the libraries' output (TensorFlow's start-up lines, ...) goes to --log-file,
    or nowhere; --verbose shows it live. The command's own output goes through the console's streams."""
    if args.verbose and not args.log_file:
        return contextlib.nullcontext()
    return capture_output(Path(args.log_file or os.devnull), echo=console.errors if args.verbose else None)
