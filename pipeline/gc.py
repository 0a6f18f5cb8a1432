"""Retention: `agnews-pipeline gc --keep N` deletes artifact folders that neither the N newest runs nor any
pushed model depend on. The serving folder is never touched; the metadata records stay (marked deleted)."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.metadata import MetadataStore


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
    for _, pushed, model in store.pushed_models():
        roots.add(pushed.id)
        if model is not None:
            roots.add(model.id)
    baseline = store.last_blessed_model()  # the next run's evaluator compares against it
    if baseline is not None:
        roots.add(baseline.id)
    return _with_lineage(store, roots)


def collect_garbage(root: Path, keep: int, dry_run: bool = False) -> list[Path]:
    """Deletes unneeded artifact folders (and their step folders once empty of artifacts); returns them.
    The caller holds the pipeline root's lock, so no run is writing meanwhile."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    store = MetadataStore(root / "metadata.sqlite")
    try:
        needed = protected_artifacts(store, keep)
        doomed = [a for a in store.live_artifacts() if a.id not in needed]
        kept_runs = {run["id"] for run in store.runs(keep)}
        removed: list[Path] = []
        for artifact in doomed:
            if artifact.uri.exists():
                removed.append(artifact.uri)
                if not dry_run:
                    shutil.rmtree(artifact.uri)
        if not dry_run:
            store.mark_deleted([a.id for a in doomed])
        # Failed attempts of runs that are not kept, and temporary folders of interrupted steps.
        for run_dir in sorted((root / "runs").glob("*")):
            if run_dir.name in kept_runs or not run_dir.is_dir():
                continue
            for leftover in run_dir.glob("*.failed"):
                removed.append(leftover)
                if not dry_run:
                    shutil.rmtree(leftover)
            if not dry_run:  # step folders whose every artifact is gone
                for step_dir in run_dir.iterdir():
                    if step_dir.is_dir() and not any(step_dir.iterdir()):
                        step_dir.rmdir()
        for tmp in sorted((root / "tmp").glob("*")) if (root / "tmp").exists() else []:
            removed.append(tmp)
            if not dry_run:
                shutil.rmtree(tmp)
        return removed
    finally:
        store.close()
