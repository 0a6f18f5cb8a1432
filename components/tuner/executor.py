"""Tuner component: a KerasTuner search over one architecture's hyperparameters, scored on the eval split.

Trains each trial on the train split (a seeded subsample of at most train_subsample_rows) and scores it on the
eval split (a seeded subsample of at most as many rows); the test split is never read. The trials share the
examples, cached in memory, so a search reads the files once. With `enabled: false` (--no-tune) it searches
nothing and outputs the architecture's defaults (with any fixed_hyperparameters applied), so the trainer
always takes the same path. With pretrained vectors (trainer.pretrained_embeddings) every trial starts from
them, embedding_dim is the file's, and whether they are fine-tuned and the dropout on the embedding output are
searched (library/models.py).

Outputs, under output_dir:
  best_hyperparameters/  best_hyperparameters.json {"architecture", "values", "tuned", "objective",
                         "best_score"},
                         trials.csv and trials.md (every trial: id, status, score, epochs, hyperparameters)
  tensorboard/           TensorBoard logs per trial (<trial_id>/execution0/): its curves and, in the HParams
                         plugin's format, its hyperparameters, so `tensorboard --logdir <run>/tuner` shows the
                         trials side by side in the HParams view
  tuner_state/           KerasTuner's oracle and trial files. The search runs with overwrite=False, so when
  the
                         runner hands the same output_dir back after an interruption, finished trials are kept
                         and the search continues where it stopped.

Re-tuning on a schedule (tuner.retune): a run does not always search. Whether it does is decided in one place,
retune_decision() in components/tuner/spec.py (also part of the step's cache key); a reuse writes the same
files with `reused: true` and `tuned_from` (the run whose search chose the values) and runs no trial.
search_fingerprint() is here: it reads the model registry and the vectors file, which the spec may not import.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

# for annotations; run() imports KerasTuner (and TensorFlow) when it runs
if TYPE_CHECKING:
    import keras_tuner

    from library.dataset import BucketExamples

from components.tuner.spec import EPISODE_PROPERTY, TUNED_INPUT, Decision, episode, retune_decision
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.config import TunerConfig
from contract.config_checks import ConfigError
from contract.names import BEST_HYPERPARAMETERS, TRANSFORM_GRAPH, TRANSFORMED_EXAMPLES
from contract.units import format_duration
from library import embeddings
from library.layouts import (
    TRIALS_CSV_FILE,
    TRIALS_MARKDOWN_FILE,
    ModelInputSpec,
    bucket_files,
    read_best_hyperparameters,
    read_model_input,
    tensorboard_dir,
    write_best_hyperparameters,
)
from library.models import (
    architecture_names,
    build_model,
    check_hyperparameters,
    default_hyperparameters,
    describe_search_space,
    fixed_hyperparameters,
    hyperparameter_names,
    parse_fixed_hyperparameters,
    search_space,
)

STATE_DIR = "tuner_state"
# evaluation metrics do not depend on the batch size; larger batches are faster
EVAL_BATCH_SIZE = 256
HYPERBAND_FACTOR = 3


def _search_model(architecture: str, model_input: ModelInputSpec, examples_dir: Path, train: BucketExamples,
                  evaluation: BucketExamples, seed: int, embedding_matrix=None):
    """A KerasTuner HyperModel that builds a trial's model with the shared builder and fits it on the train
    examples, validating on the eval examples; every trial batches the same cached examples, so the files are
    read once per search. (Defined in a function: Keras is imported only when a search runs.)"""
    import keras
    import keras_tuner

    from library.dataset import bucketed_batches
    from library.progress import Progress

    class SearchModel(keras_tuner.HyperModel):
        progress = None

        def build(self, hp):
            # KerasTuner clears the Keras session before each trial; re-seeding gives every trial the same
            # start.
            keras.utils.set_random_seed(seed)
            return build_model(architecture, hp, model_input, embedding_matrix)

        def fit(self, hp, model, *args, **kwargs):
            batches = bucketed_batches(examples_dir, "train", hp.get("batch_size"), shuffle=True, seed=seed,
                                       examples=train)
            scored = bucketed_batches(
                examples_dir, "eval", EVAL_BATCH_SIZE, shuffle=False, examples=evaluation
            )
            started = time.monotonic()
            history = model.fit(batches.dataset, validation_data=scored.dataset, shuffle=False, **kwargs)
            # trials vary in epochs (Hyperband): the ETA is rough
            if self.progress is not None:
                self.trials_done += 1
                self.log(
                    f"tuner: trial {self.trials_done} ({len(history.history.get('loss', []))} epoch(s) x "
                    f"{batches.num_examples:,} rows) in {format_duration(time.monotonic() - started)}; "
                    "trials "
                    f"{self.progress.line(self.trials_done)} (rough)"
                )
            return history

        def track(self, max_trials: int, log) -> None:
            """Log a progress line with an ETA after each trial of this search."""
            self.progress, self.trials_done, self.log = Progress(max_trials), 0, log

    return SearchModel(name=architecture)


def _objective(name: str) -> keras_tuner.Objective:
    import keras_tuner
    return keras_tuner.Objective(name, direction="min" if name == "val_loss" else "max")


def _make_tuner(
    config: TunerConfig, hypermodel: keras_tuner.HyperModel, fixed: dict[str, Any], state_dir: Path, seed: int
) -> keras_tuner.Tuner:
    import keras_tuner
    common = dict(hypermodel=hypermodel, objective=_objective(config.objective),
                  # Fixed values are registered up front, so the oracle never varies them.
                  hyperparameters=fixed_hyperparameters(fixed), tune_new_entries=True, seed=seed,
                  directory=str(state_dir), project_name=config.architecture, overwrite=False)
    if config.algorithm == "random":
        return keras_tuner.RandomSearch(max_trials=config.max_trials, **common)
    if config.algorithm == "bayesian":
        return keras_tuner.BayesianOptimization(max_trials=config.max_trials, **common)
    # Hyperband brackets (1 .. max_epochs epochs) repeat until max_trials trials have run: max_trials is the
    # budget of every algorithm.
    tuner = keras_tuner.Hyperband(max_epochs=config.max_epochs, factor=HYPERBAND_FACTOR,
                                  hyperband_iterations=None, **common)
    tuner.oracle.max_trials = config.max_trials
    return tuner


def _trial_rows(oracle, architecture: str, default_epochs: int, pretrained: bool) -> list[dict[str, Any]]:
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial_id": trial_id, "status": trial.status,
               "score": trial.score if trial.score is not None and math.isfinite(trial.score) else None,
               "epochs": values.get("tuner/epochs", default_epochs),
               "continues_trial": values.get("tuner/trial_id", "")}
        row.update({name: values.get(name, "") for name in hyperparameter_names(architecture, pretrained)})
        rows.append(row)
    return rows


def _best_trial(rows: list[dict[str, Any]], objective: str) -> dict[str, Any] | None:
    scored = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not scored:
        return None
    sign = 1 if objective == "val_loss" else -1
    # ties: the earliest trial
    return min(scored, key=lambda r: (sign * r["score"], r["trial_id"]))


def _write_trials(out: Path, rows: list[dict[str, Any]], architecture: str, heading: str,
                  best_id: str | None, pretrained: bool) -> None:
    columns = (["trial_id", "status", "score", "epochs", "continues_trial"]
               + hyperparameter_names(architecture, pretrained))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / TRIALS_CSV_FILE).write_text(buffer.getvalue(), encoding="utf-8")

    def cell(value: Any) -> str:
        if value is None or value == "":
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"# {heading}", ""]
    if rows:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            marker = " (best)" if row["trial_id"] == best_id else ""
            lines.append(
                "| " + " | ".join(cell(row[c]) + (marker if c == "trial_id" else "") for c in columns) + " |"
            )
    else:
        lines.append("No trials: the search was disabled (--no-tune); the architecture's defaults were used.")
    (out / TRIALS_MARKDOWN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _remove_trial_checkpoints(state_dir: Path) -> None:
    # Trial weights only matter while the search runs (Hyperband continues trials from them); the trainer
    # retrains from scratch, so after a finished search they are dead weight in the published folder.
    for checkpoint in state_dir.rglob("checkpoint.weights.h5"):
        checkpoint.unlink()


@functools.lru_cache(maxsize=4)
def _vectors_fingerprint(path: str, size: int, modified_ns: int) -> str | None:
    # keyed on the file's size and time: hashed once per process
    return embeddings.external_fingerprint(path)


def search_fingerprint(config: TunerConfig) -> str:
    """What a search explores and how: the architecture and its search space as the registry defines it
    (library/models.py), the fixed values, the pretrained vectors' content, the algorithm, budget and
    objective. Hyperparameters are only reused by a run whose search fingerprint is theirs. Loads no Keras."""
    vectors = None
    if config.pretrained_embeddings:
        stat = os.stat(embeddings.check_vectors_file(config.pretrained_embeddings))
        vectors = _vectors_fingerprint(config.pretrained_embeddings, stat.st_size, stat.st_mtime_ns)
    facts = {"architecture": config.architecture,
             "space": describe_search_space(config.architecture, pretrained=vectors is not None),
             "fixed_hyperparameters": sorted(config.fixed_hyperparameters), "pretrained_embeddings": vectors,
             **{name: getattr(config, name) for name in ("algorithm", "max_trials", "max_epochs",
                                                         "train_subsample_rows", "objective")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _reuse(previous: Artifact, out: Path, decision: Decision, runtime: Runtime,
           answered: dict | None) -> dict[str, Artifact]:
    """The earlier search's result and trial tables, marked as reused; no trial runs."""
    source = Path(previous.uri)
    result = {**read_best_hyperparameters(source), "reused": True,
              "tuned_from": previous.properties.get("tuned_from")}
    write_best_hyperparameters(out, result)
    for name in (TRIALS_CSV_FILE, TRIALS_MARKDOWN_FILE):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    runtime.log(f"tuner: {decision.detail}: {result['values']}")
    kept = (
        "architecture",
        "objective",
        "best_score",
        "best_trial",
        "values",
        "search_fingerprint",
        "tuned_from",
        "tuned_at",
    )
    return {BEST_HYPERPARAMETERS: Artifact(BEST_HYPERPARAMETERS, out, {
        **{k: v for k, v in previous.properties.items() if k in kept or k.startswith("embeddings_")},
        "tuned": True, "reused": True, "retune": decision.detail, "trials": 0, "completed_trials": 0,
        "runs_since_search": int(previous.properties.get("runs_since_search", 0)) + 1,
        **({EPISODE_PROPERTY: answered} if answered else {})})}


