"""Drift against the served model (issue 28 item 2), through the real `agnews-pipeline` command on spans cut
from the committed sample: new spans are compared with the spans the served model was trained on, from their
profiles cached beside the examples (the rows of those spans are deleted before the check), with the served
model's vocabulary and its predicted-class mix; a corrected span gets a new profile."""
from __future__ import annotations

import csv
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cli import agnews_in_process
from support.paths import SAMPLE_DIR

from contract.files import file_sha256
from library import drift, layouts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SERVED = ["2026-10-05", "2026-10-12"]  # 250 rows each, the sample's label mix: the served model's window
SPORTS_70, SPORTS_ALL = "2026-10-19", "2026-10-26"  # 60 rows 70% Sports, 100 rows all Sports
NORMAL = "2026-11-02"  # 152 rows, 25% of each class: the newest span
CONFIG = """
transform: {vocab_size: 20000, max_length: 64, bucket_boundaries: [8, 16, 32, 64]}
tuner: {enabled: false}
trainer: {epochs: 3, export_xla: false}
evaluator: {min_accuracy: 0.0, max_accuracy_drop: 1.0, significance: 0.0}
ingest: {eval_fraction: 0.2, window: {num_spans: 3}}
validate: {drift: {length_min_rows: 100, oov_share: 1.0, vocab_oov_share: 1.0, prediction_min_rows: 50}}
"""


def _write(folder: Path, rows: list[list[str]]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)


def _rows(folder: Path) -> list[list[str]]:
    return list(csv.reader(open(folder / "train.csv", encoding="utf-8")))


def make_stream(base: Path) -> Path:
    rows = list(csv.reader(open(SAMPLE_DIR / "train.csv", encoding="utf-8")))
    random.Random(5).shuffle(rows)
    live = base / "live"
    _write(live / SERVED[0], rows[:250])
    _write(live / SERVED[1], rows[250:500])
    by_class: dict[str, list[list[str]]] = {}
    for row in rows[500:]:  # 175-180 rows of each class
        by_class.setdefault(row[0], []).append(row)
    sports = by_class.pop("2")
    others = [row for rows_of in zip(*by_class.values()) for row in rows_of]  # the other classes in turn
    (base / "later").mkdir()
    _write(base / "later" / SPORTS_70, sports[:42] + others[:18])
    _write(base / "later" / SPORTS_ALL, sports[42:142])
    _write(base / "later" / NORMAL, [row for four in zip(sports[142:180], others[18:132:3], others[19:132:3],
                                                          others[20:132:3]) for row in four])
    shutil.copyfile(SAMPLE_DIR / "test.csv", live / "test.csv")
    (base / "config.yaml").write_text(CONFIG)
    return live


def args(base: Path, live: Path, *extra: str) -> list[str]:
    return ["--config", str(base / "config.yaml"), "--data", f"csv:{live}", "--pipeline-root",
            str(base / "root"), *extra]


def label_linf(span: Path, reference: list[Path]) -> float:
    """label_linf computed from the CSV files themselves."""
    return drift.l_infinity(Counter(r[0] for r in _rows(span)),
                            Counter(r[0] for folder in reference for r in _rows(folder)))


