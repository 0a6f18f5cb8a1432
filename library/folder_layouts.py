"""The layouts of the folders around the artifacts: the serving folder, the pipeline root's multi-worker job
file, and a run folder's step logs and dask state dumps. The companion of library/layouts.py (which owns
each artifact's own files); TensorFlow-free like it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.files import read_json, write_json_atomic
from library.layouts import PUSH_FILE

# ----------------------------------------------------------------------------------------------------------
# The serving folder (outside the pipeline root): <serving_dir>/<version>/ SavedModels, TF Serving's layout,
# each with push.json {model_fingerprint}; .push-<pid>-<hex>/ is a pusher's copy in progress (hidden, so TF
# Serving ignores it)

PUSH_TEMPORARY_PREFIX = ".push-"


def serving_versions(serving_dir: Path | str) -> list[int]:
    """The numeric version folders of a serving folder, in increasing order (TF Serving loads the highest)."""
    serving_dir = Path(serving_dir)
    if not serving_dir.is_dir():
        return []
    return sorted(
        int(entry.name) for entry in serving_dir.iterdir() if entry.name.isdigit() and entry.is_dir()
    )


def serving_version_dir(serving_dir: Path | str, version: int) -> Path:
    return Path(serving_dir) / str(version)


def write_served_push_record(version_dir: Path | str, record: dict[str, Any]) -> None:
    write_json_atomic(Path(version_dir) / PUSH_FILE, record)


def read_served_push_record(version_dir: Path | str) -> Any:
    """A served version's push record: None if it has none (pushed by older code or by hand), {} if the
    file cannot be read."""
    path = Path(version_dir) / PUSH_FILE
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------------------------
# multi-worker training job (trainer, trainer.strategy multi_worker_mirrored): <pipeline
# root>/multi_worker_job.json, written by the trainer step while its chief trains, read by `agnews-pipeline
# train-worker`, removed at the end

MULTI_WORKER_JOB_FILE = "multi_worker_job.json"


def multi_worker_job_file(pipeline_root: Path | str) -> Path:
    return Path(pipeline_root) / MULTI_WORKER_JOB_FILE


def write_multi_worker_job(pipeline_root: Path | str, job: dict[str, Any]) -> None:
    # atomic: a waiting worker never reads half
    write_json_atomic(multi_worker_job_file(pipeline_root), job)


def read_multi_worker_job(pipeline_root: Path | str) -> dict[str, Any] | None:
    """The job, or None while there is none."""
    try:
        return read_json(multi_worker_job_file(pipeline_root))
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------
# a Beam step on dask that stalled: <step's folder>/dask_cluster_state.yaml (client.dump_cluster_state adds
# the ".yaml"), left in the step's failed folder for diagnosis

DASK_STATE_DUMP = "dask_cluster_state"


# A run's page: self-contained, its figures embedded copies of the evaluation's (pipeline/report_html.py);
# gc removes it with the artifacts of a run it does not keep (pipeline/gc.py).
RUN_REPORT_HTML = "report.html"

# A run's folder (the runner's, not an artifact): runs/<run_id>/logs/<step>.log holds what the libraries
# printed while the step ran (TensorFlow, absl, Beam, KerasTuner, Keras), everything on file descriptors 1 and
# 2

RUN_LOGS_DIR = "logs"
STEP_LOG_SUFFIX = ".log"


def step_log_file(run_dir: Path | str, step: str) -> Path:
    return Path(run_dir) / RUN_LOGS_DIR / f"{step}{STEP_LOG_SUFFIX}"
