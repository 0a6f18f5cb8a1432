"""Test accuracy of the pipeline's models (each registered model; tuned and with default hyperparameters)
against the course notebook's recipe on the same rows, and training throughput of the bucketed input pipeline
against notebook-style padded batches. One invocation, one machine, one table.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_models.py --data ../shared/data/ag_news

Accuracy. The real pipeline runs through pipeline.runner.Runner, one Config per variant under one pipeline
root, so ingest -> validate -> transform run once and every later run reuses them from the cache; tuner ->
trainer run per architecture and per tuned/untuned (--until trainer: evaluator and pusher are not run). Test
accuracy is Keras' accuracy of the trainer's saved model (model/keras/model.keras, the early-stopping best
weights) on the transform's test split (test.csv, every row, in its length buckets). The notebook recipe
(benchmarks/notebook_baseline.py) trains on the same train rows, early-stops on the same eval rows and is
scored on the same test rows. Every model is trained once per --seeds value (tuner and trainer rerun from
scratch each time), and the table gives the mean, the spread and every seed's number: on ~5,000 training rows
the seed moves test accuracy by about a point, as much as some of the differences being compared.

Throughput. The default bilstm (batch size 64) is trained on the transformed train split with three input
pipelines, one fresh model each (same seed): library.dataset.bucketed_batches, and unbucketed_batches with
pad_to="batch" and pad_to="max_length". Epochs alternate between the three (round-robin), so load from other
processes on the machine hits all three alike; each pipeline's tf.data cache is filled before timing.
Reported: median examples/s over the rounds (the first round includes graph tracing) and the ratio to
bucketed.

Writes benchmarks/results/models.json and models.md; the pipeline root (with every trained model and its
serving SavedModel, for benchmarks/bench_serve.py --model-dir) is kept.
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

import keras  # Keras 3: the models are Keras 3 models
import notebook_baseline  # benchmarks/ is on sys.path when this script runs

from contract.config_loading import build_config
from library.dataset import bucketed_batches, padding_ratio, unbucketed_batches
from library.layouts import (
    KERAS_MODEL_FILE,
    SPLITS,
    ModelInputSpec,
    keras_model_file,
    read_model_input,
    serving_model_dir,
)
from library.models import architecture_names, build_model, default_hyperparameters, fixed_hyperparameters

RESULTS_DIR = Path(__file__).parent / "results"
TEST_BATCH_SIZE = 256
THROUGHPUT_BATCH_SIZE = 64


def pipeline_config(args, architecture: str, tuned: bool, seed: int):
    return build_config({
        "pipeline": {"root": str(args.root), "seed": seed},
        "ingest": {"data": f"csv:{args.data.resolve()}"},
        "tuner": {"architecture": architecture, "enabled": tuned, "algorithm": args.tuner_algorithm,
                  "max_trials": args.tuner_trials, "max_epochs": args.tuner_epochs},
        "trainer": {"epochs": args.epochs, "early_stopping_patience": args.patience},
    })


def run_pipeline(config, until: str, rerun: tuple[str, ...] = ()):
    return harness.run_pipeline(config, until, rerun, summary=True)


def keras_test_accuracy(model_dir: Path, examples_dir: Path) -> dict:
    """Accuracy and loss of the trainer's saved Keras model on the transformed test split."""
    model = keras.saving.load_model(keras_model_file(model_dir))
    test = bucketed_batches(examples_dir, "test", TEST_BATCH_SIZE, shuffle=False)
    loss, accuracy = model.evaluate(test.dataset, verbose=0)
    return {"test_accuracy": float(accuracy), "test_loss": float(loss), "test_rows": test.num_examples}


