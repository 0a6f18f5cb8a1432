"""What a run leaves beside its outputs, written whenever a run ends (succeeded, failed or interrupted):
run.json in the run's folder (each step's state, seconds, note and outputs; a failed step's facts, the
properties of the outputs it measured before refusing, e.g. validate's drift values on exit 8), the run's
reports made from it (report.md by pipeline/report.py, report.html by pipeline/report_html.py), and the
pipeline root's history.html (pipeline/history.py)."""
from __future__ import annotations

from pathlib import Path

from contract.files import write_json_atomic
from pipeline import dag, headlines
from pipeline.metadata import MetadataStore
from pipeline.step_execution import StepResult


def write_run_record(
    root: Path,
    store: MetadataStore,
    steps: tuple[dag.Step, ...],
    run_id: str,
    run_dir: Path,
    results: list[StepResult],
    status: str,
    error: str | None,
) -> None:
    """run.json, report.md and report.html in `run_dir`, then the pipeline root's history.html."""
    record = {
        "run_id": run_id,
        "status": status,
        "error": error,
        "steps": [
            {
                "step": r.step,
                "state": r.state,
                "seconds": round(r.seconds, 2),
                "note": r.note,
                "outputs": {n: {"uri": str(a.uri), "properties": a.properties} for n, a in r.outputs.items()},
                **({"facts": r.facts} if r.facts else {}),
            }
            for r in results
        ],
    }
    write_json_atomic(run_dir / "run.json", record)
    from pipeline import report, report_html
    report.write_run_report(run_dir, record, headlines.headline_table(steps))
    report_html.write_run_report_html(run_dir, record, steps)
    from pipeline.history import write_history
    write_history(root, store)
