"""Session fixtures several test modules share, each computed once per session (tests/conftest.py registers
this module as a plugin; a module importing a fixture would get its own copy, computed again). Heavy imports
stay inside the fixtures: the unit tests load this module too."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import faults


@pytest.fixture(scope="session")
def direct_files(tmp_path_factory) -> dict[str, str]:
    """{step/file: sha256} of ingest, validate and transform run by the DirectRunner on the sample."""
    from support.beam import UNTIL_TRANSFORM, step_files
    from support.e2e import agnews

    root = tmp_path_factory.mktemp("direct") / "root"
    agnews(*UNTIL_TRANSFORM, "--pipeline-root", str(root))  # fails with its stderr unless it exits 0
    files = step_files(root)
    assert len(files) > 20  # TFRecords, counts, quarantine, statistics, transform graph, model_input, ...
    return files


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(pipeline root with one complete run that pushed version 1, its config file)."""
    base = tmp_path_factory.mktemp("faults")
    config = base / "tiny.yaml"
    config.write_text(faults.TINY_CONFIG)
    root = base / "root"
    completed = faults.agnews("run", "--config", config, "--pipeline-root", root)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert faults.versions(root) == ["1"]
    return root, config


@pytest.fixture
def root(trained, tmp_path) -> Path:
    """A copy of `trained`'s root, the test's own to break."""
    copy = tmp_path / "root"
    shutil.copytree(trained[0], copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def models(tmp_path_factory, transformed_sample):
    """Two exported SavedModels of support.models.tiny_model (seeds 0 and 1: different weights) and their
    in-process answers for support.serving.TEXTS; exported without XLA: a plain graph gives a row the same
    bits in any batch, which the batching tests compare, and a server loads it in seconds."""
    return _tiny_models(tmp_path_factory, transformed_sample, xla=False)


@pytest.fixture(scope="session")
def xla_models(tmp_path_factory, transformed_sample):
    """As `models`, exported with XLA (the default): a server compiles 36 shapes at each version's warm-up."""
    return _tiny_models(tmp_path_factory, transformed_sample, xla=True)


def _tiny_models(tmp_path_factory, transformed_sample, xla: bool):
    import numpy as np
    import tensorflow as tf

    from library import export
    from support.models import tiny_model
    from support.serving import TEXTS

    transform_graph = transformed_sample["transform_graph"].uri
    dim = json.loads((transform_graph / "model_input.json").read_text())["embedding_input_dim"]
    root = tmp_path_factory.mktemp("xla_models" if xla else "models")
    result = {}
    for version, seed in ((1, 0), (2, 1)):
        export.export_serving_model(tiny_model(dim, seed), transform_graph, root / f"model{version}", xla=xla)
        loaded = tf.saved_model.load(str(root / f"model{version}"))
        probabilities = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"].numpy()
        result[version] = {"dir": root / f"model{version}", "probabilities": probabilities}
    assert not np.allclose(result[1]["probabilities"], result[2]["probabilities"], atol=1e-4)
    return result
