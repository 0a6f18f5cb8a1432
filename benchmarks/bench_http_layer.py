"""The HTTP layer's own ceiling on this machine: how many one-text :predict requests a server answers when it
does nothing else, to tell how much of `serve`'s per-request cost is HTTP and how much is its own path.

    python benchmarks/bench_http_layer.py --seconds 6 --rounds 2

Two servers answer every POST with the same fixed JSON after decoding the body with orjson, both on uvloop,
one process each:
  - raw: an asyncio.Protocol with a minimal hand parser (Content-Length bodies, keep-alive; nothing else of
    HTTP/1.1, so a ceiling, not a server to ship);
  - aiohttp: aiohttp's low-level web.Server, as apps/serving/http.py uses it (no Application, no router).
wrk (Debian's package) drives each with 16 keep-alive connections sending one-text bodies, the servers in
turn, the order reversed every other round. Compare with `serve` under an instant model
(benchmarks/bench_request_path.py). Writes benchmarks/results/http_layer.{json,md} by default.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs
from bench_serve import run_wrk, write_wrk_script

RESULTS = Path(__file__).resolve().parent / "results" / "http_layer.json"
SERVERS = ("raw", "aiohttp")
BODY = '{"instances": ["Stocks fell on Wall Street as oil prices rose to a record high"]}'
ANSWER = (b'{"predictions":[{"class_name":"Business","probabilities":[0.1,0.2,0.6,0.1]}]}')


class RawProtocol(asyncio.Protocol):
    """Keep-alive requests with Content-Length bodies; `request` answers each body (here: a fixed answer)."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            match = re.search(rb"content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.request(body)

    def request(self, body: bytes) -> None:
        import orjson

        orjson.loads(body)
        self.respond(ANSWER)

    def respond(self, answer: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\n\r\n" + answer)


async def serve(kind: str) -> None:
    """Serves on a free port and prints "listening PORT"."""
    if kind == "raw":
        server = await asyncio.get_running_loop().create_server(RawProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        import orjson
        from aiohttp import web

        async def handler(request):
            orjson.loads(await request.read())
            return web.Response(body=ANSWER, content_type="application/json")

        runner = web.ServerRunner(web.Server(handler, access_log=None))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
    print("listening", port, flush=True)
    await asyncio.Event().wait()


def summary(wrk: dict) -> dict:
    """bench_serve.run_wrk's summary line as requests/s and p50/p99 in ms."""
    return {"requests_per_second": wrk["requests"] / wrk["duration_us"] * 1e6, "p50_ms": wrk["p50_us"] / 1e3,
            "p99_ms": wrk["p99_us"] / 1e3}


def measure(seconds: float, rounds: int) -> dict[str, list[dict]]:
    """Each server started once, then wrk against them in alternated rounds."""
    runs: dict[str, list[dict]] = {kind: [] for kind in SERVERS}
    processes, ports = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        script = write_wrk_script(Path(scratch) / "post.lua", [BODY])
        try:
            for kind in SERVERS:
                processes[kind] = subprocess.Popen([sys.executable, __file__, "--serve", kind],
                                                   stdout=subprocess.PIPE, text=True)
                word, port = processes[kind].stdout.readline().split()
                assert word == "listening", kind
                ports[kind] = int(port)
            for round_ in range(rounds):
                for kind in SERVERS if round_ % 2 == 0 else reversed(SERVERS):
                    run_wrk(ports[kind], 16, 1, script)  # warm the connections and the loop
                    runs[kind].append(summary(run_wrk(ports[kind], 16, seconds, script)))
                    time.sleep(1)
        finally:
            for process in processes.values():
                process.kill()
                process.wait()
    return runs


def markdown(report: dict) -> str:
    lines = ["# The HTTP layer alone: a fixed answer to one-text POSTs, 16 connections "
             f"({report['date']})", "", *harness.provenance(report),
             f"Client: wrk, 1 thread, 16 keep-alive connections, {report['seconds']:g} s per run, servers "
             "alternated. Each server: one process on uvloop, orjson decodes the body, the answer is fixed.",
             "",
             *harness.table_head("server", "requests/s (each run)", "µs per request", "p50 ms", "p99 ms")]
    for kind, runs in report["runs"].items():
        rates = [run["requests_per_second"] for run in runs]
        lines.append(f"| {kind} | " + ", ".join(f"{rate:,.0f}" for rate in rates)
                     + f" | {1e6 / max(rates):.0f}-{1e6 / min(rates):.0f} | "
                     + ", ".join(f"{run['p50_ms']:.2f}" for run in runs) + " | "
                     + ", ".join(f"{run['p99_ms']:.2f}" for run in runs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve))
        return
    report = {"command": harness.command_line(), "machine": harness.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": args.seconds,
              "runs": measure(args.seconds, args.rounds)}
    harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
