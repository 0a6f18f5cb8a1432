"""Should the XLA export unroll its LSTM? The default BiLSTM's shape (embedding 128 over 20,002 ids, one
Bidirectional LSTM of 64 units, softmax over 4 classes), random weights, compiled with `jit_compile` at the
bucket shapes `serve` runs, once as Keras builds it (a while loop over the steps) and once with the same
weights and `unroll=True` (one copy of the cell per step; needs the steps fixed, so one model per length).

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_unrolled_rnn.py --calls 50

Per shape: the median of --calls calls after two untimed ones, one intra-op thread (as `serve` runs a call),
the first call of the unrolled model timed as its compilation, and the largest difference between the two
outputs. Writes benchmarks/results/unrolled_rnn.{json,md} by default.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

RESULTS = Path(__file__).resolve().parent / "results" / "unrolled_rnn.json"
# (rows, steps): one text, 16 clients' texts padded to a middle and a long bucket, a chunk of a large batch
SHAPES = ((1, 48), (16, 64), (16, 96), (64, 64))


def build(steps: int | None, unroll: bool):
    import keras

    ids = keras.Input(shape=(steps,), dtype="int64")
    hidden = keras.layers.Embedding(20_002, 128, mask_zero=True)(ids)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(64, unroll=unroll))(hidden)
    return keras.Model(ids, keras.layers.Dense(4, activation="softmax")(hidden))


def median_ms(call, ids, calls: int) -> float:
    import numpy as np

    call(ids)
    call(ids)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call(ids).numpy()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def measure(calls: int) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    looped = build(None, unroll=False)
    looped_call = tf.function(lambda ids: looped(ids, training=False), jit_compile=True)
    rng = np.random.default_rng(0)
    rows = []
    for batch, steps in SHAPES:
        ids = np.zeros((batch, steps), np.int64)
        for row in range(batch):  # texts of 20 steps up to the bucket, 0-padded as the export pads them
            length = int(rng.integers(min(20, steps), steps + 1))
            ids[row, :length] = rng.integers(1, 20_000, length)
        unrolled = build(steps, unroll=True)
        unrolled.set_weights(looped.get_weights())
        unrolled_call = tf.function(lambda ids, model=unrolled: model(ids, training=False), jit_compile=True)
        started = time.perf_counter()
        unrolled_call(ids)
        compile_seconds = time.perf_counter() - started
        difference = float(np.abs(looped_call(ids).numpy() - unrolled_call(ids).numpy()).max())
        rows.append({"rows": batch, "steps": steps, "loop_ms": median_ms(looped_call, ids, calls),
                     "unrolled_ms": median_ms(unrolled_call, ids, calls),
                     "unrolled_compile_seconds": compile_seconds, "max_difference": difference})
        print(rows[-1], flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = [f"# XLA over a while loop against an unrolled BiLSTM ({report['date']})", "",
             *harness.provenance(report),
             f"Model: the default BiLSTM's shape with random weights; median of {report['calls']} calls, one "
             "intra-op thread.", "",
             *harness.table_head("rows x steps", "while loop ms", "unrolled ms", "loop / unrolled",
                                 "unrolled compile s", "max output difference")]
    for row in report["shapes"]:
        lines.append(f"| {row['rows']} x {row['steps']} | {row['loop_ms']:.2f} | {row['unrolled_ms']:.2f} | "
                     f"{row['loop_ms'] / row['unrolled_ms']:.2f} | {row['unrolled_compile_seconds']:.1f} | "
                     f"{row['max_difference']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    report = {"command": harness.command_line(), "machine": harness.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "calls": args.calls, "shapes": measure(args.calls)}
    harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
