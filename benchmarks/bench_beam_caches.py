"""Retrains of the committed sample with and without one of the caches that spare Beam repeated work,
alternated in one process so that other load hits both alike:

- `views`: the pipeline options' views, one per options class (library/beam_cached_views.py);
- `dofn_specs`: a DoFn's state and timer specs, found once per class (library/beam_cached_dofn_specs.py).

    python benchmarks/bench_beam_caches.py --cache dofn_specs --work /tmp/bench_specs --weeks 9

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


TITLES = {"views": "Beam's options views made once per class",
          "dofn_specs": "A DoFn's state and timer specs found once per class"}


def cache_switch(cache: str):
    """A function that turns `cache` on or off for the retrains that follow."""
    if cache == "views":
        from apache_beam.options.pipeline_options import PipelineOptions

        from library.beam_cached_views import CachedViewsOptions
        cached = CachedViewsOptions.view_as

        def switch(on: bool) -> None:
            CachedViewsOptions.view_as = cached if on else PipelineOptions.view_as
        return switch
    from library import beam_cached_dofn_specs as specs
    cached = specs.get_dofn_specs

    def switch(on: bool) -> None:
        # what each step's pipeline_options installs
        specs.get_dofn_specs = cached if on else specs._BEAMS_OWN
    return switch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a new scratch folder")
    parser.add_argument("--weeks", type=int, default=9)
    parser.add_argument("--cache", choices=sorted(TITLES), required=True)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/beam_<cache>.json")
    args = parser.parse_args()
    out = args.out or PROJECT / "benchmarks" / "results" / f"beam_{args.cache}.json"
    from support import streams
    from support.cli import agnews_in_process

    switch = cache_switch(args.cache)
    report = {"command": harness.command_line(), "machine": harness.machine(), "cache": args.cache,
              "weeks": []}
    args.work.mkdir(parents=True)
    full, live, names = streams.make_stream(args.work, args.weeks, streams.PUSHING_CONFIG)
    for week, name in enumerate(names, 1):
        on = week % 2 == 0
        switch(on)
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
    lines = [f"# {TITLES[args.cache]}: retrains of the sample", "",
             *harness.provenance(report), "",
             "Weeks 2 and after, alternating (week 1 left out: imports and first compiles).", "",
             *harness.table_head("week", f"cache ({args.cache})", "retrain (s)"),
             *(f"| {w['week']} | {'on' if w['cache'] else 'off'} | {w['seconds']:.2f} |" for w in timed), "",
             f"Mean: off {off:.2f} s, on {on:.2f} s: **{on / off:.3f}x** the time with the cache.", ""]
    harness.write_results(out, report, "\n".join(lines))
    print(f"off {off:.2f} s, on {on:.2f} s, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
