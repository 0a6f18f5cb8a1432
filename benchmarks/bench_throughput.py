"""Training throughput of the default bilstm against the course notebook's recipe, side by side in one
process, where the time goes (one change at a time from the previous default), and test accuracy of the
previous and the current default through the real pipeline.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_throughput.py --data ../shared/data/ag_news

Throughput. Every variant trains a fresh model (same seed) on the same train rows: the transform's train split
(bucketed or padded to each batch's longest sequence), and for the notebook recipe the same rows' raw texts
(benchmarks/notebook_baseline.py: TextVectorization inside the model, batch 16, each batch padded to its
longest text). Epochs alternate between the variants (round-robin), so load from other processes hits all
alike; the first round includes graph tracing and is left out of the median. Each variant's examples/s is
divided by the notebook recipe's from the same run. The profile rows change one thing at a time from the
previous default (2x BiLSTM(64), embedding 128, batch 64, bucketed, deterministic ops): op determinism, steps
per execution, bucketing, batch size, number of layers; "input pipeline alone" iterates the bucketed batches
without a model.

Accuracy. `--accuracy-seeds` runs the real pipeline (pipeline.runner.Runner, --no-tune, --until trainer) once
per seed with the previous default's hyperparameters fixed and once with the current defaults, and scores each
trained Keras model on the test split (the same protocol as bench_models.py).

Writes benchmarks/results/throughput.json and throughput.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # Keras 3
import notebook_baseline
import tensorflow as tf
from bench_models import keras_test_accuracy, run_pipeline
from tensorflow.python.framework import config as tf_config  # the public API only switches it on

from contract.config_loading import build_config
from library.dataset import bucketed_batches, unbucketed_batches
from library.layouts import SPLITS, read_model_input
from library.models import build_model, default_hyperparameters, fixed_hyperparameters

RESULTS_DIR = Path(__file__).parent / "results"
# The bilstm default before this benchmark's changes (the course notebook's model with bucketed batches of
# 64).
PREVIOUS_DEFAULT = {
    "embedding_dim": 128,
    "units": 64,
    "num_layers": 2,
    "dropout": 0.0,
    "recurrent_dropout": 0.0,
    "learning_rate": 1e-3,
    "batch_size": 64,
}
NOTEBOOK = "notebook recipe (batch 16, padded to batch longest)"


class Variant:
    """One model + input pipeline trained an epoch at a time; `seconds` holds each epoch's training time."""

    def __init__(self, name: str, model, dataset: tf.data.Dataset, examples: int, deterministic: bool = True):
        self.name, self.model, self.dataset, self.examples = name, model, dataset, examples
        self.deterministic = deterministic
        self.timer = notebook_baseline.EpochSeconds()

    def epoch(self) -> float:
        if self.deterministic:
            tf.config.experimental.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
        if self.model is None:  # the input pipeline alone
            started = time.perf_counter()
            for _ in self.dataset:
                pass
            self.timer.seconds.append(time.perf_counter() - started)
        else:
            self.model.fit(self.dataset, epochs=1, verbose=0, callbacks=[self.timer])
        return self.examples / self.timer.seconds[-1]


