"""Backfill, rollback, the gate's anchor and bounded disk, through the real `agnews-pipeline` command on the
committed sample cut into weekly spans (a system test: every retrain trains, evaluates and pushes).

What is observed is what is stored: the serving folder's bytes, the metadata store's artifacts and events (which
model the evaluator consumed as its baseline), and the size of the pipeline root on disk."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.e2e import agnews  # the real command in a subprocess, checking its exit code
from support.paths import PROJECT, SAMPLE_DIR

from library import folder_layouts
from library.paired_gate import RowResults
from pipeline.metadata import MetadataStore

pytestmark = pytest.mark.e2e

CONFIG = """
ingest: {window: {num_spans: 3}}
transform: {vocab_size: 2000, max_length: 32, bucket_boundaries: [16, 32]}
tuner: {enabled: false}
trainer: {epochs: 1}
# One epoch on a few hundred rows is no good model: every candidate is blessed, so each retrain pushes.
evaluator: {min_accuracy: 0.0, max_accuracy_drop: 1.0, significance: 0.0, anchor_versions: 2}
validate: {drift: {length_min_rows: 100}}
"""
RETENTION = "retention: {served_versions: 2, runs: 2, apply_after_retrain: true}\n"


def make_stream(base: Path, spans: int, config: str) -> tuple[Path, Path, list[str]]:
    """(full, live, span names): the sample cut into `spans` weekly spans, and an empty stream folder (test.csv
    only) that spans are copied into as they "arrive"; base/config.yaml holds `config`."""
    full = base / "full"
    subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "make_spans.py"), "--data", str(SAMPLE_DIR),
                    "--out", str(full), "--spans", str(spans)], check=True, capture_output=True)
    live = base / "live"
    live.mkdir()
    shutil.copyfile(full / "test.csv", live / "test.csv")
    (base / "config.yaml").write_text(config)
    return full, live, sorted(p.name for p in full.iterdir() if p.is_dir())


def arrive(full: Path, live: Path, name: str) -> None:
    shutil.copytree(full / name, live / name)


def args(base: Path, *extra: str) -> list[str]:
    return ["--config", str(base / "config.yaml"), "--data", f"csv:{base / 'live'}", "--pipeline-root",
            str(base / "root"), *extra]


def root_args(base: Path, *extra: str) -> list[str]:
    return ["--config", str(base / "config.yaml"), "--pipeline-root", str(base / "root"), *extra]


@contextmanager
def opened_store(root: Path):
    store = MetadataStore(root / "metadata.sqlite", read_only=True)
    try:
        yield store
    finally:
        store.close()


def serving_snapshot(serving: Path) -> dict[str, str]:
    return {str(p.relative_to(serving)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(serving.rglob("*")) if p.is_file()}


def pusher_inputs(store: MetadataStore, version: int) -> dict:
    """The inputs of the (newest) pusher execution that published `version`."""
    for execution, pushed in reversed(store.outputs_where("pusher", "pushed_model", "pushed")):
        if pushed.properties["version"] == version:
            return store.artifacts_of(execution["id"], "input")
    raise AssertionError(f"no push of version {version} in the store")


def newest_execution_inputs(store: MetadataStore, step: str) -> dict:
    run = next(r for r in store.runs() if r["command"] == "retrain")
    execution = next(e for e in store.executions(run["id"]) if e["step"] == step)
    return store.artifacts_of(execution["id"], "input")


def test_backfill_is_refused_and_after_rollback_the_next_retrain_compares_with_the_rolled_back_model(tmp_path):
    full, live, names = make_stream(tmp_path, 4, CONFIG)
    serving = tmp_path / "root" / "serving" / "agnews"
    for name in names[:2]:
        arrive(full, live, name)
    agnews("retrain", *args(tmp_path))  # version 1: spans 1-2
    arrive(full, live, names[2])
    agnews("retrain", *args(tmp_path))  # version 2: spans 1-3
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
    agnews("retrain", *args(tmp_path))
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
    assert blessing.properties["baseline_accuracy"] == pytest.approx(blessing_1.properties["accuracy"], abs=1e-6)
    # The gate's facts, recorded: per-row results that agree with TFMA's accuracy, the paired test, the anchor.
    rows = RowResults.from_packed(blessing.properties["test_rows"], blessing.properties["correct_rows"],
                                  blessing.properties["test_row_count"])
    assert len(rows.correct) == 400 and rows.accuracy == pytest.approx(blessing.properties["accuracy"], abs=1e-6)
    assert blessing.properties["p_value"] is not None and blessing.properties["anchor_accuracy"] is not None
    metrics = json.loads((blessing.uri.parent / "evaluation" / "metrics.json").read_text())
    assert set(metrics["gate"]["anchors"]) == {"version 3", "version 2"}  # the last anchor_versions served
    report = (blessing.uri.parent / "evaluation" / "report.md").read_text()
    assert "McNemar p =" in report and "- anchor: " in report
    shown = agnews("show", *root_args(tmp_path)).stdout
    assert "p_value=" in shown and "anchor_accuracy=" in shown


def du_bytes(folder: Path) -> int:
    """Disk use of a folder as `du` counts it (hard-linked files once)."""
    return int(subprocess.run(["du", "-s", "-B1", str(folder)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


@pytest.mark.timeout(3600)  # twelve retrains (about a minute each on 2 idle cores)
def test_with_retention_the_root_stops_growing_and_kept_versions_can_be_rolled_back_to(tmp_path):
    full, live, names = make_stream(tmp_path, 12, CONFIG + RETENTION)
    root, serving = tmp_path / "root", tmp_path / "root" / "serving" / "agnews"
    sizes = {}
    for week, name in enumerate(names, 1):
        arrive(full, live, name)
        agnews("retrain", *args(tmp_path))
        sizes[week] = du_bytes(root)
        print(f"week {week}: root {sizes[week]:,} bytes", flush=True)
        if week > 4:  # from the first retrain on, the policy holds the root where it was after four
            assert sizes[week] <= 1.3 * sizes[4], sizes
    assert folder_layouts.serving_versions(serving) == [11, 12]  # older versions left the serving folder

    rolled = agnews("rollback", "11", *root_args(tmp_path))  # a kept version: everything it needs is there
    assert "served again as version 13" in rolled.stdout
    assert (serving / "13" / "saved_model.pb").read_bytes() == (serving / "11" / "saved_model.pb").read_bytes()
    gone = agnews("rollback", "3", *root_args(tmp_path), check_code=1)
    assert "not a model this pipeline root keeps" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    agnews("gc", *root_args(tmp_path))  # the same policy (no --keep): 12 and 13 stay served
    assert folder_layouts.serving_versions(serving) == [12, 13]
    with opened_store(root) as store:
        for version in (12, 13):
            for artifact in pusher_inputs(store, version).values():
                assert not artifact.deleted and artifact.uri.exists()
