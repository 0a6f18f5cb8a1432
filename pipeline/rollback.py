"""What is served, and changing it safely: `rollback VERSION` and the backfill guard.

TF Serving serves the highest complete version of the serving folder. `rollback VERSION` makes VERSION's model
that one again: its SavedModel is re-published as a new highest version (copied to a hidden folder, then
renamed, as the pusher publishes), and the store records it as a pusher execution of a `rollback` run that
consumed the original model and its blessing. The pushed_model artifact therefore points at the original
model, and dag.SERVED_MODEL (the next retrain's baseline and warm-start base) finds it.

A pinned run (--span / --date) whose window ends before the newest span the served model was trained on is a
backfill: it would warm-start from a later model and could push a model of older data over it. It is refused
before anything runs (exit EXIT_BACKFILL) with one line, unless it stops before the trainer (--until).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from components.ingest import spec as ingest_spec
from components.pusher.executor import publish_version
from components.trainer.spec import BASE_MODEL_INPUT
from contract.artifacts import Artifact, ComponentError, fingerprint
from contract.config import Config
from contract.names import BLESSING, EXAMPLES, MODEL, PUSHED_MODEL
from library import spans as span_stream
from library.code_version import code_version
from library.folder_layouts import serving_version_dir, serving_versions
from library.layouts import existing_serving_model_dir, write_push
from pipeline import dag
from pipeline.metadata import MetadataStore, StoredArtifact

# the ComponentError kind of a refused backfill
BACKFILL = "backfill_older_than_served"


def served_model(store: MetadataStore, config: Config) -> StoredArtifact | None:
    """The trainer model behind the highest served version (dag.SERVED_MODEL), or None."""
    return dag.SERVED_MODEL.resolve(store, dag.STEPS, config=config)


def training_spans(store: MetadataStore, model: StoredArtifact) -> list[str]:
    """The spans a model was trained on: its `training_spans` property, else its ingest's window (older
    models)."""
    recorded = model.properties.get("training_spans")
    if recorded:
        return list(recorded)
    # not its base model's
    for _, inputs in store.lineage(model.id, cut=frozenset({BASE_MODEL_INPUT})):
        examples = inputs.get(EXAMPLES)
        if examples is not None and examples.properties.get("window"):
            return list(examples.properties["window"])
    return []


def backfill_refusal(store: MetadataStore, config: Config) -> str | None:
    """Why this pinned run must not train (one line), or None: it is not pinned, not a stream, nothing is
    served, or its window reaches the served model's newest span."""
    if not config.ingest.window.newest or not config.ingest.data.startswith("csv:"):
        return None
    if not ingest_spec.reads_stream(config.ingest):
        return None
    model = served_model(store, config)
    trained = training_spans(store, model) if model is not None else []
    if not trained:
        return None
    ends = ingest_spec.window(config.ingest)[-1].name
    # library/spans.py's span order
    order = span_stream.span_order(sorted({ends, *trained}), config.ingest.data)
    newest_trained = max(trained, key=order.__getitem__)
    if order[ends] >= order[newest_trained]:
        return None
    version = serving_versions(config.serving_dir())[-1]
    return (
        f"the pinned window ends at span {ends}, before {newest_trained}, the newest span the served model "
        f"(version {version}) was trained on: a backfill never warm-starts from or replaces a newer "
        "model, so "
        "nothing ran. To serve an older model use `agnews-pipeline rollback VERSION`; to look at the "
        "old window "
        "add --until transform"
    )


def rollback(root: Path, config: Config, version: int, log: Callable[[str], None] = print) -> int:
    """Re-publishes `version`'s model as the new highest version and records it; returns the new version. The
    caller holds the pipeline root's lock. ComponentError (one line) when `version` cannot be rolled back
    to."""
    serving_dir = config.serving_dir()
    versions = serving_versions(serving_dir)
    store = MetadataStore(root / "metadata.sqlite")
    try:
        known = dict(dag.served_artifacts(store, dag.STEPS, dag.SERVED_MODEL, serving_dir))
        blessings = dict(dag.served_artifacts(store, dag.STEPS, dag.SERVED_BLESSINGS, serving_dir))
        published = _published_versions(store, serving_dir)
        model = known.get(version) or published.get(version, (None, None))[0]
        blessing = blessings.get(version) or published.get(version, (None, None))[1]
        if model is None or model.deleted or not model.uri.exists():
            kept = ", ".join(str(v) for v, a in known.items() if a is not None and not a.deleted) or "none"
            raise ComponentError(
                f"version {version} is not a model this pipeline root keeps (served versions "
                f"with their model kept: {kept}); nothing changed"
            )
        served = known.get(versions[-1]) if versions else None
        if served is not None and served.id == model.id:
            raise ComponentError(
                f"version {version}'s model is already the one served (version {versions[-1]}, "
                f"the highest in {serving_dir}); nothing changed"
            )
        source = existing_serving_model_dir(model.uri)
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
        store.start_run(run_id, "rollback", config.redacted_dict(), None)
        execution = store.start_execution(run_id, "pusher", None, code_version("pipeline.rollback"),
                                          {"rollback_to": version})
        new_version, path = publish_version(source, serving_dir, fingerprint(source))
        output_dir = root / "runs" / run_id / "pusher"
        pushed_dir = output_dir / PUSHED_MODEL
        temporary = output_dir.with_name(".pusher.tmp")
        (temporary / PUSHED_MODEL).mkdir(parents=True)
        record = {"pushed": True, "version": new_version, "path": str(path), "adopted": False,
                  "rolled_back_to": version, "reason": f"rollback to version {version}"}
        write_push(temporary / PUSHED_MODEL, record)
        os.replace(temporary, output_dir)
        inputs = {MODEL: model.id, **({BLESSING: blessing.id} if blessing is not None else {})}
        artifact = Artifact(
            PUSHED_MODEL,
            pushed_dir,
            {"pushed": True, "version": new_version, "path": str(path), "rolled_back_to": version},
        )
        store.complete_execution(
            execution, output_dir, inputs, {PUSHED_MODEL: (artifact, fingerprint(pushed_dir))}
        )
        store.finish_run(run_id, "succeeded", outcome="rolled_back")
        log(
            f"rollback: version {version}'s model ({os.path.relpath(model.uri, root)}) is served again "
            "as version "
            f"{new_version} ({path}); run {run_id}"
        )
        return new_version
    finally:
        store.close()


def _published_versions(store: MetadataStore, serving_dir: Path) -> dict[int, tuple]:
    """version -> (model, blessing) of every recorded push into this serving folder, also of versions that
    have left it (retention): a rollback to one of them re-publishes from the kept model."""
    found = {}
    for execution, pushed in store.outputs_where("pusher", PUSHED_MODEL, "pushed"):
        version = pushed.properties.get("version")
        if isinstance(version, int) and Path(str(pushed.properties.get("path"))) == serving_version_dir(
                serving_dir, version):
            inputs = store.artifacts_of(execution["id"], "input")
            found[version] = (inputs.get(MODEL), inputs.get(BLESSING))
    return found
