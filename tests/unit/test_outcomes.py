"""Every outcome visible (issue 28 item 8), the fast part: an outcome label for every exit code, the data's
freshness and its spans by state in the metrics file, history.html showing failed and refused runs with their
reason (real runner and store, on toy components), and the Prometheus alert rules of monitoring/alerts.yml run
by promtool on metrics files that real runs wrote (tests/support/data/metrics/)."""
from __future__ import annotations

import datetime
import html
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import toy_components
from support.paths import PROJECT

from apps import job_metrics
from apps.cli import exit_codes
from contract.artifacts import Artifact, ComponentError
from contract.component_spec import ComponentSpec
from contract.config_loading import load_config
from contract.data_config import IngestConfig, WindowConfig
from pipeline import interrupts, span_states
from pipeline.dag import Step
from pipeline.history import HISTORY_FILE, write_history
from pipeline.runner import Runner


def metrics(path: Path) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


# --------------------------------------------------------------------------------------------- outcome labels


def test_every_exit_code_has_an_outcome_label_and_the_deadline_is_timed_out(tmp_path):
    codes = {
        value
        for name, value in vars(exit_codes).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    codes |= set(interrupts.EXIT_CODES.values())
    assert codes - set(job_metrics.OUTCOME_OF_EXIT) == set()
    assert set(job_metrics.OUTCOME_OF_EXIT.values()) <= set(job_metrics.OUTCOMES)
    # Distinct failures, distinct labels (SIGINT and SIGTERM are both a stop by hand: "interrupted").
    by_label = {}
    for code in codes:
        by_label.setdefault(job_metrics.OUTCOME_OF_EXIT[code], set()).add(code)
    assert {label: found for label, found in by_label.items() if len(found) > 1} == {
        "interrupted": {130, 143}
    }

    prom = tmp_path / "agnews.prom"
    job_metrics.write_job_metrics(prom, command="retrain", exit_code=124, started=0.0, ended=1.0,
                                  root=tmp_path / "root", serving_dir=None)
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "timed_out")))] == 1
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "failed")))] == 0


# ------------------------------------------------------------------------------------- freshness and span
# states


