"""Fault injection through the real `agnews-pipeline` command (subprocesses): copied and symlinked roots under
gc, kill -9 inside the pusher, SIGINT/SIGTERM during a Beam step and during training, broken and lost stores,
secrets, read-only roots and hostile input. Every case checks the exit code, that the message is one line (no
traceback), the store's state, what is served, and that nothing pushed or computed is lost.

One tiny pipeline (no tuning, 1 epoch, small vocabulary, the committed sample) is trained once per module;
each test works on its own copy of that root.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
from support.cli import agnews_in_process
from support.faults import agnews, command_env, latest_run, one_line, push_leftovers, store_rows, versions
from support.hooks import after_import_hook
from support.paths import PROJECT, SAMPLE_DIR

pytestmark = pytest.mark.e2e

# Kills the process with SIGKILL around the pusher's rename of its .push-* folder (AGNEWS_FAULT selects
# where).
SITECUSTOMIZE = """
import os, signal
_fault = os.environ.get("AGNEWS_FAULT")
if _fault:
    _rename = os.rename
    def _faulty_rename(source, target, *args, **kwargs):
        if not os.path.basename(str(source)).startswith(".push-"):
            return _rename(source, target, *args, **kwargs)
        if _fault == "push-before-rename":
            os.kill(os.getpid(), signal.SIGKILL)
        _rename(source, target, *args, **kwargs)
        if _fault == "push-after-rename":
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = _faulty_rename
"""

# "slow-ingest": once Beam converts its first row, ingest touches AGNEWS_MARKER, then takes 10 ms more per
# row, so a signal sent when the marker appears lands inside the running Beam pipeline however fast the
# machine.
SLOW_INGEST = after_import_hook("components.ingest.executor", """
import os, time
if os.environ.get("AGNEWS_FAULT") == "slow-ingest":
    convert = module.to_tf_example
    def slow_to_tf_example(row):
        open(os.environ["AGNEWS_MARKER"], "a").close()
        time.sleep(0.01)
        return convert(row)
    module.to_tf_example = slow_to_tf_example
""")


@pytest.fixture
def config(trained) -> Path:
    return trained[1]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE + SLOW_INGEST)
    return folder


def run_args(root: Path, config: Path, *extra) -> list:
    return ["run", "--config", config, "--pipeline-root", root, *extra]


def skip_unless_ci(reason: str) -> None:
    """Skips a fault test that this machine cannot run; under CI=true (CI runs as root, where every fault here
    can be injected) the same reason fails it instead, so a fault test is never silently lost."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fault tests must run in CI)")
    pytest.skip(reason)


# ----------------------------------------------------------------------------------------------------------
# gc


def test_store_keeps_uris_relative_and_is_private(trained):
    root, _ = trained
    uris = [uri for (uri,) in store_rows(root, "SELECT uri FROM artifacts")]
    assert uris and all(not os.path.isabs(uri) and uri.startswith("runs/") for uri in uris)
    assert stat.S_IMODE((root / "metadata.sqlite").stat().st_mode) == 0o600


def test_gc_on_a_copied_root_deletes_only_inside_the_copy_and_the_copy_uses_its_own_cache(
    root, config, tmp_path
):
    # all cached: run 1 is old now
    assert agnews(*run_args(root, config, "--until", "ingest")).returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    files_before = sorted(p.relative_to(root) for p in root.rglob("*"))
    collected = agnews("gc", "--keep", "1", "--pipeline-root", copy)
    assert collected.returncode == 0, collected.stderr[-2000:]
    deleted = [
        line.split(" ", 1)[1] for line in collected.stdout.splitlines() if line.startswith("deleted /")
    ]
    assert deleted and all(path.startswith(str(copy) + "/") for path in deleted)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == files_before  # the original is untouched
    marked = store_rows(copy, "SELECT uri FROM artifacts WHERE deleted IS NOT NULL")
    # every deleted artifact folder, marked in the store; besides them only the pages of the older runs
    pages = [path for path in deleted if path.endswith("/report.html")]
    assert sorted(str(copy / uri) for (uri,) in marked) == sorted(set(deleted) - set(pages))
    newest = latest_run(copy)[0]
    assert pages and all(Path(page).parent.parent == copy / "runs" and Path(page).parent.name != newest
                         for page in pages)
    assert store_rows(root, "SELECT COUNT(*) FROM artifacts WHERE deleted IS NOT NULL") == [(0,)]
    # The copy is self-consistent: with the original gone, its cache still serves its own files.
    shutil.rmtree(root)
    again = agnews(*run_args(copy, config, "--until", "transform"))
    assert again.returncode == 0, again.stderr[-2000:]
    states = {line.split()[1]: line.split()[2] for line in again.stdout.splitlines() if line.startswith("[")}
    # validate re-runs: gc collected its statistics (no kept run or pushed model needs them).
    assert (states["ingest"], states["validate"], states["transform"]) == ("cached", "done", "cached")
    assert str(root) + "/" not in again.stdout
    assert versions(copy) == ["1"]


