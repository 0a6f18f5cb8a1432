"""How far 16 connections x 1 text can go with this model on this machine, against 16 x 64 texts (issue 29
asks for 0.3x): the model's own cost by call size, the server's own cost per request, and what `serve`
reaches, in one run.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_serve_ceiling.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version>

Each round, in turn (so that other load on a shared machine hits every part alike):
1. The model alone, in a process that imports only TensorFlow, every shape compiled first: calls of 16,
   8 and 256 random test texts from 1 or 2 threads (texts/s), and one 16-text call at a time (p50 ms).
2. `serve` with an instant model call (bench_request_path.py's: the server, its handlers, the batcher and
   the hop between threads are left) under wrk 16 x 1: the event loop's CPU per request.
3. `serve` with the model under wrk 16 x 1 and 16 x 64: texts/s.

Bounds for 16 clients that each send one text and wait for the answer (wrk's closed loop), from the
medians (L: the event loop's µs per request with the instant model, the least the real server spends):
- one wave: the 16 requests meet in one model call, during which the event loop has nothing to do, and
  then the loop answers and reads all 16 again: at most 16 / (t16 + 16 L).
- two groups that overlap (the loop serves one while the other's call runs, each call holding about 8
  texts, both cores busy): at most 2 / (2 / r8 + L), r8 being 8-text calls' texts/s from 2 threads.
- full 16-text calls that overlap the loop, which takes more than 16 clients: 2 / (2 / r16 + L).
Each is given as a fraction of the served 16 x 64 rate, with the event loop's cost per request at which it
would reach 0.3 of that rate. Writes benchmarks/results/serve_ceiling.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_request_path import INSTANT_SERVE, measure
from bench_serve import (
    REPO,
    RESULTS_DIR,
    Server,
    checked_test_texts,
    publish_version,
    request_bodies,
    run_wrk,
    write_wrk_script,
)

# The model alone: every (rows, length) shape compiled first, then each call size timed.
MODEL_SCRIPT = r"""
import json, random, statistics, sys, threading, time
import tensorflow as tf

config = json.loads(sys.stdin.read())
signature = tf.saved_model.load(config["model_dir"]).signatures["serving_default"]
(input_name,) = signature.structured_input_signature[1]
texts, seconds = config["texts"], config["seconds"]
for words in (8, 16, 24, 32, 48, 64, 96, 128, 256):
    for rows in (1, 4, 8, 16, 64):
        signature(**{input_name: tf.constant([" ".join(["news"] * words)] * rows)})
random.seed(0)

