"""The runner's mechanics on two toy components: caching, atomic publish, interrupted runs, locking, lineage
and garbage collection."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import toy_components
from support.cli import agnews_in_process

from contract.config_loading import load_config
from pipeline.gc import collect_garbage
from pipeline.metadata import MetadataStore
from pipeline.root import LockBusy, root_lock
from pipeline.runner import Runner
from pipeline.store_schema import SCHEMA_VERSION


def make_config(root: Path, data: Path, epochs: int = 1):
    return load_config(
        flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}", "trainer.epochs": epochs}
    )


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("1 2 3\n")
    return folder


def run_toy(root, data, epochs=1, **kwargs):
    runner = Runner(make_config(root, data, epochs), log=lambda m: None, steps=toy_components.STEPS)
    try:
        return runner.run(**kwargs)
    finally:
        runner.close()


def states(result):
    return [s.state for s in result.steps]


def test_second_run_reuses_every_step_and_config_change_reruns_only_downstream(tmp_path, data):
    root = tmp_path / "root"
    first = run_toy(root, data)
    assert states(first) == ["ran", "ran"]
    assert (first.artifact("double", "doubled").uri / "values.txt").read_text().split() == ["2", "4", "6"]

    second = run_toy(root, data)
    assert states(second) == ["cached", "cached"]
    assert second.artifact("double", "doubled").uri == first.artifact("double", "doubled").uri

    third = run_toy(root, data, epochs=3)  # only the second step's configuration changed
    assert states(third) == ["cached", "ran"]
    assert (third.artifact("double", "doubled").uri / "values.txt").read_text().split() == ["6", "12", "18"]


def test_seed_change_reruns_only_seeded_steps(tmp_path, data):
    root = tmp_path / "root"
    run_toy(root, data)
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}", "pipeline.seed": 7})
    runner = Runner(config, log=lambda m: None, steps=toy_components.STEPS)
    try:
        assert states(runner.run()) == ["cached", "ran"]
    finally:
        runner.close()


def test_new_data_invalidates_the_source_and_everything_downstream(tmp_path, data):
    root = tmp_path / "root"
    run_toy(root, data)
    (data / "train.csv").write_text("1 2 3 4\n")
    assert states(run_toy(root, data)) == ["ran", "ran"]


def test_no_cache_and_rerun_force_work(tmp_path, data):
    root = tmp_path / "root"
    run_toy(root, data)
    assert states(run_toy(root, data, use_cache=False)) == ["ran", "ran"]
    # Re-running the source yields identical content, so the next step's inputs are unchanged: cached.
    assert states(run_toy(root, data, rerun=("source",))) == ["ran", "cached"]


def test_corrupted_output_is_detected_by_fingerprint_and_recomputed(tmp_path, data):
    root = tmp_path / "root"
    first = run_toy(root, data)
    values = first.artifact("source", "numbers").uri / "values.txt"
    values.write_text(values.read_text()[:2])  # truncate after the run
    second = run_toy(root, data)
    assert states(second) == ["ran", "cached"]  # recomputed source has the original content again
    assert (second.artifact("source", "numbers").uri / "values.txt").read_text() == "1\n2\n3"


def test_until_skips_later_steps(tmp_path, data):
    result = run_toy(tmp_path / "root", data, until="source")
    assert states(result) == ["ran", "skipped"]
    assert not (result.run_dir / "double").exists()


def test_from_and_only_take_upstream_outputs_from_the_newest_matching_execution(tmp_path, data, monkeypatch):
    root = tmp_path / "root"
    first = run_toy(root, data)
    source_uri = first.artifact("source", "numbers").uri

    # The source is not run again, even though it would fail now: its outputs come from the first run.
    monkeypatch.setenv("TOY_FAIL", "source")
    from_double = run_toy(root, data, epochs=3, from_step="double")
    assert states(from_double) == ["cached", "ran"]
    assert from_double.artifact("source", "numbers").uri == source_uri
    assert (from_double.artifact("double", "doubled").uri / "values.txt").read_text().split() == [
        "6",
        "12",
        "18",
    ]
    assert states(run_toy(root, data, epochs=5, only="double")) == ["cached", "ran"]
    monkeypatch.delenv("TOY_FAIL")

    only_source = run_toy(root, data, only="source", rerun=("source",))  # --only composes with --rerun
    assert states(only_source) == ["ran", "skipped"] and only_source.steps[1].note == "--until source"
    assert states(run_toy(root, data, from_step="source", until="source")) == ["cached", "skipped"]


def test_from_fails_naming_the_step_without_a_matching_execution(tmp_path, data):
    root = tmp_path / "root"
    run_toy(root, data)
    (data / "train.csv").write_text("4 5\n")  # new data: no source execution matches any more
    result = run_toy(root, data, from_step="double")
    assert result.status == "failed" and states(result) == ["failed"]
    assert result.error == (
        "--from double needs the outputs of source, but source has no successful execution "
        "with this configuration and these inputs; run it first "
        "(agnews-pipeline run --until source)"
    )
    assert not (result.run_dir / "source").exists()


@pytest.mark.parametrize("flags, message", [
    (["--only", "trainer", "--from", "tuner"], "--only STEP runs one step; it cannot be combined"),
    (["--only", "trainer", "--until", "pusher"], "--only STEP runs one step; it cannot be combined"),
    (["--from", "trainer", "--until", "transform"], "--until transform comes before --from trainer"),
])
def test_bad_step_ranges_are_one_line_usage_errors(tmp_path, flags, message):
    process = agnews_in_process("run", "--pipeline-root", tmp_path / "r", "--data", f"csv:{tmp_path}", *flags,
                                check_code=2)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run: ") and message in lines[0], process.stderr
    assert not (tmp_path / "r").exists()


def test_show_json_and_diff_of_toy_runs(tmp_path, data):
    from pipeline.views import diff_runs, format_diff, run_details

    root = tmp_path / "root"
    first, second = run_toy(root, data), run_toy(root, data, epochs=3)
    details = run_details(root, second.run_id)
    assert details["id"] == second.run_id and details["config"]["trainer"]["epochs"] == 3
    assert [(s["step"], s["state"], s["reused_from_run"]) for s in details["steps"]] == [
        ("source", "cached", first.run_id), ("double", "complete", None)]
    assert details["steps"][1]["outputs"]["doubled"]["properties"] == {"sum": 36}
    assert run_details(root, None)["id"] == second.run_id  # the latest by default

    diff = diff_runs(root, first.run_id, second.run_id)
    assert diff["config"] == [{"key": "trainer.epochs", "a": 1, "b": 3}]
    assert diff["data_fingerprint"]["same"] and diff["code_versions"] == [] and diff["metrics"] == {}
    text = format_diff(diff)
    assert "configuration: 1 differ\n  trainer.epochs: 1 -> 3" in text and "code versions: same" in text
    with pytest.raises(LookupError, match="no run 'nope'"):
        diff_runs(root, first.run_id, "nope")


def test_report_html_is_self_contained_and_lists_steps_and_lineage(tmp_path, data):
    from support.html_report import ReportPage

    first = run_toy(tmp_path / "root", data)
    page = ReportPage(first.run_dir / "report.html")
    assert page.headings[0] == f"Run {first.run_id}: succeeded" and page.external == []
    steps = page.tables["Steps"]
    assert steps[0] == ["step", "state", "seconds", "outputs"]
    assert [row[:2] for row in steps[1:]] == [["source", "ran"], ["double", "ran"]]
    assert steps[2][3] == "doubled: double/doubled"
    assert page.tables["Lineage"][1:] == [["double", "numbers", "source.numbers",
                                           str(first.artifact("source", "numbers").uri)]]


def test_failed_step_publishes_nothing_and_is_recorded(tmp_path, data, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("TOY_FAIL", "double")
    result = run_toy(root, data)
    assert result.status == "failed" and "double was told to fail" in result.error
    assert not (result.run_dir / "double").exists()
    assert (result.run_dir / "double.failed").exists()  # kept for inspection, under a name that is not final
    store = MetadataStore(root / "metadata.sqlite")
    assert [e["state"] for e in store.executions(result.run_id)] == ["complete", "failed"]
    assert store.run(result.run_id)["status"] == "failed"
    store.close()
    monkeypatch.delenv("TOY_FAIL")
    assert states(run_toy(root, data)) == ["cached", "ran"]


def _runner_script(root: Path, data: Path) -> str:
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from support import toy_components
        from contract.config_loading import load_config
        from pipeline.root import root_lock
        from pipeline.runner import Runner
        config = load_config(flags={{"pipeline.root": {str(root)!r}, "ingest.data": "csv:{data}"}})
        with root_lock(config.pipeline_root(), timeout=float(sys.argv[1]) if len(sys.argv) > 1 else 0):
            Runner(config, steps=toy_components.STEPS).run()
    """)


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_killed_run_leaves_a_consistent_root_and_the_next_run_resumes(tmp_path, data):
    root = tmp_path / "root"
    marker = tmp_path / "killed-here"
    env = {**os.environ, "TOY_KILL": "double", "TOY_KILL_MARKER": str(marker)}
    process = subprocess.Popen([sys.executable, "-c", _runner_script(root, data)], env=env)
    _wait_for(marker)
    process.send_signal(signal.SIGKILL)
    process.wait()

    store = MetadataStore(root / "metadata.sqlite")
    killed_run = store.runs()[0]
    assert killed_run["status"] == "running"  # nobody could record the kill
    run_dir = root / "runs" / killed_run["id"]
    assert (run_dir / "source").is_dir() and not (run_dir / "double").exists()
    store.close()

    resumed = run_toy(root, data)
    assert states(resumed) == ["cached", "ran"]
    store = MetadataStore(root / "metadata.sqlite")
    assert store.run(killed_run["id"])["status"] == "interrupted"
    store.close()
    uninterrupted = run_toy(tmp_path / "other-root", data)
    for step, output in (("source", "numbers"), ("double", "doubled")):
        assert (resumed.artifact(step, output).uri / "values.txt").read_text() == (
            uninterrupted.artifact(step, output).uri / "values.txt").read_text()


