"""Training on several workers (trainer.strategy multi_worker_mirrored): real `agnews-pipeline` processes on
127.0.0.1 — `train-worker --index 1` beside a `run` whose trainer starts the chief — the pushed model checked
in a fresh TensorFlow-only process, and the failures: a worker that never starts, flags that do not match the
job."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.e2e import keras_probabilities, serve_in_a_fresh_process
from support.hooks import after_import_hook
from support.paths import CLI, PROJECT, SAMPLE_DIR

from library import folder_layouts, layouts

pytestmark = pytest.mark.e2e

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(PROJECT)}
# In every training process (the run's chief child and the train-worker), counts the training steps the
# trainer's throughput callback sees and prints them per epoch: the proof that each worker trained.
COUNT_STEPS = after_import_hook("components.trainer.executor", """
import json, os
make_callback = module._throughput_callback
def counting_callback(examples_per_epoch):
    callback = make_callback(examples_per_epoch)
    worker = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index")
    batch_end, epoch_end, steps = callback.on_train_batch_end, callback.on_epoch_end, [0]
    def on_train_batch_end(batch, logs=None):
        steps[0] += 1
        batch_end(batch, logs)
    def on_epoch_end(epoch, logs=None):
        print(f"steps-hook: worker {worker} epoch {epoch + 1}: {steps[0]} training steps", flush=True)
        steps[0] = 0
        epoch_end(epoch, logs)
    callback.on_train_batch_end, callback.on_epoch_end = on_train_batch_end, on_epoch_end
    return callback
