"""A retraining schedule: a first `retrain`, then a `retrain` after each growth of the train data, under four
policies: re-tune always or tuner.retune's default, each with and without warm start. Wall time per retrain
and per step, whether the tuner searched, what the trainer started from, its epochs, and accuracy on the fixed
test set per retrain.

    python benchmarks/bench_retrain_schedule.py --source ../shared/data/ag_news --fractions 0.6,0.8,1.0 \
        --out /tmp/retrain_schedule_growth.json

The train rows of --source are shuffled once (seeded) and cut into growing prefixes (the first fraction, then
each later one): the data a weekly job sees grow. test.csv is the fixed test set of every retrain. The first
retrain runs once and its pipeline root is copied for every policy (a root can be copied: the store keeps
paths relative to it), so every policy starts from the same first model and search; then each policy's
retrains run one after the other through the real `agnews-pipeline retrain` command (so the ratios between
policies were measured on the same machine in the same hour; the load average is recorded before and after).
The wall time of a retrain is its run's duration in the metadata store (from the run's start to its end,
without the process's start-up of a few seconds).

With --stream (a folder of spans from make_spans.py) the data grows by spans instead: the first retrain sees
the oldest --first-spans spans, each later retrain one span more (the stream folder each retrain reads holds
hard links to the span files, so the ingest step reuses the spans it has already ingested). For the
127,600-row weekly schedule:

    python benchmarks/generate_data.py --source ../shared/data/ag_news --rows 120000 --out /tmp/ag_news_120k
    python benchmarks/make_spans.py --data /tmp/ag_news_120k --out /tmp/stream_120k --spans 8
    python benchmarks/bench_retrain_schedule.py --stream /tmp/stream_120k --first-spans 7 \
        --policies always-warm,default-warm --out benchmarks/results/retrain_schedule_120k.json

`--report-only` rebuilds the report from the pipeline roots under --work (e.g. after retrains were run by hand
with the same commands).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
from library import layouts  # noqa: E402
from pipeline.metadata import MetadataStore  # noqa: E402

STEPS = ("ingest", "validate", "transform", "tuner", "trainer", "evaluator", "pusher")
ALL_POLICIES = {  # name -> extra flags of every retrain after the first
    "retune always, from scratch (before)": ["--set", "tuner.retune=always", "--from-scratch"],
    "retune always, warm start": ["--set", "tuner.retune=always"],
    "retune default, from scratch": ["--from-scratch"],
    "retune default, warm start (new default)": [],
}
POLICY_KEYS = dict(zip(("always-scratch", "always-warm", "default-scratch", "default-warm"), ALL_POLICIES))
POLICIES = dict(ALL_POLICIES)  # the ones this invocation runs (--policies)


def cut_data(source: Path, fractions: list[float], work: Path, seed: int) -> list[tuple[Path, int]]:
    """One folder per fraction: train.csv = that share of the seeded shuffle of the source's train rows (one
    row per line in AG News), test.csv = the source's."""
    lines = (source / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    random.Random(seed).shuffle(lines)
    folders = []
    for index, fraction in enumerate(fractions):
        folder = work / "data" / f"step_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = round(len(lines) * fraction)
        (folder / "train.csv").write_text("".join(lines[:rows]), encoding="utf-8")
        shutil.copyfile(source / "test.csv", folder / "test.csv")
        folders.append((folder, rows))
    return folders


def cut_stream(stream: Path, first_spans: int, work: Path) -> list[tuple[Path, int]]:
    """One stream folder per retrain: the oldest `first_spans` spans of `stream`, then one more each time
    (hard links, so every folder's span files are the same bytes), and its test.csv."""
    spans = sorted(p for p in stream.iterdir() if (p / "train.csv").is_file())
    folders = []
    for index, count in enumerate(range(first_spans, len(spans) + 1)):
        folder = work / "data" / f"step_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(stream / "test.csv", folder / "test.csv")
        rows = 0
        for span in spans[:count]:
            (folder / span.name).mkdir()
            os.link(span / "train.csv", folder / span.name / "train.csv")
            rows += sum(1 for line in open(span / "train.csv", encoding="utf-8") if line.strip())
        folders.append((folder, rows))
    return folders


def retrain(root: Path, data: Path, flags: list[str], log: Path) -> dict:
    """One `agnews-pipeline retrain`; what it did, from its run.json and artifacts."""
    command = [
        sys.executable,
        "-m",
        "apps.cli",
        "retrain",
        "--data",
        f"csv:{data}",
        "--pipeline-root",
        str(root),
        *flags,
    ]
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run(command, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}).returncode
    if code not in (0, 4):  # 0 pushed, 4 not blessed: both are normal outcomes of a retrain
        raise SystemExit(f"retrain exited {code}; see {log}")
    return describe(root, max((root / "runs").iterdir(), key=lambda p: p.name))