def _stream(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    (folder / "test.csv").write_text('"1","t","d"\n')
    for name in names:
        (folder / name).mkdir()
        (folder / name / "train.csv").write_text('"1","t","d"\n')
    return folder


def test_freshness_is_the_age_of_the_newest_span_in_the_window_and_spans_are_counted_by_state(tmp_path):
    names = ["2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30"]
    stream = _stream(tmp_path / "stream", names)
    ingest = IngestConfig(data=f"csv:{stream}", window=WindowConfig(num_spans=2, skip_recent=1,
                                                                     exclude=("2026-11-16",)))
    states = {span.name: state for span, state in job_metrics.span_states(ingest)}
    assert states == {"2026-11-02": "outside_window", "2026-11-09": "in_window", "2026-11-16": "excluded",
                      "2026-11-23": "in_window", "2026-11-30": "outside_window"}
    # A span the store holds out (quarantined, rejected) is counted by its stored state.
    held = IngestConfig(
        data=ingest.data,
        window=WindowConfig(num_spans=2, skip_recent=1, exclude=("2026-11-16",), held_out=("2026-11-23",)),
    )
    states = {
        span.name: state for span, state in job_metrics.span_states(held, {"2026-11-23": "quarantined"})
    }
    assert states == {"2026-11-02": "in_window", "2026-11-09": "in_window", "2026-11-16": "excluded",
                      "2026-11-23": "quarantined", "2026-11-30": "outside_window"}
    ended = datetime.datetime(2026, 12, 5, 12, tzinfo=datetime.timezone.utc).timestamp()
    prom = tmp_path / "agnews.prom"
    job_metrics.write_job_metrics(
        prom,
        command="retrain",
        exit_code=3,
        started=ended - 5,
        ended=ended,
        root=tmp_path / "root",
        serving_dir=None,
        spans=job_metrics.span_states(ingest),
    )
    values = metrics(prom)
    # 2026-11-23 (the newest span the window trains on) to 2026-12-05 12:00 UTC: 12.5 days.
    assert values[("agnews_retrain_newest_span_age_seconds", ())] == 12.5 * 86400
    assert values[("agnews_retrain_spans_by_state", (("state", "in_window"),))] == 2
    assert values[("agnews_retrain_spans_by_state", (("state", "outside_window"),))] == 2
    assert values[("agnews_retrain_spans_by_state", (("state", "excluded"),))] == 1


def test_numbered_spans_age_by_their_folder_time_and_no_window_still_reports_the_newest_span(tmp_path):
    stream = _stream(tmp_path / "stream", ["0007", "0010"])
    os.utime(stream / "0010", (1_000_000.0, 1_000_000.0))
    os.utime(stream / "0007", (2_000_000.0, 2_000_000.0))  # an older span touched later: not the newest span
    ingest = IngestConfig(data=f"csv:{stream}", window=WindowConfig(min_spans=3))  # too few: no window
    spans = job_metrics.span_states(ingest)
    assert [(span.name, state) for span, state in spans] == [
        ("0007", "outside_window"),
        ("0010", "outside_window"),
    ]
    prom = tmp_path / "agnews.prom"
    job_metrics.write_job_metrics(prom, command="retrain", exit_code=6, started=0.0, ended=1_000_100.0,
                                  root=tmp_path / "root", serving_dir=None, spans=spans)
    assert metrics(prom)[("agnews_retrain_newest_span_age_seconds", ())] == 100.0


# --------------------------------------------------------------------------------------------------- history


def _refusing(inputs, output_dir: Path, config, runtime):
    """A step standing in for validate: refuses with what it measured (TOY_REFUSE), or fails plainly."""
    if os.environ.get("TOY_REFUSE") == "drift":
        raise ComponentError("check: span 0003 drifted: label_linf = 0.4200 > threshold 0.1", "drift",
                             facts={"statistics": {"drift": {"label_linf": 0.42}, "drift_detected": True}})
    if os.environ.get("TOY_REFUSE") == "quarantine":
        raise ComponentError(
            "check: refused span(s) 0003",
            "drift",
            {
                "refused": [
                    {
                        "span": "0003",
                        "sha256": "a" * 64,
                        "reason": "drift",
                        "drift": {"label_linf": 0.42},
                        "quality": {},
                    }
                ]
            },
        )
    if os.environ.get("TOY_REFUSE") == "fail":
        raise ComponentError("check: the data folder vanished")
    out = output_dir / "statistics"
    out.mkdir()
    return {
        "statistics": Artifact("statistics", out, {"drift": {"label_linf": 0.01}, "drift_detected": False})
    }


CHECK = ComponentSpec(
    __name__, executor=f"{__name__}:_refusing", outputs=("statistics",), config_section="validate"
)
STEPS = (toy_components.STEPS[0], Step("check", CHECK, inputs={"numbers": "source.numbers"}))


def _history_table(root: Path) -> list[dict[str, str]]:
    page = (root / HISTORY_FILE).read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", rows[0])]
    return [dict(zip(header, map(html.unescape, re.findall(r"<td>(.*?)</td>", row)))) for row in rows[1:]]


def test_history_shows_failed_and_refused_runs_with_their_reason_and_measured_drift(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("1 2 3\n")
    root = tmp_path / "root"
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}"})
    statuses = []
    for refuse in ("", "drift", "fail"):
        monkeypatch.setenv("TOY_REFUSE", refuse)
        runner = Runner(config, log=lambda m: None, steps=STEPS)
        try:
            statuses.append(runner.run(rerun=("check",)).status)
        finally:
            runner.close()
    assert statuses == ["succeeded", "failed", "failed"]
    ok, refused, failed = _history_table(root)
    assert (
        ok["status"].startswith("succeeded") and ok["drift"] == "{label_linf: 0.0100}" and ok["reason"] == "-"
    )
    assert refused["status"] == "failed" and "label_linf = 0.4200 > threshold 0.1" in refused["reason"]
    assert refused["drift"] == "{label_linf: 0.4200}"  # what the refusing step measured
    assert failed["status"] == "failed" and failed["reason"] == "check: the data folder vanished"
    assert failed["drift"] == "-"



def _quarantines_table(root: Path) -> list[dict[str, str]]:
    page = (root / HISTORY_FILE).read_text()
    section = page.split("<h2>Quarantines</h2>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", section)
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", rows[0])]
    return [dict(zip(header, map(html.unescape, re.findall(r"<td>(.*?)</td>", row)))) for row in rows[1:]]


def test_history_shows_the_quarantines_with_their_state_and_reason(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("1 2 3\n")
    root = tmp_path / "root"
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}"})
    monkeypatch.setenv("TOY_REFUSE", "quarantine")
    runner = Runner(config, log=lambda m: None, steps=STEPS)
    try:
        result = runner.run()
        assert result.status == "failed"
        span_states.record(runner.store, result)  # what `run` does after a refusal, then history.html again
        runner.store.save_span("0002", sha256="f" * 64, state="rejected", reason="duplicate_rows")
        write_history(root, runner.store)
    finally:
        runner.close()
    assert _quarantines_table(root) == [
        {"span": "0002", "state": "rejected", "reason": "duplicate_rows", "sha256": "f" * 12, "checks": "-",
         "updated": _quarantines_table(root)[0]["updated"]},
        {"span": "0003", "state": "quarantined", "reason": "drift", "sha256": "a" * 12,
         "checks": "{label_linf: 0.4200}", "updated": _quarantines_table(root)[1]["updated"]}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", _quarantines_table(root)[1]["updated"])

def test_a_refused_runs_metrics_hold_the_drift_its_check_measured(tmp_path, monkeypatch):
    """Exit 8 (drift): the refusing step published nothing, yet the metrics file carries what it measured
    (from the facts in the run record the real runner wrote), so the drift alert can fire on a refused run."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("1 2 3\n")
    root = tmp_path / "root"
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}"})
    monkeypatch.setenv("TOY_REFUSE", "drift")
    started = time.time() - 1
    runner = Runner(config, log=lambda m: None, steps=STEPS)
    try:
        assert runner.run().status == "failed"
    finally:
        runner.close()
    prom = tmp_path / "agnews.prom"
    job_metrics.write_job_metrics(prom, command="retrain", exit_code=exit_codes.EXIT_DRIFT, started=started,
                                  ended=time.time(), root=root, serving_dir=None)
    values = metrics(prom)
    assert values[("agnews_retrain_outcome", (("command", "retrain"), ("outcome", "drift")))] == 1
    assert values[("agnews_retrain_drift", (("measure", "label_linf"),))] == pytest.approx(0.42)
    assert values[("agnews_retrain_drift_detected", ())] == 1


# ------------------------------------------------------------------------------------------- alert rules


ALERT_RULES = PROJECT / "monitoring" / "alerts.yml"
RECORDED = PROJECT / "tests" / "support" / "data" / "metrics"  # written by real runs: its record.sh
# Recording -> the alerts it must fire (with their labels beyond severity); every other alert must stay
# silent.
EXPECTED_ALERTS = {
    "pushed.prom": {},
    "not_blessed.prom": {"AgnewsAccuracyBelowAnchor": [{"data": "test"}]},
    "drift.prom": {"AgnewsTrainingDataStale": [{}], "AgnewsDataDrift": [{}],
                   "AgnewsRetrainRefused": [{"command": "retrain", "outcome": "drift"}]},
    "timed_out.prom": {"AgnewsRetrainFailed": [{"command": "retrain", "outcome": "timed_out"}]},
    "too_few_spans.prom": {"AgnewsRetrainFailed": [{"command": "retrain", "outcome": "too_few_spans"}]},
}


def promtool() -> str:
    """promtool's path; skipped where it is missing, unless under CI (where it must be installed)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing; CI must install it (apt-get install -y prometheus)")
        pytest.skip("promtool is missing: apt-get install -y prometheus")
    return path


def input_series(prom: Path) -> list[dict[str, str]]:
    """promtool input series holding each sample of a recorded metrics file for 10 minutes. A recording from
    before the evaluator recorded its anchor gets the baseline as the anchor (the served model: the anchor
    over the last one served version)."""
    samples = [(s.name, dict(s.labels), s.value)
               for family in text_string_to_metric_families(prom.read_text()) for s in family.samples]
    if not any(labels.get("model") == "anchor" for _, labels, _ in samples):
        samples += [(name, {**labels, "model": "anchor"}, value) for name, labels, value in samples
                    if name == "agnews_model_accuracy" and labels.get("model") == "baseline"]
    return [{"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}",
             "values": f"{value:.6f}+0x10"} for name, labels, value in samples]


def test_the_alert_rules_fire_on_the_recorded_runs_as_expected(tmp_path):
    import yaml
    rules = {rule["alert"]: rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]
             for rule in group["rules"]}
    # each one fires
    assert {name for expected in EXPECTED_ALERTS.values() for name in expected} == set(rules)
    tests = []
    for recording, expected in EXPECTED_ALERTS.items():
        checks = [
            {
                "eval_time": "5m",
                "alertname": name,
                "exp_alerts": [
                    {
                        "exp_labels": {**rules[name]["labels"], **labels},
                        "exp_annotations": rules[name]["annotations"],
                    }
                    for labels in expected.get(name, [])
                ],
            }
            for name in rules
        ]
        tests.append({"name": recording, "interval": "1m", "input_series": input_series(RECORDED / recording),
                      "alert_rule_test": checks})
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(ALERT_RULES)], "evaluation_interval": "1m",
                                         "tests": tests}))
    completed = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS" in completed.stdout


def test_a_pusher_that_adopted_the_served_version_is_already_pushed_not_pushed():
    """A run whose pusher found its model already served (it adopted that version, serving/ unchanged) exits 0
    like a push, but its outcome says nothing new was pushed."""
    def record(adopted: bool) -> dict:
        pushed = {"pushed": True, "version": 3, "path": "/s/3", "adopted": adopted}
        return {"status": "succeeded", "steps": [
            {"step": "trainer", "state": "ran", "outputs": {}},
            {"step": "pusher", "state": "ran", "outputs": {"pushed_model": {"properties": pushed}}}]}

    assert job_metrics.outcome(0, record(adopted=False)) == "pushed"
    assert job_metrics.outcome(0, record(adopted=True)) == "already_pushed"
