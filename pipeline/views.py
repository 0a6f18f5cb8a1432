"""Read-only views of the metadata store for `agnews-pipeline runs` and `agnews-pipeline show`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from contract.names import BEST_HYPERPARAMETERS, BLESSING, EVALUATION, PUSHED_MODEL
from library.layouts import METRICS_FILE, parse_bucket_dir, read_metrics
from pipeline import dag, headlines
from pipeline.metadata import MetadataStore
from pipeline.report import drift_lines, embeddings_line, headline_facts


def _open(root: Path) -> MetadataStore:
    # works on a read-only root
    return MetadataStore(root / "metadata.sqlite", read_only=True)


def run_rows(root: Path, limit: int) -> list[dict[str, Any]]:
    store = _open(root)
    try:
        rows = []
        for run in store.runs(limit):
            executions = store.executions(run["id"])
            row = {
                "id": run["id"],
                "command": run["command"],
                "started": run["started"],
                "status": run["status"],
                "duration": (run["ended"] - run["started"]) if run["ended"] else None,
                "steps": sum(e["state"] != "skipped" for e in executions),
                "cached": sum(e["state"] == "cached" for e in executions),
                **dict.fromkeys(headlines.RUN_COLUMNS),
            # headline properties; None when absent
            }
            for execution in executions:
                for name, artifact in store.artifacts_of(execution["id"], "output").items():
                    for column, source in headlines.RUN_COLUMNS.items():
                        output, prop = source.split(".")
                        if output == name:
                            row[column] = artifact.properties.get(prop)
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
        lines = [
            f"run {run['id']} ({run['command']}): {run['status']}, started {started}, outcome "
            f"{run['outcome']}",
            f"  data fingerprint: {run['data_fingerprint']}",
            "",
            "steps:",
        ]
        product_step, product_output = headlines.PRODUCT.split(".")
        headline = headlines.headline_table()
        product = None
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
                facts = headline_facts(artifact.properties, headline.get(name, ()))
                if facts:
                    lines.append(f"         {facts}")
                lines += [f"         {line}" for line in drift_lines(artifact.properties)]
                if execution["step"] == product_step and name == product_output:
                    product = artifact
        if product is not None:
            lines += _lineage_lines(store, product, product_output, headline)
        report = root / "runs" / run["id"] / "report.md"
        if report.exists():
            lines += ["", f"report: {report}"]
        return "\n".join(lines)
    finally:
        store.close()


def _lineage_lines(store: MetadataStore, product, product_output: str, headline: dict) -> list[str]:
    """`show`'s lineage of the run's product: each execution it came from with its inputs, down to the source
    data, then what the delivering steps did with it."""
    source = dag.source_step()
    lines = ["", f"lineage of {product_output} {product.uri}:"]
    for execution, inputs in store.lineage(product.id):
        lines.append(f"  {execution['step']} (execution {execution['id']}, run {execution['run_id']}, "
                     f"code {execution['code_version']})")
        # its input is the source data itself
        if source is not None and execution["step"] == source.name:
            producing_run = store.run(execution["run_id"])
            data = json.loads(execution["config_json"]).get(source.spec.source)
            lines.append(f"      <- {source.spec.source}: {data}"
                         f"  fingerprint {producing_run['data_fingerprint']}")
        for name, artifact in inputs.items():
            lines.append(f"      <- {name}: {artifact.uri}  fingerprint {artifact.fingerprint[:12]}  "
                         f"{_short(artifact.properties)}")
            # nested headline facts do not fit on the line above
            for prop in headline.get(name, ()):
                if isinstance(artifact.properties.get(prop), (dict, list)):
                    lines.append(f"         {prop}: {json.dumps(artifact.properties[prop])}")
    embeddings = embeddings_line(product.properties)
    if embeddings:
        lines.append(f"  {embeddings}")
    for step in dag.delivering_steps():
        output, prop = step.spec.delivers.split(".")
        for execution, delivered in store.outputs_where(step.name, output, prop):
            if product.id in {a.id for a in store.artifacts_of(execution["id"], "input").values()}:
                lines.append(f"  {prop} by {step.name} in run {execution['run_id']}: "
                             f"{headline_facts(delivered.properties, headline.get(output, ()))}")
    return lines


def run_train_text_source(root: Path, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The ingest `examples` folder a run used and the settings its vocabulary was built with (for
    `embeddings`)."""
    store = _open(root)
    try:
        run = store.run(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} under {root}; `agnews-pipeline runs` lists them")
        # its first output holds the examples read from the source data
        source = dag.source_step()
        for execution in store.executions(run_id):
            examples = store.artifacts_of(execution["id"], "output").get(source.spec.outputs[0])
            if execution["step"] == source.name and examples is not None:
                if examples.deleted or not examples.uri.is_dir():
                    raise LookupError(f"the examples of run {run_id} ({examples.uri}) were deleted; "
                                      "rerun the pipeline or pick a kept run")
                vocabulary_step = dag.step_named(headlines.VOCABULARY.partition(".")[0])
                return examples.uri, json.loads(run["config_json"])[vocabulary_step.spec.config_section]
        raise LookupError(f"run {run_id} has no ingested examples (its ingest step did not complete)")
    finally:
        store.close()


