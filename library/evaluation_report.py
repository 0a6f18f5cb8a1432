"""The evaluator's figures and Markdown report: confusion matrix and training curves (matplotlib, files only),
and report.md from metrics.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from library.layouts import CLASS_NAMES, CONFUSION_MATRIX_FILE, HISTORY_FILE, TRAINING_CURVES_FILE


def _pyplot():
    import matplotlib

    # files only; no display
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: list[list[int]], path: Path) -> None:
    plt = _pyplot()
    counts = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=30, ha="right")
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title("Confusion matrix (test split)")
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > counts.max() / 2 else "black")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def training_series(history: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(epoch, value), ...]} for the loss and accuracy curves of a history.json.

    Reads the trainer's form ({"epochs": [{"epoch": 1, "loss": ..., "val_accuracy": ...}, ...], ...}) and
    Keras' History.history form ({"loss": [...], "val_accuracy": [...], ...}). Other per-epoch values
    (throughput, learning rate) are not curves of model quality and are left out.
    """
    def is_curve(key: str) -> bool:
        return "loss" in key or "accuracy" in key

    series: dict[str, list[tuple[int, float]]] = {}
    epochs = (history or {}).get("epochs")
    if isinstance(epochs, list) and all(isinstance(e, dict) for e in epochs):
        for position, epoch in enumerate(epochs, start=1):
            for key, value in epoch.items():
                if is_curve(key) and isinstance(value, (int, float)):
                    series.setdefault(key, []).append((int(epoch.get("epoch", position)), float(value)))
        return series
    for key, values in (history or {}).items():
        if is_curve(key) and isinstance(values, list) and all(isinstance(v, (int, float)) for v in values):
            series[key] = [(position, float(value)) for position, value in enumerate(values, start=1)]
    return series


def plot_training_curves(history: dict[str, Any], path: Path) -> None:
    """Loss curves on the left, accuracy curves on the right, the best epoch (if recorded) marked."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for key, points in sorted(training_series(history).items()):
        axes = loss_axes if "loss" in key else metric_axes
        axes.plot([epoch for epoch, _ in points], [value for _, value in points], marker="o", label=key)
    best_epoch = (history or {}).get("best_epoch")
    for axes, title in ((loss_axes, "loss"), (metric_axes, "accuracy")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if isinstance(best_epoch, int) and axes.lines:
            axes.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch ({best_epoch})")
        if axes.lines:
            axes.legend()
        else:
            axes.text(
                0.5, 0.5, f"no data in {HISTORY_FILE}", ha="center", va="center", transform=axes.transAxes
            )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": metrics["accuracy"], "loss": metrics["loss"], "macro_f1": metrics["macro_f1"],
            "examples": metrics["examples"]}


def render_report(metrics: dict[str, Any]) -> str:
    overall = metrics["overall"]
    lines = [
        "# Evaluation report",
        "",
        f"**{'BLESSED' if metrics['blessed'] else 'NOT BLESSED'}** — {metrics['reason']}",
        "",
        f"Test split: {metrics['examples']} examples.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {overall['accuracy']:.4f} |",
        f"| loss | {overall['loss']:.4f} |",
        f"| macro-F1 | {overall['macro_f1']:.4f} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, values in overall["per_class"].items():
        lines.append(f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | {values['f1']:.4f} "
                     f"| {values['support']} |")
    lines += _bucket_lines(metrics)
    lines += _baseline_lines(metrics)
    lines += comparison_lines(metrics)
    thresholds = metrics["thresholds"]
    lines += [
        "",
        "## Blessing",
        "",
        f"Thresholds: accuracy >= {thresholds['min_accuracy']}; not significantly worse than the baseline on "
        f"the same rows (one-sided exact McNemar, significance {thresholds.get('significance', 0)}); at most "
        f"{thresholds['max_accuracy_drop']} below the anchor (the best of the baseline and the last "
        f"{thresholds.get('anchor_versions', 0)} served versions on the same rows).",
        "",
        *gate_lines(metrics.get("gate")),
        f"Decision: {'blessed' if metrics['blessed'] else 'not blessed'} — {metrics['reason']}",
        "",
        "## Figures",
        "",
        f"![confusion matrix]({CONFUSION_MATRIX_FILE})",
        "",
        f"![training curves]({TRAINING_CURVES_FILE})",
        "",
    ]
    return "\n".join(lines)


def _bucket_lines(metrics: dict[str, Any]) -> list[str]:
    """The section on the length buckets, with a warning when their sizes differ from the test split's."""
    lines = ["", "## By length bucket (tokens after the transform)", "",
             "| bucket | examples | accuracy | loss | macro-F1 |", "|---|---|---|---|---|"]
    for name, values in metrics["length_buckets"].items():
        lines.append(f"| {name} | {values['examples']} | {values['accuracy']:.4f} | {values['loss']:.4f} "
                     f"| {values['macro_f1']:.4f} |")
    counts = metrics["bucket_counts"]
    if counts["evaluated"] != counts["transformed_test_split"]:
        lines += [
            "",
            f"Warning: bucket sizes here {counts['evaluated']} differ from the transformed test split's "
            f"{counts['transformed_test_split']}.",
        ]
    return lines


def _baseline_lines(metrics: dict[str, Any]) -> list[str]:
    """The section comparing the candidate with the baseline (the previously blessed model), if any."""
    overall = metrics["overall"]
    lines = ["", "## Baseline", ""]
    baseline = metrics["baseline"]
    if baseline is None:
        lines.append("No baseline: there is no previously blessed model.")
    else:
        lines += ["| | candidate | baseline |", "|---|---|---|",
                  f"| accuracy | {overall['accuracy']:.4f} | {baseline['accuracy']:.4f} |",
                  f"| loss | {overall['loss']:.4f} | {baseline['loss']:.4f} |",
                  f"| macro-F1 | {overall['macro_f1']:.4f} | {baseline['macro_f1']:.4f} |",
                  "", f"Accuracy change: {baseline['accuracy_change']:+.4f}. "
                      f"Baseline model: `{baseline['model_uri']}`."]
    return lines


def gate_lines(gate: dict[str, Any] | None) -> list[str]:
    """The paired test and the anchor of the gate (library/paired_gate.py), when the evaluation has them."""
    if not gate:
        return []
    p_value, anchor = gate.get("p_value"), gate.get("anchor_accuracy")
    return [
        "- paired test versus the baseline: "
        + ("no baseline on the same rows" if p_value is None else f"McNemar p = {p_value:.4f}"),
        "- anchor: " + ("none yet" if anchor is None else f"{anchor:.4f} ({gate.get('anchor_name')})"),
        "",
    ]


def comparison_lines(metrics: dict[str, Any]) -> list[str]:
    """Candidate and baseline on the same rows: the fixed test set (gates the push) and a stream's newest span
    (its held-out rows; reported)."""
    newest = metrics.get("newest_span")
    if not newest:
        return []
    baseline = metrics["baseline"]

    def row(name, examples, candidate, base):
        change = "-" if base is None else f"{candidate - base:+.4f}"
        return (
            f"| {name} | {examples} | {candidate:.4f} | {'-' if base is None else f'{base:.4f}'} | {change} |"
        )

    return ["", "## Accuracy on the same rows: fixed test set and newest span", "",
            "| rows | examples | candidate | baseline | change |", "|---|---|---|---|---|",
            row("fixed test set (gates the push)", metrics["examples"], metrics["accuracy"],
                baseline["accuracy"] if baseline else None),
            row(f"newest span {newest['span']} (held-out rows)", newest["examples"], newest["accuracy"],
                newest["baseline_accuracy"])]
