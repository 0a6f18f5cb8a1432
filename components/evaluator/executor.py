"""Evaluator: measures the candidate serving model on the test split with TensorFlow Model Analysis and
decides whether it is blessed (good enough to push).

The candidate and, when there is one, the served model (the baseline, the highest version in the serving
folder) are two models of one TFMA evaluation over the raw test examples, fed through their signature for
offline batches (`batch_tf_example`: the served graph and weights, the model part without XLA, whose
compilation per batch shape cost about 5 s per model load; the same outputs within 1e-6), so what is measured
is what will be served. Metrics are computed
overall and per length bucket: each test example gets a `length_bucket` feature (bucket_<upper>, the
transform's bucketing of its token count, obtained from the candidate's `transform_features` signature) in a
scratch copy of the test split that TFMA slices on.

Blessing: TFMA's validation of the overall slice (accuracy >= min_accuracy), then the paired gate of
library/paired_gate.py on per-row correctness of the same test rows: not significantly worse than the baseline
(the served model; McNemar), and at most max_accuracy_drop below the anchor, the best of the baseline and the
last served versions (their per-row results come with the `anchor_blessings` input: recorded properties, no
model is reloaded). The candidate's own per-row results are recorded on its blessing for later anchors. Not
blessed is a normal outcome, not an error: the pusher reads the blessing and skips the push.

Outputs:
  evaluation/  metrics.json (accuracy, loss, macro_f1, overall, length_buckets, baseline, blessed, ...),
               report.md, confusion_matrix.png, training_curves.png, tfma/ (TFMA's own output)
  blessing/    blessing.json = {blessed, reason, accuracy, baseline_accuracy, thresholds}; properties also
               p_value, anchor_accuracy, test_rows (fingerprint), test_row_count, correct_rows (packed bits)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluator.tfma_metrics import (
    BASELINE,
    BUCKET_FEATURE,
    CANDIDATE,
    LABEL_KEY,
    OVERALL,
    blessing_from_validation,
    make_eval_config,
    read_tfma_metrics,
    run_tfma,
)
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.config import EvaluatorConfig
from contract.names import (
    ANCHOR_BLESSINGS,
    BASELINE_MODEL,
    BLESSING,
    EVALUATION,
    EXAMPLES,
    MODEL,
    MODEL_RUN,
    TRANSFORMED_EXAMPLES,
)
from library.evaluation_report import (
    headline_metrics,
    plot_confusion_matrix,
    plot_training_curves,
    render_report,
)
from library.layouts import (
    CLASS_NAMES,
    CONFUSION_MATRIX_FILE,
    EVALUATION_REPORT_FILE,
    EXAMPLE_FILE_SUFFIX,
    TFMA_DIR,
    TRAINING_CURVES_FILE,
    bucket_dir_name,
    bucket_files,
    bucket_of,
    example_file_pattern,
    examples_files,
    existing_serving_model_dir,
    read_counts,
    read_history,
    read_model_input,
    span_examples_files,
    split_dir,
    write_blessing,
    write_metrics,
)
from library.paired_gate import RowResults, judge, row_order


def run(inputs: dict[str, Artifact], output_dir: Path, config: EvaluatorConfig,
        runtime: Runtime) -> dict[str, Artifact]:
    """Measures the candidate (and the baseline) with TFMA and the paired gate; writes evaluation/ and
    blessing/ (see the module's docstring)."""
    output_dir = Path(output_dir)
    candidate_dir = existing_serving_model_dir(inputs[MODEL].uri)
    baseline = inputs.get(BASELINE_MODEL)
    baseline_dir = existing_serving_model_dir(baseline.uri) if baseline is not None else None
    upper_bounds = list(read_model_input(inputs[MODEL].uri).bucket_upper_bounds)
    test_files = _test_files(inputs[EXAMPLES].uri)
    history = read_history(inputs[MODEL_RUN].uri)

    evaluation_dir = output_dir / EVALUATION
    blessing_dir = output_dir / BLESSING
    scratch_dir = output_dir / ".evaluator_tmp"
    for folder in (evaluation_dir, blessing_dir, scratch_dir):
        folder.mkdir(parents=True, exist_ok=True)

    # Each model is loaded once here and its signatures are passed down (TFMA loads its own copies).
    candidate_model = load_serving_model(candidate_dir)
    baseline_model = load_serving_model(baseline_dir) if baseline_dir is not None else None
    eval_examples = scratch_dir / f"test_with_length_bucket{EXAMPLE_FILE_SUFFIX}"
    bucket_counts, transformed_counts = _bucketed_test_split(
        test_files, candidate_model, upper_bounds, eval_examples, Path(inputs[TRANSFORMED_EXAMPLES].uri),
        runtime)
    runtime.log(f"evaluator: {sum(bucket_counts.values())} test examples, buckets {bucket_counts}; "
                f"baseline: {baseline_dir if baseline_dir else 'none (first blessing)'}")

    tfma_dir = evaluation_dir / TFMA_DIR
    eval_config = _eval_config(config, candidate_model, baseline_model)
    run_tfma(eval_examples, candidate_dir, baseline_dir, eval_config, tfma_dir, runtime.beam_args)
    candidate_rows = row_results(test_files, candidate_model)
    baseline_rows = row_results(test_files, baseline_model) if baseline_model is not None else None

    newest_span = evaluate_newest_span(inputs["examples"].uri, candidate_model, baseline_model, runtime)
    shutil.rmtree(scratch_dir)
    slices = _tfma_slices(tfma_dir)
    candidate = slices[CANDIDATE][OVERALL]
    baseline_metrics = slices.get(BASELINE, {}).get(OVERALL) if baseline_dir else None
    blessed, reason, verdict, gate = _bless(tfma_dir, candidate, baseline_metrics, candidate_rows,
                                            baseline_rows, inputs.get(ANCHOR_BLESSINGS) or [], config)
    runtime.log(f"evaluator: accuracy {candidate['accuracy']:.4f}, macro-F1 {candidate['macro_f1']:.4f}; "
                f"{'BLESSED' if blessed else 'NOT blessed'}: {reason}")

    thresholds = {"min_accuracy": config.min_accuracy, "max_accuracy_drop": config.max_accuracy_drop,
                  "significance": config.significance, "anchor_versions": config.anchor_versions}
    metrics = {**_metrics(candidate, slices[CANDIDATE], upper_bounds, bucket_counts, transformed_counts,
                          baseline, baseline_metrics),
               "newest_span": newest_span, "gate": gate, "thresholds": thresholds, "blessed": blessed,
               "reason": reason}
    write_metrics(evaluation_dir, metrics)
    plot_confusion_matrix(candidate["confusion_matrix"], evaluation_dir / CONFUSION_MATRIX_FILE)
    plot_training_curves(history, evaluation_dir / TRAINING_CURVES_FILE)
    (evaluation_dir / EVALUATION_REPORT_FILE).write_text(render_report(metrics), encoding="utf-8")

    baseline_accuracy = None if baseline_metrics is None else baseline_metrics["accuracy"]
    write_blessing(blessing_dir, blessed=blessed, reason=reason, accuracy=candidate["accuracy"],
                   baseline_accuracy=baseline_accuracy, thresholds=thresholds)
    return _artifacts(evaluation_dir, blessing_dir, candidate, baseline_accuracy, newest_span, blessed,
                      reason, verdict, candidate_rows)


def _tfma_slices(tfma_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """TFMA's metrics per model and slice; none overall for the candidate fails the step."""
    slices = read_tfma_metrics(tfma_dir)
    if OVERALL not in slices.get(CANDIDATE, {}):
        raise ComponentError(f"TFMA wrote no overall metrics for the candidate under {tfma_dir}")
    return slices


def _metrics(candidate: dict[str, Any], candidate_slices: dict[str, Any], upper_bounds: list[int],
             bucket_counts: dict[str, int], transformed_counts: dict[str, int], baseline: Artifact | None,
             baseline_metrics: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json's measurements: the candidate overall and per length bucket, and the baseline's."""
    return {
        "split": "test",
        "examples": sum(bucket_counts.values()),
        # the headline numbers, also inside "overall"
        "accuracy": candidate["accuracy"],
        "loss": candidate["loss"],
        "macro_f1": candidate["macro_f1"],
        "class_names": list(CLASS_NAMES),
        "overall": candidate,
        "length_buckets": {name: candidate_slices[name] for name in map(bucket_dir_name, upper_bounds)
                           if name in candidate_slices},
        "bucket_counts": {"evaluated": bucket_counts, "transformed_test_split": transformed_counts},
        "baseline": None if baseline_metrics is None else {
            "model_uri": str(baseline.uri), **headline_metrics(baseline_metrics),
            "accuracy_change": candidate["accuracy"] - baseline_metrics["accuracy"]},
    }


def _artifacts(evaluation_dir: Path, blessing_dir: Path, candidate: dict[str, Any],
               baseline_accuracy: float | None, newest_span: dict[str, Any] | None, blessed: bool,
               reason: str, verdict,
               candidate_rows: RowResults) -> dict[str, Artifact]:
    """The evaluation and blessing artifacts with the properties the store keeps (the blessing's per-row
    results are later anchors' baseline)."""
    return {
        EVALUATION: Artifact(EVALUATION, evaluation_dir, {
            "accuracy": candidate["accuracy"], "loss": candidate["loss"], "macro_f1": candidate["macro_f1"],
            **({} if baseline_accuracy is None else {"baseline_accuracy": baseline_accuracy}),
            **({} if newest_span is None else {
                "newest_span": newest_span["span"], "newest_span_accuracy": newest_span["accuracy"],
                "newest_span_baseline_accuracy": newest_span["baseline_accuracy"]})}),
        BLESSING: Artifact(BLESSING, blessing_dir, {
            "blessed": blessed, "reason": reason, "accuracy": candidate["accuracy"],
            "baseline_accuracy": baseline_accuracy, "p_value": verdict.p_value,
            "anchor_accuracy": verdict.anchor_accuracy, "test_rows": candidate_rows.rows,
            "test_row_count": len(candidate_rows.correct), "correct_rows": candidate_rows.packed()}),
    }


def _test_files(examples_uri: Path) -> list[str]:
    """The test split's example files; none fails the step."""
    test_files = examples_files(examples_uri, "test")
    if not test_files:
        raise ComponentError("no test examples: nothing matches "
                             f"{example_file_pattern(split_dir(examples_uri, 'test'))}")
    return test_files


def _bucketed_test_split(test_files: list[str], candidate_model, upper_bounds: list[int],
                         eval_examples: Path, transformed_examples_dir: Path,
                         runtime: Runtime) -> tuple[dict[str, int], dict[str, int]]:
    """Writes the test examples with their length bucket for TFMA to slice on; returns the rows per bucket,
    and the transformed test split's (a difference is warned about). An empty test split fails the step."""
    bucket_counts = write_bucketed_eval_examples(test_files, candidate_model, upper_bounds, eval_examples)
    if sum(bucket_counts.values()) == 0:
        raise ComponentError(f"the test split ({', '.join(test_files)}) holds no examples")
    transformed_counts = transformed_test_bucket_counts(transformed_examples_dir)
    if transformed_counts != bucket_counts:
        runtime.log(
            f"evaluator: WARNING: length buckets of the test examples {bucket_counts} differ from the "
            f"transformed test split's {transformed_counts}"
        )
    return bucket_counts, transformed_counts


def _bless(tfma_dir: Path, candidate: dict[str, Any], baseline_metrics: dict[str, Any] | None,
           candidate_rows: RowResults, baseline_rows: RowResults | None, anchor_blessings: list[Artifact],
           config: EvaluatorConfig) -> tuple[bool, str, Any, dict[str, Any]]:
    """(blessed, reason, the paired gate's verdict, its facts for metrics.json): TFMA's absolute bar first,
    then the paired gate against the baseline and the anchor (library/paired_gate.py)."""
    blessed, reason = blessing_from_validation(tfma_dir, candidate, baseline_metrics, config)
    anchors = recorded_results(anchor_blessings)
    verdict = judge(candidate_rows, baseline_rows, anchors, min_accuracy=config.min_accuracy,
                    max_accuracy_drop=config.max_accuracy_drop, significance=config.significance)
    blessed, reason = (verdict.blessed, verdict.reason) if blessed else (False, reason)
    gate = {"p_value": verdict.p_value, "anchor_accuracy": verdict.anchor_accuracy,
            "anchor_name": verdict.anchor_name, "rows": candidate_rows.rows,
            "candidate_row_accuracy": candidate_rows.accuracy,
            "anchors": {name: r.accuracy for name, r in anchors.items() if r.rows == candidate_rows.rows}}
    return blessed, reason, verdict, gate


def evaluate_newest_span(examples_uri: Path, candidate_model, baseline_model,
                         runtime: Runtime) -> dict[str, Any] | None:
    """A stream's newest span: candidate and baseline on the same rows, its held-out eval rows (the
    content-hashed share training never fits on). None for a single folder.

    Reported, never gating: accuracy and loss (Keras' cross-entropy, probabilities clipped at 1e-7) are
    taken from the served signature's probabilities directly, without a second TFMA pipeline, whose start
    costs seconds for a few hundred rows."""
    window = read_counts(examples_uri).get("window")
    files = span_examples_files(examples_uri, window[-1], "eval") if window else []
    candidate = served_accuracy_and_loss(files, candidate_model) if files else None
    if not candidate or not candidate["examples"]:
        return None
    baseline = served_accuracy_and_loss(files, baseline_model) if baseline_model else None
    result = {
        "span": window[-1],
        **candidate,
        "baseline_accuracy": None if baseline is None else baseline["accuracy"],
        "accuracy_change": None if baseline is None else candidate["accuracy"] - baseline["accuracy"],
    }
    runtime.log(f"evaluator: newest span {window[-1]} ({result['examples']} held-out rows): accuracy "
                f"{result['accuracy']:.4f}" + ("" if baseline is None else
                                               f", baseline {baseline['accuracy']:.4f}"))
    return result


# ----------------------------------------------------------------------------------------------------------
# Per-row results (the paired gate)


def _eval_config(config: EvaluatorConfig, candidate_model, baseline_model):
    """TFMA's configuration, each model through its export's signature for offline batches."""
    from library.export import batch_signature_name

    baseline_signature = batch_signature_name(baseline_model.signatures) if baseline_model else None
    return make_eval_config(config, batch_signature_name(candidate_model.signatures), baseline_signature)


def load_serving_model(serving_dir: Path):
    """The serving SavedModel, loaded (about 0.3 s even for the tiny model): the functions below take it, so
    one evaluation loads each model once."""
    import tensorflow as tf
    return tf.saved_model.load(str(serving_dir))


def served_predictions(files: list[str], serving_model,
                       batch_size: int = 512) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(serialized rows, probabilities [N, classes], labels [N]) of the loaded serving model's tf.Example
    signature for offline batches (what is served, without XLA's compilations) on gzipped TFRecord example
    files."""
    import tensorflow as tf

    from library.export import batch_signature

    signature = batch_signature(serving_model)
    serialized, probabilities, labels = [], [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        probabilities.append(signature(examples=batch)["probabilities"].numpy())
        labels.append(tf.io.parse_example(batch, {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)})[
            LABEL_KEY].numpy())
        serialized.extend(batch.numpy())
    if not serialized:
        return [], np.zeros((0, len(CLASS_NAMES)), np.float32), np.zeros(0, np.int64)
    return serialized, np.concatenate(probabilities), np.concatenate(labels)


def served_accuracy_and_loss(files: list[str], serving_model) -> dict[str, Any]:
    """{examples, accuracy, loss} of the serving model on example files (loss as Keras'
    SparseCategoricalCrossentropy on probabilities: the true class's probability clipped to [1e-7, 1])."""
    _, probabilities, labels = served_predictions(files, serving_model)
    if not len(labels):
        return {"examples": 0, "accuracy": None, "loss": None}
    true_class = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"examples": int(len(labels)),
            "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
            "loss": float(-np.mean(np.log(true_class)))}


def row_results(test_files: list[str], serving_model) -> RowResults:
    """Which test rows the serving model classifies right, in library/paired_gate.py's row order."""
    serialized, probabilities, labels = served_predictions(test_files, serving_model)
    order, rows = row_order(serialized)
    return RowResults(rows, (np.argmax(probabilities, axis=1) == labels)[order])


def anchor_facts(inputs: dict[str, Any], config: EvaluatorConfig) -> list:
    """The anchors this evaluation is judged against (the served versions' recorded per-row results): part of
    the evaluator's cache key, since they are no input of its lineage (dag.ServedResolver)."""
    return sorted(
        (
            [
                blessing.properties.get("served_version"),
                blessing.properties.get("test_rows"),
                blessing.properties.get("correct_rows"),
            ]
            for blessing in inputs.get(ANCHOR_BLESSINGS) or []
        ),
        key=json.dumps,
    )


def recorded_results(blessings: list[Artifact]) -> dict[str, RowResults]:
    """{"version N": results} from the recorded properties of the served versions' blessings (older blessings
    without per-row results are left out)."""
    results = {}
    for blessing in blessings:
        properties = blessing.properties
        if properties.get("correct_rows") and properties.get("test_rows"):
            name = f"version {properties.get('served_version', '?')}"
            results[name] = RowResults.from_packed(properties["test_rows"], properties["correct_rows"],
                                                   int(properties["test_row_count"]))
    return results


# ----------------------------------------------------------------------------------------------------------
# Inputs


def write_bucketed_eval_examples(test_files: list[str], serving_model, upper_bounds: list[int],
                                 destination: Path, batch_size: int = 512) -> dict[str, int]:
    """Copies the raw test examples to `destination` (gzipped TFRecord) with a `length_bucket` feature added.

    The token count comes from the serving model's own transform, and the bucket from the transform's
    bucketing rule, so each example lands in the bucket the transform wrote it to. Returns examples per
    bucket.
    """
    import tensorflow as tf  # TensorFlow and TFMA are imported where used (see contract/artifacts.py)

    from library.export import TRANSFORM_SIGNATURE
    transform = serving_model.signatures[TRANSFORM_SIGNATURE]
    counts: dict[str, int] = {}
    records = tf.data.TFRecordDataset(test_files, compression_type="GZIP").batch(batch_size)
    with tf.io.TFRecordWriter(str(destination), options="GZIP") as writer:
        for batch in records:
            lengths = transform(examples=batch)["length"].numpy()
            for serialized, length in zip(batch.numpy(), lengths):
                name = bucket_of(int(length), upper_bounds)
                example = tf.train.Example.FromString(serialized)
                example.features.feature[BUCKET_FEATURE].bytes_list.value[:] = [name.encode()]
                writer.write(example.SerializeToString())
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def transformed_test_bucket_counts(transformed_examples_dir: Path) -> dict[str, int]:
    """Examples per bucket folder of the transformed test split (a cross-check of the bucketing)."""
    import tensorflow as tf
    try:
        files_per_bucket = bucket_files(transformed_examples_dir, "test")
    # no bucket folders: a mismatch the caller reports as a warning, not a failure
    except ComponentError:
        return {}
    counts = {}
    for upper, files in files_per_bucket.items():
        if files:
            counts[bucket_dir_name(upper)] = int(
                tf.data.TFRecordDataset(files, compression_type="GZIP")
                .reduce(np.int64(0), lambda count, _: count + 1)
                .numpy()
            )
    return {name: count for name, count in sorted(counts.items()) if count}