def pipeline_variant(args, architecture: str, tuned: bool, seed: int) -> dict:
    started = time.perf_counter()
    # tuner and trainer always run: the runner's cache key leaves out pipeline.seed, so another seed (or an
    # earlier invocation on the same root) would otherwise reuse a model trained with a different seed.
    result = run_pipeline(pipeline_config(args, architecture, tuned, seed), until="trainer",
                          rerun=("tuner", "trainer"))
    seconds = time.perf_counter() - started
    model = result.artifact("trainer", "model")
    hyper = result.artifact("tuner", "best_hyperparameters")
    model_run = result.artifact("trainer", "model_run")
    examples_dir = Path(result.artifact("transform", "transformed_examples").uri)
    row = {
        "model": f"pipeline {architecture} ({'tuned' if tuned else 'defaults, --no-tune'})",
        "architecture": architecture, "tuned": tuned, "seed": seed, "run_id": result.run_id,
        "hyperparameters": hyper.properties["values"], "tuner_best_score": hyper.properties.get("best_score"),
        "tuner_trials_completed": hyper.properties.get("completed_trials"),
        "epochs_trained": model.properties["epochs_trained"], "best_epoch": model.properties["best_epoch"],
        "val_accuracy": model.properties["val_accuracy"], "parameters": model.properties["parameters"],
        "train_examples_per_second": model_run.properties["mean_examples_per_second"],
        "step_seconds": {s.step: round(s.seconds, 1) for s in result.steps if s.state == "ran"},
        "steps_cached": [s.step for s in result.steps if s.state == "cached"],
        "model_dir": str(model.uri), "serving_model": str(serving_model_dir(model.uri)),
        "seconds": seconds,
    }
    row.update(keras_test_accuracy(Path(model.uri), examples_dir))
    print(
        f"== {row['model']} seed {seed}: test accuracy {row['test_accuracy']:.4f} ({seconds:.0f}s)",
        flush=True,
    )
    return row


