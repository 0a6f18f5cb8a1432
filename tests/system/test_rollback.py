"""Backfill, rollback and the gate's anchor, through the real `agnews-pipeline` command on the committed
sample cut into weekly spans (a system test: every retrain trains, evaluates and pushes; the tiny model of
support.streams).

What is observed is what is stored: the serving folder's bytes, and the metadata store's artifacts and
events (which model the evaluator consumed as its baseline)."""
from __future__ import annotations

import json

import pytest
from support.cli import agnews_in_process
from support.e2e import agnews  # the real command in a subprocess, checking its exit code
from support.streams import (
    PUSHING_CONFIG,
    args,
    arrive,
    make_stream,
    opened_store,
    pusher_inputs,
    root_args,
    serving_snapshot,
)

from library import folder_layouts
from library.paired_gate import RowResults
from pipeline.metadata import MetadataStore

pytestmark = pytest.mark.e2e

CONFIG = PUSHING_CONFIG


def newest_execution_inputs(store: MetadataStore, step: str) -> dict:
    run = next(r for r in store.runs() if r["command"] == "retrain")
    execution = next(e for e in store.executions(run["id"]) if e["step"] == step)
    return store.artifacts_of(execution["id"], "input")


def test_backfill_is_refused_and_after_rollback_the_next_retrain_compares_with_the_rolled_back_model(
    tmp_path,
):
    full, live, names = make_stream(tmp_path, 4, CONFIG)
    serving = tmp_path / "root" / "serving" / "agnews"
    for name in names[:2]:
        arrive(full, live, name)
    # In this process (no TensorFlow import per retrain): nothing here needs a process of its own.
    agnews_in_process("retrain", *args(tmp_path))  # version 1: spans 1-2
    arrive(full, live, names[2])
    agnews_in_process("retrain", *args(tmp_path))  # version 2: spans 1-3
    assert folder_layouts.serving_versions(serving) == [1, 2]

    # A backfill of span 2 (older than span 3, which version 2 learned): refused before anything runs.
    before, runs_before = serving_snapshot(serving), len(list((tmp_path / "root" / "runs").iterdir()))
    backfill = agnews("retrain", *args(tmp_path, "--span", names[1]), check_code=9)
    assert len(backfill.stderr.strip().splitlines()) == 1, backfill.stderr
    assert f"ends at span {names[1]}, before {names[2]}" in backfill.stderr and "rollback" in backfill.stderr
    assert serving_snapshot(serving) == before
    assert len(list((tmp_path / "root" / "runs").iterdir())) == runs_before
    with opened_store(tmp_path / "root") as store:
        model_2 = pusher_inputs(store, 2)["model"]
        assert sorted(model_2.properties["training_spans"]) == names[:3]  # names and SHA-256, with the model
        assert all(len(sha) == 64 for sha in model_2.properties["training_spans"].values())

    rolled = agnews("rollback", "1", *root_args(tmp_path))
    assert "served again as version 3" in rolled.stdout
    assert folder_layouts.serving_versions(serving) == [1, 2, 3]
    assert (serving / "3" / "saved_model.pb").read_bytes() == (serving / "1" / "saved_model.pb").read_bytes()
    assert serving_snapshot(serving)["2/saved_model.pb"] == before["2/saved_model.pb"]  # nothing else touched

    arrive(full, live, names[3])
    agnews_in_process("retrain", *args(tmp_path))
    with opened_store(tmp_path / "root") as store:
        model_1 = pusher_inputs(store, 1)["model"]
        assert pusher_inputs(store, 3)["model"].id == model_1.id  # the rollback's push points at model 1
        baseline = newest_execution_inputs(store, "evaluator")["baseline_model"]
        base = newest_execution_inputs(store, "trainer")["base_model"]
        assert (baseline.id, baseline.fingerprint) == (model_1.id, model_1.fingerprint)
        assert base.id == model_1.id  # the warm start too starts from the served model, not version 2's
        blessing_1 = pusher_inputs(store, 1)["blessing"]
        run = next(r for r in store.runs() if r["command"] == "retrain")
        execution = next(e for e in store.executions(run["id"]) if e["step"] == "evaluator")
        blessing = store.artifacts_of(execution["id"], "output")["blessing"]
    # Version 1's accuracy on the fixed test set, measured again as this evaluation's baseline.
    assert blessing.properties["baseline_accuracy"] == pytest.approx(
        blessing_1.properties["accuracy"], abs=1e-6
    )
    # The gate's facts, recorded: per-row results that agree with TFMA's accuracy, the paired test, the
    # anchor.
    rows = RowResults.from_packed(blessing.properties["test_rows"], blessing.properties["correct_rows"],
                                  blessing.properties["test_row_count"])
    assert len(rows.correct) == 400 and rows.accuracy == pytest.approx(
        blessing.properties["accuracy"], abs=1e-6
    )
    assert blessing.properties["p_value"] is not None and blessing.properties["anchor_accuracy"] is not None
    metrics = json.loads((blessing.uri.parent / "evaluation" / "metrics.json").read_text())
    # The last anchor_versions served, leaving out version 2: the rollback rolled away from it.
    assert set(metrics["gate"]["anchors"]) == {"version 3", "version 1"}
    report = (blessing.uri.parent / "evaluation" / "report.md").read_text()
    assert "McNemar p =" in report and "- anchor: " in report
    shown = agnews("show", *root_args(tmp_path)).stdout
    assert "p_value=" in shown and "anchor_accuracy=" in shown
