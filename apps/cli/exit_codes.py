"""The exit codes of `agnews-pipeline`, what each means (EXIT_MEANINGS: the table `run --help` and
`retrain --help` end with, and docs/operations.md repeats), and the failure kinds that have one of their own
(EXIT_FOR_KIND); any other failure exits with EXIT_FAILED."""
from __future__ import annotations

import signal

from pipeline import interrupts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_NEW_DATA = 3
EXIT_NOT_BLESSED = 4
EXIT_LOCKED = 5
EXIT_TOO_FEW_SPANS = 6
EXIT_SPAN_NOT_FOUND = 7
EXIT_DRIFT = 8
EXIT_DEADLINE = interrupts.EXIT_DEADLINE
EXIT_INTERRUPTED = interrupts.EXIT_CODES[signal.SIGINT]
EXIT_TERMINATED = interrupts.EXIT_CODES[signal.SIGTERM]
# A pinned run (--span/--date) whose window ends before the newest span of the served model; nothing ran.
EXIT_BACKFILL = 9

# Exit codes of `run` and `retrain`, for schedulers.
EXIT_MEANINGS = {
    EXIT_OK: "success; retrain: a new model was pushed",
    EXIT_FAILED: "failed: the message says which step and why",
    EXIT_USAGE: "bad flags or configuration; nothing ran",
    EXIT_NO_NEW_DATA: "retrain: the input data is unchanged since the last successful retrain; nothing ran",
    EXIT_NOT_BLESSED: "retrain: the candidate was not blessed; nothing pushed (run exits 0)",
    EXIT_LOCKED: "another pipeline process held the pipeline root past --lock-timeout",
    EXIT_TOO_FEW_SPANS: "fewer spans in the window than ingest.window.min_spans; nothing ran",
    EXIT_SPAN_NOT_FOUND: "the span pinned by --span / --date is not in the stream; nothing ran",
    EXIT_DRIFT: "validate refused a span (drift with validate.on_drift=fail, or a data-quality check with "
    "validate.on_quality=fail): it is quarantined (`agnews-pipeline spans`); nothing trained or pushed",
    EXIT_BACKFILL: (
        "backfill refused: the pinned window (--span/--date) ends before the served model's newest "
        "span; nothing trained or pushed"
    ),
    EXIT_DEADLINE: "ended by --deadline (pipeline.deadline); completed steps are kept",
    EXIT_INTERRUPTED: "interrupted by SIGINT; completed steps are kept",
    EXIT_TERMINATED: "interrupted by SIGTERM; completed steps are kept",
}

# A failure's kind (ComponentError.kind) -> its exit code; any other failure is EXIT_FAILED.
EXIT_FOR_KIND = {
    "too_few_spans": EXIT_TOO_FEW_SPANS,
    "span_not_found": EXIT_SPAN_NOT_FOUND,
    "drift": EXIT_DRIFT,
    "data_quality": EXIT_DRIFT,
    "backfill_older_than_served": EXIT_BACKFILL,
}


def exit_codes_help() -> str:
    """The exit code table of `run --help` and `retrain --help`."""
    width = len(str(max(EXIT_MEANINGS)))
    rows = [f"  {code:>{width}}  {meaning}" for code, meaning in EXIT_MEANINGS.items()]
    return "exit codes:\n" + "\n".join(rows)