def describe(root: Path, run_dir: Path) -> dict:
    """What one retrain did: its run.json, its artifacts and its duration in the metadata store."""
    record = json.loads((run_dir / "run.json").read_text())
    store = MetadataStore(root / "metadata.sqlite", read_only=True)
    try:
        stored = store.run(record["run_id"])
        wall = stored["ended"] - stored["started"]
    finally:
        store.close()
    steps = {s["step"]: s for s in record["steps"]}
    outputs = {name: o for s in record["steps"] for name, o in s["outputs"].items()}
    history = layouts.read_history(outputs["model_run"]["uri"])
    hyperparameters = outputs["best_hyperparameters"]["properties"]
    return {
        "run_id": record["run_id"], "outcome": stored["outcome"], "wall_seconds": round(wall, 1),
        "step_seconds": {name: steps[name]["seconds"] for name in STEPS},
        "step_states": {name: steps[name]["state"] for name in STEPS},
        "tuner": "reused" if hyperparameters.get("reused") else "searched",
        "tuner_note": hyperparameters.get("retune"),
        "warm_start": outputs["model"]["properties"].get("warm_start"),
        "epochs_trained": history["epochs_trained"], "best_epoch": history["best_epoch"],
        "val_loss_per_epoch": [round(e["val_loss"], 4) for e in history["epochs"]],
        "accuracy": outputs["evaluation"]["properties"]["accuracy"],
        "blessed": outputs["blessing"]["properties"]["blessed"],
        "spans": {state: len(outputs["examples"]["properties"].get(f"spans_{state}") or [])
                  for state in ("ingested", "reingested", "reused")},
    }


