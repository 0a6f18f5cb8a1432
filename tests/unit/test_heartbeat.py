"""The runner's heartbeat: progress lines with elapsed time and an ETA from the store while a slow step runs,
through the real Runner on two slow toy steps with a 0.2 s period."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from contract.artifacts import Artifact
from contract.component_spec import ComponentSpec
from contract.config_checks import ConfigError
from contract.config_loading import load_config
from pipeline.dag import Step
from pipeline.heartbeat import Estimate, Heartbeat, rows_of
from pipeline.runner import Runner

SLOW = 0.7  # seconds a toy step takes when no heartbeat runs (progress_seconds 0)
BEATS_SECONDS = 60  # how long a toy step waits for its heartbeat's lines before it fails
CURRENT = {"lines": [], "period": 0.0}  # the log and heartbeat period of run_slow's run in progress


def _lines_file(config) -> Path:
    return Path(config.data.removeprefix("csv:")) / "train.csv"


def _slow(step: str) -> None:
    """Stands for a slow step: lasts until the heartbeat printed two lines for `step` (polled, so the test
    holds on a loaded machine), or SLOW seconds when no heartbeat runs."""
    if not CURRENT["period"]:
        time.sleep(SLOW)
        return
    deadline = time.monotonic() + BEATS_SECONDS
    while len(beats(CURRENT["lines"], step)) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no two heartbeat lines for {step} within {BEATS_SECONDS}s: {CURRENT['lines']}"
            )
        time.sleep(0.02)


def read_source(inputs, output_dir: Path, config, runtime):
    if "SLOW_SOURCE_SECONDS" in os.environ:
        time.sleep(float(os.environ["SLOW_SOURCE_SECONDS"]))
    else:
        _slow("source")
    out = output_dir / "lines"
    out.mkdir()
    lines = _lines_file(config).read_text().splitlines()
    (out / "lines.txt").write_text("\n".join(lines))
    return {"lines": Artifact("lines", out, {"train_rows": len(lines)})}


def _source_rows(config) -> int:
    return len(_lines_file(config).read_text().splitlines())


def count_words(inputs, output_dir: Path, config, runtime):
    _slow("count")
    out = output_dir / "words"
    out.mkdir()
    (out / "count.txt").write_text(str(len((inputs["lines"].uri / "lines.txt").read_text().split())))
    return {"words": Artifact("words", out, {})}


STEPS = (
    Step("source", ComponentSpec(__name__, executor=f"{__name__}:read_source", outputs=("lines",),
                                 config_section="ingest", source="data", input_rows=_source_rows)),
    Step("count", ComponentSpec(__name__, executor=f"{__name__}:count_words", outputs=("words",),
                                config_section="trainer"), inputs={"lines": "source.lines"}),
)


def run_slow(root: Path, data: Path, period: float) -> list[str]:
    lines: list[str] = []
    CURRENT.update(lines=lines, period=period)
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}",
                                "pipeline.progress_seconds": period})
    runner = Runner(config, log=lines.append, steps=STEPS)
    try:
        assert runner.run(use_cache=False).status == "succeeded", lines
    finally:
        runner.close()
    return lines


def beats(lines: list[str], step: str) -> list[str]:
    return [line for line in lines if re.match(rf"\[\d/2\] {step} +running: ", line)]


def test_progress_lines_show_elapsed_time_then_an_eta_scaled_from_the_closest_earlier_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a b\nc d\n")
    root = tmp_path / "root"

    first = run_slow(root, data, 0.2)
    for step in ("source", "count"):
        assert len(beats(first, step)) >= 2, first
        assert all(re.search(r"running: elapsed \ds \(no earlier run to estimate from\)$", line)
                   for line in beats(first, step)), first
    # Each step's lines come between its "running ..." and its "done" line: the heartbeat stopped with the
    # step.
    done = next(i for i, line in enumerate(first) if line.startswith("[1/2] source") and " done in " in line)
    assert all(first.index(line) < done for line in beats(first, "source"))
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat")]

    (data / "train.csv").write_text("a b\nc d\ne f\ng h\n")  # twice the rows: the estimate doubles
    second = run_slow(root, data, 0.2)
    for step in ("source", "count"):
        assert beats(second, step), second
        first_beat = beats(second, step)[0]
        assert re.search(
            r"running: elapsed \ds, ETA ~\ds \(estimate: its run here on 2 rows took \ds; now 4\)$",
            first_beat,
        ), first_beat

    (data / "train.csv").write_text("a b\nc d\n")  # back to 2 rows: the first run, not the newest, is closest
    third = beats(run_slow(root, data, 0.2), "source")
    assert third and all(re.search(r"its run here on 2 rows took \ds; now 2\)$", line) for line in third), (
        third
    )
    assert beats(run_slow(root, data, 0), "source") == []  # progress_seconds 0: no lines


SIGINT_SCRIPT = """
import sys, time
from pipeline import interrupts
from contract.config_loading import load_config
from pipeline.runner import Runner
import test_heartbeat
interrupts.install()
config = load_config(flags={"pipeline.root": sys.argv[1], "ingest.data": "csv:" + sys.argv[2],
                            "pipeline.progress_seconds": 0.2})
