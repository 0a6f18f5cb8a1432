"""Counts what a captured run log holds, by kind: the pipeline's own lines, KerasTuner's tables and banners,
Keras's per-epoch lines, TensorFlow's C++ lines, Beam/absl logging, ANSI codes.

    python benchmarks/log_lines.py RUN.stdout [RUN.stderr ...] [--logs RUN_DIR/logs]

Used for the issue-19 measurement: a default `agnews-pipeline run --data csv:../shared/data/ag_news` with
stdout and stderr redirected to files, once with the code before the change and once after.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

KINDS = (
    ("tensorflow_cpp", re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl")),
    (
        "kerastuner",
        re.compile(
            r"Search: Running Trial|Best Value So Far|^\S+\s*\|\S*\s*\|\S+$|^Trial \d+ Complete|"
            r"^Best val_\w+ So Far|^Total elapsed time|^Value\s+\|"
        ),
    ),
    ("keras_epoch", re.compile(r"^\d+/\d+ - \d+m?s - |^Epoch \d+/\d+$")),
    (
        "beam_absl_logging",
        re.compile(
            r"^(INFO|WARNING|ERROR|DEBUG):(absl|apache_beam|root|tensorflow)|"
            r"^(WARNING|INFO|ERROR):[a-z_.]+:"
        ),
    ),
    ("warnings", re.compile(r"Warning: |DeprecationWarning|warnings.warn")),
    (
        "project",
        re.compile(
            r"^(run |\[\d/\d\] |ingest: |validate: |transform: |tuner: |trainer: |evaluator: |"
            r"pusher: |note: |Run |  \w+: |  run folder|ERROR: )"
        ),
    ),
)


def classify(line: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(line):
            return kind
    return "other" if line.strip() else "blank"


def count(paths: list[Path]) -> tuple[Counter, int]:
    kinds, ansi = Counter(), 0
    for path in paths:
        text = path.read_text(errors="replace")
        ansi += text.count("\x1b[")
        for line in text.splitlines():
            kinds[classify(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line))] += 1
    return kinds, ansi


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--logs", type=Path, help="a run's logs/ folder: counted per step file as well")
    args = parser.parse_args()
    kinds, ansi = count(args.files)
    print(f"{', '.join(map(str, args.files))}: {sum(kinds.values())} lines, {ansi} ANSI escape sequences")
    for kind, number in kinds.most_common():
        print(f"  {kind:<18} {number}")
    if args.logs:
        for log in sorted(args.logs.glob("*.log")):
            step_kinds, step_ansi = count([log])
            detail = ", ".join(f"{k} {n}" for k, n in step_kinds.most_common())
            print(f"{log.name}: {sum(step_kinds.values())} lines ({detail}), {step_ansi} ANSI")


if __name__ == "__main__":
    main()
