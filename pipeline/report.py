"""The Markdown report written into every run's folder: what each step did, where its outputs live, their
headline properties and the figures they hold."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from contract.files import write_text_atomic


def embeddings_line(properties: dict[str, Any]) -> str | None:
    """One line on the pretrained vectors a model started from (from its properties), or None."""
    if not properties.get("embeddings_file"):
        return None
    line = (f"pretrained embeddings {properties['embeddings_file']} ({properties.get('embeddings_format')}, "
            f"{properties.get('embeddings_dim')} dimensions, fingerprint "
            f"{str(properties.get('embeddings_fingerprint'))[:12]}): covers "
            f"{properties.get('embeddings_vocab_coverage', 0):.1%} of vocabulary ids")
    if "embeddings_token_coverage" in properties:
        line += f", {properties['embeddings_token_coverage']:.1%} of train tokens"
    if "embeddings_frozen_epochs" in properties:
        line += f"; frozen for {properties['embeddings_frozen_epochs']} epoch(s)"
    if properties.get("embeddings_low_coverage"):
        line += " -- WARNING: LOW COVERAGE, most words started from random vectors"
    return line


def drift_lines(properties: dict[str, Any]) -> list[str]:
    """A table of the drift checks an artifact records (validate's statistics of a stream), or []."""
    checks = properties.get("drift_checks")
    if not checks:
        return []
    against = properties.get("drift_reference") or "the rest of the window"
    lines = [f"drift of span {properties.get('drift_span')} against {against}:",
             "| measure | value | threshold | drift |", "| --- | --- | --- | --- |"]
    for row in checks:
        value = "n/a (too few rows, or no served model)" if row["value"] is None else f"{row['value']:.4f}"
        lines.append(
            f"| {row['measure']} | {value} | {row['threshold']} | {'DRIFT' if row['drift'] else 'ok'} |"
        )
    return lines


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def headline_facts(properties: dict[str, Any], names: tuple[str, ...]) -> str:
    """'name=value, ...' for the headline properties (pipeline/headlines.py) an artifact has."""
    return ", ".join(f"{k}={format_value(properties[k])}" for k in names if properties.get(k) is not None)


def write_run_report(run_dir: Path, record: dict[str, Any], headline: dict[str, tuple[str, ...]]) -> Path:
    """`headline`: output name -> its headline properties (pipeline/headlines.py)."""
    lines = [f"# Run {record['run_id']}: {record['status']}", ""]
    if record.get("error"):
        lines += ["```", record["error"].strip()[:4000], "```", ""]
    lines += ["| step | state | seconds | outputs |", "| --- | --- | --- | --- |"]
    for step in record["steps"]:
        state = step["state"] + (f" ({step['note']})" if step.get("note") else "")
        outputs = "<br>".join(
            f"`{name}`: {os.path.relpath(o['uri'], run_dir)}" for name, o in step["outputs"].items()
        )
        lines.append(f"| {step['step']} | {state.replace('|', '/')[:200]} | {step['seconds']} | {outputs} |")
    lines.append("")
    for step in record["steps"]:
        for name, output in step["outputs"].items():
            facts = headline_facts(output["properties"], headline.get(name, ()))
            if facts:
                lines.append(f"- **{name}**: {facts}")
            drift = drift_lines(output["properties"])
            if drift:
                lines += ["", *drift, ""]
            # any artifact that records pretrained vectors
            embeddings = embeddings_line(output["properties"])
            if embeddings:
                warning = output["properties"].get("embeddings_low_coverage")
                lines.append(f"- **{'WARNING: ' if warning else ''}embeddings**: {embeddings}")
            folder = Path(output["uri"])
            # the figures an output holds
            for image in sorted(folder.glob("*.png")) if folder.is_dir() else ():
                lines.append(f"\n![{image.name}]({os.path.relpath(image, run_dir)})")
    # what a refusing step measured (its facts: the drift of a span refused on exit 8)
    for step in record["steps"]:
        for name, properties in step.get("facts", {}).items():
            drift = drift_lines(properties)
            if drift:
                lines += ["", f"{step['step']} refused; its `{name}` measured:", "", *drift, ""]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