def test_gc_never_follows_symlinks_out_of_the_root(root, config, tmp_path):
    assert agnews(*run_args(root, config, "--until", "ingest")).returncode == 0
    victim = tmp_path / "victim"
    for folder in ("a", "b"):
        (victim / folder).mkdir(parents=True)
        (victim / folder / "precious.txt").write_text("keep me")
    shutil.rmtree(root / "tmp", ignore_errors=True)
    (root / "tmp").symlink_to(victim)
    # A doomed artifact folder that is a symlink (shutil.rmtree raised on it, stopping gc halfway).
    [(evaluation_uri,)] = store_rows(root, "SELECT uri FROM artifacts WHERE name = 'evaluation'")
    other = tmp_path / "other"
    shutil.copytree(root / evaluation_uri, other)
    shutil.rmtree(root / evaluation_uri)
    (root / evaluation_uri).symlink_to(other)
    # A copy a killed pusher left in the serving folder (its process is gone).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = root / "serving" / "agnews" / f".push-{dead.pid}-0123abcd"
    shutil.copytree(root / "serving" / "agnews" / "1", stale)
    collected = agnews("gc", "--keep", "1", "--pipeline-root", root)
    assert collected.returncode == 0, collected.stderr[-2000:]
    assert sorted(str(p.relative_to(victim)) for p in victim.rglob("*")) == [
        "a", "a/precious.txt", "b", "b/precious.txt"]
    assert (other / "metrics.json").is_file()
    assert not os.path.lexists(root / evaluation_uri) and not os.path.lexists(root / "tmp")
    assert store_rows(root, "SELECT deleted IS NOT NULL FROM artifacts WHERE name = 'evaluation'") == [(1,)]
    assert versions(root) == ["1"] and push_leftovers(root) == [] and f"deleted {stale}" in collected.stdout


# ------------------------------------------------------------------------------------------------------
# pusher


def _served_model_is_another(root: Path) -> None:
    """Makes version 1 claim another model, so the next push of the trained model copies a new version."""
    (root / "serving" / "agnews" / "1" / "push.json").write_text(json.dumps({"model_fingerprint": "another"}))