def texts_per_second(rows, threads):
    batches = [tf.constant(random.sample(texts, rows)) for _ in range(100)]
    counts, stop = [0] * threads, time.perf_counter() + seconds
    def calls(index):
        while time.perf_counter() < stop:
            signature(**{input_name: batches[counts[index] % len(batches)]})
            counts[index] += 1
    workers = [threading.Thread(target=calls, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers: worker.start()
    for worker in workers: worker.join()
    return sum(counts) * rows / (time.perf_counter() - started)

def one_call_ms(rows, calls=200):
    batches = [tf.constant(random.sample(texts, rows)) for _ in range(calls)]
    times = []
    for batch in batches:
        started = time.perf_counter()
        signature(**{input_name: batch})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3

print(json.dumps({"t16_ms": one_call_ms(16), "r16_1": texts_per_second(16, 1),
                  "r16_2": texts_per_second(16, 2), "r8_2": texts_per_second(8, 2),
                  "r256_2": texts_per_second(256, 2)}))
"""
MODEL_PARTS = {"t16_ms": "one 16-text call, p50 ms", "r16_1": "16-text calls, 1 thread, texts/s",
               "r16_2": "16-text calls, 2 threads, texts/s", "r8_2": "8-text calls, 2 threads, texts/s",
               "r256_2": "256-text calls, 2 threads, texts/s"}


def model_alone(model_dir: Path, texts: list[str], seconds: float) -> dict:
    return harness.run_json([sys.executable, "-c", MODEL_SCRIPT],
                            json.dumps({"model_dir": str(model_dir), "texts": texts, "seconds": seconds}))


def texts_per_second(server: Server, connections: int, texts: int, seconds: float, script: Path) -> float:
    result = run_wrk(server.port, connections, seconds, script)
    answered = result["requests"] - result["non_2xx"]
    return answered * texts / (result["duration_us"] / 1e6)


def one_round(model_dir: Path, texts: list[str], servers: dict, scripts: dict, seconds: float) -> dict:
    result = model_alone(model_dir, texts, seconds)
    result["loop_us"] = measure(servers["instant"], 16, seconds, scripts[1])["loop_us_per_request"]
    result["served_16x1"] = texts_per_second(servers["model"], 16, 1, seconds, scripts[1])
    result["served_16x64"] = texts_per_second(servers["model"], 16, 64, seconds, scripts[64])
    result["load_average"] = os.getloadavg()[0]
    return result


def bounds(medians: dict, target: float) -> dict:
    """The three ceilings of 16 x 1 (texts/s) from the medians (see the module's docstring), each with the
    event loop's µs per request at which it would reach `target` texts/s (negative: not even at 0)."""
    loop = medians["loop_us"] / 1e6
    one_wave, pair, whole = medians["t16_ms"] / 1e3 / 16, 2 / medians["r8_2"], 2 / medians["r16_2"]
    return {"one wave": (1 / (one_wave + loop), 1 / target - one_wave),
            "two overlapping groups of 8": (2 / (pair + loop), 2 / target - pair),
            "16-text calls overlapping the loop (more than 16 clients)":
                (2 / (whole + loop), 2 / target - whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with AG News test.csv (required unless --render)")
    parser.add_argument("--model-dir", type=Path, help="a serving SavedModel (required unless --render)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve_ceiling.json")
    parser.add_argument("--render", action="store_true", help="only rewrite --out's .md from its .json")
    args = parser.parse_args()
    if args.render:
        return harness.render_only(args.out, markdown)
    if args.data is None or args.model_dir is None:
        parser.error("--data and --model-dir are required")
    texts = checked_test_texts(args.data, args.model_dir)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(),
              "machine": harness.machine(), "model": str(args.model_dir),
              "seconds": args.seconds, "rounds": []}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-serve-ceiling-") as scratch:
        scripts = {size: write_wrk_script(Path(scratch) / f"{size}.lua", request_bodies(texts, size))
                   for size in (1, 64)}
        servers = {}
        try:
            for name, entry in (("instant", ("-c", INSTANT_SERVE)), ("model", ("-m", "apps.cli"))):
                publish_version(args.model_dir, Path(scratch) / name)
                servers[name] = Server(REPO, Path(scratch) / name, [], entry)
            for number in range(args.rounds):
                report["rounds"].append(one_round(args.model_dir, texts, servers, scripts, args.seconds))
                print(f"round {number + 1}: {json.dumps(report['rounds'][-1])}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    report["wall_seconds"] = time.monotonic() - began
    harness.write_results(args.out, report, markdown(report))


def markdown(report: dict) -> str:
    rounds = report["rounds"]
    medians = {key: statistics.median(run[key] for run in rounds) for key in rounds[0]}
    served = medians["served_16x64"]
    lines = [f"# The ceiling of 16 connections x 1 text ({report['date']})", "",
             *harness.provenance(report),
             f"Model: `{report['model']}`; {len(rounds)} rounds, {report['seconds']:g} s per measurement; "
             "medians over the rounds (each round's value in the last column). Wall time "
             f"{report['wall_seconds']:.0f} s. **Shared machine**: read the ratios of one run.", "",
             *harness.table_head("measured", "median", "rounds")]
    parts = {**MODEL_PARTS, "loop_us": "`serve`, instant model, 16 x 1: event loop µs per request",
             "served_16x1": "`serve`, model, 16 x 1: texts/s",
             "served_16x64": "`serve`, model, 16 x 64: texts/s"}
    for key, label in parts.items():
        digits = 2 if key == "t16_ms" else 0
        lines.append(f"| {label} | {medians[key]:,.{digits}f} | "
                     + ", ".join(f"{run[key]:,.{digits}f}" for run in rounds) + " |")
    lines += ["", "Ceilings of 16 x 1 from the medians, and as a fraction of the served 16 x 64 "
              f"({served:,.0f} texts/s); served 16 x 1 is {medians['served_16x1'] / served:.2f} of it:", "",
              *harness.table_head("16 clients of one text each", "texts/s at most", "of served 16 x 64",
                                  "event loop µs per request that 0.3 of it needs")]
    for name, (ceiling, needed) in bounds(medians, 0.3 * served).items():
        lines.append(f"| {name} | {ceiling:,.0f} | {ceiling / served:.2f} | "
                     + (f"{needed * 1e6:.0f} |" if needed > 0 else "none: the model calls alone exceed it |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
