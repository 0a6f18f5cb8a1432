"""Validate's checks of a stream's spans: the drift of each new span from the rest of the window and its data
quality (library/drift.py), and which spans are refused.

The new spans are those ingest read in this run (ingested or re-ingested: a late span is checked too) and the
newest span of the window; each is compared with the window's other spans. In a first run every span is new and
nothing is established yet, so only the newest span's drift is measured (against the rest), as before; the data
quality of every new span is checked in any run.

A span is refused when a refusing data-quality check fails with `validate.on_quality: fail` (the check's name
is the reason: empty_span, duplicate_rows, test_overlap), or when it drifts with `validate.on_drift: fail`
(reason drift), unless it is in `validate.accepted_spans` ("name:sha256", filled in by the CLI from the spans
accepted in the metadata store): an accepted span is trained on and never refused again for the same bytes.
Refused spans fail the step with a ComponentError whose details name them; the pipeline quarantines them.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from contract.artifacts import ComponentError, Runtime
from contract.data_config import ValidateConfig
from contract.names import STATISTICS
from library import drift
from library.layouts import examples_files, read_counts, read_sources, span_examples_files, write_drift

LABEL = "label"
TEXT_FIELDS = ("title", "description")
DRIFT = "drift"  # the reason (and the ComponentError kind) of a span refused for drift
DATA_QUALITY = "data_quality"  # the ComponentError kind when every refused span failed a data-quality check


def _read(files: list[str]) -> tuple[drift.SpanProfile, Counter]:
    """(the drift profile, a Counter of drift.text_key per row) of the examples in `files`."""
    import tensorflow as tf  # imported where used: TF is slow to import
    profile, keys = drift.SpanProfile(), Counter()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        title, description = (features[name].bytes_list.value[0].decode("utf-8", "replace")
                              if features[name].bytes_list.value else "" for name in TEXT_FIELDS)
        profile.add(int(features[LABEL].int64_list.value[0]), f"{title} {description}")
        keys[drift.text_key(title, description)] += 1
    return profile, keys


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _new_spans(window: list[str], properties: dict) -> list[str]:
    fresh = set(properties.get("spans_ingested", [])) | set(properties.get("spans_reingested", []))
    return [span for span in window if span in fresh or span == window[-1]]


def _verdict(span: str, checks: list[dict], quality: list[dict], accepted: bool, config: ValidateConfig) -> str | None:
    """The reason the span is refused, or None (trained on)."""
    if accepted:
        return None
    failed = [row["check"] for row in quality if row["failed"] and row["refuses"]]
    if failed and config.on_quality == "fail":
        return failed[0]
    if any(row["drift"] for row in checks) and config.on_drift == "fail":
        return DRIFT
    return None


def check_spans(examples_dir: Path, properties: dict, statistics_dir: Path, config: ValidateConfig,
                runtime: Runtime) -> dict | None:
    """Checks the new spans of a stream's window (None for one folder); writes statistics/drift.json, then
    raises a ComponentError (kind drift or data_quality, details {"refused": [...]}) if a span is refused.
    Returns the record: {newest_span, compared_with, checks} of the newest span (as before) and `spans`:
    {span: {sha256, compared_with, checks, quality, accepted, drifted, refused}} for every new span."""
    window = read_counts(examples_dir).get("window")
    if not window:
        return None
    new = _new_spans(window, properties)
    established = [span for span in window if span not in new]
    # A first run has nothing established: the newest span against the rest, as before.
    drift_reference = {span: established for span in new} if established else {window[-1]: window[:-1]}
    read = {span: _read([f for split in ("train", "eval") for f in span_examples_files(examples_dir, span, split)])
            for span in window}
    test_keys = set(_read(examples_files(examples_dir, "test"))[1])
    sha256 = {name: record["sha256"] for name, record in read_sources(examples_dir).items()}
    accepted = set(config.accepted_spans)
    span_counts = read_counts(examples_dir).get("spans", {})  # ingest's per-span counts: its quarantined rows
    spans = {}
    for span in new:
        reference = drift_reference.get(span)
        checks = drift.verdict(drift.measure(read[span][0], [read[r][0] for r in reference],
                                             config.drift.length_min_rows),
                               config.drift.thresholds()) if reference else []
        others = reference or [other for other in window if other != span]
        quality = drift.quality(read[span][1], test_keys, [read[other][0].rows for other in others],
                                {"row_count_change": config.quality.row_count_change,
                                 "bad_row_share": config.quality.bad_row_share,
                                 "duplicate_share": config.quality.duplicate_share,
                                 "test_overlap_share": config.quality.test_overlap_share},
                                bad_rows=span_counts.get(span, {}).get("quarantined_rows"))
        is_accepted = f"{span}:{sha256.get(span)}" in accepted
        spans[span] = {"sha256": sha256.get(span), "compared_with": reference or [], "checks": checks,
                       "quality": quality, "accepted": is_accepted, "drifted": any(r["drift"] for r in checks),
                       "refused": _verdict(span, checks, quality, is_accepted, config)}
        _log(span, spans[span], config, runtime)
    newest = spans[window[-1]]
    record = {"newest_span": window[-1], "compared_with": newest["compared_with"], "checks": newest["checks"],
              "spans": spans}
    write_drift(statistics_dir, record)  # also when refusing: the failed attempt's folder keeps the verdict
    refused = [{"span": span, "sha256": facts["sha256"], "reason": facts["refused"],
                "drift": {row["measure"]: row["value"] for row in facts["checks"]},
                "quality": {row["check"]: row["value"] for row in facts["quality"]}}
               for span, facts in spans.items() if facts["refused"]]
    if refused:
        named = "; ".join(f"{row['span']} ({_why(spans[row['span']], row['reason'])})" for row in refused)
        kind = DRIFT if any(row["reason"] == DRIFT for row in refused) else DATA_QUALITY
        raise ComponentError(
            f"validate: refused span(s) {named}: nothing trained or pushed; they are quarantined and left out of "
            "later windows until `agnews-pipeline spans accept NAME` (or `spans reject NAME`)", kind,
            {"refused": refused}, facts={STATISTICS: drift_properties(record)})
    return record


def drift_properties(record: dict) -> dict:
    """The statistics artifact's drift properties of a check_spans record; also the facts of a refusal, so a
    refused run's metrics, report and history show what was measured."""
    return {
        "drift_detected": any(row["drift"] for row in record["checks"]),
        "drift": {row["measure"]: row["value"] for row in record["checks"]},
        "drift_checks": record["checks"], "drift_span": record["newest_span"],
        "drifted_spans": [span for span, facts in record["spans"].items() if facts["drifted"]],
        "span_checks": {span: {"sha256": facts["sha256"], "accepted": facts["accepted"],
                               "drifted": facts["drifted"],
                               "drift": {row["measure"]: row["value"] for row in facts["checks"]},
                               "quality": {row["check"]: row["value"] for row in facts["quality"]}}
                        for span, facts in record["spans"].items()}}


