"""Test accuracy and training throughput of every registered architecture at its default hyperparameters
(--no-tune), on one small budget: a quick side-by-side when an architecture is added (gru beside lstm/bilstm).

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_architectures.py --data ../shared/data/ag_news

Accuracy. The real pipeline (pipeline.runner.Runner) under one pipeline root: ingest -> validate -> transform
once, then tuner (search disabled: the registry's defaults, plus the variant's fixed hyperparameters) ->
trainer per variant, --epochs epochs with the trainer's early stopping on eval val_loss. Test accuracy is
Keras `evaluate` of the trainer's saved model on the transform's test split (every row of test.csv), as in
bench_models.py. One run per variant and --seeds value (pipeline.seed is part of the cache key, so a rerun on
the same root trains only new seeds): on ~5,000 training rows the seed alone moves accuracy by about a point.

Throughput. A fresh model per variant (same hyperparameters as its pipeline run, same seed) trains on the
bucketed train split (library.dataset.bucketed_batches, the trainer's input pipeline) for --throughput-rounds
epochs, alternating between variants (round-robin) so load from other processes hits all of them alike; the
tf.data cache is filled first. Reported: examples/s of each epoch (the first includes graph tracing) and of
the last round. The trainer's own examples/s per epoch (first seed; variants run one after another) is also
listed.

Writes benchmarks/results/architectures.json and architectures.md; the pipeline root is kept.
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

import keras
import notebook_baseline
from bench_models import keras_test_accuracy, run_pipeline

from contract.config_loading import build_config
from library.dataset import bucketed_batches
from library.layouts import SPLITS, ModelInputSpec, read_history, read_model_input
from library.models import architecture_names, build_model, fixed_hyperparameters, parse_fixed_hyperparameters

RESULTS_DIR = Path(__file__).parent / "results"
# name -> (architecture, fixed hyperparameters): each registry entry at its defaults, and gru both ways.
EXTRA_VARIANTS = {"gru, bidirectional": ("gru", ("bidirectional=true",))}
# the rest are equal defaults
SHOWN_HYPERPARAMETERS = ("embedding_dim", "units", "num_layers", "bidirectional")


def variants(names: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    chosen = {name: (name, ()) for name in names}
    chosen.update({label: spec for label, spec in EXTRA_VARIANTS.items() if spec[0] in names})
    return chosen


def pipeline_config(args, architecture: str, fixed: tuple[str, ...], seed: int):
    return build_config({
        "pipeline": {"root": str(args.root), "seed": seed},
        "ingest": {"data": f"csv:{args.data.resolve()}"},
        "tuner": {"architecture": architecture, "enabled": False, "fixed_hyperparameters": list(fixed)},
        "trainer": {"epochs": args.epochs, "early_stopping_patience": args.patience},
    })


def train_variant(args, label: str, architecture: str, fixed: tuple[str, ...], seed: int) -> dict:
    started = time.perf_counter()
    result = run_pipeline(pipeline_config(args, architecture, fixed, seed), until="trainer")
    model = result.artifact("trainer", "model")
    model_run = result.artifact("trainer", "model_run")
    history = read_history(model_run.uri)
    examples_dir = Path(result.artifact("transform", "transformed_examples").uri)
    row = {
        "variant": label, "architecture": architecture, "seed": seed, "run_id": result.run_id,
        "trainer_cached": result.step("trainer").state == "cached",  # trained by an earlier invocation
        "hyperparameters": result.artifact("tuner", "best_hyperparameters").properties["values"],
        "parameters": model.properties["parameters"], "epochs_trained": model.properties["epochs_trained"],
        "best_epoch": model.properties["best_epoch"], "val_accuracy": model.properties["val_accuracy"],
        "trainer_examples_per_second_per_epoch": [e["examples_per_second"] for e in history["epochs"]],
        "step_seconds": {s.step: round(s.seconds, 1) for s in result.steps if s.state == "ran"},
        "seconds": time.perf_counter() - started,
    }
    row.update(keras_test_accuracy(Path(model.uri), examples_dir))
    print(f"== {label}: test accuracy {row['test_accuracy']:.4f} ({row['seconds']:.0f}s)", flush=True)
    return row


def throughput(args, rows: list[dict], examples_dir: Path, model_input: ModelInputSpec) -> dict:
    models, timers, batches = {}, {}, {}
    for row in rows:
        values = row["hyperparameters"]
        batches[row["variant"]] = bucketed_batches(examples_dir, "train", values["batch_size"], shuffle=True,
                                                   seed=args.seeds[0])
        for _ in batches[row["variant"]].dataset:  # fill the tf.data cache before timing
            pass
        keras.utils.set_random_seed(args.seeds[0])
        models[row["variant"]] = build_model(row["architecture"], fixed_hyperparameters(values), model_input)
        timers[row["variant"]] = notebook_baseline.EpochSeconds()
    for round_index in range(args.throughput_rounds):
        for name, model in models.items():
            model.fit(batches[name].dataset, epochs=1, verbose=0, callbacks=[timers[name]])
            print(f"throughput round {round_index + 1}: {name}: {timers[name].seconds[-1]:.1f}s", flush=True)
    return {name: {"examples": batches[name].num_examples,
                   "examples_per_second_per_epoch": [batches[name].num_examples / s for s in timer.seconds]}
            for name, timer in timers.items()}


def markdown(report: dict) -> str:
    data = report["data"]
    lines = [
        f"# Architectures at their defaults ({report['date']})",
        "",
        *harness.provenance(report),
        f"Wall time: {report['wall_seconds'] / 60:.1f} min (1-minute load average "
        f"{report['load_at_end']:.1f} at "
        "the end)",
        "",
        f"Data: {data['source']}: train {data['rows']['train']} + eval {data['rows']['eval']} rows "
        "(the ingest's "
        f"content-hashed 5% of train.csv), test {data['rows']['test']} rows (test.csv, all used).",
        "",
        "Budget: --no-tune (the registry's default hyperparameters), trainer at most "
        f"{report['epochs']} epochs, "
        f"early stopping on eval val_loss (patience {report['patience']}, best weights kept), seeds "
        f"{', '.join(str(seed) for seed in report['seeds'])}: one run per variant and seed. Throughput (seed "
        f"{report['seeds'][0]}): {report['throughput_rounds']} epochs per variant on the bucketed "
        "train split, "
        "alternating between variants, fresh models; the first epoch includes graph tracing. The machine is "
        "shared, so examples/s are noisy: compare within a round.",
        "",
        "| variant | hyperparameters | parameters | test accuracy, mean | per seed | eval accuracy per "
        "seed | "
        "epochs (best) per seed | examples/s per round-robin epoch | trainer examples/s per epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_variant: dict[str, list[dict]] = {}
    for row in report["runs"]:
        by_variant.setdefault(row["variant"], []).append(row)
    for variant, rows in by_variant.items():
        first = rows[0]
        hyper = ", ".join(f"{name} {first['hyperparameters'][name]}" for name in SHOWN_HYPERPARAMETERS
                          if name in first["hyperparameters"])
        speeds = report["throughput"].get(variant, {}).get("examples_per_second_per_epoch", [])
        accuracies = [row["test_accuracy"] for row in rows]
        lines.append(
            f"| {variant} | {hyper} | {first['parameters']:,} | **{statistics.mean(accuracies):.4f}** | "
            + ", ".join(f"{x:.4f}" for x in accuracies) + " | "
            + ", ".join(f"{row['val_accuracy']:.3f}" for row in rows) + " | "
            + ", ".join(f"{row['epochs_trained']} ({row['best_epoch']})" for row in rows) + " | "
            + ", ".join(f"{x:.0f}" for x in speeds) + " | "
            + ", ".join(f"{x:.0f}" for x in first["trainer_examples_per_second_per_epoch"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="folder with AG News train.csv and test.csv (required unless --render)"
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="pipeline root (default: a new folder under /tmp)"
    )
    parser.add_argument("--architectures", nargs="+", default=list(architecture_names()),
                        choices=architecture_names())
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--throughput-rounds", type=int, default=2, help="0 skips the round-robin throughput")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "architectures.json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown table from the existing --out JSON (no training)")
    args = parser.parse_args()
    if args.render:
        harness.render_only(args.out, markdown)
        return
    if args.data is None:
        parser.error("--data is required")
    machine = harness.machine("TensorFlow CPU")
    args.root = (args.root or Path(tempfile.mkdtemp(prefix="agnews-bench-architectures-"))).resolve()
    started = time.perf_counter()

    runs_by_variant = variants(args.architectures)
    for architecture, fixed in runs_by_variant.values():
        parse_fixed_hyperparameters(architecture, fixed)  # a bad variant fails before any training
    prepared = run_pipeline(
        pipeline_config(args, args.architectures[0], (), args.seeds[0]), until="transform"
    )
    examples = prepared.artifact("ingest", "examples").properties
    examples_dir = Path(prepared.artifact("transform", "transformed_examples").uri)
    model_input = read_model_input(Path(prepared.artifact("transform", "transform_graph").uri))

    runs = [train_variant(args, label, architecture, fixed, seed)
            for label, (architecture, fixed) in runs_by_variant.items() for seed in args.seeds]
    first_seed = [row for row in runs if row["seed"] == args.seeds[0]]
    speeds = throughput(args, first_seed, examples_dir, model_input) if args.throughput_rounds else {}

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(), "machine": machine,
        "data": {"source": str(args.data.resolve()), "rows": {s: examples[f"{s}_rows"] for s in SPLITS}},
        "epochs": args.epochs, "patience": args.patience, "seeds": args.seeds,
        "throughput_rounds": args.throughput_rounds, "pipeline_root": str(args.root),
        "runs": runs, "throughput": speeds,
        "wall_seconds": time.perf_counter() - started, "load_at_end": os.getloadavg()[0],
    }
    text = markdown(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, report, text)
    print(f"pipeline root kept: {args.root}")


if __name__ == "__main__":
    main()
