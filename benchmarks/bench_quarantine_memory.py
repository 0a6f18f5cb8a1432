"""Peak memory of `agnews-pipeline run --until ingest` on 1,000,000 good rows vs 1,000,000 bad rows.

Ingest once held every quarantined row in one list (a 200 MB train.csv of bad lines took 6.9 GB); now bad rows
are streamed to block files, so peak RSS must not grow with the number of bad rows (target: bad within 1.5x of
good). Each case is one CLI process under /usr/bin/time -v ("Maximum resident set size", which covers the
process and its Beam workers' largest single process only: the default DirectRunner runs in-process).

The data is generated in a temporary folder and deleted afterwards:
  good: benchmarks/generate_data.py rows (real titles and descriptions recombined), test.csv = the real
  test.csv;
  bad:  the same rows with class "9" (quarantined as a bad label), test.csv = the real test.csv.

    python benchmarks/bench_quarantine_memory.py --source ../shared/data/ag_news --rows 1000000

Sized so each case takes a few minutes on 2 shared cores; results go to
benchmarks/results/quarantine_memory.*.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from generate_data import generate
from harness import command_line, machine, provenance, table_head, write_results

PROJECT = Path(__file__).resolve().parent.parent


def make_bad(good: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    with open(good / "train.csv", "rb") as source, open(out / "train.csv", "wb") as sink:
        for line in source:
            sink.write(b'"9"' + line[3:])  # every row keeps its text but gets a class outside 1-4
    shutil.copyfile(good / "test.csv", out / "test.csv")
    return out


def measure(data: Path, root: Path, code_dir: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "apps.cli", "run", "--until", "ingest",
               "--data", f"csv:{data}", "--pipeline-root", str(root)]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=code_dir, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(code_dir), "CUDA_VISIBLE_DEVICES": "-1"})
    seconds = time.monotonic() - started
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", completed.stderr).group(1))
    messages = [
        line for line in completed.stderr.splitlines() if line.startswith(("run:", "ERROR", "ingest:"))
    ]
    return {
        "exit_code": completed.returncode,
        "peak_rss_mb": round(peak_kb / 1024),
        "seconds": round(seconds),
        "train_csv_mb": round((data / "train.csv").stat().st_size / 2**20),
        "message": (messages[:1] or [""])[0][:200],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", type=Path, required=True, help="folder with the real train.csv and test.csv"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--code-dir", type=Path, default=PROJECT, help="checkout whose pipeline is measured")
    parser.add_argument("--cases", default="good,bad")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "quarantine_memory")
    args = parser.parse_args()
    results = {"command": command_line(), "machine": machine(), "rows": args.rows, "cases": {}}
    scratch = Path(tempfile.mkdtemp(prefix="quarantine-memory-"))
    try:
        good = generate(args.source, args.rows, scratch / "good")
        data = {"good": good}
        if "bad" in args.cases:
            data["bad"] = make_bad(good, scratch / "bad")
        for case in args.cases.split(","):
            results["cases"][case] = measure(data[case], scratch / f"root-{case}", args.code_dir.resolve())
            print(case, results["cases"][case], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cases = results["cases"]
    if "good" in cases and "bad" in cases:
        results["bad_over_good"] = round(cases["bad"]["peak_rss_mb"] / cases["good"]["peak_rss_mb"], 2)
    lines = [f"# Ingest peak memory: {args.rows:,} good rows vs {args.rows:,} bad rows", "",
             *provenance(results), "",
             *table_head("case", "train.csv", "exit", "peak RSS", "wall time", "message")]
    for case, r in cases.items():
        lines.append(f"| {case} | {r['train_csv_mb']} MB | {r['exit_code']} | {r['peak_rss_mb']} MB | "
                     f"{r['seconds']} s | {r['message'].replace('|', '/')} |")
    if "bad_over_good" in results:
        lines += ["", f"bad / good peak RSS: {results['bad_over_good']}"]
    write_results(args.out.with_suffix(".json"), results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