def test_new_spans_are_compared_with_the_served_models_window_from_cached_profiles(tmp_path):
    live = make_stream(tmp_path)
    agnews_in_process("run", *args(tmp_path, live))  # week 1: a model trained on SERVED is pushed and served
    assert (tmp_path / "root" / "serving" / "agnews" / "1").is_dir()
    runs = tmp_path / "root" / "runs"
    served_examples = next(runs.iterdir()) / "ingest" / "examples"
    for span in SERVED:  # the profile ingest cached, named by the span's SHA-256
        cached = layouts.span_profile_file(served_examples, span, file_sha256(live / span / "train.csv"))
        assert json.loads(cached.read_text())["rows"] == 250
    expected = {span: label_linf(tmp_path / "later" / span, [live / s for s in SERVED])
                for span in (SPORTS_70, SPORTS_ALL, NORMAL)}
    # Only the cached profiles are left of the served window: every example file of its spans is deleted.
    for examples in runs.glob("*/ingest/examples"):
        for span in SERVED:
            for path in layouts.span_dir(examples, span).glob("*/" + layouts.EXAMPLE_FILE_PATTERN):
                path.unlink()
    for span in (SPORTS_70, SPORTS_ALL, NORMAL):  # week 2: three spans; the window is these three
        shutil.copytree(tmp_path / "later" / span, live / span)
    prom = tmp_path / "agnews.prom"
    warned = agnews_in_process("run", *args(tmp_path, live, "--until", "validate", "--metrics-file",
                                            str(prom)))
    statistics = sorted(runs.iterdir())[-1] / "validate" / "statistics"
    checked = layouts.read_drift(statistics)["spans"]
    values = {span: {row["measure"]: row["value"] for row in checked[span]["checks"]} for span in checked}
    assert set(checked) == {SPORTS_70, SPORTS_ALL, NORMAL}
    assert all(checked[span]["compared_with"] == SERVED for span in checked), checked
    # The served window is the reference: the Sports spans drift from it, the newest (the served mix) not,
    # though it differs from the rest of the window now; each value is the one the CSV files give.
    for span in checked:
        assert values[span]["label_linf"] == pytest.approx(expected[span])
    assert values[SPORTS_70]["label_linf"] > 0.3 and values[NORMAL]["label_linf"] < 0.1
    assert checked[SPORTS_70]["drifted"] and checked[SPORTS_ALL]["drifted"] and not checked[NORMAL]["drifted"]
    assert "span 2026-11-02 drifted" not in warned.stdout
    assert (f"drift of span {SPORTS_70} against the served model's window (version 1: 2 span(s))"
            in warned.stdout)
    # Against the served model's vocabulary (the asset of its SavedModel).
    model = sorted(runs.iterdir())[0] / "trainer" / "model"
    vocabulary_file = layouts.model_vocabulary_file(model, layouts.read_model_input(model))
    vocabulary = set(vocabulary_file.read_text().splitlines())
    tokens = [t for r in _rows(live / NORMAL) for t in drift.tokens(f"{r[1]} {r[2]}")]
    unseen = sum(token not in vocabulary for token in tokens)
    assert values[NORMAL]["vocab_oov_share"] == pytest.approx(unseen / len(tokens))
    # The served model's predicted-class mix: an all-Sports span moves it far more than one of the served mix.
    assert values[SPORTS_ALL]["prediction_linf"] > values[NORMAL]["prediction_linf"] + 0.2, values
    assert values[SPORTS_ALL]["prediction_linf"] > 0.3
    # Where the other measures appear: `spans` and the drift gauges (the newest span's).
    listed = {row["span"]: row for row in json.loads(agnews_in_process(
        "spans", "--data", f"csv:{live}", "--pipeline-root", str(tmp_path / "root"), "--json").stdout)}
    assert listed[SPORTS_ALL]["checks"]["drift"]["prediction_linf"] == values[SPORTS_ALL]["prediction_linf"]
    gauges = {(s.name, tuple(s.labels.items())): s.value
              for family in text_string_to_metric_families(prom.read_text()) for s in family.samples}
    for measure in ("vocab_oov_share", "prediction_linf"):
        assert gauges[("agnews_retrain_drift", (("measure", measure),))] == pytest.approx(
            values[NORMAL][measure]
        )

    # A corrected span (same name, new bytes) gets a profile of its new rows, under its new SHA-256.
    old_sha = file_sha256(live / NORMAL / "train.csv")
    corrected = (live / NORMAL / "train.csv").read_text().splitlines(keepends=True)[:150]
    (live / NORMAL / "train.csv").write_text("".join(corrected))
    agnews_in_process("run", *args(tmp_path, live, "--until", "ingest"))
    examples = sorted(runs.iterdir())[-1] / "ingest" / "examples"
    new_sha = file_sha256(live / NORMAL / "train.csv")
    assert json.loads(layouts.span_profile_file(examples, NORMAL, new_sha).read_text())["rows"] == 150
    assert not layouts.span_profile_file(examples, NORMAL, old_sha).exists()
