"""The pusher's spec: it delivers (a pushed model leaves the pipeline root), and what the serving folder
holds, read without running the step (the evaluator's baseline when the store knows no blessing, the leftovers
`gc` removes). Versions are numeric folders in TF Serving's layout; the newest complete one is that baseline,
the next number is one above the highest, a served version records its model's fingerprint in push.json, and
`.push-<pid>-*` folders of a pusher process that is gone are what a killed push left behind.
"""
from __future__ import annotations

import os
from pathlib import Path

from contract.artifacts import fingerprint
from contract.component_spec import ComponentSpec
from contract.names import PUSHED_MODEL
from library.folder_layouts import (
    PUSH_TEMPORARY_PREFIX,
    read_served_push_record,
    serving_version_dir,
    serving_versions,
)
from library.layouts import has_saved_model


def newest_version(serving_dir: Path) -> Path | None:
    """The newest complete version folder (it holds a SavedModel) under the serving folder, or None."""
    complete = [
        v for v in serving_versions(serving_dir) if has_saved_model(serving_version_dir(serving_dir, v))
    ]
    return serving_version_dir(serving_dir, complete[-1]) if complete else None


def next_version(serving_dir: Path) -> int:
    versions = serving_versions(serving_dir)
    return versions[-1] + 1 if versions else 1


def served_version_of(serving_dir: Path, model_fingerprint: str) -> tuple[int, Path] | None:
    """(version, path) of the newest served version when it holds the model with this fingerprint."""
    versions = serving_versions(serving_dir)
    if not versions:
        return None
    path = serving_version_dir(serving_dir, versions[-1])
    record = read_served_push_record(path)
    # pushed by older code or by hand: compare the files themselves
    if record is None:
        recorded = fingerprint(path)
    else:
        recorded = record.get("model_fingerprint") if isinstance(record, dict) else None
    return (versions[-1], path) if recorded == model_fingerprint else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # alive, owned by someone else
    except PermissionError:
        return True
    return True


def stale_push_folders(serving_dir: Path) -> list[Path]:
    """`.push-<pid>-<hex>` folders whose pusher process no longer runs."""
    if not serving_dir.is_dir():
        return []
    stale = []
    for entry in sorted(serving_dir.glob(f"{PUSH_TEMPORARY_PREFIX}*")):
        pid = entry.name[len(PUSH_TEMPORARY_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            stale.append(entry)
    return stale


SPEC = ComponentSpec(__name__, executor="components.pusher.executor", outputs=(PUSHED_MODEL,),
                     config_section="pusher", delivers=f"{PUSHED_MODEL}.pushed", leftovers=stale_push_folders)
