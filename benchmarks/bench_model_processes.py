"""Concurrent model calls of the served SavedModel: threads of one process against processes of one thread,
TensorFlow only (no server, no HTTP), to tell what one `serve` process can draw from the cores.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_model_processes.py --model-dir <serving dir>/<version> \\
        --data ../shared/data/ag_news

For each batch size (--sizes) and layout (1 process x 1 thread, 1 process x N threads, N processes x 1
thread; N = the cores) every process loads the model, calls it once on every batch it will time (an XLA
export compiles each new shape on its first call, which must not be timed), and reports ready; then all
start at once and call `serving_default` on the test texts in batches for --seconds, each thread in a loop,
with intra-op threads 1 as `serve` sets them for one call per core. Rows per second summed over the threads
and processes. Layouts run in turn, the order reversed every other round, so other load on a shared machine
hits them alike. Writes benchmarks/results/model_processes.{json,md} by default.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

PROJECT = Path(__file__).resolve().parent.parent


def worker(model_dir: str, data: str, size: int, threads: int, seconds: float) -> None:
    """One process of a layout: loads, warms up, prints "ready", waits for a line on stdin, then calls the
    model from `threads` threads for `seconds` and prints {"rows_per_second": ...}."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    from bench_serve import read_test_rows

    tf.config.threading.set_intra_op_parallelism_threads(1)
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    texts, _ = read_test_rows(Path(data))
    batches = [tf.constant(texts[start:start + size]) for start in range(0, len(texts) - size + 1, size)]
    for batch in batches:
        signature(text=batch)
    print("ready", flush=True)
    sys.stdin.readline()
    counts: list[float] = []

    def calls(offset: int) -> None:
        rows, index, started = 0, offset, time.perf_counter()
        while time.perf_counter() - started < seconds:
            signature(text=batches[index % len(batches)])["probabilities"].numpy()
            rows, index = rows + size, index + 7
        counts.append(rows / (time.perf_counter() - started))

    pool = [threading.Thread(target=calls, args=(offset,)) for offset in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"rows_per_second": sum(counts)}), flush=True)


def run_layout(args, size: int, processes: int, threads: int) -> float:
    """Rows per second of `processes` processes of `threads` threads each, started together."""
    command = [sys.executable, __file__, "--worker", "--model-dir", str(args.model_dir), "--data",
               str(args.data), "--sizes", str(size), "--threads", str(threads),
               "--seconds", str(args.seconds)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    pool = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env) for _ in range(processes)]
    try:
        for process in pool:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"a worker did not start (exit {process.wait(60)})")
        for process in pool:
            process.stdin.write("go\n")
            process.stdin.flush()
        return sum(json.loads(process.stdout.readline())["rows_per_second"] for process in pool)
    finally:
        for process in pool:
            process.kill()
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--sizes", default="16,64,256", help="texts per call, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="per layout, size and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=PROJECT / "benchmarks" / "results" / "model_processes.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.worker:
        worker(str(args.model_dir), str(args.data), sizes[0], args.threads, args.seconds)
        return
    cores = os.cpu_count() or 1
    layouts = [(1, 1), (1, cores), (cores, 1)]
    machine, started = harness.machine(), time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    for round_index in range(args.rounds):
        for size in sizes:
            for processes, threads in layouts if round_index % 2 == 0 else layouts[::-1]:
                rate = run_layout(args, size, processes, threads)
                results.setdefault(str(size), {}).setdefault(f"{processes}x{threads}", []).append(rate)
                print(f"round {round_index + 1}, {size} texts a call, {processes} process(es) x {threads} "
                      f"thread(s): {rate:.0f} rows/s (load {os.getloadavg()[0]:.1f})", flush=True)
    report = {"command": harness.command_line(), "machine": machine, "model_dir": str(args.model_dir),
              "data": f"{args.data}/test.csv", "cores": cores, "seconds": args.seconds, "results": results,
              "wall_seconds": time.perf_counter() - started}
    harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    cores = report["cores"]
    lines = [f"# Concurrent model calls: threads of one process against processes "
             f"({time.strftime('%Y-%m-%d %H:%M')})", "",
             *harness.provenance(report), f"Model: `{report['model_dir']}`  ", f"Data: {report['data']}  ",
             f"Each layout {report['seconds']:g} s per round, rounds alternated; rows per second summed over "
             f"threads and processes, one value per round. Wall time {report['wall_seconds']:.0f} s.", "",
             *harness.table_head("texts per call", "1 process x 1 thread", f"1 process x {cores} threads",
                                 f"{cores} processes x 1 thread", "processes / threads")]
    for size, by_layout in report["results"].items():
        one, threads, processes = (by_layout[key] for key in ("1x1", f"1x{cores}", f"{cores}x1"))
        def cell(values: list[float]) -> str:
            return ", ".join(f"{value:,.0f}" for value in values)
        ratios = ", ".join(f"{p / t:.2f}x" for p, t in zip(processes, threads))
        lines.append(f"| {size} | {cell(one)} | {cell(threads)} | {cell(processes)} | {ratios} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
