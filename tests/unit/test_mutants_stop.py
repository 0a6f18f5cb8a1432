"""The mutation harness (tools/mutants.py) stopped with SIGTERM ends the pytest run it started, with what
that run started, instead of leaving it running: a real harness process, pytest child and grandchild."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from support.processes import alive

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_ends_the_pytest_run_in_progress_and_what_it_started(tmp_path):
    pids = tmp_path / "pids"
    (tmp_path / "test_slow.py").write_text(textwrap.dedent(f"""
        import os, subprocess, sys, time
        def test_slow():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            with open({str(pids)!r}, "w") as out:
                out.write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(120)
    """))
    harness = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TOOLS)!r})
        import mutants
        mutants.stop_on_signals()
        mutants.run_tests(__import__("pathlib").Path({str(tmp_path)!r}), ("test_slow.py",), 300)
    """)])
    try:
        started = _wait_for(lambda: pids.is_file() and pids.read_text().count(" ") == 1, 60)
        assert started, "pytest never started"
        pytest_pid, grandchild_pid = map(int, pids.read_text().split())
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(timeout=30) == 128 + signal.SIGTERM
        assert _wait_for(lambda: not alive(pytest_pid) and not alive(grandchild_pid), 10), \
            "the harness left its pytest run (or what it started) running"
    finally:
        harness.kill()
        for pid in map(int, pids.read_text().split()) if pids.is_file() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
