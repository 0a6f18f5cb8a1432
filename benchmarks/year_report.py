"""The results of bench_year.py: step times from the metadata store, the summary, the markdown table (kept
apart from the benchmark so each module stays short)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs


def step_seconds(root: Path, weeks: list[dict]) -> None:
    """Adds each week's step times (tuner, trainer, the rest) from the metadata store's executions: the store
    keeps every run's record after retention deleted its folder. `other_s` is the week's wall time minus tuner
    and
    trainer: what a retrain costs apart from training (process start-up, ingest, validate, transform,
    evaluator, pusher, retention)."""
    store = root / "metadata.sqlite"
    if not store.exists():
        return
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        for week in weeks:
            rows = db.execute(
                "SELECT step, started, ended FROM executions WHERE run_id = ?", (week["run_id"],)
            )
            steps = {step: round(ended - started, 1) for step, started, ended in rows if ended}
            if steps:
                week["step_seconds"] = steps
                week["other_s"] = round(week["seconds"] - steps.get("tuner", 0) - steps.get("trainer", 0), 1)
    finally:
        db.close()


def trend(weeks: list[dict]) -> str:
    """Least-squares slope of other_s over the weeks that went through with no incident and no search."""
    points = [(w["week"], w["other_s"]) for w in weeks
              if "other_s" in w and w["exit"] in (0, 4) and not w["events"] and w["search"] == "reused"]
    if len(points) < 3:
        return "n/a"
    n, mx, my = len(points), sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    first, last = [y for _, y in points[:5]], [y for _, y in points[-5:]]
    return (
        f"{slope:+.2f} s a week over {n} plain weeks (mean of the first 5: {sum(first) / len(first):.1f} s, "
        f"of the last 5: {sum(last) / len(last):.1f} s)"
    )


def shift_outcome(weeks: list[dict], plan: dict[str, int]) -> dict:
    """The label shift from its week on: weeks flagged, searches (the issue: at most 2 for the episode),
    pushes."""
    after = [w for w in weeks if w["week"] >= plan["shift"] and w["run_id"]]
    return {"from_week": plan["shift"], "weeks_flagged": [w["week"] for w in after if w["drifted_spans"]],
            "search_weeks": [w["week"] for w in after if w["search"] == "searched"],
            "push_weeks": [w["week"] for w in after if w["pushed"]]}


def kept_out(weeks: list[dict], plan: dict[str, int]) -> dict:
    """Was the corrupted span in the window of any run after its week (it must not be, unless accepted)?"""
    span = next((w["span"] for w in weeks if w["week"] == plan["corrupted"]), None)
    later = [w["week"] for w in weeks if w["week"] > plan["corrupted"] and span in w.get("window", [])]
    return {"span": span, "weeks_whose_window_held_it": later,
            "runs_checked": sum(bool(w.get("window")) for w in weeks if w["week"] > plan["corrupted"])}


def drift_cell(week: dict) -> str:
    """The drift values of the week's newest checked span, '*' when a span drifted."""
    values = week.get("drift", {}).get(week["span"]) or next(iter(week.get("drift", {}).values()), {})
    text = " ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in values.items() if isinstance(v, (int, float)))
    return (text or "-") + (" *" if week.get("drifted_spans") else "")


def summary(report: dict) -> list[str]:
    """Weeks, searches, pushes, quarantines, root size at weeks 4/12/26/52 and seconds a week."""
    weeks = report["weeks"]
    by_week = {w["week"]: w for w in weeks}
    roots = {n: by_week[n]["root_mb"] for n in (4, 12, 26, 52) if n in by_week}
    growth = (f"{100 * (roots[52] / roots[26] - 1):+.1f}%" if 26 in roots and 52 in roots else "n/a")
    plain = [w["seconds"] for w in weeks if w["exit"] in (0, 4) and not w["events"]]  # 4: ran, not blessed
    late = [w["root_mb"] for w in weeks[-20:]]
    ran = [w for w in weeks if w["run_id"]]
    quarantined = sorted({s for w in weeks for s in w["quarantined"]})
    return [
        f"- weeks run: {len(weeks)}; searches: {sum(w['search'] == 'searched' for w in weeks)}; pushes: "
        f"{sum(w['pushed'] for w in weeks)}; exits: {dict(sorted(count_exits(weeks).items()))}",
        f"- spans quarantined: {', '.join(quarantined) or 'none'}; drift flagged in "
        f"{sum(bool(w['drifted_spans']) for w in ran)} weeks",
        f"- root MB at weeks 4/12/26/52: {roots}; growth week 26 -> 52: {growth}; over the last {len(late)} "
        f"weeks: {min(late, default=0)}-{max(late, default=0)} MB",
        f"- wall seconds of an incident-free week that went through: first 5 {plain[:5]}, last 5 "
        f"{plain[-5:]}",
        f"- rows dealt again (pool exhausted) from week: {report.get('recycled_from') or 'never'}",
        f"- non-training seconds (wall - tuner - trainer) trend: {trend(weeks)}",
    ]


def count_exits(weeks: list[dict]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for w in weeks:
        counts[w["exit"]] = counts.get(w["exit"], 0) + 1
    return counts


def markdown(report: dict) -> str:
    lines = [
        f"# A simulated year: {report['label']}",
        "",
        *harness.provenance(report),
        f"Load average (1 min) before / after: {report['load_before']:.1f} / {report['load_after']:.1f}  ",
        f"Data: {report['data']}  ",
        f"Config: `{report['config']}`  ",
        f"Weeks finished: {len(report['weeks'])} of {report['weeks_planned']}  ",
        f"Incident weeks: {report['plan']}",
        "",
        "## Summary",
        "",
        *summary(report),
        "",
        "| week | span | events | exit | wall (s) | non-training (s) | load | drift (newest span) | search | "
        "warm start | pushed | served v | served acc | quarantined | root MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in report["weeks"]:
        acc = "-" if w["served_accuracy"] is None else f"{w['served_accuracy']:.3f}"
        warm = (w["warm_start"] or "-").replace("/trainer/model", "")[:70]
        lines.append(
            f"| {w['week']} | {w['span']} | {'; '.join(w['events']) or '-'} | {w['exit']} | "
            f"{w['seconds']} | {w.get('other_s', '-')} | {w.get('load', '-')} | {drift_cell(w)} | "
            f"{w['search'] or '-'} | {warm} | "
            f"{'yes' if w['pushed'] else 'no'} | {w['served_version']} | {acc} | "
            f"{', '.join(w['quarantined']) or '-'} | {w['root_mb']} |"
        )
    lines += ["", "## Incidents", ""]
    lines += [f"- **{name}**: `{json.dumps(value)}`" for name, value in report["incidents"].items()]
    return "\n".join(lines) + "\n"