def run_details(root: Path, run_id: str | None) -> dict[str, Any]:
    """Everything the store knows about one run (default: the latest), as plain JSON-ready data."""
    store = _open(root)
    try:
        run = (store.runs(1) or [None])[0] if run_id is None else store.run(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} under {root}" if run_id else f"no runs under {root}")
        steps = []
        for execution in store.executions(run["id"]):
            reused = (
                store.execution(execution["reused_execution_id"])
                if execution["reused_execution_id"]
                else None
            )
            steps.append(
                {
                    "step": execution["step"],
                    "state": execution["state"],
                    "reused_from_run": reused["run_id"] if reused else None,
                    "code_version": execution["code_version"],
                    "cache_key": execution["cache_key"],
                    "error": execution["error"],
                    "outputs": {
                        name: {
                            "uri": str(a.uri),
                            "fingerprint": a.fingerprint,
                            "properties": a.properties,
                            "deleted": a.deleted,
                        }
                        for name, a in store.artifacts_of(execution["id"], "output").items()
                    },
                }
            )
        report = root / "runs" / run["id"] / "report.md"
        return {
            "id": run["id"],
            "command": run["command"],
            "status": run["status"],
            "outcome": run["outcome"],
            "started": run["started"],
            "ended": run["ended"],
            "error": run["error"],
            "data_fingerprint": run["data_fingerprint"],
            "config": json.loads(run["config_json"]),
            "steps": steps,
            "report": str(report) if report.exists() else None,
        }
    finally:
        store.close()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _run_facts(details: dict[str, Any]) -> dict[str, Any]:
    """What `diff` compares, taken from one run's details (and its evaluation's metrics.json)."""
    outputs = {name: output for step in details["steps"] for name, output in step["outputs"].items()}
    metrics: dict[str, Any] = {}
    evaluation = outputs.get(EVALUATION)
    if evaluation and (Path(evaluation["uri"]) / METRICS_FILE).is_file():
        metrics = read_metrics(evaluation["uri"])
    pushed = outputs.get(PUSHED_MODEL, {}).get("properties", {})
    return {
        "config": _flatten(details["config"]),
        "hyperparameters": outputs.get(BEST_HYPERPARAMETERS, {}).get("properties", {}).get("values") or {},
        "data_fingerprint": details["data_fingerprint"],
        "code_versions": {s["step"]: s["code_version"] for s in details["steps"] if s["code_version"]},
        "metrics": {name: metrics.get(name) for name in ("accuracy", "loss", "macro_f1") if name in metrics},
        "length_buckets": {
            bucket: {name: values.get(name) for name in ("examples", "accuracy", "loss", "macro_f1")}
            for bucket, values in metrics.get("length_buckets", {}).items()
        },
        "blessed": outputs.get(BLESSING, {}).get("properties", {}).get("blessed"),
        "pushed_version": pushed.get("version") if pushed.get("pushed") else None,
    }


