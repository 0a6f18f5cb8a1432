"""`agnews-pipeline runs`, `show` and `diff`: the pipeline root's run history as a table, a run's model
lineage and artifacts, and what differs between two runs (each also as JSON for scripts)."""
from __future__ import annotations

import json
import time

from apps.cli.exit_codes import EXIT_OK
from apps.cli.utils import print_listing
from contract.units import format_duration
from pipeline import headlines


def _format_duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _format_value(value) -> str:
    """A table cell: '-' for nothing, four decimals for a float, true/false for a bool."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def cmd_runs(args, config) -> int:
    from pipeline.views import run_rows
    rows = run_rows(config.pipeline_root(), args.limit)
    # The headline columns follow the run's own.
    header = ("run", "command", "started", "duration", "status", "cached", *headlines.RUN_COLUMNS)
    print_listing(rows, args.json, f"no runs under {config.pipeline_root()}", header, lambda r: (
        r["id"], r["command"], time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])),
        _format_duration(r["duration"]), r["status"], f"{r['cached']}/{r['steps']}",
        *(_format_value(r[column]) for column in headlines.RUN_COLUMNS)))
    return EXIT_OK


def cmd_show(args, config) -> int:
    from pipeline.views import run_details, show_run
    if args.json:
        print(json.dumps(run_details(config.pipeline_root(), args.run_id), indent=2, default=str))
    else:
        print(show_run(config.pipeline_root(), args.run_id))
    return EXIT_OK


def cmd_diff(args, config) -> int:
    from pipeline.views import diff_runs, format_diff
    diff = diff_runs(config.pipeline_root(), args.run_a, args.run_b)
    print(json.dumps(diff, indent=2, default=str) if args.json else format_diff(diff))
    return EXIT_OK
