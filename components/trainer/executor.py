"""Trainer component: trains the tuner's chosen architecture and hyperparameters and exports it for serving.

Trains on the train split with the bucketed input pipeline, validates on the eval split, stops early on
val_loss (keeping the best epoch's weights), under the tf.distribute strategy the configuration names; with
multi_worker_mirrored, on the workers of trainer.workers (library/multi_worker.py), every one of them running
train(), the one training code path.
With trainer.warm_start (default) and a blessed model in the store (the `base_model` input) whose architecture
and hyperparameters are the ones trained now, training starts from its weights, the embedding rows carried
over token by token (library/warm_start.py); --from-scratch turns it off for a run. A base that learned a span
since corrected or held out gives way to its newest clean ancestor, or to no warm start
(warm_start.clean_base); the model records the spans it was trained on (`training_spans`, and
model/lineage.json over its bases too). With trainer.pretrained_embeddings the embedding starts from those
vectors (library/embeddings.py), frozen, fine-tuned or unfrozen after N epochs (trainer.embeddings_trainable);
their coverage of the vocabulary and of the train split's tokens is recorded, and the exported SavedModel
holds the trained embedding (serving needs no vectors file).

Outputs, under output_dir:
  model/      keras/model.keras (Keras 3), hyperparameters.json (the best_hyperparameters.json trained),
              model_input.json (copy of the transform's), lineage.json (the spans it learned from),
              serving_model/ (SavedModel from library.export)
  model_run/  history.json (per-epoch metrics and examples/s, padding ratio of the input pipeline),
              logs/ (TensorBoard)

Where training starts from (pretrained vectors, a warm start) is in starting_point.py; how the model is fit
(capped epochs, the frozen and fine-tuning phases) in fitting.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

# for annotations; run() imports TensorFlow when it runs
if TYPE_CHECKING:
    import tensorflow as tf

from components.trainer import fitting, starting_point
from components.trainer.spec import BASE_MODEL_INPUT
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.config import TrainerConfig
from contract.names import (
    BEST_HYPERPARAMETERS,
    EXAMPLES,
    MODEL,
    MODEL_RUN,
    TRANSFORM_GRAPH,
    TRANSFORMED_EXAMPLES,
)
from library import embeddings, warm_start
from library.layouts import (
    keras_model_file,
    read_best_hyperparameters,
    read_history,
    read_model_input,
    serving_model_dir,
    tensorboard_dir,
    write_history,
    write_model_input,
    write_trained_hyperparameters,
)
from library.models import (
    architecture_names,
    build_model,
    check_hyperparameters,
    fixed_hyperparameters,
    search_space,
)

EVAL_BATCH_SIZE = 256


def _throughput_callback(examples_per_epoch: int):
    """A Keras callback measuring training examples per second of each epoch (from the epoch's start to its
    last training batch) and the batches it trained on into its `per_epoch` list."""
    import keras

    class Throughput(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.per_epoch: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._last_batch = time.perf_counter()
            self._batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self._last_batch = time.perf_counter()
            self._batches += 1

        def on_epoch_end(self, epoch, logs=None):
            seconds = max(self._last_batch - self._start, 1e-9)
            self.per_epoch.append(
                {
                    "train_seconds": seconds,
                    "examples_per_second": examples_per_epoch / seconds,
                    "batches": self._batches,
                }
            )

    return Throughput()


def _strategy(name: str) -> tf.distribute.Strategy:
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    try:
        # multi_worker_mirrored runs in worker processes (run())
        return tf.distribute.MirroredStrategy()
    except (RuntimeError, ValueError) as error:
        raise ComponentError(f"cannot create the {name!r} distribution strategy: {error}") from None


@contextlib.contextmanager
def _op_determinism():
    """Deterministic TF kernels while training, switched back afterwards: the flag is process-wide and other
    components running in the same process did not ask for it."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the public API can only switch it on
    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


def _read_hyperparameters(directory: Path) -> dict[str, Any]:
    chosen = read_best_hyperparameters(directory)
    if chosen.get("architecture") not in architecture_names() or not isinstance(chosen.get("values"), dict):
        raise ComponentError(f"{directory}: best_hyperparameters must name an architecture of "
                             f"{', '.join(architecture_names())} and hold a 'values' mapping")
    try:
        check_hyperparameters(chosen["architecture"], chosen["values"], pretrained=True)
    except ValueError as error:
        raise ComponentError(f"{directory}: best_hyperparameters: {error}") from None
    return chosen


def external_fingerprint(config: TrainerConfig) -> str | None:
    """The pretrained vectors' content is part of the cache key (the path alone could hide a changed file)."""
    return embeddings.external_fingerprint(config.pretrained_embeddings)


