"""An unattended job's failure modes and logs, through the real `agnews-pipeline` command (subprocesses).

Full disks are real: a small tmpfs mounted, in a private mount namespace (`unshare -m`), over the folder where
the disk should fill (the steps' work folder, the serving folder, the run folders, the whole pipeline root, a
predict output folder), holding a copy of that folder's contents and then filled up. What the folder holds
after the command is copied out of the namespace for the assertions. Then the logs: what a default-ish run
prints with stdout and stderr in a file, what the per-step log files hold, `--log-format json`, and
`--deadline`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.faults import agnews, latest_run, one_line, store_rows, versions
from support.paths import PROJECT, SAMPLE_DIR

pytestmark = pytest.mark.e2e

# Fills the tmpfs mounted over $F with a copy of $SRC, then a filler file (less $LEAVE bytes), runs the
# command, and copies what $F holds afterwards (without the filler) to $AFTER, outside the namespace's mount.
ON_FULL_TMPFS = r"""
set -e
mount -t tmpfs -o size="$SIZE" tmpfs "$F"
cp -a "$SRC/." "$F/"
dd if=/dev/zero of="$F/.filler" bs=4096 2>/dev/null || true
if [ "$LEAVE" -gt 0 ]; then truncate -s "-$LEAVE" "$F/.filler"; fi
set +e
"$@"
code=$?
rm -f "$F/.filler"
cp -a "$F/." "$AFTER/"
exit $code
"""
ANSI = re.compile(r"\x1b\[")
TF_CPP_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)
KERAS_STEP_LINE = re.compile(r"^\d+/\d+ - \d+m?s - .*loss: ", re.MULTILINE)  # Keras fit(verbose=2)
KERAS_TUNER_LINE = re.compile(r"Search: Running Trial|Best Value So Far|Hyperparameter\s*\|")


def _mount_namespaces_work() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && true"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def tmpfs_ok() -> None:
    if not _mount_namespaces_work():
        # On CI the disk-full tests are the point: a machine that cannot run them fails instead of skipping.
        assert os.environ.get("CI") != "true", (
            "CI=true but no private mount namespace (unshare -m) for a tmpfs"
        )
        pytest.skip("no private mount namespace (unshare -m, mount -t tmpfs) on this machine")


def on_full_tmpfs(folder: Path, args: list, size: str = "1m", leave: int = 0,
                  timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    """Runs `agnews-pipeline ARGS` with `folder` on a full `size` tmpfs (its contents copied in first, `leave`
    bytes left free); returns the result and a copy of what the folder held afterwards."""
    folder = Path(folder)
    source = folder.with_name(folder.name + ".before")
    after = folder.with_name(folder.name + ".after")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, source, symlinks=True)
    after.mkdir()
    env = {"F": str(folder), "SRC": str(source), "AFTER": str(after), "SIZE": size, "LEAVE": str(leave)}
    completed = agnews(*args, prefix=("env", *(f"{k}={v}" for k, v in env.items()),
                                      "unshare", "-m", "sh", "-c", ON_FULL_TMPFS, "sh"), timeout=timeout)
    return completed, after


def disk_full_line(completed: subprocess.CompletedProcess, folder: Path) -> str:
    """Exit 1, one line saying the disk is full and naming the filesystem; never the advice to move the
    store."""
    output = completed.stdout + completed.stderr
    assert "move it aside" not in output and ".broken" not in output, output[-3000:]
    message = one_line(completed, 1, "disk full", f"the filesystem at {folder}", "free")
    print(f"exit {completed.returncode}: {message}")  # shown by pytest -rP: the table in the closing note
    return message


def run_ids(root: Path) -> list[str]:
    return [run_id for (run_id,) in store_rows(root, "SELECT id FROM runs ORDER BY started")]


# ------------------------------------------------------------------------------------------------ full disks

STEP_CASES = {  # step -> extra flags; the step's work folder (<root>/tmp) is the full filesystem
    "ingest": ("--until", "ingest", "--rerun", "ingest"),
    "transform": ("--only", "transform", "--rerun", "transform"),
    "trainer": ("--only", "trainer", "--rerun", "trainer"),
    "evaluator": ("--only", "evaluator", "--rerun", "evaluator"),
}


@pytest.mark.parametrize("step", list(STEP_CASES))
def test_a_step_on_a_full_disk_is_one_line_and_the_run_is_recorded_failed(tmpfs_ok, root, trained, step):
    before = run_ids(root)
    completed, after = on_full_tmpfs(root / "tmp", ["run", "--config", trained[1], "--pipeline-root", root,
                                                    *STEP_CASES[step]])
    message = disk_full_line(completed, root / "tmp")
    assert message.startswith(f"ERROR: {step}: disk full while running {step}"), message
    run_id, status = latest_run(root)
    assert run_id not in before and status == "failed"  # the store (on another filesystem) recorded it
    [(error,)] = store_rows(root, "SELECT error FROM runs WHERE id = ?", (run_id,))
    assert "disk full" in error and "move it aside" not in error
    # Nothing published, and the half-written attempt was removed to give the space back.
    assert (
        not (root / "runs" / run_id / step).exists()
        and not (root / "runs" / run_id / f"{step}.failed").exists()
    )
    assert [p.name for p in after.iterdir()] == []
    assert versions(root) == ["1"]


def test_tuner_checkpoints_on_a_full_disk(tmpfs_ok, root, trained):
    # 256 KB free: the trial's files fit, its weights checkpoint does not.
    tuning = ("--set", "tuner.enabled=true", "--set", "tuner.max_trials=1", "--set", "tuner.max_epochs=1")
    completed, after = on_full_tmpfs(root / "tmp", ["run", "--config", trained[1], "--pipeline-root", root,
                                                    "--only", "tuner", *tuning], size="4m", leave=256 << 10)
    message = disk_full_line(completed, root / "tmp")
    assert message.startswith("ERROR: tuner: disk full"), message
    run_id, status = latest_run(root)
    assert status == "failed" and not (root / "runs" / run_id / "tuner").exists()
    # The tuner is resumable: its folder (the finished part of the search) is kept for the next run.
    assert [p.name for p in after.iterdir()] and all(p.name.startswith("tuner-") for p in after.iterdir())


def test_the_serving_folder_on_a_full_disk(tmpfs_ok, root, trained):
    serving = root / "serving" / "agnews"
    (serving / "1" / "push.json").write_text(json.dumps({"model_fingerprint": "another"}))  # so it copies
    completed, after = on_full_tmpfs(serving, ["run", "--config", trained[1], "--pipeline-root", root,
                                               "--only", "pusher", "--rerun", "pusher"], size="2m")
    message = disk_full_line(completed, serving)
    assert message.startswith("ERROR: pusher: disk full"), message
    assert latest_run(root)[1] == "failed"
    assert sorted(p.name for p in after.iterdir()) == ["1"]  # no version 2, no .push-* copy left behind


def test_the_store_on_a_full_disk_is_full_not_corrupt(tmpfs_ok, root, trained):
    before = run_ids(root)
    completed, after = on_full_tmpfs(root, ["run", "--config", trained[1], "--pipeline-root", root,
                                            "--until", "ingest"], size="64m")
    message = disk_full_line(completed, root)
    assert "metadata.sqlite" in message and "intact" in message, message
    # The store could not record the run (its disk is full); it is as it was, and once there is space again
    # the next run works with it: every step it needs is cached.
    shutil.rmtree(root)
    shutil.copytree(after, root, symlinks=True)
    assert run_ids(root)[:len(before)] == before
    again = agnews("run", "--config", trained[1], "--pipeline-root", root, "--until", "ingest")
    assert again.returncode == 0 and " cached (" in again.stdout, again.stderr[-2000:]


def test_the_run_report_on_a_full_disk(tmpfs_ok, root, trained):
    before = run_ids(root)
    completed, after = on_full_tmpfs(root / "runs", ["run", "--config", trained[1], "--pipeline-root", root,
                                                     "--until", "ingest"], size="64m")
    message = disk_full_line(completed, root / "runs")
    assert "writing the run report" in message, message
    run_id, status = latest_run(root)
    assert run_id not in before and status == "failed"
    assert not list((after / run_id).glob(".*tmp*"))  # no half-written report left behind


def test_the_free_space_check_fails_before_the_step_starts(tmpfs_ok, root, trained):
    # The whole root on an 80 MB filesystem: the "auto" minimum for the sample (64 MB + 2 KB per row) is not
    # left once the root is in it, so transform is refused before it starts (no log of it: it never ran).
    completed, after = on_full_tmpfs(root, ["run", "--config", trained[1], "--pipeline-root", root,
                                            "--only", "transform", "--rerun", "transform"],
                                     size="80m", leave=40 << 20)
    message = one_line(
        completed,
        1,
        "transform: not started, too little free space",
        f"the filesystem at {root}",
        "pipeline.min_free_space",
    )
    assert "move it aside" not in completed.stdout + completed.stderr
    run_id = max(p.name for p in (after / "runs").iterdir())
    assert json.loads((after / "runs" / run_id / "run.json").read_text())["status"] == "failed"
    assert (
        not (after / "runs" / run_id / "logs").exists()
        and not (after / "runs" / run_id / "transform").exists()
    )
    assert "66.1 MiB" in message or "MiB pipeline.min_free_space" in message, message


def test_predict_output_on_a_full_disk_leaves_no_file(tmpfs_ok, trained, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Stocks rally as oil falls\nThe striker scored twice\n" * 2000)
    out_dir = tmp_path / "out"
    completed, after = on_full_tmpfs(
        out_dir,
        [
            "predict",
            "--model-dir",
            trained[0] / "serving" / "agnews" / "1",
            "--input",
            texts,
            "--output",
            out_dir / "predictions.jsonl",
        ],
        size="64k",
    )
    disk_full_line(completed, out_dir)
    assert list(after.iterdir()) == []  # neither a half-written predictions.jsonl nor its temporary file


# ---------------------------------------------------------------------------------------------------------
# logs

QUICK_RUN = """
ingest:
  data: csv:{sample}