def epochs_to_reach(val_losses: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose val_loss is at most `target`, or None."""
    return next((index + 1 for index, loss in enumerate(val_losses) if loss <= target), None)


def markdown(report: dict) -> str:
    lines = [
        f"# Retraining schedule: {report['data']}",
        "",
        *harness.provenance(report),
        f"Load average (1 min) before / after: {report['load_before']:.1f} / {report['load_after']:.1f}  ",
        f"Common flags: `{' '.join(report['common_flags'])}`  ",
        "Wall: each retrain's run duration in the metadata store (start to end of the pipeline run).",
        *([f"Note: {report['note']}"] if report.get("note") else []),
        "",
        "| policy | retrain | train rows | wall (s) | "
        + " | ".join(STEPS)
        + " | tuner | warm start | epochs "
        "(best) | test accuracy | blessed | spans ingested / reused |",
        "|---|---|---|---|" + "---|" * len(STEPS) + "---|---|---|---|---|---|",
    ]
    for policy, runs in report["policies"].items():
        for index, run in enumerate(runs):
            seconds = " | ".join(
                f"{run['step_seconds'][s]:.0f}" + ("c" if run["step_states"][s] == "cached" else "")
                for s in STEPS
            )
            warm = (run["warm_start"] or "-").replace("|", "/")
            spans = run.get("spans") or {}
            spans = (
                f"{spans['ingested'] + spans['reingested']} / {spans['reused']}"
                if sum(spans.values())
                else "-"
            )
            lines.append(
                f"| {policy} | {index} | {report['train_rows'][index]:,} | {run['wall_seconds']:.0f} | "
                f"{seconds} | {run['tuner']} | {warm} | {run['epochs_trained']} ({run['best_epoch']}) | "
                f"{run['accuracy']:.4f} | {run['blessed']} | {spans} |"
            )
    lines += [
        "",
        "(retrain 0 is the common first retrain, run once and copied for every policy; `c` = cached)",
        "",
        "## Later retrains (1 and after), per policy",
        "",
        "| policy | mean wall (s) | vs before | mean tuner (s) | mean trainer (s) | mean epochs | mean test "
        "accuracy | vs before (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in report["summary"].items():
        lines.append(
            f"| {name} | {summary['mean_wall_seconds']:.0f} | {summary['wall_ratio_to_before']:.2f}x | "
            f"{summary['mean_tuner_seconds']:.0f} | {summary['mean_trainer_seconds']:.0f} | "
            f"{summary['mean_epochs']:.1f} | {summary['mean_accuracy']:.4f} | "
            f"{summary['accuracy_points_vs_before']:+.2f} |"
        )
    lines += [
        "",
        "## Epochs to the same validation loss (same data and hyperparameters, tuner.retune default)",
        "",
        "| retrain | from scratch: best val_loss (epoch) | warm start: epoch reaching it | warm start best "
        "val_loss (epoch) |",
        "|---|---|---|---|",
    ]
    for row in report["epochs_to_same_val_loss"]:
        lines.append(
            f"| {row['retrain']} | {row['scratch_best_val_loss']:.4f} ({row['scratch_best_epoch']}) | "
            f"{row['warm_epoch_reaching_it'] or 'not reached'} | {row['warm_best_val_loss']:.4f} "
            f"({row['warm_best_epoch']}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--source", type=Path, help="folder with train.csv and test.csv (cut by --fractions)")
    data.add_argument(
        "--stream", type=Path, help="a folder of spans (make_spans.py), fed one span per retrain"
    )
    parser.add_argument(
        "--first-spans", type=int, default=7, help="with --stream: spans of the first retrain"
    )
    parser.add_argument("--policies", default=",".join(POLICY_KEYS),
                        help="which policies, of " + ", ".join(POLICY_KEYS))
    parser.add_argument("--fractions", default="0.6,0.8,1.0", help="growing shares of the train rows")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_retrain_schedule"))
    parser.add_argument(
        "--out", type=Path, required=True, help="results .json (a .md twin is written beside it)"
    )
    parser.add_argument("--seed", type=int, default=7, help="the shuffle of the train rows")
    parser.add_argument("--flag", action="append", default=[],
                        help="a flag for every retrain, e.g. --flag=--min-accuracy=0.5 (repeatable)")
    parser.add_argument(
        "--first-root",
        type=Path,
        help="a pipeline root whose retrain 0 an earlier invocation ran on the same data: copied "
        "instead of running retrain 0 again",
    )
    parser.add_argument("--report-only", action="store_true",
                        help="no retrain: rebuild the report from the roots under --work")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    chosen = [POLICY_KEYS[key] for key in args.policies.split(",")]
    for name in ALL_POLICIES:
        if name not in chosen:
            del POLICIES[name]
    common = [f for flag in args.flag for f in flag.split("=", 1)] if args.flag else []
    if args.report_only:
        report_only(args, fractions, common)
        return
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    if args.stream:
        folders = cut_stream(args.stream, args.first_spans, args.work)
    else:
        folders = cut_data(args.source, fractions, args.work, args.seed)
    load_before = os.getloadavg()[0]
    machine = harness.machine()

    first_root = args.work / "first"
    if args.first_root:
        shutil.copytree(args.first_root, first_root, symlinks=True)
        print(f"retrain 0: from {args.first_root}", flush=True)
        first = describe(first_root, max((first_root / "runs").iterdir(), key=lambda p: p.name))
    else:
        print(f"retrain 0 ({folders[0][1]:,} train rows), common to every policy", flush=True)
        first = retrain(first_root, folders[0][0], common, args.work / "retrain_0.log")
    roots, policies = {}, {}
    for name in POLICIES:
        roots[name] = args.work / "roots" / name.split(" (")[0].replace(" ", "_").replace(",", "")
        shutil.copytree(first_root, roots[name], symlinks=True)
        policies[name] = [first]
    # Step by step across the policies, the results written after each retrain: an interrupted benchmark still
    # compares every policy on the retrains it finished (and a stream of --first-spans spans only: retrain 0).
    report = summarize(policies, folders, common, machine, load_before, args.source or args.stream)
    harness.write_results(args.out, report, markdown(report))
    for index, (folder, rows) in enumerate(folders[1:], 1):
        for name, flags in POLICIES.items():
            print(f"{name}: retrain {index} ({rows:,} train rows)", flush=True)
            run = retrain(
                roots[name], folder, [*common, *flags], args.work / f"{roots[name].name}_{index}.log"
            )
            policies[name].append(run)
            print(f"    {run['wall_seconds']:.0f}s, tuner {run['tuner']}, warm start {run['warm_start']}, "
                  f"accuracy {run['accuracy']:.4f}", flush=True)
            report = summarize(policies, folders, common, machine, load_before, args.source or args.stream)
            harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


def report_only(args, fractions: list[float], common: list[str]) -> None:
    policies = {}
    for name in POLICIES:
        root = args.work / "roots" / name.split(" (")[0].replace(" ", "_").replace(",", "")
        run_dirs = sorted((root / "runs").iterdir(), key=lambda p: p.name)
        policies[name] = [describe(root, run_dir) for run_dir in run_dirs if (run_dir / "run.json").is_file()]
    folders = []
    for folder in sorted((args.work / "data").iterdir(), key=lambda p: int(p.name.split("_")[1])):
        files = (
            [folder / "train.csv"] if (folder / "train.csv").is_file() else sorted(folder.glob("*/train.csv"))
        )
        folders.append((folder, sum(1 for f in files for line in open(f, encoding="utf-8") if line.strip())))
    load = os.getloadavg()[0]
    report = summarize(policies, folders, common, harness.machine(), load, args.source or args.stream)
    report["note"] = (
        "rebuilt with --report-only from the pipeline roots; the load average 'before' is the one at "
        "the time of the report"
    )
    harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


def summarize(policies: dict[str, list[dict]], folders, common: list[str], machine: str, load_before: float,
              source: Path) -> dict:
    done = min(len(runs) for runs in policies.values())  # retrains every policy has finished
    policies = {name: runs[:done] for name, runs in policies.items()}
    before = next(iter(POLICIES))
    summary = {}
    for name, runs in policies.items():
        later = runs[1:] or runs
        summary[name] = {
            "mean_wall_seconds": sum(r["wall_seconds"] for r in later) / len(later),
            "mean_tuner_seconds": sum(r["step_seconds"]["tuner"] for r in later) / len(later),
            "mean_trainer_seconds": sum(r["step_seconds"]["trainer"] for r in later) / len(later),
            "mean_epochs": sum(r["epochs_trained"] for r in later) / len(later),
            "mean_accuracy": sum(r["accuracy"] for r in later) / len(later)}
    for values in summary.values():
        values["wall_ratio_to_before"] = values["mean_wall_seconds"] / summary[before]["mean_wall_seconds"]
        values["accuracy_points_vs_before"] = 100 * (
            values["mean_accuracy"] - summary[before]["mean_accuracy"]
        )
    scratch = policies.get("retune default, from scratch")
    warm = policies.get("retune default, warm start (new default)")
    epochs = []
    for index in range(1, done if scratch and warm else 0):
        target = min(scratch[index]["val_loss_per_epoch"])
        epochs.append({"retrain": index, "scratch_best_val_loss": target,
                       "scratch_best_epoch": scratch[index]["best_epoch"],
                       "warm_epoch_reaching_it": epochs_to_reach(warm[index]["val_loss_per_epoch"], target),
                       "warm_best_val_loss": min(warm[index]["val_loss_per_epoch"]),
                       "warm_best_epoch": warm[index]["best_epoch"]})
    return {
        "command": harness.command_line(),
        "machine": machine,
        "data": str(source),
        "train_rows": [rows for _, rows in folders][:done],
        "common_flags": common,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "policies": policies,
        "summary": summary,
        "epochs_to_same_val_loss": epochs,
    }


if __name__ == "__main__":
    main()
