"""`agnews-pipeline spans` (every span of a stream with its state, rows, SHA-256, first and last run and
checks), `spans accept NAME` (train on a quarantined span) and `spans reject NAME` (keep a span out for good);
the states live in the metadata store (pipeline/span_states.py)."""
from __future__ import annotations

from pathlib import Path

from apps.cli.exit_codes import EXIT_OK
from apps.cli.utils import UsageError, check_root, print_listing


def _checks(checks: dict, drifted: bool) -> str:
    """The drift values (then the failed or reported quality values) in one cell."""
    values = [f"{name} {value:.3f}" for name, value in checks.get("drift", {}).items() if value is not None]
    values += [f"{name} {value:.3f}" for name, value in checks.get("quality", {}).items() if value]
    return ("DRIFT " if drifted else "") + (", ".join(values) or "-")


def _rewrite_history(root: Path) -> None:
    """history.html shows the span's new state (its quarantines table)."""
    from pipeline.history import write_history
    from pipeline.metadata import MetadataStore
    from pipeline.span_states import STORE_FILE
    store = MetadataStore(root / STORE_FILE)
    try:
        write_history(root, store)
    finally:
        store.close()


def cmd_spans(args, config) -> int:
    from pipeline import span_states
    if args.action:
        if not args.name:
            raise UsageError(f"spans {args.action} needs the span's NAME, e.g. agnews-pipeline spans "
                             f"{args.action} 2026-12-01 --data csv:DIR")
        check_root(config.pipeline_root())
        try:
            print(span_states.set_state(config, args.name, f"{args.action}ed"))
        except ValueError as error:
            raise UsageError(str(error)) from None
        _rewrite_history(config.pipeline_root())
        return EXIT_OK
    header = ("span", "state", "rows", "sha256", "first run", "last run", "checks", "reason")
    print_listing(
        span_states.listing(config),
        args.json,
        f"no spans in --data {config.ingest.data} or in the store of {config.pipeline_root()}",
        header,
        lambda row: (
            row["span"] + ("" if row["on_disk"] else " (gone)"),
            row["state"] + (" (drifted)" if row["drifted"] else ""),
            "-" if row["rows"] is None else str(row["rows"]),
            (row["sha256"] or "-")[:12],
            row["first_run"] or "-",
            row["last_run"] or "-",
            _checks(row["checks"], row["drifted"]),
            row["reason"] or "-",
        ),
    )
    return EXIT_OK