transform:
  vocab_size: 2000
  max_length: 32
  bucket_boundaries: [16, 32]
tuner:
  architecture: rnn
  max_trials: 1
  max_epochs: 1
trainer:
  epochs: 2
evaluator:
  min_accuracy: 0.0
  max_accuracy_drop: 1.0
  significance: 0.0
pipeline:
  progress_seconds: 2
"""


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """A default-ish run (tuner on: 1 trial) with stdout and stderr in one file, as cron keeps them; the
    environment is the user's (no TF_CPP_MIN_LOG_LEVEL set)."""
    base = tmp_path_factory.mktemp("quiet")
    config = base / "quick.yaml"
    config.write_text(QUICK_RUN.format(sample=SAMPLE_DIR))
    root = base / "root"
    log = base / "cron.log"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with open(log, "w") as handle:
        completed = subprocess.run([sys.executable, "-m", "apps.cli", "run", "--config", str(config),
                                    "--pipeline-root", str(root)], cwd=PROJECT, stdout=handle,
                                   stderr=subprocess.STDOUT, env=env, timeout=900)
    text = log.read_text()
    assert completed.returncode == 0, text[-3000:]
    return root, config, text


def test_a_default_run_prints_only_its_own_lines(quiet_run):
    root, _, text = quiet_run
    assert not ANSI.search(text)
    assert not KERAS_TUNER_LINE.search(text)
    assert not TF_CPP_LINE.search(text) and "oneDNN" not in text and "cuda" not in text.lower()
    assert not KERAS_STEP_LINE.search(text) and "DeprecationWarning" not in text and "apache_beam" not in text
    lines = text.splitlines()
    assert lines[0].startswith("run ") and any("[7/7] pusher" in line and "done" in line for line in lines)
    assert any("tuner: trial 1" in line and "ETA" in line for line in lines)  # progress with an ETA
    assert any("trainer: epoch 2/2" in line for line in lines)
    assert lines[-1].strip().startswith("run folder:")