def throughput(examples_dir: Path, model_input: ModelInputSpec, rounds: int, seed: int) -> dict:
    values = {**default_hyperparameters("bilstm"), "batch_size": THROUGHPUT_BATCH_SIZE}
    max_length = model_input.max_length
    pipelines = {
        "bucketed": bucketed_batches(examples_dir, "train", THROUGHPUT_BATCH_SIZE, shuffle=True, seed=seed),
        "unbucketed, padded to batch longest": unbucketed_batches(
            examples_dir, "train", THROUGHPUT_BATCH_SIZE, pad_to="batch", shuffle=True, seed=seed),
        f"unbucketed, padded to max_length {max_length}": unbucketed_batches(
            examples_dir, "train", THROUGHPUT_BATCH_SIZE, pad_to="max_length", max_length=max_length,
            shuffle=True, seed=seed),
    }
    models, timers, padding = {}, {}, {}
    for name, batches in pipelines.items():
        padding[name] = padding_ratio(batches.dataset)  # one pass also fills the tf.data cache before timing
        keras.utils.set_random_seed(seed)
        models[name] = build_model("bilstm", fixed_hyperparameters(values), model_input)
        timers[name] = notebook_baseline.EpochSeconds()
    for round_index in range(rounds):
        for name, batches in pipelines.items():
            models[name].fit(batches.dataset, epochs=1, verbose=0, callbacks=[timers[name]])
            print(f"throughput round {round_index + 1}: {name}: {timers[name].seconds[-1]:.1f}s", flush=True)
    rows = []
    for name, batches in pipelines.items():
        per_epoch = [batches.num_examples / s for s in timers[name].seconds]
        rows.append({"input_pipeline": name, "examples": batches.num_examples, "batches": batches.num_batches,
                     "padding_ratio": padding[name]["padding_ratio"],
                     "examples_per_second_per_epoch": per_epoch,
                     "median_examples_per_second": statistics.median(per_epoch)})
    bucketed = rows[0]["median_examples_per_second"]
    for row in rows:
        row["speed_vs_bucketed"] = row["median_examples_per_second"] / bucketed
    return {"hyperparameters": values, "rounds": rounds, "rows": rows}


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per model over its seeds: mean, sample standard deviation, min and max of test accuracy."""
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    rows = []
    for model, model_runs in by_model.items():
        accuracies = [r["test_accuracy"] for r in model_runs]
        rows.append({
            "model": model, "seeds": [r["seed"] for r in model_runs], "test_accuracy_per_seed": accuracies,
            "test_accuracy_mean": statistics.mean(accuracies),
            "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "test_accuracy_min": min(accuracies), "test_accuracy_max": max(accuracies),
            "val_accuracy_per_seed": [r["val_accuracy"] for r in model_runs],
            "epochs_trained_per_seed": [r["epochs_trained"] for r in model_runs],
            "best_epoch_per_seed": [r["best_epoch"] for r in model_runs],
            "mean_seconds": statistics.mean(r["seconds"] for r in model_runs),
        })
    return rows


def _hyper_text(values: dict) -> str:
    short = {"embedding_dim": "emb", "units": "units", "num_layers": "layers", "bidirectional": "bidi",
             "dropout": "drop", "recurrent_dropout": "rdrop", "learning_rate": "lr", "batch_size": "batch"}
    return ", ".join(f"{short.get(k, k)} {v:.2g}" if isinstance(v, float) else f"{short.get(k, k)} {v}"
                     for k, v in values.items())


def _model_text(run: dict) -> str:
    if "hyperparameters" in run:
        return _hyper_text(run["hyperparameters"])
    return (f"vocab {run['vocabulary_size']} (adapted on {run['adapt_texts']} texts), emb 128, 2x BiLSTM 64, "
            f"batch {run['batch_size']}")


def markdown(report: dict) -> str:
    budget, data = report["budget"], report["data"]
    seeds = ", ".join(str(x) for x in report["seeds"])
    lines = [
        f"# Model benchmarks ({report['date']})",
        "",
        *harness.provenance(report),
        f"Wall time: {report['wall_seconds'] / 60:.1f} min (ingest+validate+transform "
        f"{report['prepare_seconds']:.0f}s, pipeline variants {report['pipeline_seconds']:.0f}s, notebook "
        f"{report['notebook_seconds']:.0f}s, throughput {report['throughput_seconds']:.0f}s)",
        "",
        f"Data: {data['source']}: train.csv {data['csv_rows']['train']} rows -> train "
        f"{data['rows']['train']} "
        f"+ eval {data['rows']['eval']} (the ingest's content-hashed 5%); test.csv "
        f"{data['rows']['test']} rows, "
        f"all used for test accuracy; {data['quarantined_rows']} rows quarantined. Every model below "
        "trains on "
        "the same train rows, early-stops on the same eval rows and is scored on the same test rows.",
        "",
        f"Budget: tuner {budget['tuner_algorithm']} search, {budget['tuner_trials']} trials x "
        f"{budget['tuner_epochs']} epochs (objective val_loss on eval); trainer at most "
        f"{budget['epochs']} epochs, "
        f"early stopping on eval val_loss (patience {budget['patience']}, best weights kept). Notebook "
        "recipe: the "
        "same early stopping and epoch cap. "
        f"Seeds {seeds}: each seed reruns tuner and trainer (the notebook: its training) from scratch.",
        "",
        "Pipeline test accuracy: Keras `evaluate` of the trainer's saved model "
        f"(`model/{KERAS_MODEL_FILE}`) on the "
        "transform's test split (title + description token ids). Notebook: the model with its own "
        "TextVectorization on the raw test texts.",
        "",
        "## Test accuracy",
        "",
        "| model | test accuracy, mean ± sd | per seed | eval accuracy per seed | epochs trained (best) "
        "per seed | mean seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["accuracy"]:
        spread = f" ± {row['test_accuracy_std']:.4f}" if row["test_accuracy_std"] is not None else ""
        epochs = ", ".join(f"{e} ({best})" for e, best in zip(row["epochs_trained_per_seed"],
                                                              row["best_epoch_per_seed"]))
        lines.append(f"| {row['model']} | **{row['test_accuracy_mean']:.4f}**{spread} | "
                     + ", ".join(f"{x:.4f}" for x in row["test_accuracy_per_seed"]) + " | "
                     + ", ".join(f"{x:.3f}" for x in row["val_accuracy_per_seed"]) + f" | {epochs} | "
                     f"{row['mean_seconds']:.0f} |")
    lines += [
        "",
        "Hyperparameters trained, per seed (tuned rows: the search's best trial; its score is val_loss "
        "on eval after the trial's epochs):",
        "",
        *harness.table_head("model", "seed", "hyperparameters", "tuner best val_loss", "test accuracy"),
    ]
    for row in report["runs"]:
        score = f"{row['tuner_best_score']:.4f}" if row.get("tuner_best_score") is not None else ""
        lines.append(f"| {row['model']} | {row['seed']} | {_model_text(row)} | {score} | "
                     f"{row['test_accuracy']:.4f} |")
    throughput_report = report.get("throughput")
    if throughput_report:
        lines += [
            "",
            "## Training throughput (bilstm defaults, batch 64, transformed train split)",
            "",
            f"{throughput_report['rounds']} epochs per input pipeline, alternating (round-robin), one fresh "
            "model each; the first epoch includes graph tracing. Median epoch; ratio to bucketed from the "
            "same run. Padding ratio = padded positions / real tokens over one epoch.",
            "",
            "| input pipeline | padding ratio | examples/s per epoch | median examples/s | vs bucketed "
            "(medians) | vs bucketed, per round |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        bucketed = throughput_report["rows"][0]["examples_per_second_per_epoch"]
        for row in throughput_report["rows"]:
            per_epoch = ", ".join(f"{x:.0f}" for x in row["examples_per_second_per_epoch"])
            per_round = ", ".join(
                f"{x / b:.2f}x" for x, b in zip(row["examples_per_second_per_epoch"], bucketed)
            )
            lines.append(
                f"| {row['input_pipeline']} | {row['padding_ratio']:.3f} | {per_epoch} | "
                f"{row['median_examples_per_second']:.0f} | {row['speed_vs_bucketed']:.2f}x | {per_round} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="folder with AG News train.csv and test.csv (required unless --render)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="pipeline root (default: a new folder under /tmp, kept); an existing root's ingest, "
        "validate and transform are reused from its cache",
    )
    parser.add_argument("--architectures", nargs="+", default=list(architecture_names()),
                        choices=architecture_names())
    parser.add_argument("--tuner-algorithm", default="random", choices=("random", "hyperband", "bayesian"))
    parser.add_argument("--tuner-trials", type=int, default=4)
    parser.add_argument("--tuner-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8, help="trainer and notebook epoch cap")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42, 43, 44],
        help="one training per seed for every model; the first also seeds the throughput runs",
    )
    parser.add_argument("--throughput-rounds", type=int, default=3, help="0 skips the throughput benchmark")
    parser.add_argument("--skip-notebook", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "models.json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown table from the existing --out JSON (no training)")
    args = parser.parse_args()
    machine = harness.machine("TensorFlow CPU")  # the load before this benchmark adds its own
    if args.render:
        harness.render_only(args.out, markdown)
        return
    if args.data is None:
        parser.error("--data is required")
    args.root = (args.root or Path(tempfile.mkdtemp(prefix="agnews-bench-models-"))).resolve()
    started = time.perf_counter()

    # ingest -> validate -> transform once; every variant below reuses them from the cache.
    prepare_started = time.perf_counter()
    prepared = run_pipeline(pipeline_config(args, "bilstm", False, args.seeds[0]), until="transform")
    prepare_seconds = time.perf_counter() - prepare_started
    examples = prepared.artifact("ingest", "examples").properties
    examples_dir = Path(prepared.artifact("transform", "transformed_examples").uri)
    model_input = read_model_input(Path(prepared.artifact("transform", "transform_graph").uri))

    pipeline_started = time.perf_counter()
    runs = [pipeline_variant(args, architecture, tuned, seed)
            for architecture in args.architectures for tuned in (False, True) for seed in args.seeds]
    pipeline_seconds = time.perf_counter() - pipeline_started

    notebook_started = time.perf_counter()
    splits, bad_rows = notebook_baseline.load_splits(args.data)
    for split in SPLITS:  # the notebook must see exactly the pipeline's rows
        if len(splits[split]) != examples[f"{split}_rows"]:
            raise SystemExit(
                f"notebook {split} rows {len(splits[split])} != ingest's {examples[f'{split}_rows']}"
            )
    if not args.skip_notebook:
        for text in notebook_baseline.TEXT_CHOICES:
            for seed in args.seeds:
                run = notebook_baseline.train_and_evaluate(
                    splits, text, epochs=args.epochs, patience=args.patience, seed=seed
                )
                runs.append({**run, "seed": seed})
    notebook_seconds = time.perf_counter() - notebook_started

    throughput_started = time.perf_counter()
    bench_throughput = (throughput(examples_dir, model_input, args.throughput_rounds, args.seeds[0])
                        if args.throughput_rounds else None)
    throughput_seconds = time.perf_counter() - throughput_started

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": harness.command_line(),
        "machine": machine,
        "data": {"source": str(args.data.resolve()),
                 "csv_rows": {"train": examples["train_rows"] + examples["eval_rows"],
                              "test": examples["test_rows"]},
                 "rows": {s: examples[f"{s}_rows"] for s in SPLITS},
                 "quarantined_rows": examples["quarantined_rows"], "notebook_skipped_rows": bad_rows},
        "budget": {"tuner_algorithm": args.tuner_algorithm, "tuner_trials": args.tuner_trials,
                   "tuner_epochs": args.tuner_epochs, "epochs": args.epochs, "patience": args.patience},
        "seeds": args.seeds,
        "pipeline_root": str(args.root),
        "accuracy": summarize_runs(runs),
        "runs": runs,
        "throughput": bench_throughput,
        "prepare_seconds": prepare_seconds, "pipeline_seconds": pipeline_seconds,
        "notebook_seconds": notebook_seconds, "throughput_seconds": throughput_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    text = markdown(report)
    print(text)
    harness.write_results(args.out, report, text)
    print(f"pipeline root kept: {args.root}")


if __name__ == "__main__":
    main()
