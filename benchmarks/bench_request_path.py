"""What the server's own request path costs, old code against new: the event loop's CPU per request, with the
model call taken out and with it in.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_request_path.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version> --baseline-repo /path/to/checkout/of/the/old/code

Four `agnews-pipeline serve` processes stay up throughout: the old code (--baseline-repo) and this checkout,
each once as it is and once with an instant model call (the real version is loaded and warmed up, then every
batch is answered with its first row's real outputs repeated, in the batch thread, so what is left is the HTTP
server, the handlers, the batcher and the hop between threads). wrk drives them with one-text :predict
requests (bench_serve.py's Lua script), in rounds ordered old, new, new, old. Per load: requests/s, wrk's p50
and p99, and the CPU seconds of the server's main thread (the event loop: /proc/<pid>/task/<pid>/stat) per
answered request. Writes benchmarks/results/serve_request_path.json and .md. Shared machine: compare the two
sides of one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_serve import (
    REPO,
    RESULTS_DIR,
    Server,
    checked_test_texts,
    publish_version,
    request_bodies,
    run_wrk,
    write_wrk_script,
)

# `serve` of the repository on sys.path, its model call replaced by the instant one (run in the batch thread
# as the real one is: the batcher calls http.run_model).
INSTANT_SERVE = r"""
import sys
import numpy as np
import apps.serving.http as http
real, first_rows = http.run_model, {}
def instant(servable, signature, inputs):
    rows = len(next(iter(inputs.values())))
    if signature not in first_rows:
        first_rows[signature] = real(servable, signature, {name: value[:1] for name, value in inputs.items()})
    return {name: np.repeat(value, rows, axis=0) for name, value in first_rows[signature].items()}
http.run_model = instant
from apps.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
# (name, connections, instant model call): the loads of each round
LOADS = (("instant model, 16 conn. x 1 text", 16, True), ("model, 16 conn. x 1 text", 16, False),
         ("model, 1 conn. x 1 text", 1, False))


def loop_cpu(server: Server) -> float:
    """CPU seconds of the server's main thread, which runs the event loop."""
    pid = server.process.pid
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: Server, connections: int, seconds: float, script: Path) -> dict:
    before = loop_cpu(server)
    result = run_wrk(server.port, connections, seconds, script)
    cpu = loop_cpu(server) - before
    requests = max(result["requests"], 1)
    return {"requests_per_s": result["requests"] / (result["duration_us"] / 1e6),
            "p50_ms": result["p50_us"] / 1e3, "p99_ms": result["p99_us"] / 1e3,
            "loop_us_per_request": cpu / requests * 1e6, "errors": result["errors"] + result["non_2xx"],
            "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--baseline-repo", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load, server and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve_request_path.json")
    args = parser.parse_args()
    texts = checked_test_texts(args.data, args.model_dir)
    report = {"command": harness.command_line(), "machine": harness.machine(), "model": str(args.model_dir),
              "seconds": args.seconds, "rounds": args.rounds, "loads": {}}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-request-path-") as scratch:
        script = write_wrk_script(Path(scratch) / "one_text.lua", request_bodies(texts, 1))
        servers = {}
        for side, repo in (("old", args.baseline_repo.resolve()), ("new", REPO)):
            for instant in (True, False):
                serving_dir = Path(scratch) / f"{side}-{instant}"
                publish_version(args.model_dir, serving_dir)
                entry = ("-c", INSTANT_SERVE) if instant else ("-m", "apps.cli")
                servers[side, instant] = Server(repo, serving_dir, [], entry)
        try:
            for round_number in range(args.rounds):
                for side in ("old", "new", "new", "old"):
                    for name, connections, instant in LOADS:
                        result = measure(servers[side, instant], connections, args.seconds, script)
                        report["loads"].setdefault(name, {}).setdefault(side, []).append(result)
                        print(f"round {round_number + 1} {side} {name}: "
                              f"{result['requests_per_s']:.0f} req/s, "
                              f"{result['loop_us_per_request']:.0f} us of event loop per request", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    report["wall_seconds"] = time.monotonic() - began
    harness.write_results(args.out, report, markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# The server's request path, old against new ({time.strftime('%Y-%m-%d %H:%M')})", "",
             *harness.provenance(report),
             f"Model: `{report['model']}`; wrk, keep-alive, one-text :predict bodies of the test rows; "
             f"{report['rounds']} rounds of old, new, new, old, {report['seconds']:g} s per load and server; "
             "medians over the runs. Event loop: CPU of the server's main thread per answered request.", "",
             *harness.table_head("load", "side", "requests/s", "p50 ms", "p99 ms (max of runs)",
                                 "event loop µs per request", "errors")]
    for name, sides in report["loads"].items():
        for side in ("old", "new"):
            runs = sides[side]
            median = {key: statistics.median(run[key] for run in runs)
                      for key in ("requests_per_s", "p50_ms", "loop_us_per_request")}
            lines.append(f"| {name} | {side} | {median['requests_per_s']:.0f} | {median['p50_ms']:.2f} | "
                         f"{max(run['p99_ms'] for run in runs):.1f} | {median['loop_us_per_request']:.0f} | "
                         f"{sum(run['errors'] for run in runs)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
