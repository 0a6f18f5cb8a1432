"""Every stop is obeyed (issue 28 item 7), through the real `agnews-pipeline` command in a subprocess: a
SIGTERM or the deadline whose Interrupted exception is swallowed (by a component that catches it, or lost the
way Python discards an exception raised inside a weakref callback) still ends the run with 143 / 124, the run
marked interrupted / timed_out, and nothing of the step that was running published.

The faults are injected with support.hooks.after_import_hook (a sitecustomize.py on the subprocess's
PYTHONPATH) into the real ingest step of a run on the committed sample (`--until ingest`, a few seconds of
Beam).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.hooks import after_import_hook
from support.paths import PROJECT, SAMPLE_DIR

pytestmark = pytest.mark.e2e

# Ingest's run() touches AGNEWS_MARKER, then waits; the Interrupted that a signal (or the deadline) raises
# there is caught and dropped, AGNEWS_MARKER.swallowed is touched, and the real ingest runs to its end.
SWALLOWING_INGEST = after_import_hook("components.ingest.executor", """
import os, time
real_run = module.run
def run(inputs, output_dir, config, runtime):
    marker = os.environ["AGNEWS_MARKER"]
    open(marker, "a").close()
    try:
        time.sleep(300)
    except KeyboardInterrupt:  # what a careless component does: catch everything and carry on
        open(marker + ".swallowed", "a").close()
    return real_run(inputs, output_dir, config, runtime)
module.run = run
""")

# Right after a step's publish (its "step_done" line), a SIGTERM arrives and its exception is lost, as Python
# loses one raised inside a weakref callback: the run goes on as if nothing had happened.
LOST_AFTER_PUBLISH = after_import_hook("pipeline.step_execution", """
import os, signal, time
log_event = module.log_event
def lossy_log_event(log, event, message, **fields):
    log_event(log, event, message, **fields)
    if event == "step_done":
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here at the latest
        except KeyboardInterrupt:
            open(os.environ["AGNEWS_MARKER"] + ".swallowed", "a").close()
module.log_event = lossy_log_event
""")

# Once the pusher has copied the model into the serving folder, a SIGTERM arrives and its exception is lost.
LOST_DURING_PUSH = after_import_hook("components.pusher.executor", """
import os, signal, time
write = module.write_served_push_record
def lossy_write(*args, **kwargs):
    write(*args, **kwargs)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs here at the latest
    except KeyboardInterrupt:
        open(os.environ["AGNEWS_MARKER"] + ".swallowed", "a").close()
