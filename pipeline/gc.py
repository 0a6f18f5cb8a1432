"""Retention: `agnews-pipeline gc --keep N` deletes artifact folders that neither the kept runs (the N newest
runs that went through, with any newer ones) nor any pushed model depend on; the metadata records stay, marked
deleted one by one as their folders go, so a gc stopped halfway leaves the store true.

With a retention policy (retention.served_versions K, the `retention` section of the configuration) only the
last K served versions count as pushed models: their lineage and the N newest runs' are kept, and a lineage is
followed through what a step computed from, not through what it was compared with or started from (the inputs
a Resolver gives: the baseline, the warm-start base, the reused search), which are kept themselves but not
their own lineage. So each pushed model no longer keeps every older one alive through its warm-start base, and
the root stops growing. Served versions beyond the K highest leave the serving folder (never the served one,
the highest). A rollback needs a kept version's model and blessing, which are in its pusher's lineage. A
trained model that no kept served version holds (the gate refused it, or its version left the serving folder)
is kept only in the newest run that went through: the older kept runs keep the rest of what they computed, but
no served version, rollback or warm start can use such a model, so weeks of refusals do not swing the root up
by `runs` models. Without a policy, pushed versions are never touched (only stale `.push-*` folders that a
killed pusher left) and the kept runs keep their models.

A run that is not kept keeps its record (run.json, report.md, its step logs: a few kilobytes, so `runs` and
`show` still tell its story) but not its report.html, whose figures are embedded copies of the evaluation's
(about 100 KB a run): without that the root grew by one page a week for ever.

Nothing outside the pipeline root is ever deleted: every path is resolved and refused if it leaves the root,
and symlinks are removed as links, never followed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from contract.names import MODEL
from library.folder_layouts import RUN_REPORT_HTML, serving_version_dir, serving_versions
from pipeline import dag
from pipeline.metadata import MetadataStore


class OutsideRoot(ValueError):
    """A path that gc was asked to delete resolves to somewhere outside the pipeline root."""


def _with_lineage(
    store: MetadataStore, artifact_ids: set[int], cut: frozenset[str] = frozenset()
) -> set[int]:
    """The artifacts plus every artifact upstream of them (inputs named in `cut`: not their own lineage)."""
    needed = set(artifact_ids)
    for artifact_id in artifact_ids:
        for _, inputs in store.lineage(artifact_id, cut):
            needed.update(a.id for a in inputs.values())
    return needed


def resolved_input_names() -> frozenset[str]:
    """The input names a Resolver fills (baseline, warm-start base, earlier search, earlier examples)."""
    return frozenset(name for step in dag.STEPS for name, source in step.inputs.items()
                     if isinstance(source, dag.Resolver))


def kept_runs(store: MetadataStore, keep: int) -> list:
    """The `keep` newest runs that went through and every run newer than them (failed, interrupted or still
    running: small, and what an operator debugs or resumes). So a week of failed runs never pushes a trained
    run out of the kept ones: the root keeps the same number of trained models whatever failed, and its size
    levels off instead of swinging by one model after each incident."""
    kept: list = []
    succeeded = 0
    for run in store.runs():
        kept.append(run)
        succeeded += run["status"] == "succeeded"
        if succeeded >= keep:
            break
    return kept


def protected_artifacts(store: MetadataStore, runs: list, served_versions: int = 0,
                        serving_dir: Path | None = None) -> set[int]:
    """What gc keeps: the artifacts of `runs` (the kept runs: `kept_runs`) and the pushed models (with a
    policy: those of the `served_versions` highest versions in `serving_dir`), with their lineage (module
    docstring). With a policy, a trained model that no kept served version holds is kept only in the newest
    run that went through (and the newer ones)."""
    kept = set(serving_versions(serving_dir)[-served_versions:]) if served_versions and serving_dir else None
    cut = resolved_input_names() if kept is not None else frozenset()
    newest = runs[:_newest_through(runs) + 1]
    newest_roots, referenced, _ = _run_artifacts(store, newest, cut)
    older_roots, older_referenced, candidates = _run_artifacts(store, runs[len(newest):], cut)
    published: set[int] = set()
    # what left the pipeline root (a pushed model), with its inputs
    for step in dag.delivering_steps():
        output, prop = step.spec.delivers.split(".")
        for _, delivered in store.outputs_where(step.name, output, prop):
            version = delivered.properties.get("version")
            if kept is None or (version in kept and Path(str(delivered.properties.get("path")))
                                == serving_version_dir(serving_dir, version)):
                published.add(delivered.id)
    # what the next run resolves from the store (the baseline model)
    for resolver in dag.resolvers():
        resolved = resolver.resolve(store, dag.STEPS)
        if resolved is not None:
            published.add(resolved.id)
    needed = _with_lineage(store, published | newest_roots, cut) | referenced | older_referenced
    older = _with_lineage(store, older_roots, cut)
    return needed | (older - candidates if kept is not None else older)


def _newest_through(runs: list) -> int:
    """The position in `runs` (newest first) of the newest run that went through; the last if none did."""
    through = (position for position, run in enumerate(runs) if run["status"] == "succeeded")
    return next(through, len(runs) - 1)


def _run_artifacts(store: MetadataStore, runs: list,
                   cut: frozenset[str]) -> tuple[set[int], set[int], set[int]]:
    """(roots, referenced, models) of `runs`: what their steps used or made, except the inputs named in `cut`
    (what they were compared with or started from: `referenced`, kept without their lineage); `models` are
    their outputs that a delivering step publishes (the trained models)."""
    published_outputs = {tuple(step.inputs[MODEL].split(".")) for step in dag.delivering_steps()}
    roots: set[int] = set()
    referenced: set[int] = set()
    models: set[int] = set()
    for run in runs:
        for execution in store.executions(run["id"]):
            for kind in ("input", "output"):
                for name, artifact in store.artifacts_of(execution["id"], kind).items():
                    (referenced if kind == "input" and name in cut else roots).add(artifact.id)
                    if kind == "output" and (execution["step"], name) in published_outputs:
                        models.add(artifact.id)
    return roots, referenced, models


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
                    log: Callable[[str], None] = print, served_versions: int = 0) -> list[Path]:
    """Deletes unneeded artifact folders (and their step folders once empty of artifacts) and, with
    `served_versions` K > 0, the serving folder's versions below its K highest; returns them. Paths that leave
    the pipeline root (or the serving folder) are refused and logged. The caller holds the pipeline root's
    lock, so no run is writing meanwhile."""
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
        runs = kept_runs(store, keep)
        needed = protected_artifacts(store, runs, served_versions, serving_dir)
        # External artifacts (served versions used as baselines) belong to the serving folder, never to gc.
        doomed = [
            a for a in store.live_artifacts() if a.id not in needed and not a.properties.get("external")
        ]
        for artifact in doomed:
            # written by some other root: not ours to delete
            if os.path.isabs(store.stored_uri(artifact.id)):
                log(f"gc: refused to delete {artifact.uri}: it is not inside the pipeline root {root}")
                continue
            if os.path.lexists(artifact.uri) and not delete(artifact.uri):
                continue
            # one artifact at a time: a gc stopped halfway leaves the store true
            if not dry_run:
                store.mark_deleted([artifact.id])
        _collect_run_leftovers(root, {run["id"] for run in runs}, delete, dry_run)
        if serving_dir is not None:
            removed += _collect_serving(Path(serving_dir), served_versions, dry_run)
        return removed
    finally:
        store.close()


def _collect_run_leftovers(root: Path, kept_runs: set[str], delete: Callable[[Path], bool],
                           dry_run: bool) -> None:
    """Deletes the failed attempts (<step>.failed) of runs that are not kept, their report.html, their step
    folders once empty, and the temporary folders of interrupted steps."""
    runs_dir = root / "runs"
    if runs_dir.is_dir() and not runs_dir.is_symlink() and _is_inside(runs_dir, root):
        for run_dir in sorted(runs_dir.iterdir()):
            if run_dir.name in kept_runs or run_dir.is_symlink() or not run_dir.is_dir():
                continue
            for leftover in sorted(run_dir.glob("*.failed")):
                delete(leftover)
            page = run_dir / RUN_REPORT_HTML
            if os.path.lexists(page):
                delete(page)
            # step folders whose every artifact is gone
            if not dry_run:
                for step_dir in run_dir.iterdir():
                    if step_dir.is_dir() and not step_dir.is_symlink() and not any(step_dir.iterdir()):
                        step_dir.rmdir()
    tmp = root / "tmp"
    # never look inside: it may point anywhere; the link itself is ours
    if tmp.is_symlink():
        delete(tmp)
    elif tmp.is_dir():
        for entry in sorted(tmp.iterdir()):
            delete(entry)


def _collect_serving(serving_dir: Path, served_versions: int, dry_run: bool) -> list[Path]:
    """Deletes what a killed delivery left in the serving folder and, with `served_versions` K > 0, its
    versions below the K highest; returns them."""
    removed: list[Path] = []
    # what a killed delivery left
    for step in dag.delivering_steps():
        leftovers = step.spec.hook("leftovers")
        for stale in leftovers(serving_dir) if leftovers is not None else ():
            removed.append(stale)
            if not dry_run:
                remove_inside(stale, serving_dir)
    for version in serving_versions(serving_dir)[:-served_versions] if served_versions else ():
        # past the policy: leaves the serving folder
        folder = serving_version_dir(serving_dir, version)
        removed.append(folder)
        if not dry_run:
            remove_inside(folder, serving_dir)
    return removed
