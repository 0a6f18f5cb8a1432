"""Open-loop overload, server flags against server flags: how fast accepted requests are answered and how
fast refused ones get their 503, for each set of `agnews-pipeline serve` flags, in alternated rounds.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_overload.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version> --rate 326 --flags "" --flags "--max-batch-size 128"

Every flag set gets its own server of this checkout (the model copied as version 1), all up throughout. Each
round sends 64-text requests at --rate per second for --seconds to each server in turn (the order reversed
every other round, so that other load on a shared machine hits them alike), with bench_serve's open-loop
asyncio client: requests arrive on schedule whatever the answers. Per flag set and round: accepted and
refused requests, accepted p50/p99, refused p99/max. Writes benchmarks/results/overload.json and .md by
default.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_serve import (
    REPO,
    RESULTS_DIR,
    Server,
    open_loop,
    publish_version,
    read_test_rows,
    request_bodies,
    require_serving_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--rate", type=float, required=True, help="64-text requests per second offered")
    parser.add_argument("--flags", action="append", required=True, help="one server's flags (repeatable)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per round and server")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "overload.json")
    args = parser.parse_args()
    require_serving_model(args.model_dir)
    texts, _ = read_test_rows(args.data)
    bodies = [body.encode() for body in request_bodies(texts, 64)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_overload") as scratch:
        servers = {}
        try:
            for index, flags in enumerate(args.flags):
                serving_dir = Path(scratch) / str(index) / "agnews"
                publish_version(args.model_dir, serving_dir)
                servers[flags] = Server(REPO, serving_dir, shlex.split(flags))
            for server in servers.values():  # the batch cost is fitted, the shapes compiled
                asyncio.run(open_loop(server.port, args.rate / 2, bodies, 3))
            rounds: dict[str, list[dict]] = {flags: [] for flags in servers}
            for number in range(args.rounds):
                order = list(servers) if number % 2 == 0 else list(servers)[::-1]
                for flags in order:
                    result = asyncio.run(open_loop(servers[flags].port, args.rate, bodies, args.seconds))
                    rounds[flags].append(result)
                    print(f"round {number + 1} [{flags}]", json.dumps(result), flush=True)
            for server in servers.values():
                server.stop()
        finally:
            for server in servers.values():
                if server.process.poll() is None:
                    server.process.kill()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(),
              "machine": harness.machine(), "model_dir": str(args.model_dir), "rate": args.rate,
              "seconds_per_round": args.seconds, "rounds": rounds,
              "wall_seconds": time.perf_counter() - started}
    text = markdown(report)
    print(text)
    harness.write_results(args.out, report, text)


def markdown(report: dict) -> str:
    rows = []
    for flags, results in report["rounds"].items():
        for number, r in enumerate(results, 1):
            rows.append(f"| `{flags or '(defaults)'}` | {number} | {r['accepted']} | "
                        f"{r['accepted_p50_ms']:.0f} | {r['accepted_p99_ms']:.0f} | {r['refused_503']} | "
                        f"{r['refused_p99_ms']:.1f} | "
                        f"{r['refused_max_ms']:.1f} | {r['load_average']:.1f} |")
    return "\n".join([
        f"# Open-loop overload by server flags ({report['date']})", "", *harness.provenance(report),
        f"Model: `{report['model_dir']}`  ",
        f"Load: 64-text requests at {report['rate']:g}/s for {report['seconds_per_round']:g} s per round and "
        f"server, servers in turn (order reversed every other round). Wall time {report['wall_seconds']:.0f} "
        "s. **The machine is shared**: compare the flag sets within a round.", "",
        *harness.table_head("server flags", "round", "accepted", "accepted p50 ms", "accepted p99 ms",
                            "refused (503)", "refused p99 ms", "refused max ms", "load avg"),
        *rows, ""])


if __name__ == "__main__":
    main()
