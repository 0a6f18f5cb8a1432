"""Model calls of more than 64 texts in two exports of one Keras model, alternated in one process so that
other load hits both alike: chunks of 64 rows in arrival order, each padded to the batch's longest text (the
export before library/xla_buckets.py sorted its chunks), against chunks sorted by length, each cut to its own
bucket.

    python benchmarks/bench_export_chunks.py --old /tmp/exports/old --new /tmp/exports/new \\
        --data /work/shared/data/ag_news

--old and --new are serving SavedModels exported from the same trainer's Keras model by the two checkouts
(library/export.export_serving_model). Each call takes --batches random batches of the test texts in turn;
1 or 2 threads call at once (the server's default is one call per core). Reported: rows per second of each
export and their ratio; and the largest difference between the two exports' answers on the same batches.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_serve import read_test_rows

PROJECT = Path(__file__).resolve().parent.parent
SIZES = (64, 256, 512)


def rows_per_second(signature, batches: list[list[str]], threads: int, seconds: float) -> float:
    import tensorflow as tf
    counts: list[float] = []

    def calls() -> None:
        rows, index, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            batch = batches[index % len(batches)]
            signature(text=tf.constant(batch))
            rows, index = rows + len(batch), index + 1
        counts.append(rows / (time.perf_counter() - started))

    workers = [threading.Thread(target=calls) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the export with unsorted chunks")
    parser.add_argument("--new", type=Path, required=True, help="the export with sorted chunks")
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="per export, size and thread count, twice")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "export_chunks.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    machine, started = harness.machine(), time.perf_counter()
    signatures = {name: tf.saved_model.load(str(path)).signatures["serving_default"]
                  for name, path in (("old", args.old), ("new", args.new))}
    (texts, _), rng = read_test_rows(args.data), random.Random(2)
    batches = {size: [rng.sample(texts, size) for _ in range(args.batches)] for size in SIZES}

    def answers(name: str, batch: list[str]):
        return signatures[name](text=tf.constant(batch))["probabilities"].numpy()

    difference = max(float(np.abs(answers("old", batch) - answers("new", batch)).max())
                     for size in SIZES for batch in batches[size])
    rows = []
    for size in SIZES:
        for threads in (1, 2):
            rates: dict[str, list[float]] = {"old": [], "new": []}
            for order in (("old", "new"), ("new", "old")):
                for name in order:
                    rate = rows_per_second(signatures[name], batches[size], threads, args.seconds)
                    rates[name].append(rate)
            old, new = statistics.mean(rates["old"]), statistics.mean(rates["new"])
            rows.append({"texts_per_call": size, "threads": threads, "old_rows_per_second": old,
                         "new_rows_per_second": new, "ratio": new / old})
            print(rows[-1], flush=True)
    report = {"command": harness.command_line(), "machine": machine, "old": str(args.old),
              "new": str(args.new),
              "data": f"{args.data / 'test.csv'}: {len(texts)} texts (title + ' ' + description), "
                      f"{args.batches} random batches per size", "max_abs_difference": difference,
              "rows": rows, "wall_seconds": time.perf_counter() - started}
    harness.write_results(args.out, report, markdown(report))


def markdown(report: dict) -> str:
    lines = ["# Large model calls: chunks sorted by length against chunks in arrival order", "",
             *harness.provenance(report), f"Data: {report['data']}  ",
             f"Exports: old `{report['old']}`, new `{report['new']}`; largest difference between their "
             f"answers: {report['max_abs_difference']:.2g}", "",
             *harness.table_head("texts per call", "threads", "old rows/s", "new rows/s", "new / old")]
    for row in report["rows"]:
        lines.append(f"| {row['texts_per_call']} | {row['threads']} | {row['old_rows_per_second']:.0f} | "
                     f"{row['new_rows_per_second']:.0f} | {row['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
