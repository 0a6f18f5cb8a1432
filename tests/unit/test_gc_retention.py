"""The retention policy of pipeline/gc.py on a store of toy executions (fast: no training, a unit test): each
model warm-starts from the one before, and only the last K served versions' lineage and the newest runs
stay."""
from __future__ import annotations

from pathlib import Path

from contract.artifacts import Artifact
from library.folder_layouts import serving_version_dir, serving_versions
from pipeline.gc import collect_garbage
from pipeline.metadata import MetadataStore


def _execute(store: MetadataStore, root: Path, run_id: str, step: str, inputs: dict[str, int],
             outputs: dict[str, dict]) -> dict[str, int]:
    execution = store.start_execution(run_id, step, f"key-{run_id}-{step}", "code", {})
    published = {}
    for name, properties in outputs.items():
        folder = root / "runs" / run_id / step / name
        folder.mkdir(parents=True)
        (folder / "data").write_bytes(b"x" * 1000)
        published[name] = (Artifact(name, folder, properties), f"{run_id}-{name}")
    return store.complete_execution(execution, root / "runs" / run_id / step, inputs, published)


def weekly_root(root: Path, weeks: int) -> tuple[MetadataStore, Path, dict[int, int]]:
    """A root where week i trained model i from model i-1 (warm start), compared it with model i-1 and pushed
    it as version i; returns (store, serving folder, {week: model artifact id})."""
    store = MetadataStore(root / "metadata.sqlite")
    serving = root / "serving" / "agnews"
    models: dict[int, int] = {}
    for week in range(1, weeks + 1):
        run_id = f"2026120{week % 10}T00000{week % 10}-{week:06x}"
        store.start_run(run_id, "retrain", {}, None)
        examples = _execute(store, root, run_id, "ingest", {}, {"examples": {}})["examples"]
        previous = {"base_model": models[week - 1]} if week > 1 else {}
        model = _execute(store, root, run_id, "trainer", {"examples": examples, **previous}, {"model": {}})[
            "model"
        ]
        baseline = {"baseline_model": models[week - 1]} if week > 1 else {}
        blessing = _execute(store, root, run_id, "evaluator", {"model": model, **baseline},
                            {"blessing": {"blessed": True}})["blessing"]
        version_dir = serving_version_dir(serving, week)
        version_dir.mkdir(parents=True)
        (version_dir / "saved_model.pb").write_bytes(b"model")
        _execute(store, root, run_id, "pusher", {"model": model, "blessing": blessing},
                 {"pushed_model": {"pushed": True, "version": week, "path": str(version_dir)}})
        store.finish_run(run_id, "succeeded", outcome="pushed")
        models[week] = model
    return store, serving, models


def test_policy_keeps_the_last_served_versions_lineage_and_cuts_the_warm_start_chain(tmp_path):
    root = tmp_path / "root"
    store, serving, models = weekly_root(root, 6)
    store.close()
    collect_garbage(root, 1, serving_dir=serving, served_versions=2, log=lambda _: None)
    store = MetadataStore(root / "metadata.sqlite")
    alive = {week: store.artifact(model).uri.exists() for week, model in models.items()}
    # Versions 5 and 6 with their lineage; model 4 is version 5's warm-start base and baseline: kept itself,
    # but not what model 4 came from. Models 1-3 are gone from the disk and marked deleted in the store.
    assert alive == {1: False, 2: False, 3: False, 4: True, 5: True, 6: True}
    assert all(store.artifact(models[week]).deleted for week in (1, 2, 3))
    assert (root / "runs" / "20261205T000005-000005" / "ingest" / "examples").is_dir()  # version 5's data
    assert not (root / "runs" / "20261204T000004-000004" / "ingest" / "examples").exists()
    assert serving_versions(serving) == [5, 6]  # older versions left the serving folder
    store.close()


def test_what_the_newest_runs_started_from_is_kept_without_its_lineage(tmp_path):
    root = tmp_path / "root"
    store, serving, models = weekly_root(root, 6)
    store.close()
    collect_garbage(root, 2, serving_dir=serving, served_versions=2, log=lambda _: None)
    store = MetadataStore(root / "metadata.sqlite")
    # Run 5 (kept) started from model 4: model 4 stays, the data it was computed from does not.
    assert store.artifact(models[4]).uri.exists() and not store.artifact(models[3]).uri.exists()
    assert not (root / "runs" / "20261204T000004-000004" / "ingest" / "examples").exists()
    store.close()


def test_without_a_policy_every_pushed_model_and_version_is_kept(tmp_path):
    root = tmp_path / "root"
    store, serving, models = weekly_root(root, 4)
    store.close()
    collect_garbage(root, 1, serving_dir=serving, log=lambda _: None)
    store = MetadataStore(root / "metadata.sqlite")
    assert all(store.artifact(model).uri.exists() for model in models.values())
    assert serving_versions(serving) == [1, 2, 3, 4]
    store.close()


