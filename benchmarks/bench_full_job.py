"""The whole default job on one data folder: `agnews-pipeline run` with every default (plus any --flag), wall
time per step from the run's run.json, the peak resident memory of the command and all its processes, and the
tuner's and trainer's share of the run.

    python benchmarks/generate_data.py --source ../shared/data/ag_news --rows 1200000 --out /tmp/ag_news_1200k
    python benchmarks/bench_full_job.py --data /tmp/ag_news_1200k --root /tmp/job_1200k \
        --out benchmarks/results/full_job_1200k.json --flag=--deadline=40m

A run that exceeds --deadline ends like a scheduler's SIGTERM (exit 124): the steps it finished and the
trainer's epochs so far (from its log) are still reported.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_ingest_transform import PeakTreeRss

PROJECT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="csv folder (train.csv, test.csv)")
    parser.add_argument("--root", type=Path, required=True, help="a new pipeline root")
    parser.add_argument(
        "--flag", action="append", default=[], help="e.g. --flag=--beam-runner=dask (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    flags = [f for flag in args.flag for f in flag.split("=", 1)]
    command = [sys.executable, "-m", "apps.cli", "run", "--data", f"csv:{args.data}", "--pipeline-root",
               str(args.root), *flags]
    log = args.out.with_suffix(".log")
    load, started = os.getloadavg()[0], time.monotonic()
    with PeakTreeRss() as rss, open(log, "w") as out:
        code = subprocess.run(command, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}).returncode
    wall = time.monotonic() - started
    text = log.read_text(errors="replace")
    run_dir = max((args.root / "runs").iterdir(), key=lambda p: p.name)
    record = json.loads((run_dir / "run.json").read_text())
    steps = {s["step"]: {"state": s["state"], "seconds": s["seconds"]} for s in record["steps"]}
    report = {"command": harness.command_line(), "machine": harness.machine(), "data": str(args.data),
              "exit_code": code, "wall_seconds": round(wall, 1), "load_at_start": round(load, 1),
              "load_at_end": round(os.getloadavg()[0], 1), "peak_tree_rss_mb": round(rss.peak / 2**20),
              "steps": steps, "epoch_lines": re.findall(r"trainer: epoch \d+/\d+ in [^;]+", text),
              "trial_lines": len(re.findall(r"tuner: trial \d+", text))}
    lines = [
        f"# The whole default job: {args.data}",
        "",
        *harness.provenance(report),
        f"Exit code {code}; wall {wall:.0f} s (the command, start-up "
        f"included); load average at start / end {report['load_at_start']} / {report['load_at_end']}; "
        "peak RSS "
        f"of the command and all its processes {report['peak_tree_rss_mb']:,} MB.",
        "",
        *harness.table_head("step", "state", "seconds", "share of the wall"),
    ]
    for name, step in steps.items():
        lines.append(f"| {name} | {step['state']} | {step['seconds'] or 0:.0f} | "
                     f"{100 * (step['seconds'] or 0) / wall:.0f}% |")
    lines += ["", "Trainer epochs:", "", *(f"- {line}" for line in report["epoch_lines"])]
    harness.write_results(args.out, report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