def _differences(facts_a: dict[str, Any], facts_b: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "a": facts_a.get(key), "b": facts_b.get(key)}
            for key in sorted(set(facts_a) | set(facts_b)) if facts_a.get(key) != facts_b.get(key)]


def diff_runs(root: Path, run_a: str, run_b: str) -> dict[str, Any]:
    """What differs between two runs: config, hyperparameters, data, code; metrics and outcome side by
    side."""
    facts_a, facts_b = _run_facts(run_details(root, run_a)), _run_facts(run_details(root, run_b))
    return {
        "runs": [run_a, run_b],
        "config": _differences(facts_a["config"], facts_b["config"]),
        "hyperparameters": _differences(facts_a["hyperparameters"], facts_b["hyperparameters"]),
        "data_fingerprint": {
            "a": facts_a["data_fingerprint"],
            "b": facts_b["data_fingerprint"],
            "same": facts_a["data_fingerprint"] == facts_b["data_fingerprint"],
        },
        "code_versions": _differences(facts_a["code_versions"], facts_b["code_versions"]),
        "metrics": {
            name: {"a": facts_a["metrics"].get(name), "b": facts_b["metrics"].get(name)}
            for name in sorted(set(facts_a["metrics"]) | set(facts_b["metrics"]))
        },
        "length_buckets": {
            bucket: {"a": facts_a["length_buckets"].get(bucket), "b": facts_b["length_buckets"].get(bucket)}
            for bucket in sorted(
                set(facts_a["length_buckets"]) | set(facts_b["length_buckets"]),
                key=lambda name: parse_bucket_dir(name) or 0,
            )
        },
        "blessed": {"a": facts_a["blessed"], "b": facts_b["blessed"]},
        "pushed_version": {"a": facts_a["pushed_version"], "b": facts_b["pushed_version"]},
    }


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def format_diff(diff: dict[str, Any]) -> str:
    """`diff` for a terminal: only what differs, except metrics and outcome, which are always shown."""
    run_a, run_b = diff["runs"]
    lines = [f"diff {run_a} (a) -> {run_b} (b)"]
    for section, title in (("config", "configuration"), ("hyperparameters", "hyperparameters"),
                           ("code_versions", "code versions")):
        changes = diff[section]
        lines.append(f"{title}: " + (f"{len(changes)} differ" if changes else "same"))
        lines += [f"  {c['key']}: {_value(c['a'])} -> {_value(c['b'])}" for c in changes]
    data = diff["data_fingerprint"]
    lines.append("data fingerprint: " + (f"same ({_value(data['a'])[:12]})" if data["same"]
                                         else f"{_value(data['a'])[:12]} -> {_value(data['b'])[:12]}"))
    lines.append(f"{'metrics':<22}{'a':>10}{'b':>10}{'b - a':>10}")

    def row(label: str, value_a: Any, value_b: Any) -> str:
        numbers = isinstance(value_a, (int, float)) and isinstance(value_b, (int, float))
        change = f"{value_b - value_a:+.4f}" if numbers else "-"
        return f"  {label:<20}{_value(value_a):>10}{_value(value_b):>10}{change:>10}"

    lines += [row(name, values["a"], values["b"]) for name, values in diff["metrics"].items()]
    if diff["length_buckets"]:
        lines.append("accuracy per length bucket (examples a/b):")
        for bucket, values in diff["length_buckets"].items():
            bucket_a, bucket_b = values["a"] or {}, values["b"] or {}
            label = f"{bucket} ({_value(bucket_a.get('examples'))}/{_value(bucket_b.get('examples'))})"
            lines.append(row(label, bucket_a.get("accuracy"), bucket_b.get("accuracy")))
    lines.append(f"blessed: {_value(diff['blessed']['a'])} -> {_value(diff['blessed']['b'])}")
    lines.append(
        f"pushed version: {_value(diff['pushed_version']['a'])} -> {_value(diff['pushed_version']['b'])}"
    )
    return "\n".join(lines)
