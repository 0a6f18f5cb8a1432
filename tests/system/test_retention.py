"""A season of weekly retrains through the real `agnews-pipeline` command, on the committed sample cut into
weekly spans (a system test; the tiny model of support.streams; every retrain trains, evaluates and pushes):

- bounded disk: with a retention policy the pipeline root stops growing, and the kept versions can still be
  rolled back to;
- backfill: a retrain pinned to a span older than the served model's newest is refused before anything runs;
- rollback: the rolled-back model is served as a new version, and the next retrain compares with it (the
  gate's baseline and anchor) and warm-starts from it.

One root carries all three, as a scheduled job's root does (eight weeks to fill and hold the policy, then
the incidents). What is observed is the size of the pipeline root on disk, the serving folder's bytes and the
metadata store's artifacts and events (which model the evaluator consumed as its baseline)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import streams
from support.cli import agnews_in_process
from support.streams import (
    PUSHING_CONFIG,
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
RETENTION = "retention: {served_versions: 2, runs: 2, apply_after_retrain: true}\n"
WEEKS = 8


def du_bytes(folder: Path) -> int:
    """Disk use of a folder as `du` counts it (hard-linked files once)."""
    return int(subprocess.run(["du", "-s", "-B1", str(folder)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def newest_retrain_artifacts(store: MetadataStore, step: str, kind: str) -> dict:
    """The inputs or outputs (`kind`) of `step` in the newest retrain."""
    run = next(r for r in store.runs() if r["command"] == "retrain")
    execution = next(e for e in store.executions(run["id"]) if e["step"] == step)
    return store.artifacts_of(execution["id"], kind)


@pytest.mark.timeout(3600)  # nine retrains (about half a minute each on 2 idle cores)
def test_retention_holds_the_root_and_backfill_and_rollback_keep_serving_safe(tmp_path):
    # In this process (no TensorFlow import per command): nothing here needs a process of its own.
    full, live, names = make_stream(tmp_path, WEEKS + 1, CONFIG + RETENTION)
    root, serving = tmp_path / "root", tmp_path / "root" / "serving" / "agnews"
    sizes = {}
    for week, name in enumerate(names[:WEEKS], 1):
        arrive(full, live, name)
        agnews_in_process("retrain", *streams.args(tmp_path))
        sizes[week] = du_bytes(root)
        print(f"week {week}: root {sizes[week]:,} bytes", flush=True)
        # The policy holds the root where it was after four retrains, the first week it is full (without it
        # the root grows by one retrain's artifacts every week; 52 weeks: benchmarks/bench_year.py).
        if week > 4:
            assert sizes[week] <= 1.3 * sizes[4], sizes
    assert folder_layouts.serving_versions(serving) == [7, 8]  # older versions left the serving folder

    # A backfill of span 7 (older than span 8, which version 8 learned): refused before anything runs.
    before, runs_before = serving_snapshot(serving), len(list((root / "runs").iterdir()))
    backfill = agnews_in_process("retrain", *streams.args(tmp_path, "--span", names[6]), check_code=9)
    assert len(backfill.stderr.strip().splitlines()) == 1, backfill.stderr
    assert f"ends at span {names[6]}, before {names[7]}" in backfill.stderr
    assert "rollback" in backfill.stderr
    assert serving_snapshot(serving) == before
    assert len(list((root / "runs").iterdir())) == runs_before
    with opened_store(root) as store:
        model_8 = pusher_inputs(store, 8)["model"]
        # the window's spans, by name and SHA-256, with the model
        assert sorted(model_8.properties["training_spans"]) == names[5:8]
        assert all(len(sha) == 64 for sha in model_8.properties["training_spans"].values())

    rolled = agnews_in_process("rollback", "7", *root_args(tmp_path))  # a kept version
    assert "served again as version 9" in rolled.stdout
    assert folder_layouts.serving_versions(serving) == [7, 8, 9]
    served = serving_snapshot(serving)
    assert served["9/saved_model.pb"] == served["7/saved_model.pb"]
    assert served["8/saved_model.pb"] == before["8/saved_model.pb"]  # nothing else touched
    gone = agnews_in_process("rollback", "3", *root_args(tmp_path), check_code=1)
    assert (
        "not a model this pipeline root keeps" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    )

    arrive(full, live, names[WEEKS])
    agnews_in_process("retrain", *streams.args(tmp_path))
    with opened_store(root) as store:
        model_7 = pusher_inputs(store, 7)["model"]
        assert pusher_inputs(store, 9)["model"].id == model_7.id  # the rollback's push points at model 7
        baseline = newest_retrain_artifacts(store, "evaluator", "input")["baseline_model"]
        base = newest_retrain_artifacts(store, "trainer", "input")["base_model"]
        assert (baseline.id, baseline.fingerprint) == (model_7.id, model_7.fingerprint)
        assert base.id == model_7.id  # the warm start too starts from the served model, not version 8's
        accuracy_7 = pusher_inputs(store, 7)["blessing"].properties["accuracy"]
        blessing = newest_retrain_artifacts(store, "evaluator", "output")["blessing"]
    # Version 7's accuracy on the fixed test set, measured again as this evaluation's baseline.
    assert blessing.properties["baseline_accuracy"] == pytest.approx(accuracy_7, abs=1e-6)
    # The gate's facts, recorded: per-row results that agree with TFMA's accuracy, the paired test, the
    # anchor.
    rows = RowResults.from_packed(blessing.properties["test_rows"], blessing.properties["correct_rows"],
                                  blessing.properties["test_row_count"])
    assert len(rows.correct) == 400 and rows.accuracy == pytest.approx(
        blessing.properties["accuracy"], abs=1e-6
    )
    assert blessing.properties["p_value"] is not None and blessing.properties["anchor_accuracy"] is not None
    metrics = json.loads((blessing.uri.parent / "evaluation" / "metrics.json").read_text())
    # The last anchor_versions served, leaving out version 8: the rollback rolled away from it.
    assert set(metrics["gate"]["anchors"]) == {"version 9", "version 7"}
    report = (blessing.uri.parent / "evaluation" / "report.md").read_text()
    assert "McNemar p =" in report and "- anchor: " in report
    shown = agnews_in_process("show", *root_args(tmp_path)).stdout
    assert "p_value=" in shown and "anchor_accuracy=" in shown

    # The retrain pushed version 10 and applied the policy: the 2 highest versions stay, with what they need.
    assert folder_layouts.serving_versions(serving) == [9, 10]
    agnews_in_process("gc", *root_args(tmp_path))  # the same policy (no --keep): nothing more to delete
    assert folder_layouts.serving_versions(serving) == [9, 10]
    with opened_store(root) as store:
        for version in (9, 10):
            for artifact in pusher_inputs(store, version).values():
                assert not artifact.deleted and artifact.uri.exists()