try:
    Runner(config, log=lambda line: print(line, flush=True), steps=test_heartbeat.STEPS).run()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    time.sleep(1)  # a heartbeat still alive would print here
"""


def test_sigint_while_the_heartbeat_runs_interrupts_the_step_and_stops_the_heartbeat(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a b\n")
    here = Path(__file__).resolve().parent  # where `import test_heartbeat` finds this module
    project = here.parents[1]
    process = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, str(tmp_path / "root"), str(data)], cwd=project, text=True,
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{here}",
                                     "SLOW_SOURCE_SECONDS": "60"})
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if "running: elapsed" in line:
            process.send_signal(signal.SIGINT)
            break
    stdout, _ = process.communicate(timeout=30)
    lines += stdout.splitlines()
    assert process.returncode == 0 and "interrupted" in lines, lines
    assert not beats(lines[lines.index("interrupted"):], "source"), lines


def test_the_estimate_is_unscaled_proportional_or_a_line_through_two_runs_and_says_which():
    unscaled = Heartbeat(print, "[1/1] step      ", 1, Estimate(((100.0, None),), lambda: 5))
    assert unscaled.line(30) == (
        "[1/1] step       running: elapsed 30s, ETA ~1m10s (estimate: its last run here "
        "took 1m40s; not scaled: the size of its input is not known)"
    )
    # counting failed
    broken = Heartbeat(print, "[1/1] step      ", 1, Estimate(((60.0, 10),), lambda: 1 / 0))
    assert "not scaled" in broken.line(1)
    proportional = Heartbeat(print, "[1/1] step      ", 1, Estimate(((60.0, 1000),), lambda: 3000))
    assert proportional.line(190).endswith(
        "elapsed 3m10s, longer than the estimated 3m00s (its run here on 1,000 "
        "rows took 1m00s; now 3,000; likely too high: part of a step's time "
        "does not grow with its rows)"
    )
    # Two runs of different sizes: the closest one plus the time per row between them (measured: transform on
    # 63,800 rows took 26.6 s after 13.4 s on 1,600 and 15.0 s on 9,351).
    line = Heartbeat(print, "[1/1] step      ", 1, Estimate(((15.0, 9351), (9.0, 5000), (13.4, 1600)),
                                                             lambda: 63800))
    assert line.line(10).endswith(
        "elapsed 10s, ETA ~16s (estimate: a line through its runs here on 1,600 rows "
        "(13s) and 9,351 rows (15s); now 63,800)"
    )


def test_rows_come_from_row_count_properties():
    assert (
        rows_of({"train_rows": 5, "eval_rows": 1, "test_rows": 3, "quarantined_rows": 1, "source": "x"}) == 10
    )
    assert rows_of({"rows": 7, "blessed": True}) == 7
    assert rows_of({"accuracy": 0.9, "done_rows": True}) is None


def test_progress_seconds_must_not_be_negative():
    with pytest.raises(ConfigError, match="pipeline.progress_seconds must be >= 0"):
        load_config(flags={"pipeline.progress_seconds": -1})
