"""Start-up cost of the commands that do no ML work: `agnews-pipeline runs` and a fully cached `run`.

    CUDA_VISIBLE_DEVICES=-1 .venv/bin/python benchmarks/bench_startup.py [--compare OTHER_SOURCE_TREE]
    [--repeats 5]

For each source tree (this one, and optionally another checkout to compare with, e.g. `git worktree add
/tmp/old <commit>`), it first fills a pipeline root with one complete run of tests/support/e2e_config.yaml on
the committed sample (not timed), then times, in fresh processes and alternating between the trees so both see
the same load, `runs` and a fully cached `run` (every step a cache hit), and records which of TensorFlow, TFT
and Beam each command imported (`python -X importtime`). Writes results/startup.{json,md}: medians and every
repeat."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HEAVY = ("tensorflow", "tensorflow_transform", "apache_beam")
RUN_ARGS = ["--config", "tests/support/e2e_config.yaml", "--data", "csv:tests/support/data/ag_news_sample"]


def cli(tree: Path, args: list[str]) -> tuple[float, set[str], str]:
    """Wall seconds, heavy modules imported, stdout of one CLI call from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "CUDA_VISIBLE_DEVICES": "-1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "apps.cli", *args], cwd=tree, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{args[0]} in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return seconds, imported & set(HEAVY), done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compare", type=Path, help="another source tree of this project to measure alongside"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--roots", type=Path, default=Path("/tmp/agnews-bench-startup"),
                        help="parent of the pipeline roots (one per tree, kept for reuse)")
    args = parser.parse_args()
    trees = {"this tree": PROJECT, **({"compared": args.compare.resolve()} if args.compare else {})}
    roots = {name: args.roots / ("this" if name == "this tree" else "compared") for name in trees}
    commands = {
        name: {
            "runs": ["runs", "--pipeline-root", str(roots[name])],
            "cached run": ["run", *RUN_ARGS, "--pipeline-root", str(roots[name])],
        }
        for name in trees
    }
    for name, tree in trees.items():  # fill each root; afterwards every step of `run` must be a cache hit
        _, _, out = cli(tree, commands[name]["cached run"])
        _, _, out = cli(tree, commands[name]["cached run"])
        if out.count(" cached (") != 7:
            sys.exit(f"the run in {tree} was not fully cached on its second try:\n{out[-2000:]}")

    seconds = {name: {command: [] for command in commands[name]} for name in trees}
    heavy = {name: {command: set() for command in commands[name]} for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            for command, argv in commands[name].items():
                wall, imported, _ = cli(tree, argv)
                seconds[name][command].append(round(wall, 3))
                heavy[name][command] |= imported

    result = {"command": harness.command_line(), "machine": harness.machine(), "repeats": args.repeats,
              "trees": {name: str(tree) for name, tree in trees.items()},
              "results": {name: {command: {"median_seconds": statistics.median(values), "seconds": values,
                                           "heavy_imports": sorted(heavy[name][command])}
                                 for command, values in seconds[name].items()} for name in trees}}
    lines = [
        "# Start-up of `runs` and of a fully cached `run`",
        "",
        *harness.provenance(result),
        f"Data: the committed sample, tests/support/e2e_config.yaml; {args.repeats} repeats per "
        "command, alternating "
        "between trees; wall time of a fresh process including Python start-up, under -X importtime.",
        "",
        *harness.table_head(
            "tree", "command", "median s", "every repeat (s)", "imported TensorFlow / TFT / Beam"
        ),
    ]
    for name in trees:
        for command, entry in result["results"][name].items():
            lines.append(f"| {name} ({trees[name]}) | {command} | {entry['median_seconds']:.2f} | "
                         f"{', '.join(f'{s:.2f}' for s in entry['seconds'])} | "
                         f"{', '.join(entry['heavy_imports']) or 'none'} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
