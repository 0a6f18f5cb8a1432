"""Shared fixtures: the committed AG News sample, and session-wide real runs of the early components so
later components' tests start from real artifacts without paying for ingest/transform again.

tests/unit/ holds the fast tests (no training, no cluster, no server, no pipeline run in a subprocess);
tests/system/ the rest, all marked slow but the end-to-end ones `make test-fast` keeps; tests/support/ what
they share (test modules import from it, never from each other)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))  # `import support` from any test module or conftest

from support.hooks import OFFLINE_SITECUSTOMIZE
from support.paths import SAMPLE_DIR

from contract import config as config_module
from contract.artifacts import Artifact, Runtime
from pipeline.root import scratch_tempdir

pytest_plugins = ["support.fixtures"]  # the session fixtures several modules share


@pytest.fixture
def offline(monkeypatch):
    import socket
    monkeypatch.setattr(socket.socket, "connect", socket.socket.connect)  # puts the real one back afterwards
    exec(OFFLINE_SITECUSTOMIZE, {})


@pytest.fixture
def offline_hooks(tmp_path) -> Path:
    """A folder to put first on a subprocess's PYTHONPATH to run it offline."""
    folder = tmp_path / "offline-hooks"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    return folder

SYSTEM = Path(__file__).parent / "system"
# `make test-fast` runs tests/unit and these two end-to-end tests (one run on the sample, then a fully cached
# run).
FAST_SYSTEM_TESTS = {"test_e2e": {"test_full_run_reports_every_step_and_pushes_version_1",
                                  "test_second_run_reuses_every_step_in_seconds"}}


# The order `make test` hands the files to its three processes (pytest-xdist, a whole file each: --dist
# loadfile --no-loadscope-reorder; xdist's default order, the files with the most tests first, put the files
# of one long test last, and one process worked alone for minutes at the end). The longest files go first, so
# the short ones fill in at the end (longest processing time first); files not listed follow in their usual
# order, the unit tests last. By the seconds of a full run with 3 processes on 2 cores (junit times per
# file), longest first; a group of SHARED_FIXTURE_GROUPS (below) is one unit, placed by its first file.
LONGEST_FIRST = ("test_unattended", "test_faults", "test_evaluator_pusher", "test_stops",  # about 500 s
                 "test_dask_scale", "test_beam_engines",  # about 440 s
                 "test_e2e", "test_retention", "test_tuner_trainer", "test_retune_warm_start",
                 "test_warm_start_lineage", "test_spans", "test_drift_episode", "test_multi_worker",
                 "test_export", "test_embeddings", "test_serve_batching", "test_install",
                 "test_served_drift", "test_span_quarantine", "test_serve")


# Files that share an expensive session fixture go to one process, which computes it once: a session
# fixture is per process under pytest-xdist, and with a whole file per process (--dist loadfile) `trained`
# (a whole run) was computed by each of the 3 processes and `direct_files` (ingest to transform) by 2.
SHARED_FIXTURE_GROUPS = {
    "trained": ("test_unattended", "test_faults", "test_evaluator_pusher", "test_stops"),
    "direct_files": ("test_dask_scale", "test_beam_engines"),
}


def pytest_xdist_make_scheduler(config, log):
    """With --dist loadfile: xdist's file-by-file scheduling, a SHARED_FIXTURE_GROUPS group counting as one
    file. Any other --dist keeps xdist's own scheduler."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling
    group_of = {stem: group for group, stems in SHARED_FIXTURE_GROUPS.items() for stem in stems}

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return group_of.get(Path(path).stem, path)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items):
    """Every test under tests/system/ is marked slow, but for FAST_SYSTEM_TESTS; the files in LONGEST_FIRST
    order, then the others as collected (a stable sort: the tests of a file keep their order)."""
    for item in items:
        fast = item.originalname in FAST_SYSTEM_TESTS.get(item.path.stem, ())
        if SYSTEM in item.path.parents and not fast:
            item.add_marker(pytest.mark.slow)
    rank = {stem: index for index, stem in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """1,200 train rows (300 per class) and 400 test rows (100 per class) of the real AG News CSV files."""
    return SAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def temporary_files_inside_pytests_folder(tmp_path_factory):
    """Tests that run a step in-process (the runner does this for a run) keep the temporary folders of Beam,
    TensorFlow and dask inside pytest's folder, removed at the end: Beam's Prism job server otherwise leaves
    a `beam-temp*` folder in /tmp for each pipeline."""
    with scratch_tempdir(tmp_path_factory.getbasetemp()):
        yield


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    return Runtime(beam_args=(), seed=42, log=lambda message: None)


@pytest.fixture(scope="session")
def ingested_sample(tmp_path_factory, runtime) -> Artifact:
    """The `examples` artifact of a real ingest run on the sample."""
    from components.ingest import executor as ingest
    out = tmp_path_factory.mktemp("ingest")
    outputs = ingest.run({}, out, config_module.IngestConfig(data=f"csv:{SAMPLE_DIR}"), runtime)
    return outputs["examples"]


@pytest.fixture(scope="session")
def schema_artifact(tmp_path_factory, ingested_sample, runtime) -> Artifact:
    from components.validate import executor as validate
    out = tmp_path_factory.mktemp("validate")
    outputs = validate.run({"examples": ingested_sample}, out, config_module.ValidateConfig(), runtime)
    return outputs["schema"]


@pytest.fixture(scope="session")
def transformed_sample(tmp_path_factory, ingested_sample, schema_artifact, runtime) -> dict[str, Artifact]:
    """`transform_graph` and `transformed_examples` of a real transform run on the ingested sample
    (small vocabulary and max length keep it quick)."""
    from components.transform import executor as transform
    out = tmp_path_factory.mktemp("transform")
    cfg = config_module.TransformConfig(vocab_size=5000, max_length=64, bucket_boundaries=(8, 16, 32, 64))
    return transform.run({"examples": ingested_sample, "schema": schema_artifact}, out, cfg, runtime)
