"""Pusher: publishes a blessed model's serving SavedModel to the serving folder in TF Serving's layout.

  <serving_dir>/<version>/saved_model.pb, variables/, assets/, assets.extra/

TF Serving serves the highest numeric version it finds. The new version is the highest existing numeric
version + 1 (1 for an empty folder): always the newest of what the server can see, small readable numbers,
and no dependence on clocks (a timestamp version could go backwards between machines). Publishing is atomic:
the model is copied into a hidden temporary folder inside serving_dir (ignored by TF Serving, which only
loads numeric names), then renamed to its version. An existing version is never replaced: if another pusher
takes the number first, the rename fails and the next number is tried. (Every writer of serving_dir renames
complete, non-empty folders into place, so a rename can never land on an empty folder and replace it.)

Crash safety: each version folder holds `push.json` with the model's fingerprint, written before the rename.
When the newest served version already holds the candidate's model (a pusher killed after its rename but
before the store recorded the push, or a run in a copied root), that version is adopted instead of pushing a
duplicate. `.push-<pid>-*` folders whose process is gone (a pusher killed during its copy) are removed at the
next push and by `gc`.

A model that is not blessed is not pushed; that is recorded, not an error.
Output: pushed_model/push.json = {pushed, version, path, reason, adopted}.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Callable

from components.pusher.spec import next_version, served_version_of, stale_push_folders
from contract.artifacts import Artifact, ComponentError, Runtime, fingerprint
from contract.config import PusherConfig
from contract.names import BLESSING, MODEL, PUSHED_MODEL
from library.folder_layouts import PUSH_TEMPORARY_PREFIX, serving_version_dir, write_served_push_record
from library.layouts import existing_serving_model_dir, read_blessing, write_push

MAX_PUBLISH_ATTEMPTS = 100


def run(
    inputs: dict[str, Artifact], output_dir: Path, config: PusherConfig, runtime: Runtime
) -> dict[str, Artifact]:
    if not config.serving_dir:
        raise ComponentError("pusher.serving_dir is empty; loading the configuration resolves it to a folder")
    blessing = read_blessing(inputs[BLESSING].uri)
    pushed_dir = Path(output_dir) / PUSHED_MODEL
    pushed_dir.mkdir(parents=True, exist_ok=True)

    if blessing.get("blessed") is True:
        serving_model = existing_serving_model_dir(inputs[MODEL].uri)
        serving_dir = Path(config.serving_dir)
        for stale in stale_push_folders(serving_dir):
            runtime.log(f"pusher: removing {stale}, left by a pusher that was killed during its copy")
            shutil.rmtree(stale, ignore_errors=True)
        model_fingerprint = fingerprint(serving_model)
        adopted = served_version_of(serving_dir, model_fingerprint)
        if adopted is not None:
            version, path = adopted
            runtime.log(f"pusher: version {version} at {path} already holds this model; adopting it")
        else:
            version, path = publish_version(
                serving_model, serving_dir, model_fingerprint, runtime.stop_requested
            )
            runtime.log(f"pusher: pushed version {version} to {path}")
        record = {"pushed": True, "version": version, "path": str(path), "adopted": adopted is not None,
                  "reason": f"blessed: {blessing.get('reason', '')}"}
    else:
        record = {"pushed": False, "version": None, "path": None, "adopted": False,
                  "reason": f"not blessed: {blessing.get('reason', 'no reason recorded')}"}
        runtime.log(f"pusher: nothing pushed ({record['reason']})")
    write_push(pushed_dir, record)
    return {PUSHED_MODEL: Artifact(PUSHED_MODEL, pushed_dir, {
        "pushed": record["pushed"], "version": record["version"], "path": record["path"],
        "adopted": record["adopted"]})}


def publish_version(serving_model: Path, serving_dir: Path, model_fingerprint: str | None = None,
                    stop_requested: Callable[[], bool] = lambda: False) -> tuple[int, Path]:
    """Copies `serving_model` to serving_dir/<next version>/ atomically, with push.json recording the model's
    fingerprint; returns (version, path). When stop_requested() is true after the copy (a stop whose exception
    was swallowed or lost), nothing is published: a ComponentError, which the runner reports as the stop."""
    model_fingerprint = model_fingerprint or fingerprint(serving_model)
    serving_dir.mkdir(parents=True, exist_ok=True)
    temporary = serving_dir / f"{PUSH_TEMPORARY_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        shutil.copytree(serving_model, temporary)
        write_served_push_record(temporary, {"model_fingerprint": model_fingerprint})
        if stop_requested():
            raise ComponentError("pusher: stopped before publishing; nothing was pushed")
        version = next_version(serving_dir)
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            target = serving_version_dir(serving_dir, version)
            if not target.exists():
                try:
                    os.rename(temporary, target)
                    return version, target
                # another pusher published this number in the meantime
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            version = max(version + 1, next_version(serving_dir))
        raise ComponentError(f"could not claim a new version number in {serving_dir} "
                             f"after {MAX_PUBLISH_ATTEMPTS} attempts")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