def test_the_step_logs_hold_the_libraries_output(quiet_run):
    root, _, text = quiet_run
    [run_dir] = (root / "runs").iterdir()
    logs = {path.stem: path.read_text(errors="replace") for path in (run_dir / "logs").glob("*.log")}
    assert set(logs) == {"ingest", "validate", "transform", "tuner", "trainer", "evaluator", "pusher"}
    assert KERAS_TUNER_LINE.search(logs["tuner"])  # KerasTuner's trial table and banner
    assert len(KERAS_STEP_LINE.findall(logs["trainer"])) == 2  # Keras's line per epoch
    everything = "".join(logs.values())
    # TensorFlow's C++ lines
    assert TF_CPP_LINE.search(everything) or "oneDNN" in everything, everything[:3000]


def test_json_log_lines_all_parse(quiet_run, tmp_path):
    root, config, _ = quiet_run
    completed = agnews("run", "--config", config, "--pipeline-root", root, "--log-format", "json",
                       "--rerun", "transform", "--until", "transform")
    assert completed.returncode == 0, completed.stderr[-3000:]
    events = [json.loads(line) for line in completed.stdout.splitlines()]  # every line is one JSON object
    assert events and all(set(e) == {"time", "level", "run_id", "step", "event", "message", "fields"}
                          for e in events)
    assert len({e["run_id"] for e in events}) == 1 and events[0]["run_id"]
    kinds = {(e["event"], e["step"]) for e in events}
    assert {("step_cached", "ingest"), ("step_started", "transform"), ("step_done", "transform"),
            ("progress", "transform")} <= kinds, kinds
    assert events[-1]["event"] == "summary" and events[-1]["fields"]["status"] == "succeeded"
    # A failure is JSON too, on stderr.
    failed = agnews("run", "--config", config, "--pipeline-root", root, "--log-format", "json",
                    "--from", "evaluator", "--set", "trainer.epochs=7")  # no trainer execution to start from
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert all(json.loads(line) for line in failed.stdout.splitlines())
    errors = [json.loads(line) for line in failed.stderr.splitlines() if line.strip()]
    assert (
        errors[-1]["level"] == "error"
        and "--from evaluator needs the outputs of trainer" in errors[-1]["message"]
    )