def check_config(config: TunerConfig) -> None:
    """The architecture is one of the model registry's (checked here, where it is used, so the configuration
    schema does not import the registry and an edit of the models re-runs only the steps that build them)."""
    if config.architecture not in architecture_names():
        raise ConfigError(f"tuner.architecture (--model) must be one of {', '.join(architecture_names())}, "
                          f"got {config.architecture!r}")


def external_fingerprint(config: TunerConfig) -> str | None:
    """The pretrained vectors' content is part of the cache key (the path alone could hide a changed file)."""
    return embeddings.external_fingerprint(config.pretrained_embeddings)


def run(
    inputs: dict[str, Artifact], output_dir: Path, config: TunerConfig, runtime: Runtime
) -> dict[str, Artifact]:
    out = Path(output_dir) / BEST_HYPERPARAMETERS
    out.mkdir(parents=True, exist_ok=True)
    decision = retune_decision(inputs, config)
    if config.enabled and not decision.search:
        # no TensorFlow needed
        return _reuse(inputs[TUNED_INPUT], out, decision, runtime, episode(inputs, decision, runtime.run_id))
    if config.enabled:
        runtime.log(f"tuner: {decision.detail}")
    examples_dir = Path(inputs[TRANSFORMED_EXAMPLES].uri)
    transform_graph_dir = Path(inputs[TRANSFORM_GRAPH].uri)
    model_input = read_model_input(transform_graph_dir)
    # fail before any trial rather than in each one; test is never opened
    for split in ("train", "eval"):
        bucket_files(examples_dir, split)
    architecture = config.architecture
    pretrained, fixed = _pretrained_and_fixed(config, transform_graph_dir, model_input, runtime)
    pretrained_dim = pretrained.alignment.dimension if pretrained else None

    if not config.enabled:
        values = {**default_hyperparameters(architecture, pretrained_dim), **fixed}
        best_score, best_id, rows = None, None, []
        runtime.log(f"tuner: search disabled; {architecture} default hyperparameters {values}")
        heading = f"Tuning trials: {architecture} (no search)"
    else:
        values, best_score, best_id, rows = _search(config, model_input, examples_dir, fixed, pretrained,
                                                    Path(output_dir), runtime)
        heading = (f"Tuning trials: {architecture} ({config.algorithm} search, score = {config.objective} "
                   f"on the eval split)")

    values = check_hyperparameters(architecture, values, pretrained is not None)
    fingerprint = search_fingerprint(config)
    result = {"architecture": architecture, "values": values, "tuned": bool(config.enabled),
              "objective": config.objective, "best_score": best_score, "search_fingerprint": fingerprint,
              "reused": False}
    write_best_hyperparameters(out, result)
    _write_trials(out, rows, architecture, heading, best_id, pretrained is not None)
    completed = sum(1 for r in rows if r["status"] == "COMPLETED")
    # Where and when this search ran: what a later reuse names and how old the policy finds it (kept out of
    # the files, so the same search gives the same bytes).
    searched = {"tuned_from": runtime.run_id, "tuned_at": time.time(), "runs_since_search": 0} \
        if config.enabled else {}
    return {BEST_HYPERPARAMETERS: Artifact(BEST_HYPERPARAMETERS, out, {
        "architecture": architecture, "tuned": bool(config.enabled), "objective": config.objective,
        "best_score": best_score, "best_trial": best_id, "trials": len(rows), "completed_trials": completed,
        "values": values, "search_fingerprint": fingerprint, "reused": False, "retune": decision.detail,
        **searched, **(pretrained.properties() if pretrained else {}),
        **({EPISODE_PROPERTY: answered} if (answered := episode(inputs, decision, runtime.run_id)) else {})})}