def _bilstm(values: dict, model_input, seed: int, steps_per_execution: int = 1):
    keras.utils.set_random_seed(seed)
    model = build_model("bilstm", fixed_hyperparameters(values), model_input)
    if steps_per_execution > 1:
        model.compile(optimizer=keras.optimizers.Adam(values["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)
    return model


def variants(examples_dir: Path, model_input, splits, seed: int) -> list[Variant]:
    current = default_hyperparameters("bilstm")
    previous = PREVIOUS_DEFAULT

    def bucketed(batch_size: int):
        batches = bucketed_batches(examples_dir, "train", batch_size, shuffle=True, seed=seed)
        return batches.dataset, batches.num_examples

    def padded(batch_size: int):
        batches = unbucketed_batches(
            examples_dir, "train", batch_size, pad_to="batch", shuffle=True, seed=seed
        )
        return batches.dataset, batches.num_examples

    keras.utils.set_random_seed(seed)
    train = splits["train"]
    notebook_model, _ = notebook_baseline.build_notebook_model(
        train.texts("title_description")[: notebook_baseline.ADAPT_TEXTS]
    )
    notebook_data = notebook_baseline.batches(
        train.texts("title_description"), train.labels, shuffle=True, seed=seed
    )
    layers = {1: "1x BiLSTM", 2: "2x BiLSTM"}
    current_text = (f"{layers.get(current['num_layers'], current['num_layers'])}({current['units']}), "
                    f"embedding {current['embedding_dim']}, batch {current['batch_size']}")
    return [
        Variant(NOTEBOOK, notebook_model, notebook_data, len(train)),
        Variant(
            "previous default (2x BiLSTM(64), embedding 128, batch 64, bucketed)",
            _bilstm(previous, model_input, seed),
            *bucketed(64),
        ),
        Variant(
            "previous default, op determinism off",
            _bilstm(previous, model_input, seed),
            *bucketed(64),
            deterministic=False,
        ),
        Variant(
            "previous default, steps_per_execution 8", _bilstm(previous, model_input, seed, 8), *bucketed(64)
        ),
        Variant(
            "previous default, padded to batch longest", _bilstm(previous, model_input, seed), *padded(64)
        ),
        Variant(
            "previous default, batch 256",
            _bilstm({**previous, "batch_size": 256}, model_input, seed),
            *bucketed(256),
        ),
        Variant(
            "previous default, 1 layer",
            _bilstm({**previous, "num_layers": 1}, model_input, seed),
            *bucketed(64),
        ),
        Variant(
            f"current default ({current_text}, bucketed)",
            _bilstm(current, model_input, seed),
            *bucketed(current["batch_size"]),
        ),
        Variant(
            "current default, padded to batch longest",
            _bilstm(current, model_input, seed),
            *padded(current["batch_size"]),
        ),
        Variant(
            f"input pipeline alone (bucketed, batch {current['batch_size']})",
            None,
            *bucketed(current["batch_size"]),
        ),
    ]


def throughput(all_variants: list[Variant], rounds: int) -> list[dict]:
    for variant in all_variants:  # fill every tf.data cache before timing
        for _ in variant.dataset:
            pass
    per_epoch = {v.name: [] for v in all_variants}
    for round_index in range(rounds):
        for variant in all_variants:
            per_epoch[variant.name].append(variant.epoch())
            print(f"round {round_index + 1}: {variant.name}: {per_epoch[variant.name][-1]:.0f} examples/s",
                  flush=True)
    timed = slice(1, None) if rounds > 1 else slice(None)  # round 1 traces graphs
    notebook = per_epoch[NOTEBOOK]
    rows = []
    for variant in all_variants:
        speeds = per_epoch[variant.name]
        median = statistics.median(speeds[timed])
        rows.append({"variant": variant.name, "examples": variant.examples,
                     "examples_per_second_per_epoch": speeds, "median_examples_per_second": median,
                     "vs_notebook": median / statistics.median(notebook[timed]),
                     "vs_notebook_per_round": [s / n for s, n in zip(speeds, notebook)],
                     "parameters": int(variant.model.count_params()) if variant.model is not None else None})
    return rows


def accuracy(args, seeds: list[int]) -> list[dict]:
    previous = [f"{name}={value}" for name, value in PREVIOUS_DEFAULT.items()]
    results = []
    for label, fixed in (("previous default", previous), ("current default", [])):
        for seed in seeds:
            config = build_config({
                "pipeline": {"root": str(args.root), "seed": seed},
                "ingest": {"data": f"csv:{args.data.resolve()}"},
                "tuner": {"architecture": "bilstm", "enabled": False, "fixed_hyperparameters": fixed},
            })
            started = time.perf_counter()
            # The cache key leaves out pipeline.seed, so tuner and trainer rerun for every seed.
            result = run_pipeline(config, until="trainer", rerun=("tuner", "trainer"))
            model = result.artifact("trainer", "model")
            model_run = result.artifact("trainer", "model_run")
            row = {
                "model": label,
                "seed": seed,
                "seconds": time.perf_counter() - started,
                "hyperparameters": result.artifact("tuner", "best_hyperparameters").properties["values"],
                "epochs_trained": model.properties["epochs_trained"],
                "best_epoch": model.properties["best_epoch"],
                "train_examples_per_second": model_run.properties["mean_examples_per_second"],
            }
            row.update(keras_test_accuracy(Path(model.uri),
                                           Path(result.artifact("transform", "transformed_examples").uri)))
            print(f"== {label} seed {seed}: test accuracy {row['test_accuracy']:.4f}", flush=True)
            results.append(row)
    return results


def markdown(report: dict) -> str:
    lines = [
        f"# Training throughput: default bilstm vs the notebook recipe ({report['date']})",
        "",
        *harness.provenance(report),
        f"Wall time: {report['wall_seconds'] / 60:.1f} min",
        "",
        f"Data: {report['data']}: {report['train_rows']} train rows (the pipeline's train split; the "
        "notebook "
        "recipe reads the same rows' raw title + description).",
        "",
        f"## Examples/s, {report['rounds']} epochs per variant, round-robin in one process",
        "",
        "Median over rounds 2.. (round 1 traces graphs); ratio to the notebook recipe's median from the same "
        "run, and per round.",
        "",
        "| variant | examples/s per epoch | median examples/s | vs notebook | vs notebook, per round | "
        "parameters |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["throughput"]:
        per_epoch = ", ".join(f"{x:.0f}" for x in row["examples_per_second_per_epoch"])
        per_round = ", ".join(f"{x:.2f}x" for x in row["vs_notebook_per_round"])
        parameters = f"{row['parameters']:,}" if row["parameters"] else ""
        lines.append(f"| {row['variant']} | {per_epoch} | {row['median_examples_per_second']:.0f} | "
                     f"**{row['vs_notebook']:.2f}x** | {per_round} | {parameters} |")
    if report["accuracy"]:
        lines += [
            "",
            "## Test accuracy through the pipeline (--no-tune, trainer defaults: at most 10 epochs, early "
            "stopping patience 2)",
            "",
            "| model | seed | hyperparameters | epochs (best) | trainer examples/s | test accuracy |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in report["accuracy"]:
            values = ", ".join(f"{k} {v}" for k, v in row["hyperparameters"].items())
            lines.append(
                f"| {row['model']} | {row['seed']} | {values} | {row['epochs_trained']} "
                f"({row['best_epoch']}) "
                f"| {row['train_examples_per_second']:.0f} | {row['test_accuracy']:.4f} |"
            )
        lines += ["", *harness.table_head("model", "mean test accuracy", "sd")]
        for label in dict.fromkeys(r["model"] for r in report["accuracy"]):
            scores = [r["test_accuracy"] for r in report["accuracy"] if r["model"] == label]
            spread = f"{statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
            lines.append(f"| {label} | **{statistics.mean(scores):.4f}** | {spread} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News train.csv and test.csv")
    parser.add_argument(
        "--root", type=Path, default=None, help="pipeline root (default: a new folder under /tmp)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="epochs per variant, round-robin")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--accuracy-seeds", type=int, nargs="*", default=[42, 43, 44],
                        help="pipeline runs per default for test accuracy (none: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "throughput.json")
    args = parser.parse_args()
    machine = harness.machine("TensorFlow CPU")
    args.root = (args.root or Path(tempfile.mkdtemp(prefix="agnews-bench-throughput-"))).resolve()
    started = time.perf_counter()
    prepared = run_pipeline(
        build_config(
            {
                "pipeline": {"root": str(args.root), "seed": args.seed},
                "ingest": {"data": f"csv:{args.data.resolve()}"},
            }
        ),
        until="transform",
    )
    examples_dir = Path(prepared.artifact("transform", "transformed_examples").uri)
    model_input = read_model_input(Path(prepared.artifact("transform", "transform_graph").uri))
    splits, _ = notebook_baseline.load_splits(args.data)
    rows = prepared.artifact("ingest", "examples").properties
    for split in SPLITS:  # the notebook must see exactly the pipeline's rows
        if len(splits[split]) != rows[f"{split}_rows"]:
            raise SystemExit(
                f"notebook {split} rows {len(splits[split])} != ingest's {rows[f'{split}_rows']}"
            )
    table = throughput(variants(examples_dir, model_input, splits, args.seed), args.rounds)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(), "machine": machine,
              "data": str(args.data.resolve()), "train_rows": rows["train_rows"], "rounds": args.rounds,
              "throughput": table, "accuracy": accuracy(args, args.accuracy_seeds),
              "wall_seconds": time.perf_counter() - started}
    text = markdown(report)
    print(text)
    harness.write_results(args.out, report, text)


if __name__ == "__main__":
    main()
