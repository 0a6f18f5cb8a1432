"""The runner's heartbeat: while a step runs, one line every `pipeline.progress_seconds` with the elapsed time
and an estimate of the time left.

The estimate comes from the step's earlier completed executions in this pipeline root (the newest 20) and the
rows of its input then and now (row counts in the input artifacts' properties, or for a step reading outside
data, what its `input_rows` counts now versus the rows its earlier outputs hold): see Estimate.basis. Without
sizes it is the newest one's duration, unscaled, and the line says so. It is printed as an estimate, with what
it is based on.

The line comes from a daemon thread that only reads files and prints: the store is read before it starts
(SQLite connections belong to one thread) and the runner stops it, and waits for it, before the step's result
is handled, so it never outlives the step. Signals are delivered to the main thread only, so SIGINT and
SIGTERM are handled as before.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from contract.units import format_duration


def rows_of(properties: dict[str, Any]) -> int | None:
    """The rows an artifact holds, from its properties ("rows", "train_rows", ...); None if it names none."""
    counts = [
        value
        for name, value in properties.items()
        if (name == "rows" or name.endswith("_rows"))
        and isinstance(value, int)
        and not isinstance(value, bool)
    ]
    return sum(counts) if counts else None


def total_rows(artifacts) -> int | None:
    """The rows of several artifacts (anything with .properties); None if none of them counts rows."""
    counts = [rows for rows in (rows_of(a.properties) for a in artifacts) if rows is not None]
    return sum(counts) if counts else None


# how many of a step's newest completed executions the estimate may choose from
EARLIER_RUNS = 20


@dataclass(frozen=True)
class Estimate:
    """What the ETA is based on: the step's earlier completed executions and how to count the rows now."""
    # (seconds, rows of its input), newest first; () = none
    earlier: tuple[tuple[float, int | None], ...]
    # called once, in the heartbeat thread (it may read files)
    rows_now: Callable[[], int | None]

    def basis(self, rows_now: int | None) -> tuple[float, str]:
        """(expected seconds, what that is based on). From the earlier run closest in size (the newest of
        equals): along the straight line through it and the next closest run at least twice or half its size,
        which separates start-up time from time per row; with no such run, scaled in proportion to the rows;
        without sizes, the newest run unscaled."""
        sized = [run for run in self.earlier if run[1]] if rows_now else []
        if not sized:
            seconds = self.earlier[0][0]
            return (
                seconds,
                f"its last run here took {format_duration(seconds)}; not scaled: the size of its input "
                "is not known",
            )

        # size ratios: 1,000 is as far from 2,000 as 4,000 is
        def distance(run):
            return abs(math.log(rows_now / run[1]))

        seconds, rows = min(sized, key=distance)
        apart = [run for run in sized if max(run[1], rows) >= 2 * min(run[1], rows)]
        if apart and rows != rows_now:
            other_seconds, other_rows = min(apart, key=distance)
            # noise can make it negative
            per_row = max((seconds - other_seconds) / (rows - other_rows), 0.0)
            return (
                max(seconds + per_row * (rows_now - rows), 0.0),
                f"a line through its runs here on {other_rows:,} rows "
                f"({format_duration(other_seconds)}) and {rows:,} "
                f"rows ({format_duration(seconds)}); now {rows_now:,}",
            )
        text = f"its run here on {rows:,} rows took {format_duration(seconds)}; now {rows_now:,}"
        if rows_now > 2 * rows:
            text += "; likely too high: part of a step's time does not grow with its rows"
        return seconds * rows_now / rows, text


def estimate_for(store, step, step_config, inputs: dict) -> Estimate:
    """The estimate for `step` from the metadata store (main thread: the store's connection is not shared).

    A step with input artifacts is sized by their rows then and now; a step reading outside data by the rows
    its earlier outputs hold (what it read then) and what its `input_rows` counts now."""
    kind = "input" if inputs else "output"
    earlier = tuple((execution["ended"] - execution["started"],
                     total_rows(store.artifacts_of(execution["id"], kind).values()))
                    for execution in store.completed(step.name, EARLIER_RUNS))
    if inputs:
        # a list input counts no rows
        rows = total_rows(a for a in inputs.values() if not isinstance(a, list))
        return Estimate(earlier, lambda: rows)
    count = step.spec.hook("input_rows")
    return Estimate(earlier, (lambda: count(step_config)) if count is not None else (lambda: None))


class Heartbeat:
    """`with Heartbeat(...):` around a step's work logs `prefix running: elapsed ..., ETA ...` every `period`
    seconds (0: never)."""

    def __init__(self, log: Callable[[str], None], prefix: str, period: float, estimate: Estimate,
                 started: float | None = None):
        self.log = log
        self.prefix = prefix
        self.period = period
        self.estimate = estimate
        self.started = time.monotonic() if started is None else started
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows_now: int | None = None
        self._counted = False

    def __enter__(self) -> Heartbeat:
        if self.period > 0:
            self._thread = threading.Thread(
                target=self._beat, name=f"heartbeat {self.prefix.strip()}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            line = self.line(time.monotonic() - self.started)
            # the step may have ended while the rows were counted
            if not self._stop.is_set():
                self.log(line)

    def _rows(self) -> int | None:
        if not self._counted:
            self._counted = True
            try:
                self._rows_now = self.estimate.rows_now()
            # an input that cannot be counted only makes the estimate unscaled
            except Exception:
                self._rows_now = None
        return self._rows_now

    def line(self, elapsed: float) -> str:
        text = f"{self.prefix} running: elapsed {format_duration(elapsed)}"
        if not self.estimate.earlier:
            return f"{text} (no earlier run to estimate from)"
        expected, basis = self.estimate.basis(self._rows())
        # "ETA ~0s", not "longer than the estimated 12s" at 12s
        if round(elapsed) <= round(expected):
            return f"{text}, ETA ~{format_duration(max(expected - elapsed, 0))} (estimate: {basis})"
        return f"{text}, longer than the estimated {format_duration(expected)} ({basis})"
