"""The shared benchmark harness: what every result states about how it was produced (the command line and
the machine), its Markdown pieces (the provenance lines, a table's head), writing a result's .json and .md,
re-rendering the .md from a kept .json, and running the pipeline in process. Standard library only at
import (run_pipeline imports the pipeline when called), so the TensorFlow-only serving benchmark can use
it."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from contract.files import write_text_atomic


def command_line() -> str:
    """The invocation as a person would retype it, with the CUDA_VISIBLE_DEVICES it ran under."""
    return ("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)") + " python "
            + " ".join(shlex.quote(a) for a in sys.argv))


def tensorflow_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that imports TensorFlow, plus `extra`: CPU only, TensorFlow's
    C++ info lines off, and Keras 3 (TF_USE_LEGACY_KERAS would select Keras 2)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def run_json(argv: Sequence[str], stdin: str | None = None, timeout: float = 1800) -> Any:
    """Runs `argv` (a TensorFlow child: tensorflow_env) to its end and returns the JSON its last line of
    stdout holds; a failed child ends the benchmark with its error (CalledProcessError)."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=True,
                          env=tensorflow_env(), timeout=timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(extra: str = "") -> str:
    """Architecture, cores, the load other jobs put on them when the benchmark started, Python, and
    `extra`."""
    load = os.getloadavg()[0]
    text = (f"{platform.machine()}, {os.cpu_count()} cores (1-minute load average {load:.1f} at start), "
            f"Python {platform.python_version()}")
    return f"{text}, {extra}" if extra else text


def provenance(report: dict[str, Any]) -> list[str]:
    """The Markdown lines a result opens with: its command and its machine (each ending in a line break)."""
    return [f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  "]


def table_head(*columns: str) -> list[str]:
    """A Markdown table's header row and the separator row under it."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def write_results(out: Path, report: dict[str, Any], markdown: str) -> None:
    """Writes `out` (the report as JSON) and its .md twin, each through a temporary file renamed into
    place."""
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown)


def render_only(out: Path, markdown: Callable[[dict[str, Any]], str]) -> None:
    """--render: rewrites the .md twin of the result `out` from its JSON, without measuring anything."""
    write_text_atomic(out.with_suffix(".md"), markdown(json.loads(out.read_text(encoding="utf-8"))))


def run_pipeline(config, until: str, rerun: Sequence[str] = (), summary: bool = False):
    """Runs the pipeline in this process under the root's lock up to `until` (printing its progress, and its
    summary with `summary`); a failed run ends the benchmark with its error."""
    from pipeline.root import root_lock
    from pipeline.runner import Runner, summarize

    with root_lock(config.pipeline_root()):
        runner = Runner(config, log=lambda message: print(message, flush=True))
        try:
            result = runner.run(until=until, rerun=tuple(rerun))
        finally:
            runner.close()
    if summary:
        print(summarize(result), flush=True)
    if result.status != "succeeded":
        raise SystemExit(f"pipeline run {result.run_id} failed: {result.error}")
    return result
