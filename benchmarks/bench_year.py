"""A simulated year of weekly retrains (issue 28, item 9): N weekly spans (default 52) fed one a week to the
real `python -m apps.cli retrain`, with scripted incidents placed by fraction of the year, so a short year
(--weeks
12) still holds every one of them.

    nice -n 5 python benchmarks/bench_year.py --weeks 12 --label genuine_12w --set ingest.window.num_spans=12
    ... python benchmarks/bench_year.py --data-dir /tmp/ag_news_120k --weeks 4 --label 120k_4w   # cost

Data: the genuine rows of --data-dir (default /work/shared/data/ag_news), shuffled once (seeded) and dealt
--rows-per-week rows a week (default 100: 5,551 genuine train rows fill 55 such weeks, fewer with the shift's
70% Sports, so once the pool runs short the rows dealt more than RECYCLE_AFTER weeks earlier are dealt again,
and the results say from which week); test.csv cut to --test-rows after a seeded shuffle. Each week the stream
folder DIR/<date>/train.csv gains one span and `retrain --data csv:DIR` runs with
tests/support/e2e_config.yaml (a tiny training budget) and the --set overrides (window, retention, drift
thresholds) in a fresh root under --work.

Incidents (week = fraction of the year, at least 1 week apart):
- label shift: from 0.5 of the year on, SHIFT_SHARE of each new span's rows are Sports and stay so (the first
  3 weeks are the episode, then it is permanent);
- corrupted span (0.25): a one-off span whose labels are bad in CORRUPT_SHARE of its rows (above
  validate.quality.bad_row_share): quarantined (exit 8) and in no later window;
- corrected span (0.33): the span is rewritten a week later (same name, new bytes: other rows);
- late span (0.42): the week's span is not there on its date and arrives the week after, out of order;
- backfill (0.58): after the weekly retrain, `retrain --span <the span before the served model's newest>`:
  refused (exit 9) with serving/ unchanged;
- rollback (0.66): `agnews-pipeline rollback VERSION` of the kept version below the served one; the next week
  must compare with (baseline accuracy) and warm-start from that version's model;
- SIGKILL (0.75): the retrain is killed by pid once its trainer step has started (its logs/trainer.log
  exists), then the weekly retrain runs again;
- full disk (0.9): `--set pipeline.min_free_space=<more than the free space>`, the documented check that a
  too-full disk fails before a step runs (a simulated full disk: no filesystem is filled).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from year_report import kept_out, markdown, shift_outcome, step_seconds

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "tests" / "support" / "e2e_config.yaml"
# --operator-rejects: `spans reject` a failed corrupted span that was not quarantined
REJECT_UNQUARANTINED = False
SETTINGS: list[str] = []  # --set flags of every retrain (main() fills it from the command line)
SHIFT_SHARE, SHIFT_CLASS, CORRUPT_SHARE = 0.7, '"2"', 0.2
INCIDENTS = {"corrupted": 0.25, "corrected": 0.33, "late": 0.42, "shift": 0.5, "backfill": 0.58,
             "rollback": 0.66, "sigkill": 0.75, "full_disk": 0.9}
START = datetime.date(2026, 1, 5)
RECYCLE_AFTER = 13  # weeks; above the 12-span window of the committed runs


def schedule(weeks: int) -> dict[str, int]:
    """Incident -> week (1-based), by fraction of the year; never week 1 (the first run)."""
    return {name: max(2, round(fraction * weeks)) for name, fraction in INCIDENTS.items()}


def cli(args: list[str], root: Path, log: Path, timeout: float = 3600) -> tuple[int, float, str]:
    """Runs `python -m apps.cli ARGS`; exit code, wall seconds and the last line it printed."""
    started, offset = time.monotonic(), log.stat().st_size if log.exists() else 0
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        process = subprocess.run([sys.executable, "-m", "apps.cli", *args], cwd=PROJECT, stdout=out,
                                 stderr=subprocess.STDOUT, timeout=timeout,
                                 env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(PROJECT)})
    with open(log, encoding="utf-8") as written:
        written.seek(offset)
        lines = [line for line in written.read().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]  # the one line a failure is
    return process.returncode, round(time.monotonic() - started, 1), (errors or lines or [""])[-1]


def cli_json(args: list[str]):
    """A read-only command's --json output, or None when it fails."""
    process = subprocess.run(
        [sys.executable, "-m", "apps.cli", *args, "--json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    try:
        return json.loads(process.stdout) if process.returncode == 0 else None
    except json.JSONDecodeError:
        return None


class Year:
    """The stream folder, the root and what each week saw."""

    def __init__(self, data_dir: Path, work: Path, weeks: int, rows: int, test_rows: int, seed: int):
        self.work, self.weeks, self.rows = work, weeks, rows
        self.stream, self.root, self.log = work / "stream", work / "root", work / "year.log"
        self.stream.mkdir(parents=True)
        rng = random.Random(seed)
        train = [
            line
            for line in (data_dir / "train.csv").read_text(encoding="utf-8").splitlines(True)
            if line.strip()
        ]
        test = [
            line
            for line in (data_dir / "test.csv").read_text(encoding="utf-8").splitlines(True)
            if line.strip()
        ]
        rng.shuffle(train)
        rng.shuffle(test)
        (self.stream / "test.csv").write_text("".join(test[:test_rows]), encoding="utf-8")
        self.pool, self.rng, self.used = train, rng, []
        self.recycled_from: int | None = None  # the week from which rows of earlier spans are dealt again
        self.accuracy_of_version: dict[int, float] = {}
        self.run_of_version: dict[int, str | None] = {}  # the run whose model a served version is
        self.old_bytes, self.rolled_back = "", None  # the corrected span's first SHA-256; the rollback target
        self.weeks_seen: list[dict] = []

    def span_name(self, week: int) -> str:
        return (START + datetime.timedelta(weeks=week - 1)).isoformat()

    def write_history(self, spans: int) -> None:
        """`spans` spans of --rows-per-week rows, dated the weeks before week 1 (weeks 0, -1, ...)."""
        for week in range(1 - spans, 1):
            self.write_span(self.span_name(week), self.take(self.rows, False, week))

    def take(self, count: int, shifted: bool, week: int) -> list[str]:
        """`count` unused rows; SHIFT_SHARE of them Sports when `shifted`. When the pool runs short (5,551
        genuine rows cannot fill a year), the rows dealt so far are shuffled back into it: later spans repeat
        rows of earlier spans (dealt more than RECYCLE_AFTER weeks before; never of the test set), and the
        week it first happened is recorded."""
        wanted = round(SHIFT_SHARE * count) if shifted else 0
        sports = [r for r in self.pool if r.startswith(SHIFT_CLASS)]
        if len(self.pool) < count or len(sports) < wanted:
            # only rows dealt more than RECYCLE_AFTER weeks ago: none is in the window twice
            self.recycled_from = self.recycled_from or week
            recycled = [row for dealt, row in self.used if dealt < week - RECYCLE_AFTER]
            self.rng.shuffle(recycled)
            self.pool = self.pool + recycled
            self.used = [(dealt, row) for dealt, row in self.used if dealt >= week - RECYCLE_AFTER]
            sports = [r for r in self.pool if r.startswith(SHIFT_CLASS)]
        if not shifted:
            rows, self.pool = self.pool[:count], self.pool[count:]
        else:
            others = [r for r in self.pool if not r.startswith(SHIFT_CLASS)][:count - wanted]
            rows = sports[:wanted] + others
            taken = set(rows)
            self.pool = [r for r in self.pool if r not in taken]
            self.rng.shuffle(rows)
        self.used += [(week, row) for row in rows]
        return rows

    def write_span(self, name: str, rows: list[str]) -> None:
        """The span's train.csv, written beside and renamed in (a reader never sees half a file)."""
        folder = self.stream / name
        folder.mkdir(exist_ok=True)
        temporary = folder / ".train.csv.tmp"
        temporary.write_text("".join(rows), encoding="utf-8")
        os.replace(temporary, folder / "train.csv")

    def retrain(self, *flags: str) -> tuple[int, float, str]:
        return cli(["retrain", "--data", f"csv:{self.stream}", "--pipeline-root", str(self.root), "--config",
                    str(CONFIG), "--metrics-file", str(self.work / "metrics.prom"), *SETTINGS, *flags],
                   self.root, self.log)

    def served_version(self) -> int | None:
        folder = self.root / "serving" / "agnews"
        versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        return max(versions, default=None)

    def run_ids(self) -> set[str]:
        return {p.name for p in (self.root / "runs").iterdir()} if (self.root / "runs").is_dir() else set()

    def new_run(self, known: set[str]) -> dict:
        """The run.json of the newest run folder not in `known` ({} when the command made none: refused before
        any step, or a step-less exit)."""
        new = sorted((self.root / "runs" / name / "run.json") for name in self.run_ids() - known)
        new = [path for path in new if path.exists()]
        return json.loads(new[-1].read_text()) if new else {}

    def observe(self, code: int, seconds: float, last_line: str, before: int | None, known: set[str]) -> dict:
        """What a retrain did, read from its run.json, the serving folder, `spans --json` and du."""
        record = self.new_run(known)
        outputs = {name: o.get("properties", {}) for s in record.get("steps", []) for name, o in
                   (s.get("outputs") or {}).items()}
        tuner, statistics = outputs.get("best_hyperparameters", {}), outputs.get("statistics", {})
        served = self.served_version()
        accuracy = outputs.get("evaluation", {}).get("accuracy")
        if served is not None and served != before and accuracy is not None:
            self.accuracy_of_version[served] = accuracy
            self.run_of_version[served] = record.get("run_id")
        spans = cli_json(["spans", "--data", f"csv:{self.stream}", "--pipeline-root", str(self.root)]) or []
        checks = statistics.get("span_checks", {})
        return {
            "exit": code,
            "seconds": seconds,
            "line": last_line[:300],
            "run_id": record.get("run_id"),
            "window": outputs.get("examples", {}).get("window", []),
            "search": None if not tuner else ("reused" if tuner.get("reused") else "searched"),
            "retune": tuner.get("retune"),
            "warm_start": outputs.get("model", {}).get("warm_start"),
            "checked_spans": sorted(checks),
            "drifted_spans": statistics.get("drifted_spans", []),
            "drift": {span: c.get("drift", {}) for span, c in checks.items()},
            "candidate_accuracy": accuracy,
            "pushed": served != before,
            "served_version": served,
            "baseline_accuracy": outputs.get("blessing", {}).get("baseline_accuracy"),
            "blessing": outputs.get("blessing", {}).get("reason"),
            "served_accuracy": self.accuracy_of_version.get(served),
            "quarantined": [s["span"] for s in spans if s.get("state") == "quarantined"],
            "span_states": {
                s["span"]: f"{s.get('state')}{' (drifted)' if s.get('drifted') else ''}" for s in spans
            },
            "root_mb": round(du(self.root) / 1e6, 1),
            "root_breakdown_mb": breakdown(self.root),
            "runs_kept": sum(1 for run in (self.root / "runs").glob("*") if run.is_dir()),
            "serving_versions": sorted(
                int(p.name) for p in (self.root / "serving" / "agnews").glob("*") if p.name.isdigit()
            ),
            "load": round(os.getloadavg()[0], 1),
        }

    def weekly(self, week: int, *flags: str) -> dict:
        before, known = self.served_version(), self.run_ids()
        code, seconds, line = self.retrain(*flags)
        return self.observe(code, seconds, line, before, known)


def du(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        if path.exists()
        else 0
    )


def breakdown(root: Path) -> dict[str, float]:
    """The root's MB by part: each top-level entry, and runs/ split by the step folder under each run."""
    parts: dict[str, int] = {}
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if entry.name != "runs" or not entry.is_dir():
            parts[entry.name] = du(entry) if entry.is_dir() else entry.stat().st_size
            continue
        for run in entry.iterdir():
            for step in run.iterdir() if run.is_dir() else [run]:
                key = f"runs/{step.name}" if step.is_dir() else "runs/(files)"
                parts[key] = parts.get(key, 0) + (du(step) if step.is_dir() else step.stat().st_size)
    return {name: round(size / 1e6, 2) for name, size in sorted(parts.items())}


def corrupt(rows: list[str], rng: random.Random) -> list[str]:
    """CORRUPT_SHARE of the rows with a label outside 1..4 (a bad row to ingest's checks)."""
    bad = set(rng.sample(range(len(rows)), round(CORRUPT_SHARE * len(rows))))
    return [('"9"' + row[3:]) if i in bad else row for i, row in enumerate(rows)]


def operator_rejects(year: Year, span: str, incidents: dict) -> list[str]:
    """What an operator does when a refused span was not quarantined (the run failed, later runs would fail
    again): `spans reject SPAN`. Nothing when the pipeline quarantined it itself."""
    states = year.weeks_seen[-1]["span_states"] if year.weeks_seen else {}
    if states.get(span) == "quarantined":
        return []
    code, _, line = cli(["spans", "reject", span, "--data", f"csv:{year.stream}", "--pipeline-root",
                         str(year.root)], year.root, year.log)
    incidents["corrupted_operator"] = {
        "state_before": states.get(span),
        "spans_reject_exit": code,
        "line": line,
    }
    return [f"operator: spans reject {span} (was {states.get(span)})"]


def sigkill_mid_trainer(year: Year) -> dict:
    """Starts the weekly retrain, SIGKILLs it by pid once a new run's logs/trainer.log exists (at most 30
    min)."""
    known = {p.name for p in (year.root / "runs").iterdir()} if (year.root / "runs").is_dir() else set()
    command = [sys.executable, "-m", "apps.cli", "retrain", "--data", f"csv:{year.stream}", "--pipeline-root",
               str(year.root), "--config", str(CONFIG), *SETTINGS]
    with open(year.log, "a", encoding="utf-8") as out:
        process = subprocess.Popen(
            command,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(PROJECT)},
        )
    started, killed = time.monotonic(), False
    while process.poll() is None and time.monotonic() - started < 1800:
        new = [p for p in (year.root / "runs").glob("*") if p.name not in known]
        if any((p / "logs" / "trainer.log").exists() for p in new):
            time.sleep(2)  # inside the trainer, past its start-up
            os.kill(process.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    code = process.wait()
    return {
        "killed_mid_trainer": killed,
        "exit": code,
        "seconds_before_kill": round(time.monotonic() - started, 1),
    }


def run_year(year: Year, plan: dict[str, int]) -> tuple[list[dict], dict]:
    """The main loop: one span a week, the week's incident, the weekly retrain."""
    weeks, incidents, late = [], {}, None
    for week in range(1, year.weeks + 1):
        name, note = year.span_name(week), []
        rows = year.take(year.rows, week >= plan["shift"], week)
        if week == plan["corrupted"]:
            rows, note = corrupt(rows, year.rng), note + ["corrupted span"]
        if week == plan["corrupted"] + 1 and REJECT_UNQUARANTINED:
            note += operator_rejects(year, year.span_name(plan["corrupted"]), incidents)
        if week == plan["late"]:
            late, note = (name, rows), note + [f"span {name} late"]
        else:
            year.write_span(name, rows)
        if late and week == plan["late"] + 1:
            year.write_span(*late)
            note.append(f"late span {late[0]} arrives")
        if week == plan["corrected"] + 1:
            year.write_span(year.span_name(plan["corrected"]), year.take(year.rows, False, week))
            note.append(f"span {year.span_name(plan['corrected'])} corrected")
        if week == plan["sigkill"]:
            incidents["sigkill"] = sigkill_mid_trainer(year)
            note.append("SIGKILL mid-trainer, then the weekly retrain again")
        flags = []
        if week == plan["full_disk"]:
            free = shutil.disk_usage(year.work).free
            flags, note = (
                ["--set", f"pipeline.min_free_space={free + 10**12}"],
                note + ["simulated full disk"],
            )
        result = {"week": week, "span": name, "events": note, **year.weekly(week, *flags)}
        print(
            f"week {week:2d} {name} exit {result['exit']} {result['seconds']}s {'; '.join(note)}", flush=True
        )
        weeks.append(result)
        year.weeks_seen = weeks
        if result["exit"] == 2:  # a usage or configuration error: every later week would fail the same way
            raise SystemExit(f"week {week}: exit 2 ({result['line']}); the year stops here")
        try:
            incidents.update(special(year, week, plan, result))
        except Exception as error:  # a benchmark bug in one incident must not end the year
            incidents[f"bench_error_week_{week}"] = repr(error)[:300]
        yield_json(year, weeks, incidents)
    return weeks, incidents


def special(year: Year, week: int, plan: dict[str, int], result: dict) -> dict:
    """The incidents run after the weekly retrain (backfill, rollback) and what the incident weeks ended
    as."""
    found, keys = {}, ("exit", "line", "search", "warm_start", "pushed", "quarantined")
    for name in ("corrupted", "full_disk"):
        if week == plan[name]:
            found[name] = {"week": week, **{k: result[k] for k in keys}}
    if week == plan["sigkill"]:
        found["sigkill_next_run"] = {"week": week, **{k: result[k] for k in keys}}
    if week == plan["corrected"]:
        year.old_bytes = sha256(year.stream / year.span_name(week) / "train.csv")
    if week == plan["corrected"] + 1:
        found["corrected"] = corrected(year, year.span_name(plan["corrected"]), result, keys)
    if week == plan["late"] + 1:
        late = year.span_name(plan["late"])
        found["late"] = {
            "week": week,
            "exit": result["exit"],
            "late_span_state": result["span_states"].get(late),
            "checked": late in result["checked_spans"],
            "drift": result["drift"].get(late),
        }
    if week == plan["backfill"]:
        found["backfill"] = backfill(year, week, result)
    if week == plan["rollback"]:
        found["rollback"] = rollback(year)
    if week == plan["rollback"] + 1 and isinstance(year.rolled_back, int):
        target = year.rolled_back
        found["after_rollback"] = {
            "week": week, "exit": result["exit"], "target_accuracy": year.accuracy_of_version.get(target),
            "baseline_accuracy": result["baseline_accuracy"], "warm_start": result["warm_start"],
            "target_run": year.run_of_version.get(target),
            "warm_start_from_target": bool(result["warm_start"] and str(year.run_of_version.get(target))
                                           in result["warm_start"]), "blessing": result["blessing"]}
    return found


def sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrected(year: Year, span: str, result: dict, keys: tuple) -> dict:
    """The week after a span's bytes changed: was it re-ingested, and did warm start come from a model whose
    training spans hold the old bytes (read from the base run's run.json: the model's training_spans)?"""
    record = (
        json.loads((year.root / "runs" / result["run_id"] / "run.json").read_text())
        if result["run_id"]
        else {}
    )
    examples = next((o.get("properties", {}) for s in record.get("steps", [])
                     for n, o in (s.get("outputs") or {}).items() if n == "examples"), {})
    base, base_spans = (result["warm_start"] or "").split("runs/")[-1].split("/")[0], None
    if base and (year.root / "runs" / base / "run.json").exists():
        steps = json.loads((year.root / "runs" / base / "run.json").read_text()).get("steps", [])
        base_spans = next((o.get("properties", {}).get("training_spans") for s in steps
                           for n, o in (s.get("outputs") or {}).items() if n == "model"), None)
    return {
        "week": result["week"] if "week" in result else None,
        **{k: result[k] for k in keys},
        "reingested": span in examples.get("spans_reingested", []),
        "old_sha256": year.old_bytes[:12],
        "new_sha256": sha256(year.stream / span / "train.csv")[:12],
        "warm_start_base_has_old_bytes": None
        if base_spans is None
        else base_spans.get(span) == year.old_bytes,
    }


def backfill(year: Year, week: int, result: dict) -> dict:
    """`retrain --span` of the span before the newest one the served model was trained on (a backfill by the
    product's definition: the pinned window ends before the served model's newest span); serving/ must not
    change."""
    before, listing = (
        year.served_version(),
        sorted(p.name for p in (year.root / "serving" / "agnews").iterdir()),
    )
    served_run = year.run_of_version.get(before)
    trained = next((w["window"] for w in year.weeks_seen if w["run_id"] and w["run_id"] == served_run), [])
    span = trained[-2] if len(trained) >= 2 else year.span_name(week - 3)
    code, seconds, line = year.retrain("--span", span)
    after = sorted(p.name for p in (year.root / "serving" / "agnews").iterdir())
    return {
        "week": week,
        "span": span,
        "served_model_newest_span": trained[-1] if trained else None,
        "exit": code,
        "seconds": seconds,
        "line": line[:300],
        "served_before": before,
        "served_after": year.served_version(),
        "serving_unchanged": listing == after,
    }


def rollback(year: Year) -> dict:
    """`rollback <the kept version below the served one>`: it must become the served (highest) version."""
    before = year.served_version()
    kept = sorted(int(p.name) for p in (year.root / "serving" / "agnews").iterdir() if p.name.isdigit())
    targets = [v for v in kept if v < (before or 0) and v in year.accuracy_of_version]
    if not targets:
        year.rolled_back = None
        return {"skipped": f"no kept version below the served one (kept: {kept})"}
    target = targets[-1]
    code, seconds, line = cli(
        ["rollback", str(target), "--pipeline-root", str(year.root), "--config", str(CONFIG)],
        year.root,
        year.log,
    )
    after = year.served_version()
    if code == 0 and after != before:
        year.accuracy_of_version[after] = year.accuracy_of_version[target]
        year.run_of_version[after] = year.run_of_version.get(target)
    year.rolled_back = target
    return {"exit": code, "seconds": seconds, "line": line[:300], "target": target, "served_before": before,
            "served_after": after}


def yield_json(year: Year, weeks: list[dict], incidents: dict) -> None:
    """The weeks so far, beside the work folder (a killed benchmark keeps what it measured)."""
    (year.work / "partial.json").write_text(json.dumps({"weeks": weeks, "incidents": incidents,
                                                        "recycled_from": year.recycled_from}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/ag_news"))
    parser.add_argument("--rows-per-week", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--history-spans", type=int, default=0,
                        help="spans already in the stream, dated the weeks before week 1, when the first "
                        "retrain runs: a pipeline started on existing data, its first model trained on a "
                        "full window (default 0: the first retrain sees one span)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--label", default="genuine")
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a configuration override for every retrain, e.g. evaluator.min_accuracy=0")
    parser.add_argument(
        "--operator-rejects",
        action="store_true",
        help="the week after the corrupted span, `spans reject` it if the pipeline did not quarantine "
        "it (the response an operator is left with when the failure repeats every week)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the results from --work's partial.json (the weeks a stopped run finished)",
    )
    parser.add_argument("--ran-command", help="with --report-only of a stopped run: the command it ran")
    args = parser.parse_args()
    global REJECT_UNQUARANTINED
    REJECT_UNQUARANTINED = args.operator_rejects
    SETTINGS.extend(flag for setting in args.set for flag in ("--set", setting))
    plan, load_before = schedule(args.weeks), os.getloadavg()[0]
    work = args.work or Path(__import__("tempfile").mkdtemp(prefix="bench_year_"))
    if args.report_only:
        partial = json.loads((work / "partial.json").read_text())
        weeks, incidents, recycled = partial["weeks"], partial["incidents"], partial.get("recycled_from")
    else:
        year = Year(args.data_dir, work, args.weeks, args.rows_per_week, args.test_rows, args.seed)
        year.write_history(args.history_spans)
        print(f"work folder {work}; incident weeks {plan}", flush=True)
        weeks, incidents = run_year(year, plan)
        recycled = year.recycled_from
    incidents["corrupted_kept_out"] = kept_out(weeks, plan)
    incidents["shift"] = shift_outcome(weeks, plan)
    step_seconds(work / "root", weeks)
    out = PROJECT / "benchmarks" / "results" / f"year_{args.label}.json"
    ran = {
        "command": harness.command_line(),
        "machine": harness.machine(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "config": f"{CONFIG.relative_to(PROJECT)} {' '.join(SETTINGS)}",
        "data": f"{args.data_dir}: {args.rows_per_week} train rows a week, test.csv cut to {args.test_rows}"
                + (f"; {args.history_spans} spans before week 1" if args.history_spans else ""),
    }
    if args.report_only and out.exists():  # the run's own command, machine and load, not the report's
        ran = {key: json.loads(out.read_text())[key] for key in ran}
    elif args.report_only and args.ran_command:  # a stopped run wrote no results: say what it ran
        ran["command"] = f"{args.ran_command} (stopped; this report: {ran['command']})"
    report = {"label": args.label, **ran, "plan": plan, "weeks_planned": args.weeks,
              "weeks": weeks, "incidents": incidents, "recycled_from": recycled}
    harness.write_results(out, report, markdown(report))


if __name__ == "__main__":
    main()
