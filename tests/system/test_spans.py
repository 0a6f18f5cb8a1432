"""Continuous training on a stream of spans, through the real `agnews-pipeline` command: the committed sample
cut into dated spans (benchmarks/make_spans.py), span reuse, the window and its exit codes, drift checks, and
the Prometheus metrics file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cli import agnews_in_process
from support.e2e import agnews  # the real command in a subprocess, checking its exit code
from support.models import served_probabilities
from support.paths import PROJECT, SAMPLE_DIR
from support.streams import TINY_TRAINER, TINY_TUNER

from contract.artifacts import ComponentError
from library import drift, layouts, spans

pytestmark = pytest.mark.e2e

SPAN_NAMES = ["2026-10-12", "2026-10-19", "2026-10-26", "2026-11-02"]
CONFIG = f"""
transform: {{vocab_size: 5000, max_length: 64, bucket_boundaries: [8, 16, 32, 64]}}
{TINY_TUNER}
{TINY_TRAINER}
# One epoch on 900 rows is no good model: every candidate is blessed, so each retrain pushes.
evaluator: {{min_accuracy: 0.0, max_accuracy_drop: 1.0, significance: 0.0}}
validate: {{drift: {{length_min_rows: 100}}}}
"""


def make_stream(folder: Path, *extra: str) -> Path:
    subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "make_spans.py"), "--data", str(SAMPLE_DIR),
                    "--out", str(folder), "--spans", "4", *extra], check=True, capture_output=True)
    return folder


def metrics(path: Path) -> dict[tuple, float]:
    """{(name, sorted labels): value} of a metrics file, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def growing_stream(base: Path, spans: int) -> tuple[Path, Path]:
    """(full, live): the sample cut into 4 spans, and a stream folder holding the first `spans` of them (more
    arrive by copying from `full`); base/config.yaml is the tests' configuration."""
    full = make_stream(base / "full")
    live = base / "live"
    live.mkdir()
    shutil.copyfile(full / "test.csv", live / "test.csv")
    for name in SPAN_NAMES[:spans]:
        shutil.copytree(full / name, live / name)
    (base / "config.yaml").write_text(CONFIG)
    return full, live


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A stream whose folder starts with the first 3 spans of the sample; the 4th is kept aside."""
    base = tmp_path_factory.mktemp("stream")
    return base, *growing_stream(base, 3)


def args(base: Path, live: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(base / "config.yaml"),
        "--data",
        f"csv:{live}",
        "--pipeline-root",
        str(base / "root"),
        *extra,
    ]


def test_retrain_ingests_only_a_new_span_skips_an_unchanged_stream_and_writes_metrics(stream):
    base, full, live = stream
    prom = base / "metrics" / "agnews.prom"
    # In this process (no TensorFlow import per retrain): nothing here needs a process of its own.
    first = agnews_in_process("retrain", *args(base, live, "--metrics-file", str(prom)))
    assert "ingest: ingested: 2026-10-12, 2026-10-19, 2026-10-26, fixed test set" in first.stdout
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "pushed")))] == 1
    first_success = values[("agnews_retrain_last_success_timestamp_seconds", ())]
    assert values[("agnews_serving_version", ())] == 1
    assert ("agnews_retrain_drift", (("measure", "label_linf"),)) in values
    assert ("agnews_model_accuracy", (("data", "newest_span"), ("model", "candidate"))) in values

    shutil.copytree(full / SPAN_NAMES[3], live / SPAN_NAMES[3])  # a new week's data arrives
    second = agnews_in_process("retrain", *args(base, live, "--metrics-file", str(prom)))
    assert "ingest: ingested: 2026-11-02" in second.stdout
    assert "ingest: reused: 2026-10-12, 2026-10-19, 2026-10-26, fixed test set" in second.stdout
    runs = sorted((base / "root" / "runs").iterdir())
    # A reused span is the earlier run's files, hard-linked, not re-computed.
    old, new = (
        layouts.span_examples_files(run / "ingest" / "examples", SPAN_NAMES[0], "train")[0] for run in runs
    )
    assert os.stat(old).st_ino == os.stat(new).st_ino
    counts = layouts.read_counts(runs[-1] / "ingest" / "examples")
    assert counts["window"] == SPAN_NAMES and set(counts["spans"]) == set(SPAN_NAMES)
    assert counts["splits"]["test"] == 400  # the fixed test set
    # The gate compares candidate and baseline (version 1) on the same rows: the test set and the newest span.
    evaluation = json.loads((runs[-1] / "evaluator" / "evaluation" / "metrics.json").read_text())
    assert evaluation["newest_span"]["span"] == SPAN_NAMES[3]
    newest = evaluation["newest_span"]
    # Its scores, against numpy on each served version's probabilities for the span's held-out rows.
    held_out = layouts.span_examples_files(runs[-1] / "ingest" / "examples", SPAN_NAMES[3], "eval")
    for version, accuracy in (("2", newest["accuracy"]), ("1", newest["baseline_accuracy"])):
        probabilities, labels = served_probabilities(base / "root" / "serving" / "agnews" / version, held_out)
        assert newest["examples"] == len(labels) > 0
        assert accuracy == pytest.approx(np.mean(np.argmax(probabilities, axis=1) == labels), abs=1e-9)
        if version == "2":
            true_class = probabilities[np.arange(len(labels)), labels]
            assert newest["loss"] == pytest.approx(-np.mean(np.log(np.clip(true_class, 1e-7, 1))), rel=1e-5)
    assert evaluation["baseline"]["accuracy"] is not None
    report = (runs[-1] / "evaluator" / "evaluation" / "report.md").read_text()
    assert f"newest span {SPAN_NAMES[3]}" in report and "fixed test set" in report
    assert metrics(prom)[("agnews_serving_version", ())] == 2

    # Runs that end before the pipeline starts: in this process (no interpreter to start).
    unchanged = agnews_in_process("retrain", *args(base, live, "--metrics-file", str(prom)), check_code=3)
    assert "unchanged" in unchanged.stdout
    values = metrics(prom)
    assert (
        values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "skipped_no_new_data")))] == 1
    )
    second_success = values[("agnews_retrain_last_success_timestamp_seconds", ())]
    assert second_success > first_success  # the second retrain's, kept through the skip
    assert values[("agnews_retrain_last_run_timestamp_seconds", ())] > second_success

    missing = agnews_in_process(
        "retrain", *args(base, live, "--span", "2027-01-04", "--metrics-file", str(prom)), check_code=7
    )
    assert "pinned span '2027-01-04'" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "span_not_found")))] == 1
    assert values[("agnews_retrain_last_success_timestamp_seconds", ())] == second_success

    runs_before = len(list((base / "root" / "runs").iterdir()))
    few = agnews_in_process("retrain", *args(base, live, "--set", "ingest.window.min_spans=5"), check_code=6)
    assert (
        "fewer than ingest.window.min_spans = 5" in few.stderr and len(few.stderr.strip().splitlines()) == 1
    )
    assert len(list((base / "root" / "runs").iterdir())) == runs_before  # nothing ran

    # A span whose file changed is ingested again, and the run says so.
    with open(live / SPAN_NAMES[1] / "train.csv", "a", encoding="utf-8") as handle:
        handle.write('"2","Late result","A row that arrived after the span was first ingested"\n')
    changed = agnews_in_process("run", *args(base, live, "--until", "ingest"))
    assert "ingest: re-ingested (their files changed): 2026-10-19" in changed.stdout
    assert "ingest: reused: 2026-10-12, 2026-10-26, 2026-11-02, fixed test set" in changed.stdout


def test_ingest_reuses_unchanged_spans_as_hard_links_and_metrics_keep_the_last_success(tmp_path):
    """The cheap half of the test above (ingest only), for quick checks of span reuse and the metrics file."""
    full, live = growing_stream(tmp_path, 2)
    prom = tmp_path / "agnews.prom"
    agnews_in_process("run", *args(tmp_path, live, "--until", "ingest", "--metrics-file", str(prom)))
    success = metrics(prom)[("agnews_retrain_last_success_timestamp_seconds", ())]
    shutil.copytree(full / SPAN_NAMES[2], live / SPAN_NAMES[2])
    second = agnews_in_process("run", *args(tmp_path, live, "--until", "ingest"))
    assert "ingest: ingested: 2026-10-26" in second.stdout
    assert "ingest: reused: 2026-10-12, 2026-10-19, fixed test set" in second.stdout
    first_run, second_run = sorted((tmp_path / "root" / "runs").iterdir())
    for span in SPAN_NAMES[:2]:
        for split in ("train", "eval"):
            old, new = (layouts.span_examples_files(run / "ingest" / "examples", span, split)[0]
                        for run in (first_run, second_run))
            assert os.stat(old).st_ino == os.stat(new).st_ino  # the same file, not a copy
    fresh = tmp_path / "fresh"  # what a fresh ingest of the same window writes: byte for byte the same
    agnews_in_process("run", "--config", str(tmp_path / "config.yaml"), "--data", f"csv:{live}",
                      "--pipeline-root", str(fresh), "--until", "ingest")
    from contract.artifacts import fingerprint
    fresh_examples = next((fresh / "runs").iterdir()) / "ingest" / "examples"
    assert fingerprint(fresh_examples) == fingerprint(second_run / "ingest" / "examples")

    failed = agnews("run", *args(tmp_path, live, "--span", "0042", "--metrics-file", str(prom)), check_code=7)
    assert failed.stderr.count("\n") == 1
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "run"), ("outcome", "span_not_found")))] == 1
    assert values[("agnews_retrain_exit_code", ())] == 7
    assert values[("agnews_retrain_last_success_timestamp_seconds", ())] == success


def test_pinned_date_window_and_quarantine_naming_the_span(tmp_path):
    live = make_stream(tmp_path / "stream")
    with open(live / SPAN_NAMES[1] / "train.csv", "a", encoding="utf-8") as handle:
        handle.write('"9","Bad class","out of range"\n')
    (tmp_path / "config.yaml").write_text(CONFIG)
    completed = agnews_in_process("run", *args(tmp_path, live, "--date", SPAN_NAMES[2], "--until", "ingest",
                                               "--set", "ingest.window.num_spans=2"))
    assert "window of 2 span(s) 2026-10-19 .. 2026-10-26" in completed.stdout
    examples = next((tmp_path / "root" / "runs").iterdir()) / "ingest" / "examples"
    assert layouts.read_counts(examples)["window"] == SPAN_NAMES[1:3]
    [bad] = [json.loads(line) for line in layouts.quarantine_file(examples).read_text().splitlines()]
    assert bad["span"] == SPAN_NAMES[1] and bad["reason"] == "class_out_of_range"
    span_quarantine = layouts.quarantine_file(layouts.span_dir(examples, SPAN_NAMES[1])).read_text()
    assert json.loads(span_quarantine)["line"] == bad["line"]


def test_a_drifted_newest_span_warns_or_fails_as_configured(tmp_path):
    live = make_stream(tmp_path / "stream", "--shift-span", "4", "--shift", "label")
    (tmp_path / "config.yaml").write_text(CONFIG)
    warned = agnews_in_process("run", *args(tmp_path, live, "--until", "validate"))
    assert (
        "WARNING: validate: span 2026-11-02 drifted from the rest of the window: label_linf" in warned.stdout
    )
    statistics = next((tmp_path / "root" / "runs").iterdir()) / "validate" / "statistics"
    drift_record = layouts.read_drift(statistics)
    assert drift_record["newest_span"] == "2026-11-02"
    label = next(row for row in drift_record["checks"] if row["measure"] == "label_linf")
    assert label["drift"] and label["value"] > 0.3
    shown = agnews_in_process("show", "--pipeline-root", str(tmp_path / "root")).stdout
    assert "drift of span 2026-11-02 against the rest of the window:" in shown
    assert f"| label_linf | {label['value']:.4f} | 0.1 | DRIFT |" in shown
    listed = agnews_in_process("runs", "--pipeline-root", str(tmp_path / "root")).stdout
    assert "2026-10-12..2026-11-02 (4 spans)" in listed and "true" in listed.splitlines()[1]

    prom = tmp_path / "agnews.prom"
    failed = agnews_in_process(
        "retrain",
        *args(tmp_path, live, "--set", "validate.on_drift=fail", "--metrics-file", str(prom)),
        check_code=8,
    )
    assert "label_linf = " in failed.stderr and "> threshold 0.1" in failed.stderr
    refused = next(
        p for p in sorted((tmp_path / "root" / "runs").iterdir())[::-1] if (p / "run.json").is_file()
    )
    record = json.loads((refused / "run.json").read_text())
    states = {step["step"]: step["state"] for step in record["steps"]}
    assert states["validate"] == "failed" and "trainer" not in states  # nothing trained or pushed
    assert not (tmp_path / "root" / "serving").exists()
    # The refused run's metrics hold the drift that validate measured (its report, kept with the failed
    # attempt).
    measured = layouts.read_drift(refused / "validate.failed" / "statistics")
    assert measured["newest_span"] == "2026-11-02"
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "drift")))] == 1
    assert values[("agnews_retrain_drift_detected", ())] == 1
    for row in measured["checks"]:
        if row["value"] is not None:
            assert values[("agnews_retrain_drift", (("measure", row["measure"]),))] == pytest.approx(
                row["value"]
            )
    assert values[("agnews_retrain_drift", (("measure", "label_linf"),))] > 0.3
    label = next(row for row in measured["checks"] if row["measure"] == "label_linf")
    assert f"| label_linf | {label['value']:.4f} | 0.1 | DRIFT |" in (refused / "report.md").read_text()
    # The recording the alert rules are tested on (tests/test_outcomes.py) is what this run writes today.
    recorded = metrics(PROJECT / "tests" / "support" / "data" / "metrics" / "drift.prom")
    volatile = ("agnews_retrain_last_run_timestamp_seconds", "agnews_retrain_duration_seconds",
                "agnews_retrain_newest_span_age_seconds")
    assert {k: v for k, v in values.items() if k[0] not in volatile} == {
        k: v for k, v in recorded.items() if k[0] not in volatile
    }, "bash tests/support/data/metrics/record.sh"
    assert set(values) == set(recorded)


# ---------------------------------------------------------------------------------------------- units (fast)


def test_window_selection_rules(tmp_path):
    for name in ("0007", "0010", "0008", "notes", "0009"):
        (tmp_path / name).mkdir()
        if name != "0009":
            (tmp_path / name / "train.csv").write_text("")
    found = spans.discover_spans(str(tmp_path), r"\d+")
    assert [s.name for s in found] == ["0007", "0008", "0010"]  # by number; no train.csv, no span

    def window(**kwargs):
        settings = {"num_spans": 0, "min_spans": 1, "skip_recent": 0, "exclude": (), "newest": "", **kwargs}
        return [s.name for s in spans.select_window(found, where="test", **settings)]

    assert window(num_spans=2) == ["0008", "0010"]
    assert window(skip_recent=1) == ["0007", "0008"]
    assert window(exclude=("0008",), num_spans=2) == ["0007", "0010"]
    assert window(newest="0008") == ["0007", "0008"]
    with pytest.raises(ComponentError) as error:
        window(newest="0009")
    assert error.value.kind == spans.SPAN_NOT_FOUND
    with pytest.raises(ComponentError) as error:
        window(min_spans=3, skip_recent=1)
    assert error.value.kind == spans.TOO_FEW_SPANS
    dated = [spans.Span("20261201", ""), spans.Span("20261208", "")]
    assert [s.name for s in spans.select_window(dated, num_spans=0, min_spans=1, skip_recent=0, exclude=(),
                                                newest="2026-12-01", where="test")] == ["20261201"]


def test_drift_measures():
    same, shifted = drift.SpanProfile(), drift.SpanProfile()
    for i in range(400):
        same.add(i % 4, "stocks rally as oil prices fall " * (1 + i % 3))
        shifted.add(1 if i % 10 < 7 else i % 4, "zebra quasar " * 20)
    values = drift.measure(same, [same], length_min_rows=100)
    assert values["label_linf"] == 0 and values["length_js"] == 0 and values["oov_share"] == 0
    values = drift.measure(shifted, [same, same], length_min_rows=100)
    assert values["label_linf"] > 0.4 and values["length_js"] > 0.5 and values["oov_share"] == 1.0
    assert drift.measure(shifted, [same], length_min_rows=1000)["length_js"] is None  # too few rows
    checks = drift.verdict(
        values, {"label_linf": 0.1, "length_js": 1.0, "oov_share": 0.5, "row_count_change": 0.5}
    )
    assert [row["measure"] for row in checks if row["drift"]] == ["label_linf", "oov_share"]