def train(
    examples_dir: Path,
    transform_graph_dir: Path,
    chosen: dict[str, Any],
    output_dir: Path | None,
    config: TrainerConfig,
    seed: int,
    log: Callable[[str], None],
    strategy,
    base_model_dir: Path | None = None,
    base_model_label: str = "",
) -> Any:
    """The one training code path, in the pipeline process or on each worker of a multi-worker job: builds the
    chosen model under `strategy` (starting from the model in base_model_dir when it matches: a warm start),
    fits it and writes under output_dir: model/ (the Keras model, the trained hyperparameters,
    model_input.json) and model_run/ (history.json, TensorBoard logs). output_dir None: a non-chief worker,
    which trains its share and writes nothing. Returns the trained model (None without output_dir)."""
    import keras
    model_input = read_model_input(transform_graph_dir)
    architecture = chosen["architecture"]
    pretrained, embedding_facts, frozen_epochs, chosen_values = starting_point.embedding_plan(
        chosen, config, transform_graph_dir, model_input, examples_dir, seed, log)
    pretrained_dim = pretrained.alignment.dimension if pretrained else None
    hp = fixed_hyperparameters(chosen_values)
    # complete: absent names take the defaults
    values = search_space(architecture, hp, pretrained_dim)
    model_dir, run_dir = _output_folders(output_dir)
    keras.utils.set_random_seed(seed)
    with _op_determinism():
        train, evaluation, padding = _datasets(examples_dir, values["batch_size"], config, seed)
        log(f"trainer: {architecture} {values} on {train.num_examples} train / {evaluation.num_examples} "
            f"eval examples, {strategy.num_replicas_in_sync} replica(s), padding ratio "
            f"{padding['padding_ratio']:.3f}")
        model, warm_facts = _build(architecture, hp, values, model_input, pretrained, strategy, config,
                                   base_model_dir, base_model_label, transform_graph_dir, log)
        workers = len(config.workers) if config.strategy == "multi_worker_mirrored" else 1
        steps = fitting.steps_per_epoch(train.num_examples, values["batch_size"], config.max_rows_per_epoch,
                                        workers)
        epoch_rows = train.num_examples if steps is None else steps * values["batch_size"] * workers
        throughput, callbacks = _callbacks(epoch_rows, run_dir, log)
        warm = "warm_start_from" in warm_facts
        patience = config.warm_start_patience if warm else config.early_stopping_patience
        _log_plan(log, config, train.num_examples, epoch_rows, steps, patience, warm)
        history, kept_epoch = fitting.fit_phases(model, train, evaluation, patience, callbacks, frozen_epochs,
                                                 steps, config, strategy, values["learning_rate"], log)
    if output_dir is None:
        return None
    facts = {"padding_ratio": padding["padding_ratio"], **embedding_facts, **warm_facts}
    _write_model(model, Path(output_dir), history, kept_epoch, throughput.per_epoch, architecture, patience,
                 config, facts, {
                     "padding": padding, "train_examples": train.num_examples, "rows_per_epoch": epoch_rows,
                     "steps_per_epoch": steps, "eval_examples": evaluation.num_examples,
                     "train_examples_per_bucket": train.examples_per_bucket,
                     "batch_size": values["batch_size"], "strategy": config.strategy,
                     "replicas": strategy.num_replicas_in_sync,
                     "workers": workers, "seed": seed})
    write_trained_hyperparameters(model_dir, {**chosen, "values": values})
    # the evaluator reads the bucket bounds from the model
    write_model_input(model_dir, model_input)
    return model


def _datasets(examples_dir: Path, batch_size: int, config: TrainerConfig, seed: int) -> tuple:
    """(the train split's bucketed batches, shuffled; the eval split's; the train pipeline's padding
    facts)."""
    from library.dataset import bucketed_batches, padding_ratio
    train = bucketed_batches(examples_dir, "train", batch_size, shuffle=True, seed=seed,
                             shuffle_buffer=config.shuffle_buffer)
    evaluation = bucketed_batches(examples_dir, "eval", EVAL_BATCH_SIZE, shuffle=False)
    # One pass over the real pipeline: what it pads, and it fills the cache before timing the epochs.
    return train, evaluation, padding_ratio(train.dataset)


def _callbacks(epoch_rows: int, run_dir: Path | None, log: Callable[[str], None]) -> tuple[Any, list]:
    """(the throughput callback, whose per_epoch list history.json records; every callback of fit: it, the
    progress lines and, in the process that writes run_dir, TensorBoard)."""
    import keras

    from library.progress import EpochProgress
    throughput = _throughput_callback(epoch_rows)
    callbacks = [throughput, EpochProgress(log, "trainer")]
    if run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir(run_dir))))
    return throughput, callbacks


