"""Helpers of the Beam runner tests: free ports, ending processes by id, sorted outputs and the published
files of a run's Beam steps."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import apache_beam as beam

from support.paths import SAMPLE_DIR

START_SECONDS = 120  # a dask cluster or a Beam job service has this long to start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def write_sorted(pcollection, path: Path, label: str):
    """One file holding the sorted elements as JSON, whatever the partitioning."""
    return (pcollection
            | f"{label}List" >> beam.combiners.ToList()
            | f"{label}Json" >> beam.Map(lambda values: json.dumps(sorted(values)))
            | f"{label}Write" >> beam.io.WriteToText(str(path), shard_name_template=""))


def read_json(path: Path):
    return json.loads(path.read_text())


def step_files(root: Path, steps=("ingest", "validate", "transform")) -> dict[str, str]:
    """{step/relative path: sha256} of every file the steps published in the root's only run."""
    [run_dir] = (root / "runs").iterdir()
    return {f"{step}/{path.relative_to(run_dir / step)}": hashlib.sha256(path.read_bytes()).hexdigest()
            for step in steps for path in sorted((run_dir / step).rglob("*")) if path.is_file()}


UNTIL_TRANSFORM = ["run", "--data", f"csv:{SAMPLE_DIR}", "--until", "transform"]
