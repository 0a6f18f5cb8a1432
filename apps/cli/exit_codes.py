"""The exit codes of `agnews-pipeline`, and the failure kinds that have one of their own (EXIT_FOR_KIND); any
other failure exits with EXIT_FAILED."""
from __future__ import annotations

from pipeline import interrupts

# Exit codes of `retrain` (and `run`), documented in the README for schedulers.
EXIT_OK = 0  # retrain: a new model was pushed (run: the run succeeded)
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad flags or configuration; nothing ran
EXIT_NO_NEW_DATA = 3  # retrain: the input data's fingerprint equals the last successful retrain's; nothing ran
EXIT_NOT_BLESSED = 4  # retrain: the pipeline ran, the candidate was not blessed, nothing pushed
EXIT_LOCKED = 5  # another pipeline process held the pipeline root past --lock-timeout
EXIT_TOO_FEW_SPANS = 6  # a stream of spans has fewer than ingest.window.min_spans in the window; nothing ran
EXIT_SPAN_NOT_FOUND = 7  # the span pinned by --span / --date is not in the stream; nothing ran
# validate refused a span: drift above a threshold with validate.on_drift=fail, or a failed data-quality check
# (validate.on_quality=fail); the span is quarantined (`agnews-pipeline spans`), nothing trained or pushed
EXIT_DRIFT = 8
# A failure's kind (ComponentError.kind) -> its exit code; any other failure is EXIT_FAILED.
EXIT_FOR_KIND = {"too_few_spans": EXIT_TOO_FEW_SPANS, "span_not_found": EXIT_SPAN_NOT_FOUND, "drift": EXIT_DRIFT,
                 "data_quality": EXIT_DRIFT}
EXIT_DEADLINE = interrupts.EXIT_DEADLINE  # 124: the run passed --deadline (pipeline.deadline) and was ended cleanly
