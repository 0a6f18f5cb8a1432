"""The evaluator's TensorFlow Model Analysis glue: the EvalConfig (overall and per-length-bucket slices, the
min_accuracy threshold), the Beam job that evaluates the candidate and the baseline, and reading TFMA's
metrics, confusion matrices and validation result back (components/evaluator/executor.py runs them)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from contract.config import EvaluatorConfig
from library.layouts import CLASS_NAMES

CANDIDATE = "candidate"
BASELINE = "baseline"
LABEL_KEY = "label"
PREDICTION_KEY = "probabilities"
BUCKET_FEATURE = "length_bucket"
OVERALL = "overall"
CONFUSION_MATRIX_PLOT_NAME = "multi_class_confusion_matrix_plot"


def make_eval_config(config: EvaluatorConfig, candidate_signature: str, baseline_signature: str | None):
    """One EvalConfig for the candidate (and the baseline, unless its signature is None), each through its
    export's signature for offline batches (library/export.py batch_signature_name): overall and
    per-length-bucket slices; the accuracy thresholds apply to the overall slice only."""
    from google.protobuf import wrappers_pb2
    from tensorflow_model_analysis.proto import config_pb2

    def model_spec(name: str, is_baseline: bool):
        return config_pb2.ModelSpec(
            name=name,
            signature_name=baseline_signature if is_baseline else candidate_signature,
            label_key=LABEL_KEY,
            prediction_key=PREDICTION_KEY,
            model_type="tf_generic",
            is_baseline=is_baseline,
        )

    # TFMA checks the absolute bar; the comparison with the baseline and the anchor is the paired gate's.
    threshold = config_pb2.MetricThreshold(value_threshold=config_pb2.GenericValueThreshold(
        lower_bound=wrappers_pb2.DoubleValue(value=config.min_accuracy)))
    accuracy = config_pb2.MetricConfig(
        class_name="SparseCategoricalAccuracy", config=json.dumps({"name": "accuracy"}),
        per_slice_thresholds=[config_pb2.PerSliceMetricThreshold(
            slicing_specs=[config_pb2.SlicingSpec()], threshold=threshold)])
    metrics = [
        config_pb2.MetricConfig(class_name="ExampleCount"),
        accuracy,
        config_pb2.MetricConfig(
            class_name="SparseCategoricalCrossentropy", config=json.dumps({"name": "loss"})
        ),
        config_pb2.MetricConfig(
            class_name="MultiClassConfusionMatrixPlot",
            config=json.dumps({"name": CONFUSION_MATRIX_PLOT_NAME}),
        ),
    ]
    specs = [model_spec(CANDIDATE, False)] + ([model_spec(BASELINE, True)] if baseline_signature else [])
    return config_pb2.EvalConfig(
        model_specs=specs,
        slicing_specs=[config_pb2.SlicingSpec(), config_pb2.SlicingSpec(feature_keys=[BUCKET_FEATURE])],
        metrics_specs=[config_pb2.MetricsSpec(metrics=metrics)])


# Rows per model call in TFMA's extraction. Left unset, Beam's BatchElements starts at one row and grows
# slowly on the DirectRunner's small bundles: 3,800 test rows through two models took 31 s; with 512,
# 12 s, the same metrics to the last digit (benchmarks/results/evaluator_tfma_batch.md).
TFMA_BATCH_SIZE = 512


def run_tfma(
    examples_file: Path,
    candidate_dir: Path,
    baseline_dir: Path | None,
    eval_config,
    output_path: Path,
    beam_args: tuple[str, ...],
    batch_size: int | None = TFMA_BATCH_SIZE,
) -> None:
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from tfx_bsl.public import tfxio

    from library.beam_options import pipeline_options

    models = [
        tfma.default_eval_shared_model(
            eval_saved_model_path=str(candidate_dir), eval_config=eval_config, model_name=CANDIDATE
        )
    ]
    if baseline_dir is not None:
        models.append(tfma.default_eval_shared_model(eval_saved_model_path=str(baseline_dir),
                                                     eval_config=eval_config, model_name=BASELINE))
    # The raw serialized examples go to the model's tf.Example signature.
    source = tfxio.TFExampleRecord(
        file_pattern=str(examples_file),
        raw_record_column_name=tfma.ARROW_INPUT_COLUMN,
        telemetry_descriptors=["agnews_pipeline", "evaluator"],
    )
    with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
        _ = (pipeline
             | "ReadTestExamples" >> source.BeamSource(batch_size=batch_size)
             | "EvaluateAndWrite" >> tfma.ExtractEvaluateAndWriteResults(
                 eval_shared_model=models if len(models) > 1 else models[0], eval_config=eval_config,
                 output_path=str(output_path)))


def _slice_name(slice_key) -> str:
    if not slice_key.single_slice_keys:
        return OVERALL
    for key in slice_key.single_slice_keys:
        if key.column == BUCKET_FEATURE:
            return key.bytes_value.decode()
    return ",".join(f"{key.column}" for key in slice_key.single_slice_keys)


def _model_name(key) -> str:
    # With a single model (no baseline) TFMA leaves the model name empty.
    return key.model_name or CANDIDATE


def read_tfma_metrics(tfma_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{model name: {slice name ("overall" or bucket_<upper>): metrics}} from TFMA's output.

    Accuracy, loss and example count are TFMA's metrics; per-class precision/recall/F1 and macro-F1 are
    derived from TFMA's multi-class confusion matrix of the same slice.
    """
    import tensorflow_model_analysis as tfma

    values: dict[tuple[str, str], dict[str, float]] = {}
    for metrics_for_slice in tfma.load_metrics(str(tfma_dir)):
        name = _slice_name(metrics_for_slice.slice_key)
        for item in metrics_for_slice.metric_keys_and_values:
            if item.key.is_diff or not item.value.HasField("double_value"):
                continue
            values.setdefault((_model_name(item.key), name), {})[item.key.name] = (
                item.value.double_value.value
            )
    matrices: dict[tuple[str, str], np.ndarray] = {}
    for plots_for_slice in tfma.load_plots(str(tfma_dir)):
        name = _slice_name(plots_for_slice.slice_key)
        for item in plots_for_slice.plot_keys_and_values:
            if item.value.HasField("multi_class_confusion_matrix_at_thresholds"):
                classes = len(CLASS_NAMES)
                matrix = np.zeros((classes, classes), np.int64)
                # One matrix per threshold; the default single threshold 0.0 means "predicted = argmax".
                for entry in item.value.multi_class_confusion_matrix_at_thresholds.matrices[0].entries:
                    if 0 <= entry.actual_class_id < classes and 0 <= entry.predicted_class_id < classes:
                        matrix[entry.actual_class_id, entry.predicted_class_id] += round(
                            entry.num_weighted_examples
                        )
                matrices[(_model_name(item.key), name)] = matrix
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for (model_name, name), metric_values in values.items():
        matrix = matrices.get((model_name, name))
        if matrix is None or "accuracy" not in metric_values:
            continue
        results.setdefault(model_name, {})[name] = {
            "examples": int(round(metric_values.get("example_count", matrix.sum()))),
            "accuracy": metric_values["accuracy"],
            "loss": metric_values.get("loss", math.nan),
            **classification_metrics(matrix),
        }
    return results


