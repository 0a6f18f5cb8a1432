"""Pusher: publishes a blessed model's serving SavedModel to the serving folder in TF Serving's layout.

  <serving_dir>/<version>/saved_model.pb, variables/, assets/, assets.extra/

TF Serving serves the highest numeric version it finds. The new version is the highest existing numeric
version + 1 (1 for an empty folder): always the newest of what the server can see, small readable numbers,
and no dependence on clocks (a timestamp version could go backwards between machines). Publishing is atomic:
the model is copied into a hidden temporary folder inside serving_dir (ignored by TF Serving, which only
loads numeric names), then renamed to its version. An existing version is never replaced: if another pusher
takes the number first, the rename fails and the next number is tried. (Every writer of serving_dir renames
complete, non-empty folders into place, so a rename can never land on an empty folder and replace it.)

A model that is not blessed is not pushed; that is recorded, not an error.
Output: pushed_model/push.json = {pushed, version, path, reason}.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from pipeline.artifacts import Artifact, ComponentError, Runtime, read_json, write_json_atomic
from pipeline.config import PusherConfig

MAX_PUBLISH_ATTEMPTS = 100


def run(inputs: dict[str, Artifact], output_dir: Path, config: PusherConfig, runtime: Runtime) -> dict[str, Artifact]:
    if not config.serving_dir:
        raise ComponentError("pusher.serving_dir is empty; the runner should have resolved it to a folder")
    blessing_path = Path(inputs["blessing"].uri) / "blessing.json"
    if not blessing_path.is_file():
        raise ComponentError(f"{blessing_path} is missing: the blessing artifact was not written by the evaluator")
    blessing = read_json(blessing_path)
    pushed_dir = Path(output_dir) / "pushed_model"
    pushed_dir.mkdir(parents=True, exist_ok=True)

    if blessing.get("blessed") is True:
        serving_model = Path(inputs["model"].uri) / "serving_model"
        if not (serving_model / "saved_model.pb").is_file():
            raise ComponentError(f"{serving_model} holds no SavedModel; nothing to push")
        version, path = publish_version(serving_model, Path(config.serving_dir))
        record = {"pushed": True, "version": version, "path": str(path),
                  "reason": f"blessed: {blessing.get('reason', '')}"}
        runtime.log(f"pusher: pushed version {version} to {path}")
    else:
        record = {"pushed": False, "version": None, "path": None,
                  "reason": f"not blessed: {blessing.get('reason', 'no reason recorded')}"}
        runtime.log(f"pusher: nothing pushed ({record['reason']})")
    write_json_atomic(pushed_dir / "push.json", record)
    return {"pushed_model": Artifact("pushed_model", pushed_dir, {
        "pushed": record["pushed"], "version": record["version"], "path": record["path"]})}


def numeric_versions(serving_dir: Path) -> list[int]:
    if not serving_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in serving_dir.iterdir() if entry.name.isdigit() and entry.is_dir())


def next_version(serving_dir: Path) -> int:
    versions = numeric_versions(serving_dir)
    return versions[-1] + 1 if versions else 1


def publish_version(serving_model: Path, serving_dir: Path) -> tuple[int, Path]:
    """Copies `serving_model` to serving_dir/<next version>/ atomically; returns (version, path)."""
    serving_dir.mkdir(parents=True, exist_ok=True)
    temporary = serving_dir / f".push-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        shutil.copytree(serving_model, temporary)
        version = next_version(serving_dir)
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            target = serving_dir / str(version)
            if not target.exists():
                try:
                    os.rename(temporary, target)
                    return version, target
                except OSError as error:  # another pusher published this number in the meantime
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            version = max(version + 1, next_version(serving_dir))
        raise ComponentError(f"could not claim a new version number in {serving_dir} "
                             f"after {MAX_PUBLISH_ATTEMPTS} attempts")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
