"""history.html in the pipeline root: how the model and its data moved over the runs of the root (the
schedule's retrains above all): accuracy on the fixed test set and on the newest span, the drift measures of
each newest span, and the pushed version, as one self-contained page (figures embedded, no scripts),
rewritten after every run. Every run that ended is shown, failed, refused (drift, exit 8), interrupted and
timed-out ones with their reason (the run's error) and the facts their refusing step measured (run.json), and
the quarantines: every span validate refused (the store's spans table), with its state now (quarantined,
accepted, rejected), the reason and the values that refused it."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from contract.files import write_text_atomic
from pipeline.metadata import MetadataStore

# a file of the pipeline root, not of an artifact
HISTORY_FILE = "history.html"
# The facts plotted: name -> "output.property" of the outputs involved.
SERIES = {"test accuracy": "evaluation.accuracy", "newest span accuracy": "evaluation.newest_span_accuracy",
          "baseline test accuracy": "evaluation.baseline_accuracy", "pushed version": "pushed_model.version",
          "drift": "statistics.drift", "window": "examples.window_summary"}


def history_rows(store: MetadataStore, root: Path | None = None) -> list[dict[str, Any]]:
    """One row per run that ended, oldest first: run id, status (with the outcome of a succeeded run), reason
    (the first line of a failed or stopped run's error) and each SERIES value (None when absent). A run that
    did not succeed gets the facts its refusing step measured from its run.json under `root` (validate's drift
    on exit 8)."""
    rows = []
    for run in reversed(store.runs()):
        if run["status"] == "running":
            continue
        outcome = f" ({run['outcome']})" if run["outcome"] else ""
        reason = (run["error"] or "").strip().split("\n")[0] or None
        row: dict[str, Any] = {"run": run["id"], "status": run["status"] + outcome, "reason": reason,
                               **dict.fromkeys(SERIES)}
        outputs = [(name, artifact.properties) for execution in store.executions(run["id"])
                   for name, artifact in store.artifacts_of(execution["id"], "output").items()]
        if run["status"] != "succeeded" and root is not None:
            outputs += _refusal_facts(root / "runs" / run["id"] / "run.json")
        for name, properties in outputs:
            for column, source in SERIES.items():
                output, prop = source.split(".")
                if output == name and properties.get(prop) is not None:
                    row[column] = properties[prop]
        rows.append(row)
    return rows


def quarantine_rows(store: MetadataStore) -> list[dict[str, Any]]:
    """One row per span that was refused (quarantined, then perhaps accepted) or rejected, by name: span,
    state, reason, sha256 (first 12 hex digits), checks (the refusing values: drift, then failed quality
    checks) and updated (UTC, when its state last changed)."""
    import time
    rows = []
    for name, span in store.spans().items():
        if span["state"] not in ("quarantined", "rejected") and not span["reason"]:
            continue
        checks = json.loads(span["checks_json"]) if span["checks_json"] else {}
        values = {**{k: v for k, v in checks.get("drift", {}).items() if v is not None},
                  **{k: v for k, v in checks.get("quality", {}).items() if v}}
        rows.append({"span": name, "state": span["state"], "reason": span["reason"],
                     "sha256": (span["sha256"] or "")[:12] or None, "checks": values or None,
                     "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(span["updated"]))})
    return rows


def _table(header: list[str], rows: list[dict[str, Any]]) -> str:
    import html

    from pipeline.report import format_value

    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(format_value(row[name]) if row[name] is not None else '-')}</td>"
            for name in header
        )
        + "</tr>"
        for row in rows
    )
    return ("<table border='1' cellpadding='4'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + f"</tr>{cells}</table>")


def _refusal_facts(record_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(output, properties) of the facts a failed step of this run record measured (pipeline/records.py)."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    # no record (the disk was full, a killed run): the store's facts only
    except (OSError, ValueError):
        return []
    return [(name, properties) for step in record.get("steps", []) for name, properties in
            step.get("facts", {}).items()]


def _figure(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, len(rows) + 1))
    figure, (accuracy, drift, version) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for name in ("test accuracy", "newest span accuracy", "baseline test accuracy"):
        points = [(i, row[name]) for i, row in zip(x, rows) if row[name] is not None]
        if points:
            accuracy.plot(*zip(*points), marker="o", label=name)
    measures = sorted({m for row in rows for m in (row["drift"] or {})})
    for measure in measures:
        points = [(i, row["drift"][measure]) for i, row in zip(x, rows)
                  if row["drift"] and row["drift"].get(measure) is not None]
        if points:
            drift.plot(*zip(*points), marker="o", label=measure)
    points = [(i, row["pushed version"]) for i, row in zip(x, rows) if row["pushed version"] is not None]
    if points:
        version.step(*zip(*points), where="post", marker="o", label="pushed version")
    # runs that did not succeed: a red band on every panel
    for i, row in zip(x, rows):
        if not row["status"].startswith("succeeded"):
            for axes in (accuracy, drift, version):
                axes.axvspan(i - 0.4, i + 0.4, color="red", alpha=0.15, linewidth=0)
    for axes, title in (
        (accuracy, "accuracy"),
        (drift, "drift of the newest span"),
        (version, "pushed version"),
    ):
        axes.set_title(title)
        if axes.lines:
            axes.legend(fontsize="small")
    from matplotlib.ticker import MaxNLocator
    version.xaxis.set_major_locator(MaxNLocator(integer=True))
    version.set_xlabel("run (oldest first)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_history(root: Path, store: MetadataStore) -> Path | None:
    """Writes <root>/history.html (through a temporary file renamed into place); None before any run ended."""
    import html
    rows = history_rows(store, root)
    if not rows:
        return None
    header = ["run", "status", *[name for name in SERIES if name != "drift"], "drift", "reason"]
    quarantines = quarantine_rows(store)
    page = (
        f"<!doctype html><meta charset='utf-8'><title>agnews-pipeline history</title>"
        f"<h1>History of {html.escape(str(root))}</h1>"
        f"<img alt='history' src='data:image/png;base64,{_figure(rows)}'>"
        "<p>Runs that did not succeed (failed, refused, interrupted, timed out) are red on the figure.</p>"
        + _table(header, rows)
        + "<h2>Quarantines</h2>"
        + (
            "<p>Spans validate refused (drift or data quality) or someone rejected, with their state now: "
            "`agnews-pipeline spans accept NAME` trains on a quarantined span.</p>"
            + _table(["span", "state", "reason", "sha256", "checks", "updated"], quarantines)
            if quarantines
            else "<p>No span was refused.</p>"
        )
    )
    path = root / HISTORY_FILE
    write_text_atomic(path, page)
    return path