def _output_folders(output_dir: Path | None) -> tuple[Path | None, Path | None]:
    """The model and model_run folders under output_dir, made with their subfolders; (None, None) on a worker
    that writes nothing."""
    if output_dir is None:
        return None, None
    model_dir, run_dir = Path(output_dir) / MODEL, Path(output_dir) / MODEL_RUN
    for folder in (keras_model_file(model_dir).parent, tensorboard_dir(run_dir)):
        folder.mkdir(parents=True, exist_ok=True)
    return model_dir, run_dir


def _build(architecture: str, hp, values: dict[str, Any], model_input, pretrained, strategy,
           config: TrainerConfig, base_model_dir: Path | None, base_model_label: str,
           transform_graph_dir: Path, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """The model built under `strategy`, warm-started from base_model_dir when given, and the warm-start facts
    for history.json."""
    # With no base, base_model_label says why (no blessed model yet, or none learned from valid spans).
    warm_facts = {"warm_start": "off (trainer.warm_start is false)"} if not config.warm_start else {
        "warm_start": f"none ({base_model_label or 'no blessed model yet'})"}
    with strategy.scope():
        model = build_model(
            architecture, hp, model_input, pretrained.alignment.matrix if pretrained else None
        )
        if base_model_dir is not None:
            warm_facts = starting_point.start_from_base(
                model,
                base_model_dir,
                base_model_label or str(base_model_dir),
                architecture,
                values,
                transform_graph_dir,
                model_input,
                log,
            )
    return model, warm_facts


def _log_plan(log: Callable[[str], None], config: TrainerConfig, train_rows: int, epoch_rows: int,
              steps: int | None, patience: int, warm: bool) -> None:
    """The line announcing how long training may take, before the first epoch."""
    rows = (f"{train_rows:,} rows" if steps is None else
            f"{epoch_rows:,} of the {train_rows:,} rows (trainer.max_rows_per_epoch; the next epoch "
            f"goes on where one stops)")
    log(f"trainer: plan: up to {config.epochs} epochs x {rows} (early stopping patience "
        f"{patience}{', warm start' if warm else ''}); an ETA follows each epoch; an epoch counts if it "
        f"lowers val_loss by more than {config.early_stopping_min_delta:g}")


def _write_model(model, output_dir: Path, history: dict, kept_epoch: int, per_epoch: list[dict],
                 architecture: str, patience: int, config: TrainerConfig, facts: dict[str, Any],
                 details: dict[str, Any]) -> None:
    """Writes model_run/history.json (a summary of the kept epoch, whose weights the model has, with `facts`,
    each epoch, `details`) and the Keras model."""
    epochs = [{"epoch": index + 1, **{k: float(v[index]) for k, v in history.items()},
               **per_epoch[index]} for index in range(len(history["loss"]))]
    best = epochs[kept_epoch - 1]
    summary = {
        "architecture": architecture, "epochs_trained": len(epochs), "best_epoch": best["epoch"],
        "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
        "stopped_early": len(epochs) < config.epochs, "early_stopping_patience": patience,
        "early_stopping_min_delta": config.early_stopping_min_delta,
        "mean_examples_per_second": sum(e["examples_per_second"] for e in epochs) / len(epochs), **facts,
    }
    write_history(Path(output_dir) / MODEL_RUN, {**summary, "epochs": epochs, **details})
    model.save(keras_model_file(Path(output_dir) / MODEL))


def _train_on_workers(config: TrainerConfig, chosen: dict[str, Any], examples_dir: Path,
                      transform_graph_dir: Path, output_dir: Path, base_dir: Path | None, base_label: str,
                      runtime: Runtime) -> Any:
    """Trains with multi_worker_mirrored on the workers of trainer.workers and returns the chief's model, read
    back from output_dir. The strategy needs a process whose TensorFlow has not started yet: the chief trains
    in a child."""
    import keras

    from library import multi_worker
    if runtime.pipeline_root is None:
        raise ComponentError(
            "trainer.strategy multi_worker_mirrored runs through the pipeline runner, which "
            "names the pipeline root the workers share"
        )
    job = {"workers": list(config.workers), "worker_timeout": config.worker_timeout, "seed": runtime.seed,
           "trainer": dataclasses.asdict(config), "hyperparameters": chosen,
           "examples_dir": str(examples_dir), "transform_graph_dir": str(transform_graph_dir),
           "output_dir": str(Path(output_dir).resolve()),
           "base_model_dir": str(base_dir) if base_dir else None, "base_model_label": base_label}
    multi_worker.train_on_workers(job, runtime.pipeline_root, runtime.log)
    return keras.saving.load_model(keras_model_file(Path(output_dir) / MODEL))


def run(
    inputs: dict[str, Artifact], output_dir: Path, config: TrainerConfig, runtime: Runtime
) -> dict[str, Artifact]:
    # heavy libraries are imported in run() and its steps, not at the top (see contract/artifacts.py)
    examples_dir = Path(inputs[TRANSFORMED_EXAMPLES].uri)
    transform_graph_dir = Path(inputs[TRANSFORM_GRAPH].uri)
    chosen = _read_hyperparameters(Path(inputs[BEST_HYPERPARAMETERS].uri))
    model_dir, run_dir = Path(output_dir) / MODEL, Path(output_dir) / MODEL_RUN
    examples = inputs.get(EXAMPLES)
    spans = dict(examples.properties.get("span_sha256") or {}) if examples is not None else {}
    held_out = set(examples.properties.get("spans_held_out") or []) if examples is not None else set()
    base = inputs.get(BASE_MODEL_INPUT) if config.warm_start else None
    base_dir, base_label = starting_point.clean_base(Path(base.uri) if base is not None else None, spans,
                                                     held_out, runtime)
    if config.strategy == "multi_worker_mirrored":
        model = _train_on_workers(config, chosen, examples_dir, transform_graph_dir, Path(output_dir),
                                  base_dir, base_label, runtime)
    else:
        model = train(
            examples_dir,
            transform_graph_dir,
            chosen,
            Path(output_dir),
            config,
            runtime.seed,
            runtime.log,
            _strategy(config.strategy),
            base_dir,
            base_label,
        )

    from library import export  # imported here: it loads TensorFlow Transform, which only export needs
    export.export_serving_model(model, transform_graph_dir, serving_model_dir(model_dir),
                                xla=config.export_xla)
    history = read_history(run_dir)
    model_facts = {k: v for k, v in history.items() if k.startswith(("embeddings_", "warm_start"))}
    warm_start.write_lineage(model_dir, spans, base_dir if "warm_start_from" in history else None)
    from library.dataset import predicted_class_counts
    predicted = predicted_class_counts(model, examples_dir, "eval", EVAL_BATCH_SIZE) if spans else None
    parameters = int(model.count_params())
    runtime.log(
        f"trainer: {history['epochs_trained']} epoch(s), best epoch {history['best_epoch']}: val_loss "
        f"{history['val_loss']:.4f}, val_accuracy {history['val_accuracy']:.4f}; {parameters:,} parameters"
    )
    return _artifacts(inputs, chosen, history, parameters, model_facts, spans, predicted, model_dir, run_dir)


def _artifacts(inputs: dict[str, Artifact], chosen: dict[str, Any], history: dict[str, Any], parameters: int,
               model_facts: dict[str, Any], spans: dict[str, str], predicted: dict | None, model_dir: Path,
               run_dir: Path) -> dict[str, Artifact]:
    """The model and model_run artifacts with the properties the store records for them."""
    return {
        MODEL: Artifact(
            MODEL,
            model_dir,
            {
                "architecture": chosen["architecture"],
                "epochs_trained": history["epochs_trained"],
                "best_epoch": history["best_epoch"],
                "val_accuracy": history["val_accuracy"],
                "val_loss": history["val_loss"],
                "parameters": parameters,
                **model_facts,
                # The search its hyperparameters came from (one search per drift episode: is its model
                # served?).
                "tuned_from": inputs[BEST_HYPERPARAMETERS].properties.get("tuned_from"),
                # What it was trained on (a stream's window: span name -> SHA-256): a backfill is judged by
                # it.
                **({"training_spans": spans} if spans else {}),
                # Its predicted-class mix on its window's held-out rows: validate's reference for the
                # label-free shift of the served model's predictions on a new span, computed once here.
                **({"eval_predicted_classes": predicted} if predicted else {}),
            },
        ),
        MODEL_RUN: Artifact(
            MODEL_RUN,
            run_dir,
            {
                k: history[k]
                for k in (
                    "epochs_trained",
                    "best_epoch",
                    "val_loss",
                    "val_accuracy",
                    "stopped_early",
                    "mean_examples_per_second",
                    "padding_ratio",
                )
            },
        ),
    }


def worker_main(root: Path, workers: tuple[str, ...], index: int, timeout: float) -> int:
    """`agnews-pipeline train-worker`: one worker of a multi-worker training job, training with this step's
    `train` (library/multi_worker.py owns the job file, the strategy and the bounded waits)."""
    from library import multi_worker
    return multi_worker.worker_main(root, workers, index, timeout, train)