def _pretrained_and_fixed(config: TunerConfig, transform_graph_dir: Path, model_input,
                          runtime: Runtime) -> tuple[Any, dict[str, Any]]:
    """The pretrained vectors (or None) and the hyperparameters tuner.fixed_hyperparameters pins, checked
    against each other."""
    pretrained = None
    if config.pretrained_embeddings:
        pretrained = embeddings.prepare(
            config.pretrained_embeddings, transform_graph_dir, model_input, runtime.seed
        )
        runtime.log(
            f"tuner: pretrained vectors {pretrained.path} ({pretrained.alignment.dimension} dimensions), "
            f"{pretrained.alignment.vocab_coverage:.1%} of the vocabulary covered"
        )
    try:
        fixed = parse_fixed_hyperparameters(config.architecture, config.fixed_hyperparameters,
                                            pretrained is not None)
    except ValueError as error:
        raise ComponentError(f"tuner.fixed_hyperparameters: {error}") from None
    if pretrained:
        embeddings.check_fixed_dimension(fixed, pretrained.alignment.dimension, pretrained.path)
    return pretrained, fixed


def _search(config: TunerConfig, model_input, examples_dir: Path, fixed: dict[str, Any], pretrained,
            output_dir: Path, runtime: Runtime) -> tuple[dict[str, Any], float, str, list[dict[str, Any]]]:
    """Runs (or resumes) the KerasTuner search; returns the best trial's complete values, its score and id,
    and a row per trial."""
    import keras  # heavy libraries are imported in run(), not at the top (see contract/artifacts.py)

    from library.dataset import bucket_examples
    architecture = config.architecture
    pretrained_dim = pretrained.alignment.dimension if pretrained else None
    state_dir = Path(output_dir) / STATE_DIR
    if (state_dir / architecture).is_dir():
        runtime.log(f"tuner: resuming the search kept in {state_dir}; finished trials are not rerun")
    # Trials train on at most train_subsample_rows train rows and are scored on at most as many eval rows
    # (seeded subsets with each split's length distribution): at 1.2M rows, 20,000 of the 59,716 eval rows.
    train = bucket_examples(
        examples_dir, "train", max_examples=config.train_subsample_rows, seed=runtime.seed
    )
    evaluation = bucket_examples(examples_dir, "eval", max_examples=config.train_subsample_rows,
                                 seed=runtime.seed)
    hypermodel = _search_model(architecture, model_input, examples_dir, train, evaluation, runtime.seed,
                               pretrained.alignment.matrix if pretrained else None)
    try:
        tuner = _make_tuner(config, hypermodel, fixed, state_dir, runtime.seed)
        runtime.log(
            f"tuner: plan: {config.algorithm} search, up to {config.max_trials} trials x up to "
            f"{config.max_epochs} epochs on {train.num_examples:,} of {train.available:,} train rows, "
            f"scored on {evaluation.num_examples:,} of {evaluation.available:,} eval rows; an ETA "
            f"follows each trial"
        )
        hypermodel.track(config.max_trials, runtime.log)
        # KerasTuner gives a TensorBoard callback a folder per trial and adds the HParams plugin's callback.
        logs = keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir(output_dir)))
        tuner.search(epochs=config.max_epochs, verbose=2, callbacks=[logs])
    # KerasTuner stops after several consecutive failed trials
    except RuntimeError as error:
        raise ComponentError(f"hyperparameter search failed: {error}") from None
    rows = _trial_rows(tuner.oracle, architecture, config.max_epochs, pretrained is not None)
    best = _best_trial(rows, config.objective)
    if best is None:
        messages = [t.message for t in tuner.oracle.trials.values() if t.message]
        raise ComponentError(f"no tuning trial completed with a finite {config.objective}"
                             + (f"; last error:\n{messages[-1]}" if messages else ""))
    best_values = {k: v for k, v in tuner.oracle.trials[best["trial_id"]].hyperparameters.values.items()
                   if not k.startswith("tuner/")}
    # Re-reading the space through the builder's own definition completes and orders the values.
    values = search_space(architecture, fixed_hyperparameters(best_values), pretrained_dim)
    best_score, best_id = float(best["score"]), best["trial_id"]
    _remove_trial_checkpoints(state_dir)
    runtime.log(f"tuner: best trial {best_id} of {len(rows)}: {config.objective} {best_score:.4f}, {values}")
    return values, best_score, best_id, rows
