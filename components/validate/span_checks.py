"""Validate's checks of a stream's spans: the drift of each new span from what the served model learned and
its data quality (library/drift.py), and which spans are refused.

The new spans are those ingest read in this run (ingested or re-ingested: a late span is checked too) and the
newest span of the window. Each is compared with the training window of the served model (reference.py: its
spans' cached profiles, its vocabulary and its predicted-class mix). Before a model is served, each is
compared with the window's spans that are not new, and in a first run (every span new) only the newest span's
drift is measured, against the rest. The data quality of every new span is checked in any run.

A span is refused when a refusing data-quality check fails with `validate.on_quality: fail` (the check's name
is the reason: empty_span, duplicate_rows, test_overlap), or when it drifts with `validate.on_drift: fail`
(reason drift), unless it is in `validate.accepted_spans` ("name:sha256", filled in by the CLI from the spans
accepted in the metadata store): an accepted span is trained on and never refused again for the same bytes.
Refused spans fail the step with a ComponentError whose details name them; the pipeline quarantines them.
"""
from __future__ import annotations

from pathlib import Path

from components.validate import reference
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.data_config import ValidateConfig
from contract.names import EXAMPLES, STATISTICS
from library import drift, span_profiles
from library.layouts import examples_files, read_counts, read_sources, write_drift

# the reason (and the ComponentError kind) of a span refused for drift
DRIFT = "drift"
# the ComponentError kind when every refused span failed a data-quality check
DATA_QUALITY = "data_quality"


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _new_spans(window: list[str], properties: dict) -> list[str]:
    fresh = set(properties.get("spans_ingested", [])) | set(properties.get("spans_reingested", []))
    return [span for span in window if span in fresh or span == window[-1]]


def _verdict(
    span: str, checks: list[dict], quality: list[dict], accepted: bool, config: ValidateConfig
) -> str | None:
    """The reason the span is refused, or None (trained on)."""
    if accepted:
        return None
    failed = [row["check"] for row in quality if row["failed"] and row["refuses"]]
    if failed and config.on_quality == "fail":
        return failed[0]
    if any(row["drift"] for row in checks) and config.on_drift == "fail":
        return DRIFT
    return None


def check_spans(examples_dir: Path, inputs: dict[str, Artifact], statistics_dir: Path, config: ValidateConfig,
                runtime: Runtime) -> dict | None:
    """Checks the new spans of a stream's window (None for one folder); writes statistics/drift.json, then
    raises a ComponentError (kind drift or data_quality, details {"refused": [...]}) if a span is refused.
    Returns the record: {newest_span, reference, compared_with, checks} of the newest span (as before) and
    `spans`: {span: {sha256, compared_with, reference, checks, quality, accepted, drifted, refused}} for
    every new span."""
    window = read_counts(examples_dir).get("window")
    if not window:
        return None
    new = _new_spans(window, inputs[EXAMPLES].properties)
    sha256 = {name: record["sha256"] for name, record in read_sources(examples_dir).items()}
    references = _references(window, new, inputs, examples_dir, sha256)
    read = {span: span_profiles.read_rows(span_profiles.span_files(examples_dir, span)) for span in new}
    test_keys = set(span_profiles.read_rows(examples_files(examples_dir, "test"))[1])
    accepted = set(config.accepted_spans)
    # ingest's per-span counts: its quarantined rows
    span_counts = read_counts(examples_dir).get("spans", {})
    spans = {}
    for span in new:
        against = references.get(span)
        checks = drift.verdict(_measures(read[span][0], against, span_profiles.span_files(examples_dir, span),
                                         config), config.drift.thresholds()) if against else []
        others = ([against.profiles[other] for other in against.spans] if against else
                  [span_profiles.profile(examples_dir, o, sha256.get(o)) for o in window if o != span])
        quality = drift.quality(read[span][1], test_keys, [profile.rows for profile in others],
                                {"row_count_change": config.quality.row_count_change,
                                 "bad_row_share": config.quality.bad_row_share,
                                 "duplicate_share": config.quality.duplicate_share,
                                 "test_overlap_share": config.quality.test_overlap_share},
                                bad_rows=span_counts.get(span, {}).get("quarantined_rows"))
        is_accepted = f"{span}:{sha256.get(span)}" in accepted
        spans[span] = {
            "sha256": sha256.get(span),
            "compared_with": against.spans if against else [],
            "reference": against.describe() if against else None,
            "checks": checks,
            "quality": quality,
            "accepted": is_accepted,
            "drifted": any(r["drift"] for r in checks),
            "refused": _verdict(span, checks, quality, is_accepted, config),
        }
        _log(span, spans[span], config, runtime)
    newest = spans[window[-1]]
    record = {"newest_span": window[-1], "reference": newest["reference"],
              "compared_with": newest["compared_with"], "checks": newest["checks"], "spans": spans}
    # also when refusing: the failed attempt's folder keeps the verdict
    write_drift(statistics_dir, record)
    _refuse_if_any(spans, record)
    return record


