"""`agnews-pipeline predict`, old code against new: wall time of the command on a few texts and on the test
rows, and whether the two write the same answers.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_predict.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version> --baseline-repo /path/to/checkout/of/the/old/code

Each run is a fresh `python -m apps.cli predict` process of one checkout (so it pays TensorFlow's import and
the model's load, as a user's command does), on --input test.csv (every test row) and on its first 5 rows;
the checkouts alternate old, new, new, old, --repeats times. The answers of the two checkouts are compared
(largest probability difference, classes that differ). Writes benchmarks/results/predict_signatures.json
and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "predict_signatures.json"


def run_predict(repo: Path, model_dir: Path, source: Path, output: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": "-1"}
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "apps.cli", "predict", "--model-dir", str(model_dir), "--input",
                    str(source), "--output", str(output)], cwd=repo, env=env, check=True, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - began


def answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--baseline-repo", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    repos = {"old": args.baseline_repo.resolve(), "new": REPO}
    report = {"command": harness.command_line(), "machine": harness.machine(), "model": str(args.model_dir),
              "inputs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
        few = Path(scratch) / "five.csv"
        few.write_text("".join((args.data / "test.csv").read_text(encoding="utf-8").splitlines(True)[:5]),
                       encoding="utf-8")
        for name, source in (("5 rows", few), ("3,800 test rows", args.data / "test.csv")):
            seconds = {"old": [], "new": []}
            for _ in range(args.repeats):
                for side in ("old", "new", "new", "old"):
                    output = Path(scratch) / f"{side}.jsonl"
                    seconds[side].append(run_predict(repos[side], args.model_dir, source, output))
            old, new = answers(Path(scratch) / "old.jsonl"), answers(Path(scratch) / "new.jsonl")
            report["inputs"][name] = {
                "seconds": seconds, "rows": len(new),
                "max_probability_difference": max(abs(a - b) for o, n in zip(old, new)
                                                  for a, b in zip(o["probabilities"], n["probabilities"])),
                "classes_differing": sum(o["class_id"] != n["class_id"] for o, n in zip(old, new)),
            }
            print(name, {side: round(statistics.median(values), 2) for side, values in seconds.items()},
                  flush=True)
    harness.write_results(args.out, report, markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# `agnews-pipeline predict`, old against new ({time.strftime('%Y-%m-%d %H:%M')})", "",
             *harness.provenance(report),
             f"Model: `{report['model']}`. Wall time of the whole command (a fresh process: imports, load, "
             "predictions, output file), old and new alternated; median of the runs.", "",
             *harness.table_head("input", "old s", "new s", "new / old", "runs (old; new)",
                                 "largest probability difference", "classes differing")]
    for name, result in report["inputs"].items():
        old, new = (statistics.median(result["seconds"][side]) for side in ("old", "new"))
        runs = "; ".join(", ".join(f"{s:.1f}" for s in result["seconds"][side]) for side in ("old", "new"))
        lines.append(f"| {name} | {old:.2f} | {new:.2f} | {new / old:.2f}x | {runs} | "
                     f"{result['max_probability_difference']:.1e} | {result['classes_differing']} of "
                     f"{result['rows']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
