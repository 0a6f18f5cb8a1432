"""Shared fixtures: the committed AG News sample, and session-wide real runs of the early components so
later components' tests start from real artifacts without paying for ingest/transform again."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from contract import config as config_module  # noqa: E402
from contract.artifacts import Artifact, Runtime  # noqa: E402

SAMPLE_DIR = Path(__file__).parent / "data" / "ag_news_sample"


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
    from components import ingest
    out = tmp_path_factory.mktemp("ingest")
    outputs = ingest.run({}, out, config_module.IngestConfig(data=f"csv:{SAMPLE_DIR}"), runtime)
    return outputs["examples"]


@pytest.fixture(scope="session")
def schema_artifact(tmp_path_factory, ingested_sample, runtime) -> Artifact:
    from components import validate
    out = tmp_path_factory.mktemp("validate")
    outputs = validate.run({"examples": ingested_sample}, out, config_module.ValidateConfig(), runtime)
    return outputs["schema"]


@pytest.fixture(scope="session")
def transformed_sample(tmp_path_factory, ingested_sample, schema_artifact, runtime) -> dict[str, Artifact]:
    """`transform_graph` and `transformed_examples` of a real transform run on the ingested sample
    (small vocabulary and max length keep it quick)."""
    from components import transform
    out = tmp_path_factory.mktemp("transform")
    cfg = config_module.TransformConfig(vocab_size=5000, max_length=64, bucket_boundaries=(8, 16, 32, 64))
    return transform.run({"examples": ingested_sample, "schema": schema_artifact}, out, cfg, runtime)
