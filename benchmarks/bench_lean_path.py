"""What a lean request path would give `serve`: `serve` itself against a prototype that keeps serve's own
batcher, model call and JSON codec but answers through a hand-parsed asyncio protocol (bench_http_layer.py's
RawProtocol) with one callback per request instead of aiohttp's request objects, a task per request and the
metrics page. Each with the model and with an instant model call (bench_request_path.py's).

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_lean_path.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version>

The prototype is a measuring device, not a server to ship: it answers :predict bodies of texts with
Content-Length on keep-alive connections and nothing else of HTTP/1.1 or of TF Serving's API (no routes,
errors, 413, 100-continue, cancellation, metrics, draining). All four servers stay up; wrk (bench_serve.py's
Lua script, one-text :predict bodies of the test rows) drives 16 connections at each in turn, the order
reversed every other round. Per server: texts/s, wrk's p50/p99, and the event loop's CPU per request (the
server's main thread). Writes benchmarks/results/lean_path.json and .md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_http_layer import RawProtocol
from bench_request_path import INSTANT_SERVE, measure
from bench_serve import (
    REPO,
    RESULTS_DIR,
    Server,
    checked_test_texts,
    publish_version,
    request_bodies,
    write_wrk_script,
)

SERVERS = ("serve", "lean", "serve, instant model", "lean, instant model")


def lean_server(serving_dir: Path, instant: bool) -> None:
    """The prototype: serve's VersionWatcher, Batcher (default options), run_model and codec behind
    RawProtocol; prints serve's "listening" line and runs until killed."""
    import numpy as np
    import orjson
    import uvloop

    from apps.cli.serve import shared_cores
    from apps.serving.batching import Batcher, BatchingOptions
    from apps.serving.codec import request_array, response_json
    from apps.serving.http import _set_op_threads
    from apps.serving.policy import LATEST
    from apps.serving.versions import DEFAULT_SIGNATURE, VersionWatcher, run_model

    options = BatchingOptions()
    _set_op_threads(0, shared_cores(os.cpu_count() or 1, options.num_batch_threads))
    watcher = VersionWatcher(serving_dir, 1.0, print, options.batch_sizes(), LATEST, None)
    watcher.poll_once()
    servable = watcher.servable_for(None, None)
    ((input_name, spec),) = servable.inputs[DEFAULT_SIGNATURE].items()
    first_rows = run_model(servable, DEFAULT_SIGNATURE, {input_name: np.array([b"warm"], dtype=object)})

    def instant_model(_servable, _signature, inputs):
        rows = len(next(iter(inputs.values())))
        return {name: np.repeat(value, rows, axis=0) for name, value in first_rows.items()}

    batcher = Batcher(options, instant_model if instant else run_model)
    held = [0]
    batcher.requests_held = lambda: held[0]

    class LeanProtocol(RawProtocol):
        def request(self, body: bytes) -> None:
            held[0] += 1
            texts = request_array(orjson.loads(body)["instances"], spec, "instances")
            answer = batcher.submit(servable, DEFAULT_SIGNATURE, {input_name: texts}, len(texts))
            answer.add_done_callback(self.answer)

        def answer(self, future: asyncio.Future) -> None:
            held[0] -= 1
            columns = {name: response_json(name, value) for name, value in future.result().items()}
            rows = len(next(iter(columns.values())))
            self.respond(orjson.dumps({"predictions": [{name: column[row] for name, column in columns.items()}
                                                       for row in range(rows)]}))

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(LeanProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"serve: listening on http://127.0.0.1:{port}/v1/models/agnews", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


def start(name: str, serving_dir: Path) -> Server:
    if name.startswith("lean"):
        flags = ["--instant"] if "instant" in name else []
        return Server(REPO, serving_dir, flags, (__file__, "--lean-server"))
    return Server(REPO, serving_dir, [], ("-c", INSTANT_SERVE) if "instant" in name else ("-m", "apps.cli"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per server and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "lean_path.json")
    args = parser.parse_args()
    texts = checked_test_texts(args.data, args.model_dir)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": harness.command_line(),
              "machine": harness.machine(), "model": str(args.model_dir),
              "seconds": args.seconds, "runs": {name: [] for name in SERVERS}}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-lean-path-") as scratch:
        script = write_wrk_script(Path(scratch) / "one_text.lua", request_bodies(texts, 1))
        servers: dict[str, Server] = {}
        try:
            for number, name in enumerate(SERVERS):
                publish_version(args.model_dir, Path(scratch) / str(number))
                servers[name] = start(name, Path(scratch) / str(number))
                measure(servers[name], 16, 2, script)  # warms the connections and the batch cost fit
            for round_number in range(args.rounds):
                for name in SERVERS if round_number % 2 == 0 else reversed(SERVERS):
                    result = measure(servers[name], 16, args.seconds, script)
                    report["runs"][name].append(result)
                    print(f"round {round_number + 1} {name}: {result['requests_per_s']:.0f} texts/s, "
                          f"{result['loop_us_per_request']:.0f} us of event loop per request", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    report["wall_seconds"] = time.monotonic() - began
    harness.write_results(args.out, report, markdown(report))


def markdown(report: dict) -> str:
    runs_of = report["runs"]
    lines = [f"# A lean request path against `serve`, 16 connections x 1 text "
             f"({report['date']})", "", *harness.provenance(report),
             f"Model: `{report['model']}`; wrk, keep-alive, one-text :predict bodies of the test rows; "
             f"{len(runs_of['serve'])} rounds, {report['seconds']:g} s per server and round, the order "
             "reversed every other round; medians (each round in brackets). Event loop: CPU of the server's "
             f"main thread per answered request. Wall time {report['wall_seconds']:.0f} s. **Shared "
             "machine**: read the ratios of one run.", "",
             *harness.table_head("server", "texts/s", "of `serve` (same model call)", "p50 ms",
                                 "p99 ms (max)", "event loop µs per request")]
    for name, runs in runs_of.items():
        rate = statistics.median(run["requests_per_s"] for run in runs)
        base = statistics.median(run["requests_per_s"] for run in runs_of[name.replace("lean", "serve")])
        each = ", ".join(f"{run['requests_per_s']:,.0f}" for run in runs)
        lines.append(f"| {name} | {rate:,.0f} ({each}) | {rate / base:.2f}x | "
                     f"{statistics.median(run['p50_ms'] for run in runs):.2f} | "
                     f"{max(run['p99_ms'] for run in runs):.1f} | "
                     f"{statistics.median(run['loop_us_per_request'] for run in runs):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--lean-server" in sys.argv:
        sys.path.insert(0, str(REPO))
        lean_server(Path(sys.argv[sys.argv.index("--serving-dir") + 1]), "--instant" in sys.argv)
    else:
        main()
