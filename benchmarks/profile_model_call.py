"""Where a one-text call of the served model goes, and what serving-time thread settings and XLA change.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/profile_model_call.py --run-dir PIPELINE_ROOT/runs/<run> \
        --data ../shared/data/ag_news

For each thread setting (TensorFlow's inter- and intra-op pools; set before TensorFlow starts, so each setting
runs in its own process; --settings picks some) it times, one text at a time, median of --calls calls:
  - the whole `serving_default` signature (string in, numpy out), as `serve` calls it, of the run's export
    (XLA over bucketed shapes, library/xla_buckets.py, after replaying its warm-up file, which is timed) and
    of a plain export of the same Keras model (trainer.export_xla false, written here to a temporary folder),
    calls of the two alternating, so that other load on the machine hits both alike;
  - `transform_features` (tf.Example parsing, tf.Transform's string ops and vocabulary lookup);
  - the Keras model alone on the token ids (the embedding and the BiLSTM), as a tf.function, and with XLA
    (jit_compile=True), whose outputs are checked against the plain call;
the rest of the signature's time is its own overhead (dispatch, the cond, argmax and class names, copies).
Writes benchmarks/results/profile_model_call.{json,md}. Shared machine: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

from library.layouts import WARMUP_FILE, keras_model_file, serving_model_dir

RESULTS = Path(__file__).parent / "results" / "profile_model_call.json"
REPO = Path(__file__).resolve().parent.parent
# The same Keras model exported without XLA (trainer.export_xla false), for the plain whole-signature row.
EXPORT_PLAIN = r"""
import sys
import keras
from library import export
model = keras.saving.load_model(sys.argv[1], compile=False)
export.export_serving_model(model, sys.argv[2], sys.argv[3], xla=False)
"""
SETTINGS = {"TensorFlow's defaults": (0, 0), "inter 1, intra 1": (1, 1), "inter 1, intra 2": (1, 2),
            "inter 2, intra 1": (2, 1)}

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import tensorflow as tf
config = json.loads(sys.stdin.read())
inter, intra = config["threads"]
if inter: tf.config.threading.set_inter_op_parallelism_threads(inter)
if intra: tf.config.threading.set_intra_op_parallelism_threads(intra)
import keras
texts, calls = config["texts"], config["calls"]
served = tf.saved_model.load(config["serving_dir"])
full, transform = served.signatures["serving_default"], served.signatures["transform_features"]
plain_full = tf.saved_model.load(config["plain_dir"]).signatures["serving_default"]
from tensorflow_serving.apis import prediction_log_pb2
began = time.perf_counter()
warmups = 0
for record in tf.data.TFRecordDataset(config["warmup_file"]):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    full(text=tf.constant(tf.make_ndarray(request.inputs["text"])))
    warmups += 1
warmup_seconds = time.perf_counter() - began
model = keras.saving.load_model(config["keras_model"], compile=False)
plain = tf.function(lambda ids: model(ids, training=False))
xla = tf.function(lambda ids: model(ids, training=False), jit_compile=True)

def example(text):
    feature = {"title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()])),
               "description": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

examples = [tf.constant([example(t)]) for t in texts]
strings = [tf.constant([t]) for t in texts]
ids = [transform(examples=e)["token_ids"] for e in examples]
steps = {
    "whole signature, plain export": lambda i: plain_full(text=strings[i])["probabilities"].numpy(),
    "whole signature, XLA export": lambda i: full(text=strings[i])["probabilities"].numpy(),
    "transform_features (parse, string ops, lookup)":
        lambda i: transform(examples=examples[i])["token_ids"].numpy(),
    "Keras model on token ids (tf.function)": lambda i: plain(ids[i]).numpy(),
    "Keras model on token ids, XLA (jit_compile)": lambda i: xla(ids[i % 10]).numpy(),
}
# XLA compiles once per input shape (here: per number of token ids), so it is timed on 10 texts, after one
# compilation each; the compilations are timed separately.
compiles = []
for x in ids[:10]:
    began = time.perf_counter()
    xla(x)
    compiles.append(time.perf_counter() - began)
worst = max(float(np.abs(plain(x).numpy() - xla(x).numpy()).max()) for x in ids[:10])
full_vs_keras = max(
    float(np.abs(full(text=strings[i])["probabilities"].numpy() - plain(ids[i]).numpy()).max())
    for i in range(50))
result = {}
# The two whole-signature steps alternate call by call.
wholes = list(steps)[:2]
for i in range(10):
    [steps[name](i) for name in wholes]
times = {name: [] for name in wholes}
for i in range(calls):
    for name in wholes:
        began = time.perf_counter()
        steps[name](i % len(texts))
        times[name].append(time.perf_counter() - began)
result.update({name: statistics.median(values) * 1e6 for name, values in times.items()})
for name, step in list(steps.items())[2:]:
    for i in range(10):
        step(i)
    times = []
    for i in range(calls):
        began = time.perf_counter()
        step(i % len(texts))
        times.append(time.perf_counter() - began)
    result[name] = statistics.median(times) * 1e6
print(json.dumps({"median_us": result, "xla_vs_plain_max_abs": worst, "warmup_seconds": warmup_seconds,
                  "warmup_requests": warmups, "xla_first_call_seconds": compiles,
                  "signature_vs_keras_max_abs": full_vs_keras,
                  "mean_token_ids": float(np.mean([x.shape[1] for x in ids]))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run-dir", type=Path, required=True, help="a run folder (runs/<run>) of a pipeline root"
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="thread settings to run (each replays the warm-up: about 36 compilations)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with open(args.data / "test.csv", newline="", encoding="utf-8") as handle:
        texts = [f"{title} {description}" for _, title, description in csv.reader(handle)][:500]
    model_uri = args.run_dir / "trainer" / "model"
    runs = {}
    with tempfile.TemporaryDirectory(prefix="profile-plain-") as scratch:
        plain_dir = Path(scratch) / "plain"
        subprocess.run([sys.executable, "-c", EXPORT_PLAIN, str(keras_model_file(model_uri)),
                        str(args.run_dir / "transform" / "transform_graph"), str(plain_dir)],
                       env=harness.tensorflow_env(PYTHONPATH=str(REPO)), check=True, capture_output=True)
        for label in args.settings:
            began = time.time()
            job = {"threads": SETTINGS[label], "texts": texts, "calls": args.calls,
                   "plain_dir": str(plain_dir), "serving_dir": str(serving_model_dir(model_uri)),
                   "warmup_file": str(serving_model_dir(model_uri) / WARMUP_FILE),
                   "keras_model": str(keras_model_file(model_uri))}
            output = harness.run_json([sys.executable, "-c", CHILD], json.dumps(job))
            runs[label] = {**output, "load_average": os.getloadavg()[0],
                           "seconds": time.time() - began}
            print(label, json.dumps(runs[label]), flush=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(),
              "machine": harness.machine(), "run_dir": str(args.run_dir.resolve()), "runs": runs}
    steps = list(next(iter(runs.values()))["median_us"])
    lines = [
        f"# One-text model call profile ({report['date']})",
        "",
        *harness.provenance(report),
        f"Model: `{report['run_dir']}`  ",
        "Median microseconds of one-text calls (test.csv rows), one process per thread setting; the load "
        "average is the 1-minute one after each setting's process.",
        "",
        *harness.table_head("step", *runs),
    ]
    for step in steps:
        lines.append(
            f"| {step} | " + " | ".join(f"{run['median_us'][step]:.0f}" for run in runs.values()) + " |"
        )
    for whole, model, label in ((0, 3, "plain"), (1, 4, "XLA")):
        # whole signature - transform_features - the Keras model part, per setting
        rest = [run["median_us"][steps[whole]] - run["median_us"][steps[2]] - run["median_us"][steps[model]]
                for run in runs.values()]
        lines.append(f"| signature overhead, {label} (whole - transform - Keras model) | "
                     + " | ".join(f"{value:.0f}" for value in rest) + " |")
    lines.append(
        "| load average | " + " | ".join(f"{run['load_average']:.1f}" for run in runs.values()) + " |"
    )
    first = next(iter(runs.values()))
    lines += [
        "",
        f"Token ids per text: {first['mean_token_ids']:.1f} on average. XLA vs plain Keras outputs: max "
        f"abs difference {first['xla_vs_plain_max_abs']:.1e}; XLA export's signature vs Keras: "
        f"{first['signature_vs_keras_max_abs']:.1e}. A bare XLA function compiles once per number of "
        f"token ids: the first call of each of 10 texts took "
        f"{min(first['xla_first_call_seconds']):.1f}-"
        f"{max(first['xla_first_call_seconds']):.1f} s. The XLA export pads to bucket shapes and "
        f"compiles them all at warm-up: replaying its {first['warmup_requests']} warm-up requests took "
        + ", ".join(f"{run['warmup_seconds']:.0f} s" for run in runs.values())
        + " (per setting).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    harness.write_results(args.out, report, text)


if __name__ == "__main__":
    main()
