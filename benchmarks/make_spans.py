"""Cuts AG News rows into a simulated stream of spans: OUT/test.csv (the fixed test set, copied) and
OUT/<date>/train.csv, one folder per span (weekly dates from --start), for tests and the continuous-training
benchmark.

    python benchmarks/make_spans.py --data /work/shared/data/ag_news --out /tmp/stream --spans 8
    python benchmarks/make_spans.py ... --shift-span 8 --shift label      # the 8th span: mostly one class
    python benchmarks/make_spans.py ... --shift-span 8 --shift text       # the 8th span: other, longer words

Rows are dealt to spans in a seeded random order, so every span has the source's label mix. `--shift label`
makes SHIFT_SHARE of the shifted span's rows one class (drawn from every span's leftovers); `--shift text`
appends made-up words to every row of the span (longer texts, tokens no other span has); `--shift none`
(default) leaves it as the others. Only the lines of the files are moved: they stay valid AG News CSV rows.
"""
from __future__ import annotations

import argparse
import datetime
import random
import shutil
from pathlib import Path

SHIFT_SHARE = 0.7  # share of the label-shifted span's rows that are of SHIFT_CLASS
SHIFT_CLASS = "2"  # AG News class 2: Sports
NOVEL_WORDS = 12  # made-up words appended to each row of a text-shifted span


def read_rows(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]


def shift_text(line: str, index: int, rng: random.Random) -> str:
    """The row with NOVEL_WORDS made-up words appended to its description (inside its closing quote)."""
    words = " ".join(f"zq{rng.randrange(10_000):04d}x" for _ in range(NOVEL_WORDS))
    body = line.rstrip("\r\n")
    ending = line[len(body):]
    return (body[:-1] + f" {words}\"" if body.endswith('"') else body + f" {words}") + ending


def cut(rows: list[str], spans: int, shift_span: int | None, shift: str, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    order = rows[:]
    rng.shuffle(order)
    size = len(order) // spans
    parts = [order[i * size:(i + 1) * size] for i in range(spans)]
    if shift_span is None or shift == "none":
        return parts
    target = shift_span - 1
    if shift == "label":
        wanted = round(SHIFT_SHARE * size)
        pool = [
            row
            for i, part in enumerate(parts)
            if i != target
            for row in part
            if row.startswith(f'"{SHIFT_CLASS}"')
        ]
        own = [row for row in parts[target] if row.startswith(f'"{SHIFT_CLASS}"')]
        others = [row for row in parts[target] if not row.startswith(f'"{SHIFT_CLASS}"')]
        chosen = (own + pool)[:wanted]
        moved = set(chosen[len(own):])
        for i, part in enumerate(parts):  # the rows moved in leave their span (each row is in one span)
            if i != target:
                parts[i] = [row for row in part if row not in moved]
        parts[target] = chosen + others[:size - len(chosen)]
        rng.shuffle(parts[target])
    elif shift == "text":
        parts[target] = [shift_text(row, i, rng) for i, row in enumerate(parts[target])]
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="a folder with AG News train.csv and test.csv")
    parser.add_argument(
        "--out", required=True, help="the stream folder to write (must not exist, or be empty)"
    )
    parser.add_argument("--spans", type=int, default=8)
    parser.add_argument("--start", default="2026-10-12", help="date of the first span (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=7, help="days between spans (default 7: weekly)")
    parser.add_argument(
        "--numbered", action="store_true", help="name spans 0001, 0002, ... instead of by date"
    )
    parser.add_argument("--shift-span", type=int, help="1-based span to shift")
    parser.add_argument("--shift", choices=("none", "label", "text"), default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} exists and is not empty")
    if args.shift_span is not None and not 1 <= args.shift_span <= args.spans:
        parser.error(f"--shift-span must be in 1..{args.spans}")
    parts = cut(read_rows(data / "train.csv"), args.spans, args.shift_span, args.shift, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "test.csv", out / "test.csv")
    start = datetime.date.fromisoformat(args.start)
    for index, part in enumerate(parts):
        name = (
            f"{index + 1:04d}"
            if args.numbered
            else (start + datetime.timedelta(days=args.days * index)).isoformat()
        )
        (out / name).mkdir()
        (out / name / "train.csv").write_text("".join(part), encoding="utf-8")
        print(f"{out / name / 'train.csv'}: {len(part)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
