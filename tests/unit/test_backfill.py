"""pipeline/rollback.py on a toy store (fast: no training, a unit test). The backfill guard: a pinned window
that ends before the newest span the served model learned is refused, and the command then runs nothing;
the current or a newer span is not refused. Rollback: the old version's model is published again as a new
highest version (what TF Serving loads) and the store makes it the next retrain's baseline and warm-start
base."""
from __future__ import annotations

from pathlib import Path

from support.cli import agnews_in_process

from contract.artifacts import Artifact
from contract.config_loading import load_config
from library.folder_layouts import serving_version_dir, serving_versions
from pipeline import dag
from pipeline.metadata import MetadataStore
from pipeline.rollback import backfill_refusal, served_model

SPANS = ["2026-10-12", "2026-10-19", "2026-10-26", "2026-11-02"]


def _execute(store: MetadataStore, root: Path, run_id: str, step: str, inputs: dict[str, int],
             outputs: dict[str, dict]) -> dict[str, int]:
    execution = store.start_execution(run_id, step, None, "code", {})
    published = {}
    for name, properties in outputs.items():
        folder = root / "runs" / run_id / step / name
        folder.mkdir(parents=True)
        published[name] = (Artifact(name, folder, properties), f"{run_id}-{name}")
    return store.complete_execution(execution, root / "runs" / run_id / step, inputs, published)


def _push(store: MetadataStore, root: Path, run_id: str, version: int, trained_on: list[str]) -> int:
    """Run `run_id` trains a model on `trained_on` (its SavedModel's bytes name the run), blesses it and
    publishes it as `version`, as the pusher does; returns the model's artifact id."""
    store.start_run(run_id, "retrain", {}, None)
    model = _execute(store, root, run_id, "trainer", {},
                     {"model": {"training_spans": {name: "0" * 64 for name in trained_on}}})["model"]
    blessing = _execute(store, root, run_id, "evaluator", {"model": model},
                        {"blessing": {"blessed": True, "run": run_id}})["blessing"]
    serving_model = root / "runs" / run_id / "trainer" / "model" / "serving_model"
    serving_model.mkdir()
    (serving_model / "saved_model.pb").write_bytes(f"model of {run_id}".encode())
    folder = serving_version_dir(root / "serving" / "agnews", version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(f"model of {run_id}".encode())
    _execute(store, root, run_id, "pusher", {"model": model, "blessing": blessing},
             {"pushed_model": {"pushed": True, "version": version, "path": str(folder)}})
    store.finish_run(run_id, "succeeded", outcome="pushed")
    return model


def served_root(tmp_path: Path, trained_on: list[str]) -> tuple[Path, Path]:
    """(stream folder, pipeline root) where version 1 is served: a model trained on `trained_on`."""
    stream = tmp_path / "stream"
    stream.mkdir()
    (stream / "test.csv").write_text('"1","t","d"\n')
    for name in SPANS:
        (stream / name).mkdir()
        (stream / name / "train.csv").write_text('"1","t","d"\n')
    root = tmp_path / "root"
    store = MetadataStore(root / "metadata.sqlite")
    _push(store, root, "r1", 1, trained_on)
    store.close()
    return stream, root


def refusal(stream: Path, root: Path, pinned: str) -> str | None:
    config = load_config(flags={"ingest.data": f"csv:{stream}", "pipeline.root": str(root),
                                "ingest.window.newest": pinned})
    store = MetadataStore(root / "metadata.sqlite")
    try:
        return backfill_refusal(store, config)
    finally:
        store.close()


def test_a_pinned_window_older_than_the_served_model_is_refused(tmp_path):
    stream, root = served_root(tmp_path, SPANS[:3])
    message = refusal(stream, root, SPANS[1])
    assert message is not None and f"ends at span {SPANS[1]}, before {SPANS[2]}" in message
    assert "version 1" in message and "\n" not in message
    assert refusal(stream, root, SPANS[2]) is None  # the served model's own newest span: a re-run, allowed
    assert refusal(stream, root, SPANS[3]) is None  # newer data: an ordinary retrain
    assert refusal(stream, root, "") is None  # not pinned


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_pinned_retrain_older_than_the_served_model_runs_nothing(tmp_path):
    stream, root = served_root(tmp_path, SPANS[:3])
    before = snapshot(root / "serving")
    runs_before = sorted(p.name for p in (root / "runs").iterdir())
    refused = agnews_in_process("retrain", "--data", f"csv:{stream}", "--pipeline-root", root,
                                "--span", SPANS[1], check_code=9)
    assert f"ends at span {SPANS[1]}, before {SPANS[2]}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    # Nothing ran: no run folder, no run in the store, the serving folder byte for byte as it was.
    assert sorted(p.name for p in (root / "runs").iterdir()) == runs_before
    assert snapshot(root / "serving") == before
    store = MetadataStore(root / "metadata.sqlite", read_only=True)
    try:
        assert [run["id"] for run in store.runs()] == ["r1"]
    finally:
        store.close()


def test_rollback_publishes_the_old_model_as_a_new_version_and_makes_it_the_next_baseline(tmp_path):
    root = tmp_path / "root"
    store = MetadataStore(root / "metadata.sqlite")
    model_1 = _push(store, root, "r1", 1, SPANS[:2])
    model_2 = _push(store, root, "r2", 2, SPANS[:3])
    store.close()
    serving = root / "serving" / "agnews"
    rolled = agnews_in_process("rollback", "1", "--pipeline-root", root)
    assert "served again as version 3" in rolled.stdout
    # TF Serving loads the highest version: a new one, holding version 1's model; versions 1 and 2 untouched.
    assert serving_versions(serving) == [1, 2, 3]
    assert (serving / "3" / "saved_model.pb").read_bytes() == b"model of r1"
    assert (serving / "2" / "saved_model.pb").read_bytes() == b"model of r2"
    # What the next retrain resolves as its evaluator's baseline and trainer's base (dag.SERVED_MODEL).
    config = load_config(flags={"pipeline.root": str(root)})
    store = MetadataStore(root / "metadata.sqlite", read_only=True)
    try:
        assert served_model(store, config).id == model_1 != model_2
        # The gate's anchor (the last served versions' blessings) leaves out version 2, rolled away from:
        # otherwise every later candidate is held to the model the operator took out of service.
        anchor = dag.SERVED_BLESSINGS.resolve(store, dag.STEPS, None, config)
        assert [blessing.properties["run"] for blessing in anchor] == ["r1", "r1"]
    finally:
        store.close()
    again = agnews_in_process("rollback", "3", "--pipeline-root", root, check_code=1)
    assert "already the one served" in again.stderr and serving_versions(serving) == [1, 2, 3]
