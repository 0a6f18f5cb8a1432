"""Span states through the real `agnews-pipeline` command (issue 28 item 1): a span refused for drift or data
quality is quarantined in the metadata store and left out of later windows until `spans accept`; once accepted
it is trained on and not refused again for the same bytes. Spans are cut from the committed sample.

Every command runs in this process (apps.cli.main; no TensorFlow import per run): nothing here needs a
process of its own."""
from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
from support.cli import agnews_in_process
from support.paths import SAMPLE_DIR
from support.streams import TINY_TRAINER, TINY_TUNER

from contract.files import file_sha256
from library import layouts

pytestmark = pytest.mark.e2e

NORMAL = ["2026-10-12", "2026-10-19", "2026-10-26", "2026-11-09"]  # 200 rows each, the sample's label mix
SHIFTED = "2026-11-02"  # 120 rows, 70% Sports: label_linf about 0.45
CONFIG = f"""
transform: {{vocab_size: 5000, max_length: 64, bucket_boundaries: [8, 16, 32, 64]}}
{TINY_TUNER}
{TINY_TRAINER}
evaluator: {{min_accuracy: 0.0, max_accuracy_drop: 1.0}}
validate: {{on_drift: fail, drift: {{length_min_rows: 100}}}}
"""


def _write(folder: Path, rows: list[list[str]]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)


def make_spans(base: Path) -> Path:
    """base/full: test.csv and the spans NORMAL (random rows) and SHIFTED (mostly class 2) of the sample."""
    rows = list(csv.reader(open(SAMPLE_DIR / "train.csv", encoding="utf-8")))
    random.Random(3).shuffle(rows)
    full = base / "full"
    for i, name in enumerate(NORMAL):
        _write(full / name, rows[i * 200:(i + 1) * 200])
    rest = rows[800:]
    sports = [row for row in rest if row[0] == "2"][:84]
    _write(full / SHIFTED, sports + [row for row in rest if row[0] != "2"][:36])
    shutil.copyfile(SAMPLE_DIR / "test.csv", full / "test.csv")
    (base / "config.yaml").write_text(CONFIG)
    return full


def arrive(full: Path, live: Path, *names: str) -> None:
    live.mkdir(exist_ok=True)
    if not (live / "test.csv").exists():
        shutil.copyfile(full / "test.csv", live / "test.csv")
    for name in names:
        shutil.copytree(full / name, live / name)


def args(base: Path, live: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(base / "config.yaml"),
        "--data",
        f"csv:{live}",
        "--pipeline-root",
        str(base / "root"),
        *extra,
    ]


def spans(base: Path, live: Path) -> dict[str, dict]:
    listed = json.loads(agnews_in_process("spans", "--data", f"csv:{live}", "--pipeline-root",
                                          str(base / "root"), "--json").stdout)
    return {row["span"]: row for row in listed}


def newest_examples(base: Path) -> Path:
    """The examples folder of the newest run (what its ingest put in the window)."""
    return sorted((base / "root" / "runs").iterdir())[-1] / "ingest" / "examples"


def test_a_refused_span_stays_out_until_accepted_then_is_trained_on_and_not_refused_again(tmp_path):
    full, live = make_spans(tmp_path), tmp_path / "live"
    arrive(full, live, *NORMAL[:3])
    agnews_in_process("run", *args(tmp_path, live, "--until", "validate"))

    arrive(full, live, SHIFTED)  # week 4: the shifted span is refused
    refused = agnews_in_process("run", *args(tmp_path, live, "--until", "validate"), check_code=8)
    assert f"refused span(s) {SHIFTED} (label_linf = " in refused.stderr
    state = spans(tmp_path, live)[SHIFTED]
    assert (state["state"], state["reason"]) == ("quarantined", "drift")
    assert (
        state["sha256"] == file_sha256(live / SHIFTED / "train.csv")
        and state["checks"]["drift"]["label_linf"] > 0.3
    )
    quarantines = (tmp_path / "root" / "history.html").read_text().split("<h2>Quarantines</h2>", 1)[1]
    # the refusing run rewrote it
    assert f"<td>{SHIFTED}</td><td>quarantined</td><td>drift</td>" in quarantines

    arrive(full, live, NORMAL[3])  # week 5: the quarantined span stays out of the window
    agnews_in_process("run", *args(tmp_path, live, "--until", "validate"))
    examples = newest_examples(tmp_path)
    assert layouts.read_counts(examples)["window"] == NORMAL
    assert not layouts.span_dir(examples, SHIFTED).exists()
    listed = agnews_in_process("runs", "--pipeline-root", str(tmp_path / "root")).stdout
    # the newest run: trained spans only
    assert f"{NORMAL[0]}..{NORMAL[3]} (4 spans)" in listed.splitlines()[1]
    assert spans(tmp_path, live)[SHIFTED]["state"] == "quarantined"

    accepted = agnews_in_process(
        "spans", "accept", SHIFTED, "--data", f"csv:{live}", "--pipeline-root", str(tmp_path / "root")
    )
    assert f"span {SHIFTED} accepted" in accepted.stdout
    # checked again, drifts, not refused
    trained = agnews_in_process("run", *args(tmp_path, live, "--until", "trainer"))
    assert (
        f"WARNING: validate: span {SHIFTED} drifted from the rest of the window: label_linf" in trained.stdout
    )
    examples = newest_examples(tmp_path)
    assert layouts.read_counts(examples)["window"] == sorted([*NORMAL, SHIFTED])
    assert layouts.read_counts(layouts.span_dir(examples, SHIFTED))["rows_read"] == 120
    run_dir = examples.parent.parent
    assert (run_dir / "trainer").is_dir() and not (run_dir / "trainer.failed").exists()
    state = spans(tmp_path, live)[SHIFTED]
    assert state["state"] == "accepted" and state["drifted"] and state["last_run"] == run_dir.name


def test_a_span_holding_test_set_rows_is_quarantined_for_test_overlap(tmp_path):
    full, live = make_spans(tmp_path), tmp_path / "live"
    arrive(full, live, *NORMAL[:3])
    leaked = list(csv.reader(open(full / NORMAL[3] / "train.csv", encoding="utf-8")))
    leaked[:20] = list(csv.reader(open(SAMPLE_DIR / "test.csv", encoding="utf-8")))[:20]  # 10% of the span
    _write(live / NORMAL[3], leaked)
    refused = agnews_in_process("run", *args(tmp_path, live, "--until", "validate"), check_code=8)
    assert f"refused span(s) {NORMAL[3]} (test_overlap 0.1000 > threshold 0.01" in refused.stderr
    state = spans(tmp_path, live)[NORMAL[3]]
    assert (state["state"], state["reason"]) == ("quarantined", "test_overlap")
    assert state["checks"]["quality"]["test_overlap"] == pytest.approx(0.1)

    agnews_in_process("run", *args(tmp_path, live, "--until", "ingest"))  # the next run leaves it out
    assert layouts.read_counts(newest_examples(tmp_path))["window"] == NORMAL[:3]
    agnews_in_process("spans", "reject", NORMAL[3], "--data", f"csv:{live}", "--pipeline-root",
                      str(tmp_path / "root"))
    assert spans(tmp_path, live)[NORMAL[3]]["state"] == "rejected"
    accept = agnews_in_process("spans", "accept", NORMAL[3], "--data", f"csv:{live}", "--pipeline-root",
                               str(tmp_path / "root"), check_code=2)
    assert f"span {NORMAL[3]} is rejected, not quarantined" in accept.stderr
