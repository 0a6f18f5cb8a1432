"""Generates a larger AG News-shaped CSV folder from the real rows, for scale and throughput tests.

Each generated row pairs the title of one real row with the description of another real row of the same
class, so token statistics stay realistic and rows stay distinct (the content-hashed eval split needs that).
The test split is copied as it is. Accuracy measured on generated data means nothing; use it for speed only.

    python benchmarks/generate_data.py --source ../shared/data/ag_news --rows 120000 --out /tmp/ag_news_120k
"""
from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
from collections import defaultdict
from pathlib import Path

from contract.files import write_text_atomic


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle) if len(row) == 3]


def generate(source: Path, rows: int, out: Path, seed: int = 0) -> Path:
    by_class: dict[str, list[list[str]]] = defaultdict(list)
    for row in read_rows(source / "train.csv"):
        by_class[row[0]].append(row)
    classes = sorted(by_class)
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for index in range(rows):
        label = classes[index % len(classes)]
        title_row, description_row = rng.choice(by_class[label]), rng.choice(by_class[label])
        writer.writerow([label, title_row[1], description_row[2]])
    write_text_atomic(out / "train.csv", buffer.getvalue())
    shutil.copyfile(source / "test.csv", out / "test.csv")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", type=Path, required=True, help="folder with the real train.csv and test.csv"
    )
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.source, args.rows, args.out, args.seed))


if __name__ == "__main__":
    main()