def classification_metrics(confusion_matrix: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1 and their macro-F1 from a [actual, predicted] count matrix.

    A ratio with a zero denominator is 0. Macro-F1 averages the classes that occur as a label or a
    prediction (scikit-learn's convention), so a length bucket without, say, Sports examples is not
    penalised for it.
    """
    matrix = np.asarray(confusion_matrix, np.int64)
    per_class, f1_scores = {}, []
    for index, name in enumerate(CLASS_NAMES):
        true_positives = int(matrix[index, index])
        support, predicted = int(matrix[index].sum()), int(matrix[:, index].sum())
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted:
            f1_scores.append(f1)
    return {"macro_f1": float(np.mean(f1_scores)) if f1_scores else 0.0, "per_class": per_class,
            "confusion_matrix": matrix.tolist()}


def blessing_from_validation(tfma_dir: Path, candidate: dict[str, Any], baseline: dict[str, Any] | None,
                             config: EvaluatorConfig) -> tuple[bool, str]:
    """(blessed, reason) from TFMA's validation result of the absolute bar (min_accuracy); the comparison with
    the baseline and the anchor is library/paired_gate.py's."""
    import tensorflow_model_analysis as tfma

    validation = tfma.load_validation_result(str(tfma_dir))
    accuracy = candidate["accuracy"]
    if validation.validation_ok:
        return True, f"accuracy {accuracy:.4f} >= min_accuracy {config.min_accuracy:.4f}"
    problems = [
        f"{failure.metric_key.name} {failure.metric_value.double_value.value:.4f} is below min_accuracy "
        f"{config.min_accuracy:.4f}"
        for per_slice in validation.metric_validations_per_slice
        for failure in per_slice.failures
    ]
    if validation.missing_slices or validation.missing_thresholds or not problems:
        problems.append("TFMA validation failed: " + " ".join(str(validation).split())[:500])
    return False, "; ".join(problems)