def _why(facts: dict, reason: str) -> str:
    if reason == DRIFT:
        return ", ".join(f"{row['measure']} = {row['value']:.4f} > threshold {row['threshold']}"
                         for row in facts["checks"] if row["drift"]) + " (validate.on_drift=fail)"
    row = next(row for row in facts["quality"] if row["check"] == reason)
    return f"{reason} {row['value']:.4f} > threshold {row['threshold']} (validate.on_quality=fail)"


def _log(span: str, facts: dict, config: ValidateConfig, runtime: Runtime) -> None:
    if facts["checks"]:
        shown = "; ".join(f"{row['measure']} {_shown(row['value'])} (threshold {row['threshold']})"
                          for row in facts["checks"])
        runtime.log(f"validate: drift of span {span} against {len(facts['compared_with'])} earlier span(s): {shown}")
    failed = [row for row in facts["quality"] if row["failed"]]
    if failed:
        runtime.log(f"WARNING: validate: span {span} data quality: " + "; ".join(
            f"{row['check']} {row['value']:.4f} > threshold {row['threshold']}" for row in failed))
    drifted = [row for row in facts["checks"] if row["drift"]]
    if drifted and facts["refused"] is None:
        named = ", ".join(f"{row['measure']} = {row['value']:.4f} > threshold {row['threshold']}" for row in drifted)
        why = ("accepted with `agnews-pipeline spans accept`" if facts["accepted"]
               else f"validate.on_drift={config.on_drift}")
        runtime.log(f"WARNING: validate: span {span} drifted from the rest of the window: {named} "
                    f"({why}: training anyway)")
