"""Read-only views of the metadata store for `agnews-pipeline runs` and `agnews-pipeline show`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.metadata import MetadataStore
from pipeline.report import embeddings_line


def _open(root: Path) -> MetadataStore:
    return MetadataStore(root / "metadata.sqlite", read_only=True)  # works on a read-only root


def run_rows(root: Path, limit: int) -> list[dict[str, Any]]:
    store = _open(root)
    try:
        rows = []
        for run in store.runs(limit):
            executions = store.executions(run["id"])
            row = {"id": run["id"], "command": run["command"], "started": run["started"], "status": run["status"],
                   "duration": (run["ended"] - run["started"]) if run["ended"] else None,
                   "steps": sum(e["state"] != "skipped" for e in executions),
                   "cached": sum(e["state"] == "cached" for e in executions),
                   "accuracy": None, "blessed": None, "pushed_version": None}
            for execution in executions:
                outputs = store.artifacts_of(execution["id"], "output")
                if "evaluation" in outputs:
                    row["accuracy"] = outputs["evaluation"].properties.get("accuracy")
                if "blessing" in outputs:
                    row["blessed"] = outputs["blessing"].properties.get("blessed")
                if "pushed_model" in outputs and outputs["pushed_model"].properties.get("pushed"):
                    row["pushed_version"] = outputs["pushed_model"].properties.get("version")
            rows.append(row)
        return rows
    finally:
        store.close()


def _short(properties: dict[str, Any], limit: int = 160) -> str:
    text = json.dumps({k: v for k, v in properties.items() if not isinstance(v, (dict, list))}, default=str)
    return text if len(text) <= limit else text[:limit] + "...}"


def show_run(root: Path, run_id: str | None) -> str:
    store = _open(root)
    try:
        runs = store.runs(1) if run_id is None else [store.run(run_id)]
        if not runs or runs[0] is None:
            raise LookupError(f"no run {run_id!r} under {root}")
        run = runs[0]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))
        lines = [f"run {run['id']} ({run['command']}): {run['status']}, started {started}, outcome {run['outcome']}",
                 f"  data fingerprint: {run['data_fingerprint']}", "", "steps:"]
        model_artifact = None
        for execution in store.executions(run["id"]):
            state = execution["state"]
            if execution["reused_execution_id"]:
                origin = store.execution(execution["reused_execution_id"])
                state += f" (from run {origin['run_id']})"
            lines.append(f"  {execution['step']:<10} {state}" + (f": {execution['error'].splitlines()[0]}"
                                                                  if execution["error"] else ""))
            for name, artifact in store.artifacts_of(execution["id"], "output").items():
                gone = " [deleted by gc]" if artifact.deleted else ""
                lines.append(f"      -> {name}: {artifact.uri}{gone}")
                if name == "model":
                    model_artifact = artifact
        if model_artifact is not None:
            lines += ["", f"lineage of model {model_artifact.uri}:"]
            for execution, inputs in store.lineage(model_artifact.id):
                lines.append(f"  {execution['step']} (execution {execution['id']}, run {execution['run_id']}, "
                             f"code {execution['code_version']})")
                if execution["step"] == "ingest":  # its input is the source data itself
                    producing_run = store.run(execution["run_id"])
                    lines.append(f"      <- data: {json.loads(execution['config_json']).get('data')}  "
                                 f"fingerprint {producing_run['data_fingerprint']}")
                for name, artifact in inputs.items():
                    lines.append(f"      <- {name}: {artifact.uri}  fingerprint {artifact.fingerprint[:12]}  "
                                 f"{_short(artifact.properties)}")
                    if name == "best_hyperparameters":
                        lines.append(f"         hyperparameters: {json.dumps(artifact.properties.get('values'))}")
            embeddings = embeddings_line(model_artifact.properties)
            if embeddings:
                lines.append(f"  {embeddings}")
            for execution, pushed, model in store.pushed_models():
                if model is not None and model.id == model_artifact.id:
                    lines.append(f"  pushed as version {pushed.properties.get('version')}: "
                                 f"{pushed.properties.get('path')}")
        report = root / "runs" / run["id"] / "report.md"
        if report.exists():
            lines += ["", f"report: {report}"]
        return "\n".join(lines)
    finally:
        store.close()


def run_train_text_source(root: Path, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The ingest `examples` folder a run used and the run's transform settings (for `embeddings`)."""
    store = _open(root)
    try:
        run = store.run(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} under {root}; `agnews-pipeline runs` lists them")
        for execution in store.executions(run_id):
            examples = store.artifacts_of(execution["id"], "output").get("examples")
            if execution["step"] == "ingest" and examples is not None:
                if examples.deleted or not examples.uri.is_dir():
                    raise LookupError(f"the examples of run {run_id} ({examples.uri}) were deleted; "
                                      "rerun the pipeline or pick a kept run")
                return examples.uri, json.loads(run["config_json"])["transform"]
        raise LookupError(f"run {run_id} has no ingested examples (its ingest step did not complete)")
    finally:
        store.close()
