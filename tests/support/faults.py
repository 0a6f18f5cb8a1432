"""The real `agnews-pipeline` command in a subprocess with faults injected (AGNEWS_FAULT, a hooks folder first
on PYTHONPATH), and what the fault tests read back: one-line errors, served versions, store rows."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from support.paths import PROJECT, SAMPLE_DIR

# One tiny pipeline: no tuning, 1 epoch, a small vocabulary, the committed sample.
TINY_CONFIG = f"""
ingest:
  data: csv:{SAMPLE_DIR}
transform:
  vocab_size: 2000
  max_length: 32
  bucket_boundaries: [16, 32]
tuner:
  enabled: false
  architecture: rnn
trainer:
  epochs: 1
evaluator:
  min_accuracy: 0.0
  max_accuracy_drop: 1.0
  significance: 0.0
"""


def fault_env(extra: dict | None = None) -> dict:
    # Unbuffered: a process killed with SIGKILL still leaves what it printed.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
            **(extra or {})}


def command_env(fault: str | None, hooks: Path | None, extra: dict | None = None) -> dict:
    env = fault_env({**({"AGNEWS_FAULT": fault} if fault else {}), **(extra or {})})
    if hooks is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(hooks), str(PROJECT), env.get("PYTHONPATH", "")])
    return env


def agnews(*args, fault: str | None = None, hooks: Path | None = None, prefix: tuple = (),
           timeout: float = 600) -> subprocess.CompletedProcess:
    env = command_env(fault, hooks)
    return subprocess.run([*prefix, sys.executable, "-m", "apps.cli", *map(str, args)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_line(completed: subprocess.CompletedProcess, code: int, *expected: str) -> str:
    """Asserts the exit code and that the error is one line (the last on stderr) holding `expected`."""
    stderr = completed.stderr
    assert completed.returncode == code, f"exit {completed.returncode}, wanted {code}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1]
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    ours = [line for line in lines if line.startswith(message.split(":")[0] + ":")]
    assert len(ours) == 1, lines
    return message


def versions(root: Path) -> list[str]:
    serving = root / "serving" / "agnews"
    return sorted(p.name for p in serving.iterdir() if not p.name.startswith(".")) if serving.is_dir() else []


def push_leftovers(root: Path) -> list[str]:
    return [p.name for p in (root / "serving" / "agnews").iterdir() if p.name.startswith(".push-")]


def store_rows(root: Path, query: str, args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(root / "metadata.sqlite")
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def latest_run(root: Path) -> tuple[str, str]:
    return store_rows(root, "SELECT id, status FROM runs ORDER BY started DESC LIMIT 1")[0]
