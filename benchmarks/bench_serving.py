"""Serving latency and throughput of an exported SavedModel, in a process that imports only TensorFlow.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_serving.py --data ../shared/data/ag_news \
        --model-dir PIPELINE_ROOT/runs/<run>/trainer/model/serving_model   # or a pushed <serving dir>/<version>

Without --model-dir it takes the pipeline bilstm (defaults, first seed) model recorded in
benchmarks/results/models.json by bench_models.py. The model is loaded with tf.saved_model.load and called through its `serving_default`
signature (raw strings in, class probabilities out), as TF Serving or a Python client would. Inputs are the
test.csv rows, "title description" (joined like the transform does).

Measured: load time; latency of one-text requests (after --warmup requests; each timed from the Python
string to the output as numpy, so the conversion is included), p50/p90/p99; examples/s of batches of 64 over
every test row; and the served model's accuracy on those rows (a check that the export matches the trained
model). Nothing from this project is imported: the point is that the SavedModel stands alone.

Writes benchmarks/results/serving.json and serving.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import run_info  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402  (installed with, and imported by, TensorFlow)
import tensorflow as tf  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
# Modules that serving must not need. `import tensorflow` itself already imports keras (TF's keras shim), so
# only what loading and calling the model adds on top of that is reported.
WATCHED_MODULES = ("keras", "tf_keras", "tensorflow_transform", "keras_tuner", "apache_beam", "components",
                   "pipeline")


def watched_modules() -> set[str]:
    return {name for name in WATCHED_MODULES if name in sys.modules}
SIGNATURE = "serving_default"
DEFAULT_MODEL_ROW = "pipeline bilstm (defaults, --no-tune)"


def read_test_rows(csv_dir: Path) -> tuple[list[str], np.ndarray]:
    """AG News test.csv ("class","title","description"; class 1-4) -> texts and labels 0-3."""
    texts, labels = [], []
    with open(Path(csv_dir) / "test.csv", newline="", encoding="utf-8") as handle:
        for class_text, title, description in csv.reader(handle):
            texts.append(f"{title} {description}")
            labels.append(int(class_text) - 1)
    return texts, np.array(labels)


def model_from_results(results: Path) -> tuple[Path, str]:
    """The serving model of the first seed's pipeline bilstm (defaults) run recorded by bench_models.py."""
    runs = json.loads(results.read_text(encoding="utf-8"))["runs"]
    run = next((r for r in runs if r["model"] == DEFAULT_MODEL_ROW), None)
    if run is None:
        raise SystemExit(f"{results} has no {DEFAULT_MODEL_ROW!r} run; pass --model-dir")
    return Path(run["serving_model"]), f"{run['model']}, seed {run['seed']}"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, help="SavedModel folder (default: see above)")
    parser.add_argument("--models-results", type=Path, default=RESULTS_DIR / "models.json")
    parser.add_argument("--requests", type=int, default=300, help="timed one-text requests")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving.json")
    args = parser.parse_args()
    machine = run_info.machine(f"TensorFlow {tf.__version__} CPU")  # the load before this benchmark adds its own
    started = time.perf_counter()
    model_dir, model_name = (args.model_dir, "given by --model-dir") if args.model_dir else (
        model_from_results(args.models_results))
    texts, labels = read_test_rows(args.data)
    modules_before = watched_modules()

    load_started = time.perf_counter()
    serve = tf.saved_model.load(str(model_dir)).signatures[SIGNATURE]
    load_seconds = time.perf_counter() - load_started

    def classify(batch: list[str]) -> np.ndarray:
        return serve(text=tf.constant(batch))["probabilities"].numpy()

    for index in range(args.warmup):
        classify([texts[index % len(texts)]])
    single = []
    for index in range(args.requests):
        text = texts[(args.warmup + index) % len(texts)]
        request_started = time.perf_counter()
        classify([text])
        single.append(time.perf_counter() - request_started)

    classify(texts[:args.batch_size])  # the first call with a new batch size may trace once more
    batch_seconds, predictions = [], []
    for start in range(0, len(texts), args.batch_size):
        batch_started = time.perf_counter()
        probabilities = classify(texts[start:start + args.batch_size])
        batch_seconds.append(time.perf_counter() - batch_started)
        predictions.append(probabilities.argmax(axis=-1))
    predicted = np.concatenate(predictions)

    # The point of the export: it stands alone. Record what loading and serving had to import.
    imported_by_serving = sorted(watched_modules() - modules_before)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": run_info.command_line(),
        "machine": machine,
        "model": model_name, "model_dir": str(Path(model_dir).resolve()), "signature": SIGNATURE,
        "data": f"{Path(args.data).resolve() / 'test.csv'}: {len(texts)} rows, text = title + ' ' + description",
        "load_seconds": load_seconds,
        "single": {"requests": args.requests, "warmup": args.warmup, **percentiles(single)},
        "batch": {"batch_size": args.batch_size, "examples": len(texts), "batches": len(batch_seconds),
                  "examples_per_second": len(texts) / sum(batch_seconds), **percentiles(batch_seconds)},
        "served_test_accuracy": float((predicted == labels).mean()),
        "modules_imported_by_import_tensorflow": sorted(modules_before),
        "modules_imported_by_serving": imported_by_serving,
        "wall_seconds": time.perf_counter() - started,
    }
    single, batch = report["single"], report["batch"]
    text = "\n".join([
        f"# Serving benchmark ({report['date']})", "",
        f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  ",
        f"Model: {report['model']} (`{report['model_dir']}`), signature `{SIGNATURE}`, loaded with "
        f"`tf.saved_model.load` in {load_seconds:.1f}s by a process importing only TensorFlow; loading and "
        f"serving imported {', '.join(imported_by_serving) or 'none'} of {', '.join(WATCHED_MODULES)} "
        f"(`import tensorflow` itself had imported {', '.join(sorted(modules_before)) or 'none'})  ",
        f"Data: {report['data']}; wall time {report['wall_seconds']:.0f}s", "",
        "| request | count | p50 ms | p90 ms | p99 ms | mean ms | examples/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| 1 text | {single['requests']} (after {single['warmup']} warm-up) | {single['p50_ms']:.1f} | "
        f"{single['p90_ms']:.1f} | "
        f"{single['p99_ms']:.1f} | {single['mean_ms']:.1f} | {1000 / single['mean_ms']:.0f} |",
        f"| batch of {batch['batch_size']} | {batch['batches']} batches, {batch['examples']} texts | "
        f"{batch['p50_ms']:.1f} | {batch['p90_ms']:.1f} | {batch['p99_ms']:.1f} | {batch['mean_ms']:.1f} | "
        f"{batch['examples_per_second']:.0f} |",
        "", f"Accuracy of the served model on these {len(texts)} test rows: {report['served_test_accuracy']:.4f}",
    ]) + "\n"
    print(text)
    run_info.write_results(args.out, report, text)


if __name__ == "__main__":
    main()
