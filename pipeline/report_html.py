"""report.html in every run's folder: one self-contained page (figures embedded as base64 PNG, no external
files, no scripts) with the steps, the headline facts, the evaluation per length bucket, the confusion matrix,
the tuner's trials and the lineage (which output of which step each step read)."""
from __future__ import annotations

import base64
import csv
import html
import os
from pathlib import Path
from typing import Any, Sequence

from contract.files import write_text_atomic
from library.folder_layouts import RUN_REPORT_HTML
from library.layouts import EVALUATION_FIGURES, METRICS_FILE, TRIALS_CSV_FILE, parse_bucket_dir, read_metrics
from pipeline.dag import Resolver
from pipeline.headlines import headline_table
from pipeline.report import format_value

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}"""


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else format_value(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 99) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(v)}</td>' if i >= numeric_from else f"<td>{_e(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(path.name)}" src="data:image/png;base64,{data}"><figcaption>{_e(path.name)}'
        "</figcaption></figure>"
    )


def _evaluation_sections(evaluation_dir: Path) -> list[str]:
    parts: list[str] = []
    if (evaluation_dir / METRICS_FILE).is_file():
        metrics = read_metrics(evaluation_dir)
        rows = [("overall", metrics.get("examples"), metrics.get("accuracy"), metrics.get("loss"),
                 metrics.get("macro_f1"))]
        buckets = metrics.get("length_buckets", {})
        for name in sorted(buckets, key=lambda bucket: parse_bucket_dir(bucket) or 0):
            bucket = buckets[name]
            rows.append((name, bucket.get("examples"), bucket.get("accuracy"), bucket.get("loss"),
                         bucket.get("macro_f1")))
        parts += ["<h2>Evaluation (test split) per length bucket</h2>",
                  _table(("slice", "examples", "accuracy", "loss", "macro F1"), rows, numeric_from=1)]
        classes = metrics.get("class_names") or []
        matrix = (metrics.get("overall") or {}).get("confusion_matrix")
        if matrix and classes:
            parts += ["<h2>Confusion matrix (rows: true class, columns: predicted)</h2>",
                      _table(("true \\ predicted", *classes),
                             [(name, *row) for name, row in zip(classes, matrix)], numeric_from=1)]
    for image in EVALUATION_FIGURES:
        if (evaluation_dir / image).is_file():
            parts.append(_image(evaluation_dir / image))
    return parts


def _trials_section(hyperparameters_dir: Path) -> list[str]:
    trials = hyperparameters_dir / TRIALS_CSV_FILE
    if not trials.is_file():
        return []
    with open(trials, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        return ["<h2>Tuner trials</h2>", "<p>No trials (the search was off: default hyperparameters).</p>"]
    return ["<h2>Tuner trials</h2>", _table(rows[0], rows[1:])]


def write_run_report_html(run_dir: Path, record: dict[str, Any], steps: Sequence[Any] = ()) -> Path:
    """Writes run_dir/report.html from the run record (run.json); `steps` are the DAG's steps, for lineage."""
    outputs = {name: output for step in record["steps"] for name, output in step["outputs"].items()}
    parts = [f"<h1>Run {_e(record['run_id'])}: {_e(record['status'])}</h1>"]
    if record.get("error"):
        parts.append(f"<pre>{_e(record['error'].strip()[:4000])}</pre>")
    parts += ["<h2>Steps</h2>", _table(
        ("step", "state", "seconds", "outputs"),
        [(s["step"], s["state"] + (f" ({s['note']})" if s.get("note") else ""), f"{s['seconds']:.1f}",
          ", ".join(f"{name}: {os.path.relpath(o['uri'], run_dir)}" for name, o in s["outputs"].items()))
         for s in record["steps"]])]
    headline = headline_table(steps)
    facts = [(name, key, output["properties"][key]) for name, output in outputs.items()
             for key in headline.get(name, ()) if key in output["properties"]]
    if facts:
        parts += ["<h2>Headline facts</h2>", _table(("artifact", "property", "value"), facts)]
    if "evaluation" in outputs:
        parts += _evaluation_sections(Path(outputs["evaluation"]["uri"]))
    if "best_hyperparameters" in outputs:
        values = outputs["best_hyperparameters"]["properties"].get("values") or {}
        if values:
            parts += [
                "<h2>Hyperparameters of the model</h2>",
                _table(("name", "value"), sorted(values.items())),
            ]
        parts += _trials_section(Path(outputs["best_hyperparameters"]["uri"]))
    lineage = []
    for step in steps:
        for input_name, source in step.inputs.items():
            # the newest suitable artifact from the metadata store
            if isinstance(source, Resolver):
                lineage.append(
                    (step.name, input_name, f"store: {source.name}", "(looked up in the metadata store)")
                )
                continue
            producer, _, output_name = source.partition(".")
            produced = outputs.get(output_name)
            lineage.append(
                (
                    step.name,
                    input_name,
                    source if produced is None else f"{producer}.{output_name}",
                    produced["uri"] if produced else "(looked up in the metadata store)",
                )
            )
    if lineage:
        parts += ["<h2>Lineage</h2>", _table(("step", "input", "from", "location"), lineage)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Run {_e(record['run_id'])}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = run_dir / RUN_REPORT_HTML
    write_text_atomic(path, page)
    return path