module.write_served_push_record = lossy_write
""")


def _env(hook: str, tmp_path: Path, marker: Path) -> dict:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(hook)
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
            "AGNEWS_MARKER": str(marker),
            "PYTHONPATH": os.pathsep.join([str(hooks), str(PROJECT), os.environ.get("PYTHONPATH", "")])}


def _command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "apps.cli",
        "run",
        "--data",
        f"csv:{SAMPLE_DIR}",
        "--pipeline-root",
        str(root),
        "--until",
        "ingest",
        *extra,
    ]


def _latest_run(root: Path) -> tuple[str, str]:
    db = sqlite3.connect(root / "metadata.sqlite")
    try:
        return db.execute("SELECT id, status FROM runs ORDER BY started DESC LIMIT 1").fetchone()
    finally:
        db.close()


def _ingest_execution_states(root: Path, run_id: str) -> list[str]:
    db = sqlite3.connect(root / "metadata.sqlite")
    try:
        return [
            row[0]
            for row in db.execute(
                "SELECT state FROM executions WHERE run_id = ? AND step = 'ingest'", (run_id,)
            )
        ]
    finally:
        db.close()


def _one_line(completed: subprocess.CompletedProcess, code: int, expected: str) -> None:
    assert completed.returncode == code, (
        f"exit {completed.returncode}, wanted {code}\n{completed.stderr[-3000:]}"
    )
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    last = [line for line in completed.stderr.splitlines() if line.strip()][-1]
    assert expected in last, last


def _nothing_published(root: Path, run_id: str) -> None:
    run_dir = root / "runs" / run_id
    assert not (run_dir / "ingest").exists() and not (run_dir / "ingest.failed").exists()
    assert _ingest_execution_states(root, run_id) == ["interrupted"]


def test_a_swallowed_sigterm_still_ends_the_run_with_143_and_publishes_nothing(tmp_path):
    root, marker = tmp_path / "root", tmp_path / "ingest-started"
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(_command(root), cwd=PROJECT, env=_env(SWALLOWING_INGEST, tmp_path, marker),
                                   stdout=stdout, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), "ingest never started"
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        stderr.seek(0)
        completed = subprocess.CompletedProcess(process.args, process.returncode, "", stderr.read())
    assert Path(f"{marker}.swallowed").exists()  # the component did swallow the stop and carried on
    _one_line(completed, 143, "interrupted by SIGTERM")
    run_id, status = _latest_run(root)
    assert status == "interrupted"
    _nothing_published(root, run_id)


def test_a_swallowed_deadline_still_ends_the_run_with_124_and_publishes_nothing(tmp_path):
    root, marker = tmp_path / "root", tmp_path / "ingest-started"
    prom = tmp_path / "agnews.prom"
    completed = subprocess.run(
        _command(root, "--deadline", "20s", "--metrics-file", str(prom)),
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(SWALLOWING_INGEST, tmp_path, marker),
    )
    assert marker.exists(), f"ingest never started within the deadline\n{completed.stderr[-3000:]}"
    assert Path(f"{marker}.swallowed").exists()
    _one_line(completed, 124, "interrupted by the deadline")
    run_id, status = _latest_run(root)
    assert status == "timed_out"
    _nothing_published(root, run_id)
    # The metrics file says so: the outcome timed_out, not failed.
    outcomes = {s.labels["outcome"]: s.value for family in text_string_to_metric_families(prom.read_text())
                for s in family.samples if s.name == "agnews_retrain_outcome"}
    assert outcomes["timed_out"] == 1 and outcomes["failed"] == 0


def test_a_sigterm_lost_after_a_publish_ends_the_run_before_the_next_step(tmp_path):
    root, marker = tmp_path / "root", tmp_path / "lost"
    completed = subprocess.run(_command(root), cwd=PROJECT, capture_output=True, text=True, timeout=600,
                               env=_env(LOST_AFTER_PUBLISH, tmp_path, marker))
    assert Path(f"{marker}.swallowed").exists()
    _one_line(completed, 143, "interrupted by SIGTERM")
    run_id, status = _latest_run(root)
    assert status == "interrupted"
    # The step finished before the stop: it stays published and reusable.
    assert (root / "runs" / run_id / "ingest" / "examples").is_dir()
    assert _ingest_execution_states(root, run_id) == ["complete"]



def test_a_sigterm_lost_during_the_push_publishes_no_serving_version(trained, root, tmp_path):
    # Version 1 claims another model, so the pusher copies a new version instead of adopting version 1.
    (root / "serving" / "agnews" / "1" / "push.json").write_text(json.dumps({"model_fingerprint": "another"}))
    marker = tmp_path / "lost"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "apps.cli",
            "run",
            "--config",
            str(trained[1]),
            "--pipeline-root",
            str(root),
            "--rerun",
            "pusher",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(LOST_DURING_PUSH, tmp_path, marker),
    )
    assert Path(f"{marker}.swallowed").exists()
    _one_line(completed, 143, "interrupted by SIGTERM")
    run_id, status = _latest_run(root)
    assert status == "interrupted"
    served = sorted(p.name for p in (root / "serving" / "agnews").iterdir())
    assert served == ["1"]  # no version 2, no .push-* folder left
    assert not (root / "runs" / run_id / "pusher").exists()
