"""The lightest pipeline that tests the plumbing where accuracy is not the point, and a growing stream of
weekly spans cut from the committed sample, for the system tests that retrain again and again (rollback,
retention, span states, warm-start lineage): what they observe is stored bytes, artifacts and exit codes,
never a model's quality."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from pipeline.metadata import MetadataStore
from support.paths import PROJECT, SAMPLE_DIR

# No search, the smallest architecture (a 16-unit SimpleRNN on 16-dimensional embeddings, about 33,000
# parameters against the default BiLSTM's 356,000) and one epoch: the trainer step of a retrain on the
# sample's spans takes about a third less time; ingest, transform and the evaluator (Beam, TFT, TFMA) are
# unchanged. No XLA export (trainer.export_xla false): the XLA tests (tests/system/test_export.py,
# test_serve_batching.py) keep it on; here its warm-up compiles would only cost seconds per retrain.
TINY_TUNER = ('tuner: {enabled: false, architecture: rnn, '
              'fixed_hyperparameters: ["embedding_dim=16", "units=16"]}')
TINY_TRAINER = "trainer: {epochs: 1, export_xla: false}"
# The retrain-again tests' configuration (rollback, retention): the tiny model on a 3-span window.
PUSHING_CONFIG = f"""
ingest: {{window: {{num_spans: 3}}}}
transform: {{vocab_size: 2000, max_length: 32, bucket_boundaries: [16, 32]}}
{TINY_TUNER}
{TINY_TRAINER}
# One epoch on a few hundred rows is no good model: every candidate is blessed, so each retrain pushes.
evaluator: {{min_accuracy: 0.0, max_accuracy_drop: 1.0, significance: 0.0, anchor_versions: 2}}
validate: {{drift: {{length_min_rows: 100}}}}
"""
# The same as command-line flags, for tests that run from support.paths.E2E_CONFIG: the architecture and its
# size (TINY_MODEL_FLAGS; a search, if the test needs one, searches the rest) and no search (TINY_FLAGS).
TINY_MODEL_FLAGS = ("--set", "tuner.architecture=rnn",
                    "--set", "tuner.fixed_hyperparameters=[embedding_dim=16, units=16]", "--epochs", "1")
TINY_FLAGS = ("--no-tune", *TINY_MODEL_FLAGS)


def make_stream(base: Path, spans: int, config: str) -> tuple[Path, Path, list[str]]:
    """(full, live, span names): the sample cut into `spans` weekly spans, and an empty stream folder
    (test.csv only) that spans are copied into as they "arrive"; base/config.yaml holds `config`."""
    full = base / "full"
    subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "make_spans.py"), "--data", str(SAMPLE_DIR),
                    "--out", str(full), "--spans", str(spans)], check=True, capture_output=True)
    live = base / "live"
    live.mkdir()
    shutil.copyfile(full / "test.csv", live / "test.csv")
    (base / "config.yaml").write_text(config)
    return full, live, sorted(p.name for p in full.iterdir() if p.is_dir())


def arrive(full: Path, live: Path, name: str) -> None:
    shutil.copytree(full / name, live / name)


def args(base: Path, *extra: str) -> list[str]:
    return ["--config", str(base / "config.yaml"), "--data", f"csv:{base / 'live'}", "--pipeline-root",
            str(base / "root"), *extra]


def root_args(base: Path, *extra: str) -> list[str]:
    return ["--config", str(base / "config.yaml"), "--pipeline-root", str(base / "root"), *extra]


@contextmanager
def opened_store(root: Path):
    store = MetadataStore(root / "metadata.sqlite", read_only=True)
    try:
        yield store
    finally:
        store.close()


def serving_snapshot(serving: Path) -> dict[str, str]:
    return {str(p.relative_to(serving)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(serving.rglob("*")) if p.is_file()}


def pusher_inputs(store: MetadataStore, version: int) -> dict:
    """The inputs of the (newest) pusher execution that published `version`."""
    for execution, pushed in reversed(store.outputs_where("pusher", "pushed_model", "pushed")):
        if pushed.properties["version"] == version:
            return store.artifacts_of(execution["id"], "input")
    raise AssertionError(f"no push of version {version} in the store")
