"""What a command prints, and where the libraries' own output goes.

A `Console` prints the project's own lines (the plan, progress with an ETA, results, the summary), one per
event, as text or, with `--log-format json`, as one JSON object per line:

    {"time": "2026-12-02T07:10:03.123Z", "level": "info", "run_id": "20261202T071001-1a2b3c", "step":
    "trainer",
     "event": "progress", "message": "trainer: epoch 2/3 in 4s (...)", "fields": {}}

It writes to a duplicate of the process's stdout taken when it is created, so its lines still reach the
terminal (or the file cron writes) while `capture_output` has pointed file descriptors 1 and 2 at a log file.
That capture works below Python: TensorFlow's C++ start-up lines (written to fd 2 before TF_CPP_MIN_LOG_LEVEL
takes effect), absl, Beam's and TFMA's logging, KerasTuner's trial tables, Keras's epoch lines and the output
of child processes (Beam workers, dask) all land in the step's log file; `--verbose` copies that file live to
stderr.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

LOG_FORMATS = ("text", "json")
# back to the start of the line and erase it (only ever written to a terminal)
CLEAR_LINE = "\r\x1b[2K"
ANSI_CODE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _duplicate(stream: TextIO) -> TextIO:
    """A line-buffered text stream on a duplicate of `stream`'s file descriptor (the stream itself if it has
    none)."""
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    # pytest's capture, StringIO
    except (AttributeError, OSError, ValueError):
        return stream


class Console:
    """The project's lines. Callable with a message (what components get as `runtime.log`); `event()` for
    lines that carry a kind and fields."""

    def __init__(self, stream: TextIO | None = None, log_format: str = "text", verbose: bool = False,
                 errors: TextIO | None = None):
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
        self.stream = _duplicate(stream or sys.stdout)
        self.errors = _duplicate(errors or sys.stderr)
        self.log_format = log_format
        self.verbose = verbose
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.run_id: str | None = None
        self.step: str | None = None
        # the heartbeat thread prints too
        self._lock = threading.Lock()
        self._status_shown = False

    def __call__(self, message: str) -> None:
        self.event("message", message)

    def event(self, event: str, message: str, level: str = "info", stream: TextIO | None = None,
              step: str | None = None, **fields: Any) -> None:
        if self.log_format == "json":
            text = json.dumps(
                {
                    "time": _now(),
                    "level": level,
                    "run_id": self.run_id,
                    "step": step or self.step,
                    "event": event,
                    "message": ANSI_CODE.sub("", message).strip(),
                    "fields": fields,
                },
                default=str,
            )
        else:
            text = message if self.tty else ANSI_CODE.sub("", message)
        with self._lock:
            target = stream or self.stream
            try:
                if self.tty and self.log_format == "text" and event == "progress" and target is self.stream:
                    # On a terminal progress is one line rewritten in place, not a new line each time.
                    target.write(CLEAR_LINE + text)
                    self._status_shown = True
                else:
                    # the live progress line gives way to the next line
                    if self._status_shown:
                        self.stream.write(CLEAR_LINE)
                        self._status_shown = False
                    target.write(text + "\n")
                target.flush()
            # stdout is a file on a full disk: the run goes on; its store and run.json keep it
            except OSError:
                pass

    def error(self, message: str, **fields: Any) -> None:
        """The one line a failure ends with, on stderr."""
        self.event("error", message, level="error", stream=self.errors, **fields)

    def capture(self, path: Path):
        """Sends fd 1 and fd 2 to `path` while the block runs; with verbose, copied live to stderr."""
        return capture_output(path, echo=self.errors if self.verbose else None)


def log_event(
    log: Callable[[str], None], event: str, message: str, level: str = "info", **fields: Any
) -> None:
    """One of the runner's own lines: a Console gets its kind and fields (--log-format json), a plain
    callable the text."""
    if isinstance(log, Console):
        log.event(event, message, level=level, **fields)
    else:
        log(message)


def _now() -> str:
    return (
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class _Tail(threading.Thread):
    """Copies what is appended to a file to a stream, until stopped (then copies the rest)."""

    def __init__(self, path: Path, target: TextIO, offset: int):
        super().__init__(name=f"tail {path.name}", daemon=True)
        self.path, self.target, self.offset = path, target, offset
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            self._copy()
        self._copy()

    def _copy(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
            if data:
                self.offset += len(data)
                self.target.write(data.decode("utf-8", errors="replace"))
                self.target.flush()
        except OSError:
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@contextlib.contextmanager
def capture_output(path: Path, echo: TextIO | None = None) -> Iterator[Path]:
    """Points file descriptors 1 and 2 (and so sys.stdout, sys.stderr, C/C++ libraries and child processes
    started meanwhile) at `path`, appending, and restores them afterwards; nests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = (os.dup(1), os.dup(2))
    tail = None
    try:
        if echo is not None:
            tail = _Tail(path, echo, os.fstat(target).st_size)
            tail.start()
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            # a full disk: what is left is lost, not misplaced
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
        if tail is not None:
            tail.stop()
