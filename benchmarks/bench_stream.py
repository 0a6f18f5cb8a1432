"""A simulated stream of spans run as a schedule would: AG News cut into 8 weekly spans (make_spans.py); the
stream folder gains one span at a time and `agnews-pipeline retrain` runs once per new span, reusing the spans
ingested before. For each retrain: its wall time, the ingest step's time with span reuse and, on a fresh
pipeline root (no earlier examples to reuse), without it; accuracy of the candidate and the baseline on the
fixed test set and on the newest span's held-out rows. Then the drift measures (library/drift.py) of every
span of an unshifted stream against the spans before it, and of a label-shifted and a text-shifted last span,
which is what the default thresholds were chosen from.

    python benchmarks/bench_stream.py --data /work/shared/data/ag_news --work /tmp/bench_stream
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "benchmarks"))

from harness import command_line, machine, table_head, write_results  # noqa: E402

from contract.data_config import DriftConfig  # noqa: E402
from library import drift  # noqa: E402
from library.ag_news_csv import BadRow, parse_csv_row  # noqa: E402
from library.layouts import read_metrics  # noqa: E402

CONFIG = """
tuner: {enabled: false}
trainer: {epochs: 3}
evaluator: {min_accuracy: 0.5}
ingest: {window: {num_spans: 6}}
"""


def cli(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "apps.cli", *args], cwd=PROJECT, capture_output=True,
                               text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
    return completed.returncode, completed.stdout + completed.stderr, time.monotonic() - started


def step_seconds(root: Path, step: str) -> tuple[str, float]:
    run = sorted(p for p in (root / "runs").iterdir() if (p / "run.json").is_file())[-1]
    record = json.loads((run / "run.json").read_text())
    found = next(s for s in record["steps"] if s["step"] == step)
    return found["state"], found["seconds"]


def newest_evaluation(root: Path) -> dict:
    run = sorted(p for p in (root / "runs").iterdir() if (p / "run.json").is_file())[-1]
    return read_metrics(run / "evaluator" / "evaluation")


def make_stream(data: Path, out: Path, *extra: str) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(PROJECT / "benchmarks" / "make_spans.py"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--spans",
            "8",
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return out


def profile(path: Path) -> drift.SpanProfile:
    result = drift.SpanProfile()
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        try:
            row = parse_csv_row("train", raw, first_line=number == 1)
        except BadRow:
            continue
        result.add(row.label, f"{row.title} {row.description}")
    return result


def drift_of_last(stream: Path, length_min_rows: int) -> list[dict]:
    """Each span (from the second) against the spans before it."""
    spans = sorted(p for p in stream.iterdir() if p.is_dir())
    profiles = [profile(span / "train.csv") for span in spans]
    return [{"span": spans[i].name, **drift.measure(profiles[i], profiles[:i], length_min_rows)}
            for i in range(1, len(spans))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/work/shared/data/ag_news")
    parser.add_argument("--work", default="/tmp/bench_stream")
    parser.add_argument("--out", default=str(PROJECT / "benchmarks" / "results" / "stream.json"))
    parser.add_argument("--skip-retrains", action="store_true", help="only the drift measures")
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = {"command": command_line(), "machine": machine(), "data": str(data), "config": CONFIG.strip(),
              "retrains": [], "drift": {}}
    full = make_stream(data, work / "full")
    spans = sorted(p.name for p in full.iterdir() if p.is_dir())
    if not args.skip_retrains:
        (work / "config.yaml").write_text(CONFIG)
        live = work / "live"
        live.mkdir()
        shutil.copyfile(full / "test.csv", live / "test.csv")
        for index, name in enumerate(spans):
            shutil.copytree(full / name, live / name)
            load = os.getloadavg()[0]
            code, output, seconds = cli(
                "retrain",
                "--config",
                str(work / "config.yaml"),
                "--data",
                f"csv:{live}",
                "--pipeline-root",
                str(work / "root"),
            )
            _, ingest_reuse = step_seconds(work / "root", "ingest")
            fresh = work / f"fresh-{index}"
            _, _, _ = cli(
                "run",
                "--config",
                str(work / "config.yaml"),
                "--data",
                f"csv:{live}",
                "--pipeline-root",
                str(fresh),
                "--until",
                "ingest",
            )
            _, ingest_fresh = step_seconds(fresh, "ingest")
            shutil.rmtree(fresh)
            evaluation = newest_evaluation(work / "root")
            newest = evaluation.get("newest_span") or {}
            row = {"span": name, "exit_code": code, "retrain_seconds": round(seconds, 1),
                   "ingest_seconds_with_reuse": ingest_reuse, "ingest_seconds_without_reuse": ingest_fresh,
                   "load_average_at_start": round(load, 1),
                   "test_accuracy": evaluation["accuracy"],
                   "test_baseline_accuracy": (evaluation.get("baseline") or {}).get("accuracy"),
                   "newest_span_rows": newest.get("examples"), "newest_span_accuracy": newest.get("accuracy"),
                   "newest_span_baseline_accuracy": newest.get("baseline_accuracy")}
            report["retrains"].append(row)
            print(json.dumps(row), flush=True)
    length_min_rows = DriftConfig().length_min_rows
    report["drift"]["unshifted"] = drift_of_last(full, length_min_rows)
    for shift in ("label", "text"):
        shifted = make_stream(data, work / f"shift-{shift}", "--shift-span", "8", "--shift", shift)
        report["drift"][shift] = drift_of_last(shifted, length_min_rows)[-1:]
    report["thresholds"] = DriftConfig().thresholds()
    write_results(Path(args.out), report, markdown(report))
    print(markdown(report))
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    lines = ["# A simulated stream of 8 weekly AG News spans", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}", "", f"Data: {report['data']}; configuration:", "", "```yaml",
             report["config"], "```", ""]
    if report["retrains"]:
        lines += ["| new span | exit | retrain s | ingest s (reuse) | ingest s (no reuse) | load | test acc "
                  "(candidate / baseline) | newest span acc (candidate / baseline, rows) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["retrains"]:
            lines.append(
                f"| {r['span']} | {r['exit_code']} | {r['retrain_seconds']} | "
                f"{r['ingest_seconds_with_reuse']} | {r['ingest_seconds_without_reuse']} | "
                f"{r['load_average_at_start']} | {_f(r['test_accuracy'])} / "
                f"{_f(r['test_baseline_accuracy'])} "
                f"| {_f(r['newest_span_accuracy'])} / {_f(r['newest_span_baseline_accuracy'])}, "
                f"{r['newest_span_rows']} |"
            )
        lines.append("")
    lines += ["## Drift of a span against the spans before it", "",
              *table_head("stream", "span", *drift.MEASURES)]
    for stream, rows in report["drift"].items():
        for row in rows:
            lines.append(
                f"| {stream} | {row['span']} | " + " | ".join(_f(row[m]) for m in drift.MEASURES) + " |"
            )
    lines += ["", "Default thresholds: " + ", ".join(f"{k} {v}" for k, v in report["thresholds"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
