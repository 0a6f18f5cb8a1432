"""The backfill guard of pipeline/rollback.py on a toy store (fast: no training, a unit test): a pinned window that
ends before the newest span the served model learned is refused; the current or a newer span is not."""
from __future__ import annotations

from pathlib import Path

from contract.artifacts import Artifact
from contract.config_loading import load_config
from library.folder_layouts import serving_version_dir
from pipeline.metadata import MetadataStore
from pipeline.rollback import backfill_refusal

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
    store.start_run("r1", "retrain", {}, None)
    model = _execute(store, root, "r1", "trainer", {},
                     {"model": {"training_spans": {name: "0" * 64 for name in trained_on}}})["model"]
    version = serving_version_dir(root / "serving" / "agnews", 1)
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"model")
    _execute(store, root, "r1", "pusher", {"model": model},
             {"pushed_model": {"pushed": True, "version": 1, "path": str(version)}})
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