def _references(window: list[str], new: list[str], inputs: dict[str, Artifact], examples_dir: Path,
                sha256: dict[str, str]) -> dict:
    """What each new span is compared with: the served model's window, else the window's established spans;
    a first run compares only the newest span, with the rest of the window."""
    served = reference.served(inputs)
    established = [span for span in window if span not in new]
    # what the served model learned
    if served is not None:
        references = dict.fromkeys(new, served)
    elif established:
        references = dict.fromkeys(new, reference.window(examples_dir, established, sha256))
    # a first run has nothing established: the newest span against the rest, as before
    else:
        references = {window[-1]: reference.window(examples_dir, window[:-1], sha256)}
    return references


def _refuse_if_any(spans: dict[str, dict], record: dict) -> None:
    """Raises the ComponentError refusing the spans whose verdict is a refusal (kind drift if one drifted,
    else data_quality), with each refused span's measures in its details."""
    refused = [{"span": span, "sha256": facts["sha256"], "reason": facts["refused"],
                "drift": {row["measure"]: row["value"] for row in facts["checks"]},
                "quality": {row["check"]: row["value"] for row in facts["quality"]}}
               for span, facts in spans.items() if facts["refused"]]
    if refused:
        named = "; ".join(f"{row['span']} ({_why(spans[row['span']], row['reason'])})" for row in refused)
        kind = DRIFT if any(row["reason"] == DRIFT for row in refused) else DATA_QUALITY
        raise ComponentError(
            f"validate: refused span(s) {named}: nothing trained or pushed; they are quarantined and "
            "left out of "
            "later windows until `agnews-pipeline spans accept NAME` (or `spans reject NAME`)",
            kind,
            {"refused": refused},
            facts={STATISTICS: drift_properties(record)},
        )


def _measures(profile: drift.SpanProfile, against: reference.Reference, files: list[str],
              config: ValidateConfig) -> dict[str, float | None]:
    """Every drift measure of a new span (its profile and example files) against its reference."""
    values = drift.measure(profile, [against.profiles[span] for span in against.spans],
                           config.drift.length_min_rows)
    return {**values, **against.served_measures(profile, files, config.drift.prediction_min_rows)}


def drift_properties(record: dict) -> dict:
    """The statistics artifact's drift properties of a check_spans record; also the facts of a refusal, so a
    refused run's metrics, report and history show what was measured."""
    return {
        "drift_detected": any(row["drift"] for row in record["checks"]),
        "drift": {row["measure"]: row["value"] for row in record["checks"]},
        "drift_checks": record["checks"], "drift_span": record["newest_span"],
        "drift_reference": record.get("reference"),
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
        runtime.log(f"validate: drift of span {span} against {facts['reference']}: {shown}")
    failed = [row for row in facts["quality"] if row["failed"]]
    if failed:
        runtime.log(f"WARNING: validate: span {span} data quality: " + "; ".join(
            f"{row['check']} {row['value']:.4f} > threshold {row['threshold']}" for row in failed))
    drifted = [row for row in facts["checks"] if row["drift"]]
    if drifted and facts["refused"] is None:
        named = ", ".join(
            f"{row['measure']} = {row['value']:.4f} > threshold {row['threshold']}" for row in drifted
        )
        why = ("accepted with `agnews-pipeline spans accept`" if facts["accepted"]
               else f"validate.on_drift={config.on_drift}")
        runtime.log(f"WARNING: validate: span {span} drifted from {facts['reference']}: {named} "
                    f"({why}: training anyway)")
