"""Two tiny components that follow the real component contract, so the runner's own mechanics (caching,
atomic publish, resume, locking, lineage, gc) can be tested in seconds. The real components are tested in
their own files and end to end."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from contract.artifacts import Artifact, ComponentError
from contract.component_spec import ComponentSpec
from pipeline.dag import Step


def _maybe_misbehave(step: str) -> None:
    if os.environ.get("TOY_FAIL") == step:
        raise ComponentError(f"{step} was told to fail")
    if os.environ.get("TOY_KILL") == step:
        Path(os.environ["TOY_KILL_MARKER"]).write_text("started")
        time.sleep(60)  # the test kills the process here


def _source_file(config) -> Path:
    return Path(config.data.removeprefix("csv:")) / "train.csv"


def external_fingerprint(config) -> str:
    return hashlib.sha256(_source_file(config).read_bytes()).hexdigest()


def run(inputs, output_dir: Path, config, runtime):
    _maybe_misbehave("source")
    out = output_dir / "numbers"
    out.mkdir()
    lines = _source_file(config).read_text().split()
    (out / "values.txt").write_text("\n".join(lines))
    return {"numbers": Artifact("numbers", out, {"rows": len(lines)})}


def run_double(inputs, output_dir: Path, config, runtime):
    _maybe_misbehave("double")
    values = [int(v) for v in (inputs["numbers"].uri / "values.txt").read_text().split()]
    out = output_dir / "doubled"
    out.mkdir()
    (out / "values.txt").write_text("\n".join(str(v * 2 * config.epochs) for v in values))
    return {"doubled": Artifact("doubled", out, {"sum": sum(values) * 2 * config.epochs})}


SOURCE = ComponentSpec(__name__, executor=f"{__name__}:run", outputs=("numbers",), config_section="ingest",
                       external=external_fingerprint, source="data")
DOUBLE = ComponentSpec(__name__, executor=f"{__name__}:run_double", outputs=("doubled",),
                       config_section="trainer", seeded=True)
STEPS = (
    Step("source", SOURCE),
    Step("double", DOUBLE, inputs={"numbers": "source.numbers"}),
)