def _weeks_refused(store: MetadataStore, root: Path, base: int, weeks: range) -> dict[int, int]:
    """Weeks that trained a model from model `base` and were refused by the gate (nothing pushed); returns
    {week: model artifact id}."""
    models = {}
    for week in weeks:
        run_id = f"2026121{week % 10}T00000{week % 10}-refused"
        store.start_run(run_id, "retrain", {}, None)
        examples = _execute(store, root, run_id, "ingest", {}, {"examples": {}})["examples"]
        model = _execute(store, root, run_id, "trainer", {"examples": examples, "base_model": base},
                         {"model": {}})["model"]
        _execute(store, root, run_id, "evaluator", {"model": model, "baseline_model": base},
                 {"blessing": {"blessed": False}})
        store.finish_run(run_id, "succeeded", outcome="not_blessed")
        models[week] = model
    return models


def test_policy_keeps_a_model_nothing_published_only_in_the_newest_run(tmp_path):
    root = tmp_path / "root"
    store, serving, pushed = weekly_root(root, 4)
    refused = _weeks_refused(store, root, pushed[4], range(5, 8))
    store.close()
    collect_garbage(root, 3, serving_dir=serving, served_versions=2, log=lambda _: None)
    store = MetadataStore(root / "metadata.sqlite")
    # the served versions' models stay; of the 3 kept runs' refused candidates, only the newest one's
    assert [store.artifact(pushed[week]).uri.exists() for week in (3, 4)] == [True, True]
    assert {week: store.artifact(model).uri.exists() for week, model in refused.items()} == {
        5: False, 6: False, 7: True}
    assert store.artifact(refused[5]).deleted
    # the older kept runs keep the rest of what they computed
    assert all((root / "runs" / f"2026121{week}T00000{week}-refused" / "ingest" / "examples").is_dir()
               for week in (5, 6))
    store.close()


def test_without_a_policy_the_kept_runs_keep_their_refused_models(tmp_path):
    root = tmp_path / "root"
    store, serving, pushed = weekly_root(root, 2)
    refused = _weeks_refused(store, root, pushed[2], range(5, 8))
    store.close()
    collect_garbage(root, 3, serving_dir=serving, log=lambda _: None)
    store = MetadataStore(root / "metadata.sqlite")
    assert all(store.artifact(model).uri.exists() for model in refused.values())
    store.close()


def test_failed_runs_do_not_push_a_trained_run_out_of_the_kept_ones(tmp_path):
    root = tmp_path / "root"
    store, serving, models = weekly_root(root, 4)
    # two weeks whose runs failed after ingest (a quarantined span, a full disk): no model
    for week in (8, 9):
        run_id = f"2026120{week}T00000{week}-failed"
        store.start_run(run_id, "retrain", {}, None)
        _execute(store, root, run_id, "ingest", {}, {"examples": {}})
        store.finish_run(run_id, "failed", error="quarantined")
    store.close()
    collect_garbage(root, 2, serving_dir=serving, served_versions=1, log=lambda _: None)
    # the 2 newest runs that went through (weeks 3 and 4) stay whole, and so do the newer failed ones
    for run_id in ("20261203T000003-000003", "20261204T000004-000004"):
        assert (root / "runs" / run_id / "ingest" / "examples").is_dir()
    for week in (8, 9):
        assert (root / "runs" / f"2026120{week}T00000{week}-failed" / "ingest" / "examples").is_dir()
    # older runs: only what the served version 4 started from (model 3) would stay, and week 2's data goes
    assert not (root / "runs" / "20261202T000002-000002" / "ingest" / "examples").exists()


def test_a_run_that_is_not_kept_keeps_its_record_but_not_its_page(tmp_path):
    root = tmp_path / "root"
    store, serving, _ = weekly_root(root, 4)
    store.close()
    runs = sorted((root / "runs").iterdir())
    record = ("run.json", "report.md", "logs/trainer.log")
    for run_dir in runs:
        for name in (*record, "report.html"):
            (run_dir / name).parent.mkdir(exist_ok=True)
            (run_dir / name).write_text("x" * 1000)
    collect_garbage(root, 2, dry_run=True, serving_dir=serving, served_versions=1, log=lambda _: None)
    assert all((run_dir / "report.html").is_file() for run_dir in runs)  # a dry run deletes nothing
    collect_garbage(root, 2, serving_dir=serving, served_versions=1, log=lambda _: None)
    # the 2 newest runs whole; the older ones keep their record, not the page of figures
    assert [(run_dir / "report.html").is_file() for run_dir in runs] == [False, False, True, True]
    assert all((run_dir / name).is_file() for run_dir in runs for name in record)
