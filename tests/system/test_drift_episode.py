"""One search per drift episode, through the real `agnews-pipeline retrain` on a stream cut from the committed
sample: a label shift that appears and stays for several weekly retrains is flagged by validate every week
(the window still holds the spans from before it), yet only the week it appears searches; the later weeks
reuse the search whose model is served, and say so."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from support.cli import agnews_in_process
from support.paths import E2E_CONFIG as CONFIG
from support.paths import SAMPLE_DIR
from support.streams import TINY_MODEL_FLAGS

# Three retrains of the whole pipeline: minutes each on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

FLAGS = ("--config", str(CONFIG), "--tuning-trials", "1", *TINY_MODEL_FLAGS, "--min-accuracy", "0",
         # every candidate is
         "--set", "evaluator.max_accuracy_drop=1.0", "--set", "evaluator.significance=0",
         # blessed (no drop limit, no paired test), so its search's model is served
         "--set", "tuner.retune=every 30d",  # the default: only a first search or a drift verdict searches
         # the label mix is the shift under test: small spans' vocabularies differ anyway
         "--set", "validate.drift.oov_share=1.0", "--set", "validate.drift.vocab_oov_share=1.0")
SPAN_ROWS = 80
SHIFTED = "2"  # a shifted span is 70% this class (as in the CSV), 10% each other class


def _rows_by_class() -> dict[str, list[str]]:
    by_class: dict[str, list[str]] = {}
    for line in (SAMPLE_DIR / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True):
        by_class.setdefault(next(csv.reader(io.StringIO(line)))[0], []).append(line)
    return by_class


def _write_span(stream: Path, name: str, pool: dict[str, list[str]], shares: dict[str, float]) -> None:
    lines = []
    for label, share in shares.items():
        count = round(SPAN_ROWS * share)
        lines += pool[label][:count]
        del pool[label][:count]
    (stream / name).mkdir(parents=True)
    (stream / name / "train.csv").write_text("".join(lines), encoding="utf-8")


def _retrain(root: Path, stream: Path) -> tuple[str, str]:
    # In this process (no TensorFlow import per retrain): nothing here needs a process of its own.
    completed = agnews_in_process("retrain", *FLAGS, "--data", f"csv:{stream}", "--pipeline-root", str(root))
    run_id = next(
        line.split()[1].rstrip(":") for line in completed.stdout.splitlines() if line.startswith("run ")
    )
    return completed.stdout, run_id


def _tuner_output(root: Path, run_id: str) -> dict:
    details = json.loads(agnews_in_process("show", run_id, "--json", "--pipeline-root", str(root)).stdout)
    return next(step["outputs"]["best_hyperparameters"] for step in details["steps"]
                if "best_hyperparameters" in step["outputs"])


def test_a_lasting_label_shift_is_searched_for_once(tmp_path):
    stream, root = tmp_path / "stream", tmp_path / "root"
    stream.mkdir()
    (stream / "test.csv").write_text((SAMPLE_DIR / "test.csv").read_text(encoding="utf-8"), encoding="utf-8")
    pool = _rows_by_class()
    for name in ("0001", "0002", "0003"):
        _write_span(stream, name, pool, {label: 0.25 for label in "1234"})
    outputs, runs = [], []
    out, run_id = _retrain(root, stream)
    runs.append(run_id)
    for week in ("0004", "0005"):  # the shift appears and stays
        _write_span(stream, week, pool, {label: 0.7 if label == SHIFTED else 0.1 for label in "1234"})
        out, run_id = _retrain(root, stream)
        outputs.append(out)
        runs.append(run_id)
        # Against the served model's window the shift is flagged every week: old spans dilute it only slowly.
        assert f"WARNING: validate: span {week} drifted from the " in out and "label_linf = " in out, out
    assert "tuner: searching: the validate step detected drift" in outputs[0]
    for week, out in zip(("0005",), outputs[1:]):
        assert (
            f"tuner: reusing the hyperparameters tuned in run {runs[1]}" in out
            and f"the drift of span(s) {week} was answered by the search of run {runs[1]} for span(s) "
            "0004, whose "
            f"model is served"
            in out
        ), out
    # Count the searches from what the store holds: one for the first run, one for the episode.
    tuned = [_tuner_output(root, run_id)["properties"] for run_id in runs]
    searches = [run_id for run_id, properties in zip(runs, tuned)
                if properties["tuned"] and properties["reused"] is False]
    assert searches == runs[:2], tuned
    assert all(properties["drift_episode"]["spans"] == ["0004"] for properties in tuned[1:])
