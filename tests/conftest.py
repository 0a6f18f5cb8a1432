"""Shared fixtures: the committed AG News sample, and session-wide real runs of the early components so
later components' tests start from real artifacts without paying for ingest/transform again."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from contract import config as config_module
from contract.artifacts import Artifact, Runtime

SAMPLE_DIR = Path(__file__).parent / "data" / "ag_news_sample"
# Cuts a process off the network: a connection to anything but this machine fails at once, so a test of "no
# network" answers the same on a machine that has one. A `sitecustomize.py` for subprocesses (see offline_hooks),
# or applied in-process by the `offline` fixture.
OFFLINE_SITECUSTOMIZE = """
import errno, ipaddress, socket
_connect = socket.socket.connect
def _on_this_machine(host):
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"
def _offline_connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _on_this_machine(address[0]):
        raise OSError(errno.ENETUNREACH, f"network unreachable (this test runs offline): {address[0]}")
    return _connect(sock, address)
socket.socket.connect = _offline_connect
"""


# The body of a `sitecustomize.py` that runs PATCH (Python code seeing the module as `module`) right after MODULE
# is first imported, in every process that has the file's folder first on PYTHONPATH: how the tests inject a
# fault or observe a step deep inside the real command, without touching the code under test.
AFTER_IMPORT_HOOK = """
import importlib.abc, importlib.util, sys
class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module
        def exec_module(module):
            execute(module)
            exec(PATCH, {"module": module})
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _AfterImport())
"""


def after_import_hook(module: str, patch: str) -> str:
    return f"MODULE = {module!r}\nPATCH = {patch!r}\n{AFTER_IMPORT_HOOK}"


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

# `make test-fast` (pytest -m "not slow"): the unit tests and one small end-to-end run, for iterating. These
# modules train models, start clusters, servers or worker processes, build a wheel or run the pipeline many
# times; every test in them is marked slow, but for the listed end-to-end ones (one run on the sample, then a
# fully cached run). A new module is fast until it is listed here.
SLOW_MODULES = {"test_beam_engines", "test_dask_scale", "test_determinism", "test_e2e", "test_embeddings",
                "test_evaluator_pusher", "test_export", "test_faults", "test_install", "test_multi_worker",
                "test_retune_warm_start", "test_serve", "test_serve_batching", "test_spans", "test_stops",
                "test_tuner_trainer", "test_unattended"}
FAST_IN_SLOW_MODULES = {"test_e2e": {"test_full_run_reports_every_step_and_pushes_version_1",
                                     "test_second_run_reuses_every_step_in_seconds"}}


def pytest_ignore_collect(collection_path, config):
    """With -m "not slow", a module of slow tests only is not even imported (TensorFlow and Keras imports)."""
    if config.getoption("markexpr") == "not slow" and collection_path.suffix == ".py":
        return collection_path.stem in SLOW_MODULES - FAST_IN_SLOW_MODULES.keys() or None
    return None


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES and item.originalname not in FAST_IN_SLOW_MODULES.get(module, ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """1,200 train rows (300 per class) and 400 test rows (100 per class) of the real AG News CSV files."""
    return SAMPLE_DIR


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