def test_the_deadline_ends_a_retrain_cleanly(trained, root):
    config = trained[1]
    started = time.monotonic()
    completed = agnews("retrain", "--config", config, "--pipeline-root", root, "--force", "--deadline", "20s",
                       "--set", "trainer.epochs=200", "--set", "trainer.early_stopping_patience=200",
                       "--set", "trainer.warm_start_patience=200")
    elapsed = time.monotonic() - started
    message = one_line(completed, 124, "interrupted by the deadline")
    assert "20s" in message
    assert elapsed < 20 + 60, elapsed  # within the grace the clean stop has (the process needs ~5 s to start)
    run_id, status = latest_run(root)
    assert status == "timed_out"
    assert not (root / "runs" / run_id / "trainer").exists() and versions(root) == ["1"]


def test_serve_keeps_answering_when_its_log_disk_is_full(tmpfs_ok, trained, tmp_path):
    import socket
    import urllib.request
    with socket.socket() as probe:  # a free port: serve's "listening on" line goes to the full disk
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logs = tmp_path / "logs"
    logs.mkdir()
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$F" && (dd if=/dev/zero of="$F/.filler" bs=4096 2>/dev/null; '
        'true) && exec "$@" 2>>"$F/serve.log"'
    )
    process = subprocess.Popen(
        [
            "env",
            f"F={logs}",
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "sh",
            sys.executable,
            "-m",
            "apps.cli",
            "serve",
            "--serving-dir",
            str(trained[0] / "serving" / "agnews"),
            "--port",
            str(port),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, status = time.monotonic() + 180, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/agnews", timeout=5) as answer:
                    status = answer.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, process.poll()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/agnews:predict", method="POST",
                                         data=json.dumps({"instances": ["Stocks rally"]}).encode())
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert len(json.loads(answer.read())["predictions"][0]["probabilities"]) == 4
        process.terminate()  # serve itself (sh and unshare exec'd it): it drains and exits 0
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_store_errors_are_told_apart(tmp_path):
    """Only a damaged store is 'unreadable' (move it aside); a refused write and a busy store are not."""
    import sqlite3

    from pipeline.metadata import MetadataStore, StoreError, StoreNotWritable, StoreUnreadable, store_error
    path = tmp_path / "metadata.sqlite"
    MetadataStore(path).close()
    read_only = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        read_only.execute("INSERT INTO runs (id, command, status, started, config_json) VALUES ('r', 'run', "
                          "'running', 0, '{}')")
    read_only.close()
    error = store_error(path, refused.value)
    assert (
        isinstance(error, StoreNotWritable) and "intact" in str(error) and "move it aside" not in str(error)
    )
    busy = store_error(path, sqlite3.OperationalError("database is locked"))
    assert type(busy) is StoreError and "move it aside" not in str(busy)
    path.write_bytes(os.urandom(4096))
    with pytest.raises(StoreUnreadable, match="move it aside"):
        MetadataStore(path)


def test_progress_is_one_line_rewritten_on_a_terminal_and_plain_lines_elsewhere():
    import io

    from pipeline.logs import Console

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, tty in ((io.StringIO(), False), (Terminal(), True)):
        console = Console(stream=stream)
        for event, message in (
            ("step_started", "[1/7] ingest running ..."),
            ("progress", "elapsed 30s, ETA ~10s"),
            ("progress", "elapsed 60s, ETA ~0s"),
            ("step_done", "[1/7] ingest done"),
        ):
            console.event(event, message)
        text = stream.getvalue()
        if tty:
            assert text == (
                "[1/7] ingest running ...\n\r\x1b[2Kelapsed 30s, ETA ~10s\r\x1b[2Kelapsed 60s, ETA ~0s"
                "\r\x1b[2K[1/7] ingest done\n"
            )
        else:
            assert not ANSI.search(text) and text.splitlines() == [
                "[1/7] ingest running ...",
                "elapsed 30s, ETA ~10s",
                "elapsed 60s, ETA ~0s",
                "[1/7] ingest done",
            ]
