"""Warm start only from a model whose data is still the stream's, through the real `agnews-pipeline` command
on a stream cut from the committed sample: a corrected span (same name, other bytes) makes the next retrain
start from the newest model that never learned the old bytes, or from scratch, and say which and why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import agnews_in_process
from support.paths import E2E_CONFIG as CONFIG
from support.paths import SAMPLE_DIR
from support.streams import TINY_FLAGS

from contract.files import file_sha256
from library import layouts
from library.warm_start import read_lineage

# Four retrains of the whole pipeline: minutes each on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

FLAGS = ("--config", str(CONFIG), *TINY_FLAGS, "--min-accuracy", "0",
         # every candidate is blessed
         "--set", "evaluator.max_accuracy_drop=1.0", "--set", "evaluator.significance=0")
# (no drop limit, no paired test): it is the next base
LINES = (SAMPLE_DIR / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)


def _span(stream: Path, name: str, rows: slice) -> None:
    (stream / name).mkdir(parents=True, exist_ok=True)
    (stream / name / "train.csv").write_text("".join(LINES[rows]), encoding="utf-8")


def _retrain(root: Path, stream: Path) -> tuple[str, str]:
    # In this process (no TensorFlow import per retrain): nothing here needs a process of its own.
    completed = agnews_in_process("retrain", *FLAGS, "--data", f"csv:{stream}", "--pipeline-root", str(root))
    run_id = next(
        line.split()[1].rstrip(":") for line in completed.stdout.splitlines() if line.startswith("run ")
    )
    return completed.stdout, run_id


def _model(root: Path, run_id: str) -> dict:
    details = json.loads(agnews_in_process("show", run_id, "--json", "--pipeline-root", str(root)).stdout)
    return next(step["outputs"]["model"] for step in details["steps"] if "model" in step["outputs"])


def test_a_corrected_span_sends_warm_start_back_to_a_clean_model_or_to_scratch(tmp_path):
    stream, root = tmp_path / "stream", tmp_path / "root"
    stream.mkdir()
    (stream / "test.csv").write_text((SAMPLE_DIR / "test.csv").read_text(encoding="utf-8"), encoding="utf-8")
    _span(stream, "0001", slice(0, 300))
    _span(stream, "0002", slice(300, 600))
    _, first = _retrain(root, stream)
    _span(stream, "0003", slice(600, 900))
    out, second = _retrain(root, stream)
    assert f"trainer: warm start from runs/{first}/trainer/model: " in out
    model = _model(root, second)
    assert model["properties"]["training_spans"] == {name: file_sha256(stream / name / "train.csv")
                                                     for name in ("0001", "0002", "0003")}
    assert read_lineage(model["uri"])["warm_start_from"] == str(Path(_model(root, first)["uri"]).resolve())

    # corrected: the second model learned the old bytes, the first not
    _span(stream, "0003", slice(900, 1200))
    out, third = _retrain(root, stream)
    assert (
        f"trainer: not warm-starting from runs/{second}/trainer/model: it learned span 0003 as it was before "
        f"it changed"
    ) in out, out
    assert f"starting from its newest clean ancestor runs/{first}/trainer/model instead" in out
    assert f"trainer: warm start from runs/{first}/trainer/model: " in out
    assert _model(root, third)["properties"]["warm_start_from"] == f"runs/{first}/trainer/model"

    _span(stream, "0001", slice(0, 299))  # corrected: every model so far learned its old bytes
    out, fourth = _retrain(root, stream)
    line = next(line for line in out.splitlines() if line.startswith("trainer: no warm start from "))
    assert line.startswith(
        f"trainer: no warm start from runs/{third}/trainer/model: it learned span 0001 as it "
        "was before it changed"
    ) and line.endswith("; training from scratch"), out
    model = _model(root, fourth)
    assert "warm_start_from" not in model["properties"] and "span 0001" in model["properties"]["warm_start"]
    assert read_lineage(model["uri"])["warm_start_from"] is None
    assert layouts.keras_model_file(model["uri"]).is_file()
