"""Retrains of the committed sample with and without the pipeline options' view cache
(library/beam_cached_views.py), alternated in one process so that other load hits both alike.

    python benchmarks/bench_beam_views.py --work /tmp/bench_views --weeks 9

The sample is cut into --weeks weekly spans (tests/support/streams.py: the tiny model of the system tests on a
3-span window, every retrain trains, evaluates and pushes); week 1 (imports, the first compiles) is left out;
the later weeks alternate cache off, on, off, ... Reported: each retrain's wall seconds and the ratio of the
means."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "tests"), str(PROJECT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a new scratch folder")
    parser.add_argument("--weeks", type=int, default=9)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "beam_views.json")
    args = parser.parse_args()
    from apache_beam.options.pipeline_options import PipelineOptions
    from support import streams
    from support.cli import agnews_in_process

    import library.beam_cached_views as views

    report = {"command": harness.command_line(), "machine": harness.machine(), "weeks": []}
    cached = views.CachedViewsOptions.view_as
    args.work.mkdir(parents=True)
    full, live, names = streams.make_stream(args.work, args.weeks, streams.PUSHING_CONFIG)
    for week, name in enumerate(names, 1):
        on = week % 2 == 0
        views.CachedViewsOptions.view_as = cached if on else PipelineOptions.view_as
        streams.arrive(full, live, name)
        started = time.perf_counter()
        agnews_in_process("retrain", *streams.args(args.work))
        seconds = time.perf_counter() - started
        print(f"week {week}: cache {'on' if on else 'off'} {seconds:.2f} s", flush=True)
        report["weeks"].append({"week": week, "cache": on, "seconds": round(seconds, 2)})
    timed = report["weeks"][1:]
    off = statistics.mean(w["seconds"] for w in timed if not w["cache"])
    on = statistics.mean(w["seconds"] for w in timed if w["cache"])
    report.update(off_mean=round(off, 2), on_mean=round(on, 2), ratio=round(on / off, 3))
    lines = ["# Beam's options views made once per class: retrains of the sample", "",
             *harness.provenance(report), "",
             "Weeks 2 and after, alternating (week 1 left out: imports and first compiles).", "",
             *harness.table_head("week", "view cache", "retrain (s)"),
             *(f"| {w['week']} | {'on' if w['cache'] else 'off'} | {w['seconds']:.2f} |" for w in timed), "",
             f"Mean: off {off:.2f} s, on {on:.2f} s: **{on / off:.3f}x** the time with the cache.", ""]
    harness.write_results(args.out, report, "\n".join(lines))
    print(f"off {off:.2f} s, on {on:.2f} s, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