module._throughput_callback = counting_callback
""")
# the whole pipeline on the sample, 1 epoch: about 70 s on a loaded 2-core machine, over 300 s at load 20+
RUN_SECONDS = 900


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def run_args(root: Path, workers: list[str], *extra: str) -> list[str]:
    return [*CLI, "run", "--data", f"csv:{SAMPLE_DIR}", "--no-tune", "--epochs", "1", "--min-accuracy", "0",
            "--pipeline-root", str(root), "--set", "trainer.strategy=multi_worker_mirrored",
            "--set", f"trainer.workers=[{','.join(workers)}]", *extra]


def start_worker(root: Path, workers: list[str], index: int, timeout: float = RUN_SECONDS,
                 env: dict = ENV) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *CLI,
            "train-worker",
            "--pipeline-root",
            str(root),
            "--workers",
            ",".join(workers),
            "--index",
            str(index),
            "--timeout",
            str(timeout),
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()  # a worker waiting in TensorFlow's collective setup ignores SIGTERM
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker") / "root"
    hooks = tmp_path_factory.mktemp("hooks")
    (hooks / "sitecustomize.py").write_text(COUNT_STEPS)
    counting = {**ENV, "PYTHONPATH": os.pathsep.join([str(hooks), str(PROJECT)])}
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    worker = start_worker(root, workers, 1, env=counting)
    try:
        started = time.monotonic()
        completed = subprocess.run(run_args(root, workers), cwd=PROJECT, env=counting, capture_output=True,
                                   text=True, timeout=RUN_SECONDS)
        seconds = time.monotonic() - started
        worker_output, _ = worker.communicate(timeout=60)
    finally:
        stop(worker)
    return root, completed, worker.returncode, worker_output, seconds


def test_two_workers_train_the_model_that_is_evaluated_pushed_and_served(two_worker_run):
    root, completed, worker_code, worker_output, _ = two_worker_run
    assert completed.returncode == 0, f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    assert worker_code == 0, worker_output[-4000:]
    assert "train-worker: worker 1 done" in worker_output
    assert "trainer: multi-worker training on 2 workers" in completed.stdout
    run_dir = next((root / "runs").iterdir())
    history = layouts.read_history(run_dir / "trainer" / "model_run")
    assert history["strategy"] == "multi_worker_mirrored"
    assert history["replicas"] == 2 and history["workers"] == 2
    assert history["epochs_trained"] == 1
    record = json.loads((run_dir / "run.json").read_text())
    assert [s["state"] for s in record["steps"]] == ["ran"] * 7
    assert "pushed_model: pushed=True, version=1" in completed.stdout
    assert not folder_layouts.multi_worker_job_file(root).exists()  # removed at the end

    # Worker 1 trained in step with the chief: it printed the same epoch metrics ...
    chief_epoch = next(
        line for line in completed.stdout.splitlines() if line.startswith("trainer: epoch 1/1")
    )
    assert chief_epoch.split(";")[0].split(" (")[1] in worker_output
    # ... after as many training steps as the chief (each step all-reduces across both), counted in each
    # process. The chief's hook line is library output to the run: it is kept in the trainer's step log, not
    # printed.
    chief_log = folder_layouts.step_log_file(run_dir, "trainer").read_text(encoding="utf-8", errors="replace")
    [chief_steps] = [line for line in chief_log.splitlines() if line.startswith("steps-hook: worker 0 ")]
    [worker_steps] = [line for line in worker_output.splitlines() if line.startswith("steps-hook: worker 1 ")]
    steps = int(chief_steps.rsplit(": ", 1)[1].split()[0])
    assert steps > 0 and worker_steps == chief_steps.replace("worker 0", "worker 1"), (
        chief_steps,
        worker_steps,
    )

    result = serve_in_a_fresh_process(folder_layouts.serving_version_dir(root / "serving" / "agnews", 1))
    assert result["modules"] == []  # TensorFlow alone serves it ...
    # ... what the model the workers trained answers in this process.
    np.testing.assert_allclose(result["probabilities"], keras_probabilities(run_dir), atol=1e-5)


def test_a_worker_that_never_starts_fails_the_run_in_bounded_time(two_worker_run):
    # ingest .. tuner come from the cache; the trainer's key changes with the workers
    root = two_worker_run[0]
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    started = time.monotonic()
    completed = subprocess.run(run_args(root, workers, "--set", "trainer.worker_timeout=5"), cwd=PROJECT,
                               env=ENV, capture_output=True, text=True, timeout=RUN_SECONDS)
    seconds = time.monotonic() - started
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    error = [line for line in completed.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(error) == 1, completed.stderr[-3000:]
    assert f"worker 1 ({workers[1]}) did not join within 5 s" in error[0]
    assert f"train-worker --pipeline-root {root} --workers {','.join(workers)} --index 1" in error[0]
    assert "Traceback" not in completed.stderr
    assert seconds < 90
    runs = json.loads(subprocess.run([*CLI, "runs", "--json", "--pipeline-root", str(root)], cwd=PROJECT,
                                     env=ENV, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert runs[0]["status"] == "failed" and runs[1]["status"] == "succeeded"
    assert folder_layouts.serving_versions(root / "serving" / "agnews") == [1]  # nothing new published
    assert not folder_layouts.multi_worker_job_file(root).exists()


def test_a_worker_that_dies_fails_the_run_in_bounded_time_naming_it(two_worker_run):
    root = two_worker_run[0]
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    worker = start_worker(root, workers, 1)
    run = subprocess.Popen(
        run_args(root, workers, "--epochs", "3"),
        cwd=PROJECT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in worker.stdout:  # ends when the worker exits; bounded by the assertion below
            if line.startswith("train-worker: every worker joined") or time.monotonic() > deadline:
                break
        assert time.monotonic() < deadline, "the workers never joined"
        worker.kill()
        killed = time.monotonic()
        _, stderr = run.communicate(timeout=120)
        seconds = time.monotonic() - killed
    finally:
        stop(worker)
        stop(run)
    assert run.returncode == 1
    error = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert len(error) == 1 and f"worker 1 ({workers[1]}) stopped answering during training" in error[0], (
        stderr
    )
    assert "Traceback" not in stderr
    assert seconds < 60
    assert folder_layouts.serving_versions(root / "serving" / "agnews") == [1]
    assert not folder_layouts.multi_worker_job_file(root).exists()


def test_train_worker_flags_that_do_not_match_the_job_give_one_line(tmp_path):
    workers = ["127.0.0.1:1234", "127.0.0.1:1235"]
    folder_layouts.write_multi_worker_job(tmp_path, {"workers": workers, "worker_timeout": 5})

    def train_worker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "train-worker", "--pipeline-root", str(tmp_path), *args], cwd=PROJECT,
                              env=ENV, capture_output=True, text=True, timeout=60)

    for args, code, message in [
            (["--workers", "127.0.0.1:1234,127.0.0.1:9999", "--index", "1"], 2,
             "the training job in {root} is for workers 127.0.0.1:1234,127.0.0.1:1235"),
            (["--workers", ",".join(workers), "--index", "2"], 2, "--index 2 is not a position in --workers"),
            (["--workers", "127.0.0.1", "--index", "1"], 2, "is not HOST:PORT"),
            (["--pipeline-root", str(tmp_path / "elsewhere"), "--workers", ",".join(workers), "--index", "1",
              "--timeout", "1"], 1, "no training job for workers")]:
        completed = train_worker(*args)
        assert completed.returncode == code, completed.stderr
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and message.format(root=tmp_path) in lines[0], completed.stderr
