"""End to end: the real `agnews-pipeline` command on the committed sample, every real component, then the
exported model loaded in a fresh process that imports only TensorFlow."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import agnews_in_process
from support.e2e import agnews, keras_probabilities, serve_in_a_fresh_process
from support.hooks import after_import_hook
from support.paths import CLI, PROJECT, SAMPLE_DIR
from support.paths import E2E_CONFIG as CONFIG
from support.streams import TINY_FLAGS

from library import layouts

pytestmark = pytest.mark.e2e

def pipeline_args(root: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), "--data", f"csv:{SAMPLE_DIR}", "--pipeline-root", str(root), *extra]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "root"
    # the run's TMPDIR and HOME: see test_a_run_writes_no_temporary_file_outside_its_root
    for outside in OUTSIDE:
        (root.parent / outside).mkdir()
    started = time.monotonic()
    completed = agnews("run", *pipeline_args(root),
                       env={**AS_A_USER, **{variable: str(root.parent / variable) for variable in OUTSIDE}})
    return root, completed, time.monotonic() - started


OUTSIDE = ("TMPDIR", "HOME")
# The test session's scratch folder sets these for every test (tests/conftest.py); a user's shell does not.
AS_A_USER = {"KERAS_HOME": None, "MPLCONFIGDIR": None}


def test_a_run_writes_no_temporary_file_outside_its_root(first_run):
    """Beam, TensorFlow's autograph and tf.Transform write temporary folders, Keras and matplotlib a
    configuration and a cache in the home folder; a whole run (all 7 steps) keeps them in its pipeline root's
    tmp/ and removes them when it ends."""
    root, _, _ = first_run
    for outside in OUTSIDE:
        assert sorted(str(p.relative_to(root.parent)) for p in (root.parent / outside).rglob("*")) == []
    assert sorted(p.name for p in (root / "tmp").iterdir()) == []


def test_full_run_reports_every_step_and_pushes_version_1(first_run):
    root, completed, _ = first_run
    out = completed.stdout
    for step in ("ingest", "validate", "transform", "tuner", "trainer", "evaluator", "pusher"):
        assert f"] {step}" in out and "done in" in out
    # The summary prints every output's headline properties (pipeline/headlines.py).
    assert "examples: train_rows=1148" in out and "transform_graph: vocab_size=5000" in out
    assert "evaluation: accuracy=" in out and "pushed_model: pushed=True, version=1" in out
    version_dir = root / "serving" / "agnews" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()
    run_dir = next((root / "runs").iterdir())
    record = json.loads((run_dir / "run.json").read_text())
    assert [s["state"] for s in record["steps"]] == ["ran"] * 7
    assert (run_dir / "report.md").read_text().count("|") > 10
    metrics = layouts.read_metrics(run_dir / "evaluator" / "evaluation")
    assert metrics["accuracy"] > 0.5  # a real model on real text beats chance (0.25) by far


def test_exported_model_serves_raw_strings_in_a_fresh_tensorflow_only_process(first_run):
    import numpy as np
    root, _, _ = first_run
    result = serve_in_a_fresh_process(root / "serving" / "agnews" / "1")
    probabilities = result["probabilities"]
    assert len(probabilities) == 6 and all(len(p) == 4 and abs(sum(p) - 1) < 1e-4 for p in probabilities)
    assert set(result["class_name"]) <= {"World", "Sports", "Business", "Sci/Tech"}
    assert result["empty_batch_shape"] == [0, 4]
    assert result["modules"] == []  # TensorFlow alone serves it: no TFT, tfx-bsl, Beam or tf_keras
    # The same inputs through the Keras model and the TFT graph in this process give the same probabilities.
    run_dir = next((root / "runs").iterdir())
    np.testing.assert_allclose(np.array(probabilities), keras_probabilities(run_dir), atol=1e-5)


def test_second_run_reuses_every_step_in_seconds(first_run):
    root, _, first_seconds = first_run
    started = time.monotonic()
    completed = agnews("run", *pipeline_args(root))
    seconds = time.monotonic() - started
    assert completed.stdout.count(" cached (") == 7, completed.stdout
    assert seconds < first_seconds / 3, (seconds, first_seconds)
    assert not (root / "serving" / "agnews" / "2").exists()  # the pusher was cached: nothing pushed twice


def test_trainer_change_reruns_only_the_model_steps(first_run):
    root, _, _ = first_run
    # Not blessed (bar set out of reach), so the first run's model stays the last blessed one for later tests.
    # One epoch where the first run trained up to three: a trainer change, and the cheapest one.
    # In this process (no TensorFlow import): nothing here needs a process of its own.
    completed = agnews_in_process("run", *pipeline_args(root, "--epochs", "1", "--min-accuracy", "0.99"))
    lines = {line.split("]")[1].split()[0]: line for line in completed.stdout.splitlines()
             if line.startswith("[") and ("cached (" in line or "done in" in line)}
    for step in ("ingest", "validate", "transform", "tuner"):
        assert "cached (" in lines[step], completed.stdout
    for step in ("trainer", "evaluator", "pusher"):
        assert "done in" in lines[step], completed.stdout


def test_worse_model_is_not_pushed(first_run):
    root, _, _ = first_run
    versions_before = sorted(p.name for p in (root / "serving" / "agnews").iterdir())
    # A one-word vocabulary leaves the model (the tiny one of support.streams) next to chance: far below the
    # blessed baseline.
    completed = agnews_in_process("run", *pipeline_args(root, "--set", "transform.vocab_size=1", *TINY_FLAGS,
                                                        "--min-accuracy", "0"))
    assert "pushed_model: pushed=False" in completed.stdout, completed.stdout
    assert "(not_pushed)" in completed.stdout
    assert sorted(p.name for p in (root / "serving" / "agnews").iterdir()) == versions_before


def test_runs_and_show_list_the_history(first_run):
    root, _, _ = first_run
    runs = agnews_in_process("runs", "--pipeline-root", str(root)).stdout
    assert runs.count("succeeded") >= 2
    header, first = runs.splitlines()[0].split(), runs.splitlines()[-1].split()  # newest first
    assert header[-3:] == ["accuracy", "blessed", "pushed_version"] and first[-2:] == ["true", "1"]
    first_id = sorted(p.name for p in (root / "runs").iterdir())[0]
    shown = agnews_in_process("show", first_id, "--pipeline-root", str(root)).stdout
    assert "lineage of model" in shown and "pushed by pusher in run" in shown and "version=1" in shown
    assert "examples" in shown and "best_hyperparameters" in shown and "transform_graph" in shown
    assert '"vocab_size": 5000' in shown and "values: {" in shown  # vocabulary and hyperparameters
    assert f"<- data: csv:{SAMPLE_DIR}  fingerprint " in shown  # the source data it was trained on


def test_runs_show_json_and_diff_compare_two_real_runs(first_run):
    """The first run (pushed v1) against test_trainer_change_reruns_only_the_model_steps' run (1 epoch, a bar
    out of reach, not blessed)."""
    root, _, _ = first_run
    runs = json.loads(agnews_in_process("runs", "--json", "--pipeline-root", str(root)).stdout)
    first = runs[-1]
    assert first["pushed_version"] == 1 and first["blessed"] is True and first["status"] == "succeeded"
    details = {r["id"]: json.loads(agnews_in_process("show", r["id"], "--json", "--pipeline-root", str(root))
                                   .stdout) for r in runs}
    changed = next(d for d in details.values() if d["config"]["evaluator"]["min_accuracy"] == 0.99)
    assert [s["step"] for s in changed["steps"]] == ["ingest", "validate", "transform", "tuner", "trainer",
                                                       "evaluator", "pusher"]
    assert changed["steps"][0]["reused_from_run"] == first["id"]

    diff = json.loads(agnews_in_process("diff", first["id"], changed["id"], "--json", "--pipeline-root",
                                        str(root)).stdout)
    assert {c["key"] for c in diff["config"]} == {"trainer.epochs", "evaluator.min_accuracy"}
    assert diff["hyperparameters"] == [] and diff["code_versions"] == [] and diff["data_fingerprint"]["same"]
    assert diff["metrics"]["accuracy"]["a"] == first["accuracy"] and 0 < diff["metrics"]["accuracy"]["b"] <= 1
    assert diff["length_buckets"] and all(v["a"]["examples"] == v["b"]["examples"]
                                          for v in diff["length_buckets"].values())
    assert diff["blessed"] == {"a": True, "b": False} and diff["pushed_version"] == {"a": 1, "b": None}
    text = agnews_in_process("diff", first["id"], changed["id"], "--pipeline-root", str(root)).stdout
    first_epochs = details[first["id"]]["config"]["trainer"]["epochs"]
    assert f"trainer.epochs: {first_epochs} -> 1" in text and "accuracy per length bucket" in text
    assert "blessed: True -> False" in text and "pushed version: 1 -> -" in text
    missing = agnews_in_process("diff", first["id"], "nope", "--pipeline-root", str(root), check_code=1)
    assert missing.stderr.strip() == f"diff: no run 'nope' under {root}"


def test_report_html_embeds_figures_and_holds_metrics_trials_and_lineage(first_run):
    from support.html_report import ReportPage

    root, _, _ = first_run
    run_dir = sorted((root / "runs").iterdir())[0]
    metrics = json.loads((run_dir / "evaluator" / "evaluation" / "metrics.json").read_text())
    page = ReportPage(run_dir / "report.html")
    assert page.external == []  # nothing outside the page: it can be mailed or archived alone
    assert len(page.images) == 2 and all(src.startswith("data:image/png;base64,") for src in page.images)
    buckets = page.tables["Evaluation (test split) per length bucket"]
    assert buckets[1][:3] == ["overall", str(metrics["examples"]), f"{metrics['accuracy']:.4f}"]
    assert {row[0] for row in buckets[2:]} == set(metrics["length_buckets"])
    matrix = page.tables["Confusion matrix (rows: true class, columns: predicted)"]
    assert [row[1:] for row in matrix[1:]] == [
        [str(v) for v in row] for row in metrics["overall"]["confusion_matrix"]
    ]
    trials = page.tables["Tuner trials"]
    assert len(trials) - 1 == len((run_dir / "tuner" / "best_hyperparameters" / "trials.csv").read_text()
                                  .strip().splitlines()) - 1 > 0
    lineage = {(row[0], row[1]): row[2] for row in page.tables["Lineage"][1:]}
    assert lineage[("trainer", "transform_graph")] == "transform.transform_graph"
    assert lineage[("evaluator", "model")] == "trainer.model"


def test_retrain_is_locked_skips_unchanged_data_and_predict_works(first_run, tmp_path):
    root, _, _ = first_run
    from pipeline.root import root_lock
    with root_lock(root):
        locked = agnews("retrain", *pipeline_args(root), check_code=5)
    assert "another agnews-pipeline process" in locked.stderr
    agnews("retrain", *pipeline_args(root), check_code=0)  # first retrain: runs (all cached), model is pushed
    skipped = agnews("retrain", *pipeline_args(root), check_code=3)
    assert "unchanged" in skipped.stdout

    lines = ["Oil prices hit a record high", "The Yankees won the World Series", "", "NASA launches a probe"]
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    version_dir = root / "serving" / "agnews" / "1"
    home = tmp_path / "home"
    home.mkdir()
    predicted = agnews("predict", "--model-dir", str(version_dir), "--input", str(texts),
                       env={**AS_A_USER, "HOME": str(home)})
    # Loading the model imports Keras and matplotlib, whose files went to a temporary folder, not under ~.
    assert list(home.rglob("*")) == []
    rows = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    # The oracle is not the code under test: the Keras model of the first run (which pushed version 1, see
    # test_exported_model_serves_raw_strings_in_a_fresh_tensorflow_only_process), loaded with Keras, on the
    # token ids the run's transform graph makes of the same texts, row by row and in order.
    import keras
    import numpy as np
    from support.models import keras_reference

    from library.layouts import CLASS_NAMES
    first_run_dir = sorted((root / "runs").iterdir())[0]
    model = keras.models.load_model(layouts.keras_model_file(first_run_dir / "trainer" / "model"))
    expected = keras_reference(model, first_run_dir / "transform" / "transform_graph", lines)
    assert [r["class_id"] for r in rows] == expected.argmax(axis=1).tolist()
    assert [r["class_name"] for r in rows] == [CLASS_NAMES[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)


def test_two_concurrent_retrains_never_run_at_once(first_run):
    root, _, _ = first_run
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    # --rerun evaluator: a fully cached retrain ends in a second or two, before the second one could be
    # refused.
    first = subprocess.Popen(
        [*CLI, "retrain", *pipeline_args(root), "--force", "--rerun", "evaluator"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in first.stdout:  # the first one holds the lock once it names its run
        if line.startswith("run ") and "pipeline root" in line:
            break
    second = agnews("retrain", *pipeline_args(root), "--force", check_code=5)
    waiting = subprocess.Popen([*CLI, "retrain", *pipeline_args(root), "--lock-timeout", "600"], cwd=PROJECT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_output = first.stdout.read()
    assert first.wait(timeout=600) == 0, first_output
    waiting_output = waiting.communicate(timeout=600)[0]
    # It waited for the first to finish, then found the data unchanged since that retrain.
    assert waiting.returncode == 3, waiting_output
    assert "another agnews-pipeline process" in second.stderr


def test_gc_keeps_what_the_pushed_model_and_kept_runs_need(first_run):
    root, _, _ = first_run
    from pipeline.metadata import MetadataStore
    store = MetadataStore(root / "metadata.sqlite")
    pusher_execution = store.outputs_where("pusher", "pushed_model", "pushed")[0][0]
    pushed_model = store.artifacts_of(pusher_execution["id"], "input")["model"]
    # The worse model's run (transform.vocab_size=1, test_worse_model_is_not_pushed) is neither kept nor
    # pushed: its own transform and model are garbage.
    worse_run = next(run["id"] for run in store.runs()
                     if json.loads(run["config_json"])["transform"]["vocab_size"] == 1)
    worse = {
        f"{e['step']}.{name}": artifact.uri
        for e in store.executions(worse_run)
        if e["state"] == "complete"
        for name, artifact in store.artifacts_of(e["id"], "output").items()
    }
    store.close()
    assert {"transform.transform_graph", "trainer.model"} <= set(worse)
    collected = agnews("gc", "--keep", "1", "--pipeline-root", str(root)).stdout
    deleted = [line.split(" ", 1)[1] for line in collected.splitlines() if line.startswith("deleted /")]
    assert collected.splitlines()[-1] == f"deleted {len(deleted)} folders and files"
    assert str(worse["transform.transform_graph"]) in deleted and str(worse["trainer.model"]) in deleted
    assert all(path.startswith(f"{root}/") and not os.path.lexists(path) for path in deleted)
    db = sqlite3.connect(root / "metadata.sqlite")
    marked = {str(root / uri) for (uri,) in db.execute("SELECT uri FROM artifacts WHERE deleted IS NOT NULL")}
    db.close()
    assert marked <= set(deleted)  # every deleted artifact is marked in the store, one by one
    # besides artifacts: failed attempts, temporary folders and the pages (report.html) of runs not kept
    assert all(path.endswith((".failed", "/report.html")) or path.startswith(f"{root}/tmp/")
               for path in set(deleted) - marked)
    assert pushed_model.uri.is_dir()  # the pushed model and its lineage stay
    assert (root / "serving" / "agnews" / "1" / "saved_model.pb").is_file()
    shown = agnews_in_process("show", "--pipeline-root", str(root)).stdout
    assert "lineage of model" in shown
    # The newest run is intact: running it again reuses every step.
    assert agnews("run", *pipeline_args(root)).stdout.count(" cached (") == 7


CLI_REPORTING_IMPORTS = r"""
import json, sys
from apps.cli.main import main
status = main(sys.argv[1:])
heavy = ("tensorflow", "tensorflow_transform", "apache_beam", "keras", "tensorflow_model_analysis")
print(json.dumps({"status": status, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_fully_cached_run_imports_no_tensorflow_tft_or_beam(first_run):
    root, _, _ = first_run
    completed = subprocess.run([sys.executable, "-c", CLI_REPORTING_IMPORTS, "run", *pipeline_args(root)],
                               cwd=PROJECT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
    assert completed.stdout.count(" cached (") == 7, completed.stdout + completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"status": 0, "heavy": []}


def test_tfds_without_network_gives_one_clear_line(tmp_path, offline_hooks):
    # An empty TFDS data dir (TFDS must download) in a process without network, whatever this machine has.
    completed = subprocess.run([*CLI, "run", "--data", "tfds", "--pipeline-root", str(tmp_path / "root"),
                                "--set", f"ingest.tfds_data_dir={tmp_path / 'tfds'}"], cwd=PROJECT,
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1",
                                    "PYTHONPATH": os.pathsep.join([str(offline_hooks), str(PROJECT)])})
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "--data csv:" in completed.stderr
    assert "Traceback" not in completed.stderr


# Hooks (support.hooks.after_import_hook) that touch the file AGNEWS_MARKER names from inside a step of the
# killed run. Transform: per transformed row, once tf.Transform has analysed train and transforms the splits,
# then 10 ms more per row, so the kill lands inside the running Beam pipeline however fast the machine.
TRANSFORM_STARTED = after_import_hook("components.transform.executor", """
import os, time
encode = module._encode
def _encode_after_marking(instance, coder):
    open(os.environ["AGNEWS_MARKER"], "a").close()
    time.sleep(0.01)
    return encode(instance, coder)
module._encode = _encode_after_marking
""")
# Trainer: when the trainer's train() starts (model building and fitting come after it).
TRAINING_STARTED = after_import_hook("components.trainer.executor", """
import os
train = module.train
def _train_after_marking(*args, **kwargs):
    open(os.environ["AGNEWS_MARKER"], "a").close()
    return train(*args, **kwargs)
module.train = _train_after_marking
""")


def kill_inside(args: list[str], hook: str, folder: Path, timeout: float = 900) -> None:
    """Starts `agnews-pipeline run` with `hook` in its sitecustomize.py, and SIGKILLs it as soon as the hook's
    marker file appears: the kill lands inside the code the hook marks, not after a guessed delay."""
    hooks, marker = folder / "kill-hooks", folder / "kill-marker"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(hook)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "AGNEWS_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(hooks), str(PROJECT)])}
    log_path = folder / "killed-run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*CLI, "run", *args], cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert process.poll() is None, (
                f"the run ended before the marked code ran:\n{log_path.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"no marker within {timeout}s:\n{log_path.read_text()[-3000:]}"
            )
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (
        f"the run ended before it could be killed: {process.returncode}"
    )


def output_fingerprints(root: Path, step: str) -> dict[str, str]:
    """Fingerprints of the outputs of the first execution of `step` that actually ran under `root` (later
    runs under the shared e2e root change the configuration)."""
    from pipeline.metadata import MetadataStore
    store = MetadataStore(root / "metadata.sqlite")
    try:
        execution = min((e for run in store.runs() for e in store.executions(run["id"])
                         if e["step"] == step and e["state"] == "complete"), key=lambda e: e["id"])
        return {name: a.fingerprint for name, a in store.artifacts_of(execution["id"], "output").items()}
    finally:
        store.close()


def test_run_killed_during_transform_resumes_and_matches_an_uninterrupted_run(tmp_path, first_run):
    root = tmp_path / "root"
    args = pipeline_args(root, "--until", "transform")
    kill_inside(args, TRANSFORM_STARTED, tmp_path)  # inside the Beam/TFT pipeline
    run_dir = next((root / "runs").iterdir())
    assert not (run_dir / "transform").exists()  # nothing that looks complete
    resumed = agnews_in_process("run", *args)  # a resumed run needs no process of its own
    assert resumed.stdout.count(" cached (") == 2 and "transform  done in" in resumed.stdout
    assert "interrupted" in agnews("runs", "--pipeline-root", str(root)).stdout
    # The resumed run's artifacts are the uninterrupted first run's, byte for byte.
    for step in ("ingest", "validate", "transform"):
        assert output_fingerprints(root, step) == output_fingerprints(first_run[0], step), step


def test_run_killed_during_training_resumes_from_the_trainer(tmp_path):
    root = tmp_path / "root"
    args = pipeline_args(root, *TINY_FLAGS)  # the lightest model: the kill lands at the trainer's start
    kill_inside(args, TRAINING_STARTED, tmp_path)
    store_runs = agnews("runs", "--pipeline-root", str(root)).stdout
    assert "running" in store_runs  # the killed process could not record its end
    resumed = agnews_in_process("run", *args)  # a resumed run needs no process of its own
    assert resumed.stdout.count(" cached (") == 4, resumed.stdout  # ingest, validate, transform, tuner
    assert "trainer    done in" in resumed.stdout and "evaluator  done in" in resumed.stdout
    assert "succeeded" in resumed.stdout