def test_kill_9_inside_the_pusher_loses_nothing_and_never_pushes_twice(root, config, hooks):
    _served_model_is_another(root)
    # Killed during the copy: a hidden .push-* folder is left, nothing is served from it.
    killed = agnews(*run_args(root, config, "--rerun", "pusher"), fault="push-before-rename", hooks=hooks)
    assert killed.returncode == -signal.SIGKILL
    assert len(push_leftovers(root)) == 1 and versions(root) == ["1"]
    # Killed after the rename, before the store's commit: the next push removes the stale folder, publishes
    # version 2, and the store never hears of it.
    killed = agnews(*run_args(root, config, "--rerun", "pusher"), fault="push-after-rename", hooks=hooks)
    assert killed.returncode == -signal.SIGKILL
    assert "removing" in killed.stdout and push_leftovers(root) == [] and versions(root) == ["1", "2"]
    # The next run adopts version 2 instead of pushing the same model as version 3.
    again = agnews(*run_args(root, config, "--rerun", "pusher"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert versions(root) == ["1", "2"] and "already holds this model; adopting it" in again.stdout
    # ... and says it pushed nothing new: the run's outcome is already_pushed, not pushed
    assert ": succeeded (already_pushed)" in again.stdout, again.stdout[-2000:]
    shown = agnews("runs", "--pipeline-root", root)
    assert shown.returncode == 0 and shown.stdout.splitlines()[1].split()[-1].lstrip("v") == "2"
    assert shown.stdout.count("interrupted") == 2  # the killed runs, marked when the next run started
    assert latest_run(root)[1] == "succeeded"


# -----------------------------------------------------------------------------------------------------
# signals


def _signal_when(root: Path, config: Path, args: tuple, ready: Callable[[], bool], signum: int,
                 fault: str | None = None, hooks: Path | None = None, extra_env: dict | None = None,
                 timeout: float = 300):
    """Runs the pipeline and sends `signum` as soon as ready() is true (polled every 0.1 s, within
    `timeout`)."""
    env = command_env(fault, hooks, extra_env)
    # pipes could fill up
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", *map(str, run_args(root, config, *args))],
            cwd=PROJECT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while not ready() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.poll() is not None or not ready():
                stderr.seek(0)
                why = (
                    "the run ended"
                    if process.poll() is not None
                    else f"the run was not ready within {timeout}s"
                )
                raise AssertionError(f"{why} before the signal could be sent\n{stderr.read()[-3000:]}")
            process.send_signal(signum)
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout.read(), stderr.read())


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_beam_step_is_one_line_and_marks_the_run_interrupted(root, config, hooks, tmp_path,
                                                                               signum, code):
    runs_before = set(os.listdir(root / "runs"))
    marker = tmp_path / "beam-converts-rows"  # touched by the slow-ingest hook inside the Beam pipeline
    completed = _signal_when(root, config, ("--no-cache", "--until", "ingest"), marker.exists, signum,
                             fault="slow-ingest", hooks=hooks, extra_env={"AGNEWS_MARKER": str(marker)})
    name = signal.Signals(signum).name
    one_line(completed, code, f"interrupted by {name}")
    run_id, status = latest_run(root)
    assert status == "interrupted" and run_id not in runs_before
    assert (
        not (root / "runs" / run_id / "ingest").exists()
        and not (root / "runs" / run_id / "ingest.failed").exists()
    )
    assert store_rows(root, "SELECT state FROM executions WHERE run_id = ?", (run_id,)) == [("interrupted",)]
    assert versions(root) == ["1"]


def test_sigterm_during_training_is_one_line_and_marks_the_run_interrupted(root, config):
    # Keras' TensorBoard callback writes its first event file when fit() begins; 50 epochs outlast the signal.
    def training() -> bool:
        return any(root.glob("tmp/trainer-*/**/train/events.out.tfevents.*"))

    completed = _signal_when(root, config, ("--rerun", "trainer", "--until", "trainer", "--epochs", "50"),
                             training, signal.SIGTERM)
    one_line(completed, 143, "interrupted by SIGTERM")
    run_id, status = latest_run(root)
    assert status == "interrupted" and not (root / "runs" / run_id / "trainer").exists()
    assert versions(root) == ["1"]
    resumed = agnews(*run_args(root, config, "--until", "trainer"))  # nothing lost: everything is cached
    assert resumed.returncode == 0 and resumed.stdout.count(" cached (") == 5


# -------------------------------------------------------------------------------------------------------
# store


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_store_is_one_line_naming_the_file_and_the_way_out(root, config, damage):
    store = root / "metadata.sqlite"
    data = store.read_bytes()
    store.write_bytes(os.urandom(5000) if damage == "garbage" else data[:2000])
    for name in ("metadata.sqlite-wal", "metadata.sqlite-shm"):
        (root / name).unlink(missing_ok=True)
    for command in (["runs"], ["show"], ["run", "--config", config, "--until", "ingest"]):
        completed = agnews(*command, "--pipeline-root", root)
        one_line(completed, 1, str(store), "move it aside")
    assert versions(root) == ["1"] and len(os.listdir(root / "runs")) == 1


def test_a_lost_store_keeps_the_regression_gate_on_the_served_version(root, config):
    for name in ("metadata.sqlite", "metadata.sqlite-wal", "metadata.sqlite-shm"):
        (root / name).unlink(missing_ok=True)
    completed = agnews(*run_args(root, config))
    assert completed.returncode == 0, completed.stderr[-3000:]
    served = root / "serving" / "agnews" / "1"
    assert "the metadata store knows no" in completed.stdout and f"using {served}" in completed.stdout
    assert "first blessing" not in completed.stdout and "versus the baseline's" in completed.stdout
    # Training is not byte-reproducible across processes, so the retrained model is a new version pushed
    # through the gate; the served one is kept (had it been the same model, version 1 would have been
    # adopted).
    assert versions(root) in (["1"], ["1", "2"])
    # the summary names the push
    assert str(root / "serving" / "agnews" / versions(root)[-1]) in completed.stdout
    assert (root / "serving" / "agnews" / "1" / "saved_model.pb").is_file()


def test_runs_and_show_work_on_a_read_only_root(root):
    before = (root / "metadata.sqlite").read_bytes()
    listing = sorted(os.listdir(root))
    for command in ("runs", "show"):
        completed = agnews(command, "--pipeline-root", root)
        assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    # Reading writes nothing (SQLite may add its own -wal/-shm files beside a WAL store it reads).
    assert (root / "metadata.sqlite").read_bytes() == before
    assert sorted(set(os.listdir(root)) - {"metadata.sqlite-wal", "metadata.sqlite-shm"}) == listing
    mount = (
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount --bind "{root}" "{root}" && mount -o remount,bind,ro "{root}" && exec "$@"',
        "sh",
    )
    if subprocess.run([*mount, "true"], capture_output=True).returncode != 0:
        skip_unless_ci("no mount namespace here for a real read-only mount")
    completed = agnews("runs", "--pipeline-root", root, prefix=mount)
    assert completed.returncode == 0 and "succeeded" in completed.stdout, completed.stderr[-2000:]
    completed = agnews("show", "--pipeline-root", root, prefix=mount)
    assert completed.returncode == 0 and "lineage of model" in completed.stdout, completed.stderr[-2000:]
    one_line(agnews("run", "--pipeline-root", root, "--until", "ingest", prefix=mount), 2, "not writable")


def test_secret_beam_options_are_redacted(root, config):
    secret = "SeCrEt-VaLuE-42"
    completed = agnews(
        *run_args(root, config, "--until", "ingest", f"--beam-arg=--s3_secret_access_key={secret}")
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert secret not in completed.stdout + completed.stderr
    for path in [
        *root.glob("metadata.sqlite*"),
        *root.glob("runs/*/run.json"),
        *root.glob("runs/*/report.md"),
    ]:
        assert secret.encode() not in path.read_bytes(), path
    [(stored,)] = store_rows(root, "SELECT config_json FROM runs ORDER BY started DESC LIMIT 1")
    assert json.loads(stored)["pipeline"]["beam_args"] == ["--s3_secret_access_key=***"]


# -------------------------------------------------------------------------------------------------- bad input


def test_bad_pipeline_input_is_one_line_and_runs_nothing(tmp_path, config):
    root = tmp_path / "root"
    data = tmp_path / "data"
    (data / "train.csv").mkdir(parents=True)
    shutil.copyfile(SAMPLE_DIR / "test.csv", data / "test.csv")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    five = tmp_path / "five.yaml"
    five.write_text("pipeline: 5\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (
            ["run", "--config", config, "--data", f"csv:{data}", "--pipeline-root", root],
            1,
            "is a folder, not a file",
        ),
        (["run", "--config", config, "--pipeline-root", a_file], 2, "is a file, not a folder"),
        (["run", "--config", binary, "--pipeline-root", root], 2, "not a valid UTF-8 YAML file"),
        (["run", "--config", five, "--pipeline-root", root], 2, "section 'pipeline' must be a mapping"),
        (["gc", "--keep", "0", "--pipeline-root", root], 2, "--keep must be at least 1"),
        (
            ["run", "--config", config, "--set", "pipeline.seed=-1", "--pipeline-root", root],
            2,
            "pipeline.seed",
        ),
        (
            ["run", "--config", config, "--beam-arg=--direct_num_workers=abc", "--pipeline-root", root],
            2,
            "--direct_num_workers: invalid int value",
        ),
        (
            ["retrain", "--config", config, "--until", "ingest", "--pipeline-root", root],
            2,
            "unrecognized arguments: --until ingest",
        ),
    ]
    for args, code, expected in cases:  # in this process: usage errors need no interpreter of their own
        one_line(agnews_in_process(*args, check_code=None), code, expected)
    assert not (root / "runs").exists() or not any((root / "runs").glob("*/ingest"))  # nothing published


def test_bad_predict_input_is_one_line(trained, tmp_path):
    version = trained[0] / "serving" / "agnews" / "1"
    corrupt = tmp_path / "corrupt"
    shutil.copytree(version, corrupt)
    (corrupt / "saved_model.pb").write_bytes(os.urandom(200))
    texts = tmp_path / "texts.txt"
    texts.write_text("Stocks rally\n")
    non_utf8 = tmp_path / "latin1.txt"
    non_utf8.write_bytes(b"fine line\ncaf\xe9 au lait\n")
    cases = [
        (["--model-dir", corrupt, "--input", texts], 1, "holds no loadable SavedModel"),
        (["--model-dir", version, "--input", tmp_path], 2, "is a folder"),
        (["--model-dir", version, "--input", non_utf8], 1, "input line 2 is not valid UTF-8"),
    ]
    for args, code, expected in cases:  # in this process: no TensorFlow import to pay per case
        one_line(agnews_in_process("predict", *args, check_code=None), code, expected)


def test_predict_keeps_blank_lines_and_huge_texts_and_numbers_lines(trained, tmp_path):
    version = trained[0] / "serving" / "agnews" / "1"
    texts = tmp_path / "texts.txt"
    texts.write_text("Stocks rally as oil falls\n\n" + "word " * 1_000_000 + "\nThe striker scored twice\n")
    completed = agnews("predict", "--model-dir", version, "--input", texts, "--line-numbers")
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [row["line"] for row in rows] == [1, 2, 3, 4]  # the blank line is an empty text; 5 MB is a text
    assert all(len(row["probabilities"]) == 4 for row in rows)
    big_field = tmp_path / "big.csv"
    big_field.write_text('"3","A title","' + "y" * 200_000 + '"\n"2","Cup final","United won"\n')
    completed = agnews("predict", "--model-dir", version, "--input", big_field)
    assert completed.returncode == 0 and len(completed.stdout.splitlines()) == 2, completed.stderr[-2000:]