def test_root_lock_excludes_a_second_process(tmp_path):
    root = tmp_path / "root"
    with root_lock(root):
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from pipeline.root import root_lock, LockBusy\n"
                f"try:\n    with root_lock(Path({str(root)!r}), timeout=1): sys.exit(0)\n"
                "except LockBusy: sys.exit(7)",
            ],
            capture_output=True,
        )
        assert probe.returncode == 7
    with root_lock(root, timeout=0):  # released
        pass
    with pytest.raises(LockBusy):
        with root_lock(root):
            with root_lock(root, timeout=0.2):
                pass


def test_lineage_and_store_schema(tmp_path, data):
    root = tmp_path / "root"
    result = run_toy(root, data)
    store = MetadataStore(root / "metadata.sqlite")
    assert store.schema_version() == SCHEMA_VERSION
    doubled_id = [e for e in store.executions(result.run_id) if e["step"] == "double"][0]["id"]
    doubled = store.artifacts_of(doubled_id, "output")["doubled"]
    chain = store.lineage(doubled.id)
    assert [execution["step"] for execution, _ in chain] == ["double", "source"]
    assert chain[0][1]["numbers"].properties == {"rows": 3}
    store.close()
    # Reopening migrates nothing and keeps the data.
    store = MetadataStore(root / "metadata.sqlite")
    assert len(store.runs()) == 1
    store.close()


def test_gc_keeps_what_kept_runs_need(tmp_path, data):
    root = tmp_path / "root"
    old = run_toy(root, data)
    (data / "train.csv").write_text("5 6\n")
    new = run_toy(root, data)
    removed = collect_garbage(root, keep=1)
    assert old.artifact("source", "numbers").uri in removed
    assert not old.artifact("double", "doubled").uri.exists()
    assert new.artifact("double", "doubled").uri.exists() and new.artifact("source", "numbers").uri.exists()
    # The old run's records stay, marked deleted; a run needing them again recomputes.
    (data / "train.csv").write_text("1 2 3\n")
    assert states(run_toy(root, data)) == ["ran", "ran"]
