"""Retention: `agnews-pipeline gc --keep N` deletes artifact folders that neither the N newest runs nor any
pushed model depend on. Pushed versions are never touched (only stale `.push-*` folders that a killed pusher
left in the serving folder); the metadata records stay, marked deleted one by one as their folders go, so a gc
stopped halfway leaves the store true.

Nothing outside the pipeline root is ever deleted: every path is resolved and refused if it leaves the root,
and symlinks are removed as links, never followed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from pipeline import dag
from pipeline.metadata import MetadataStore


class OutsideRoot(ValueError):
    """A path that gc was asked to delete resolves to somewhere outside the pipeline root."""


def _with_lineage(store: MetadataStore, artifact_ids: set[int]) -> set[int]:
    """The artifacts plus every artifact upstream of them."""
    needed = set(artifact_ids)
    for artifact_id in artifact_ids:
        for _, inputs in store.lineage(artifact_id):
            needed.update(a.id for a in inputs.values())
    return needed


def protected_artifacts(store: MetadataStore, keep: int) -> set[int]:
    roots: set[int] = set()
    for run in store.runs(keep):
        for execution in store.executions(run["id"]):
            for kind in ("input", "output"):
                roots.update(a.id for a in store.artifacts_of(execution["id"], kind).values())
    for step in dag.delivering_steps():  # what left the pipeline root (a pushed model), with its inputs
        output, prop = step.spec.delivers.split(".")
        roots.update(delivered.id for _, delivered in store.outputs_where(step.name, output, prop))
    for resolver in dag.resolvers():  # what the next run resolves from the store (the baseline model)
        resolved = resolver.resolve(store, dag.STEPS)
        if resolved is not None:
            roots.add(resolved.id)
    return _with_lineage(store, roots)


def _is_inside(path: Path, root: Path) -> bool:
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def remove_inside(path: Path, root: Path) -> None:
    """Deletes `path` if it lies inside `root`: a symlink (or file) is unlinked, never followed; a folder is
    removed by shutil.rmtree, which unlinks the symlinks it meets. Raises OutsideRoot otherwise."""
    path = Path(path)
    # The folder holding `path` must resolve inside the root; `path` itself may be a link (then only the link,
    # which lives inside the root, is removed).
    if not _is_inside(path.parent, root) or path.name in ("", ".", ".."):
        raise OutsideRoot(f"{path} is outside the pipeline root {root}")
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def collect_garbage(root: Path, keep: int, dry_run: bool = False, serving_dir: Path | None = None,
                    log: Callable[[str], None] = print) -> list[Path]:
    """Deletes unneeded artifact folders (and their step folders once empty of artifacts); returns them.
    Paths that leave the pipeline root are refused and logged. The caller holds the pipeline root's lock, so no
    run is writing meanwhile."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    root = Path(root).absolute()
    store = MetadataStore(root / "metadata.sqlite")
    removed: list[Path] = []

    def delete(path: Path) -> bool:
        try:
            if not dry_run:
                remove_inside(path, root)
        except OutsideRoot as error:
            log(f"gc: refused to delete {path}: {error}")
            return False
        removed.append(path)
        return True

    try:
        needed = protected_artifacts(store, keep)
        # External artifacts (served versions used as baselines) belong to the serving folder, never to gc.
        doomed = [a for a in store.live_artifacts() if a.id not in needed and not a.properties.get("external")]
        kept_runs = {run["id"] for run in store.runs(keep)}
        for artifact in doomed:
            if os.path.isabs(store.stored_uri(artifact.id)):  # written by some other root: not ours to delete
                log(f"gc: refused to delete {artifact.uri}: it is not inside the pipeline root {root}")
                continue
            if os.path.lexists(artifact.uri) and not delete(artifact.uri):
                continue
            if not dry_run:  # one artifact at a time: a gc stopped halfway leaves the store true
                store.mark_deleted([artifact.id])
        # Failed attempts of runs that are not kept, and temporary folders of interrupted steps.
        runs_dir = root / "runs"
        if runs_dir.is_dir() and not runs_dir.is_symlink() and _is_inside(runs_dir, root):
            for run_dir in sorted(runs_dir.iterdir()):
                if run_dir.name in kept_runs or run_dir.is_symlink() or not run_dir.is_dir():
                    continue
                for leftover in sorted(run_dir.glob("*.failed")):
                    delete(leftover)
                if not dry_run:  # step folders whose every artifact is gone
                    for step_dir in run_dir.iterdir():
                        if step_dir.is_dir() and not step_dir.is_symlink() and not any(step_dir.iterdir()):
                            step_dir.rmdir()
        tmp = root / "tmp"
        if tmp.is_symlink():  # never look inside: it may point anywhere; the link itself is ours
            delete(tmp)
        elif tmp.is_dir():
            for entry in sorted(tmp.iterdir()):
                delete(entry)
        for step in dag.delivering_steps() if serving_dir is not None else ():  # what a killed delivery left
            leftovers = step.spec.hook("leftovers")
            for stale in leftovers(Path(serving_dir)) if leftovers is not None else ():
                removed.append(stale)
                if not dry_run:
                    remove_inside(stale, Path(serving_dir))
        return removed
    finally:
        store.close()
