"""Load test of `agnews-pipeline serve` on 127.0.0.1, beside the same model called in-process.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_serve.py --data ../shared/data/ag_news \
        --model-dir PIPELINE_ROOT/runs/<run>/trainer/model/serving_model   # or a pushed <serving dir>/<version>

1. The model is copied as version 1 into a temporary serving folder and `agnews-pipeline serve --port 0` is
   started on it (a subprocess; default 4 model threads, 1 s poll like TF Serving's file-system source).
2. --requests :predict requests from --threads client threads (one keep-alive HTTP connection each, standard
   library http.client), first with one text per request, then with batches of --batch-size texts; texts are
   test.csv rows ("title description") in order. Per request latency from sending to the parsed JSON answer;
   requests/s = requests / wall time of the whole burst. --warmup untimed requests go first.
3. Push to answer: --pushes times, the model is published as the next version with the pusher's own
   publish_version (copy to a hidden folder, then rename), and versions/<N>:predict is tried every 50 ms until
   it answers 200; the time from the rename to that answer is reported.
4. The server gets SIGTERM (its exit code is recorded); then a process that imports only TensorFlow loads the
   model with tf.saved_model.load and runs the same request lists from the same number of threads, calling
   the `serving_default` signature directly (no HTTP, no JSON).

This client process does not import TensorFlow. Writes benchmarks/results/serve.json and serve.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import run_info  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from components.pusher import publish_version  # noqa: E402  (standard library + contract.artifacts only)

RESULTS_DIR = Path(__file__).parent / "results"

# The in-process side: TensorFlow only, the same thread count and request lists.
IN_PROCESS_SCRIPT = r"""
import concurrent.futures, json, sys, time
import tensorflow as tf

config = json.loads(sys.stdin.read())
started = time.perf_counter()
signature = tf.saved_model.load(config["model_dir"]).signatures["serving_default"]
load_seconds = time.perf_counter() - started

def call(texts):
    began = time.perf_counter()
    signature(text=tf.constant(texts, tf.string, shape=[len(texts)]))["probabilities"].numpy()
    return time.perf_counter() - began

results = {"load_seconds": load_seconds}
with concurrent.futures.ThreadPoolExecutor(config["threads"]) as pool:
    for name, requests in config["bursts"].items():
        list(pool.map(call, requests[:config["warmup"]]))
        began = time.perf_counter()
        latencies = list(pool.map(call, requests))
        results[name] = {"wall_seconds": time.perf_counter() - began, "latencies": latencies}
print(json.dumps(results))
"""


def read_texts(csv_dir: Path) -> list[str]:
    with open(csv_dir / "test.csv", newline="", encoding="utf-8") as handle:
        return [f"{title} {description}" for _, title, description in csv.reader(handle)]


def summary(latencies: list[float], wall_seconds: float, texts_per_request: int) -> dict:
    ordered = sorted(latencies)

    def percentile(percent: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(percent / 100 * (len(ordered) - 1))))] * 1000

    return {"requests": len(latencies), "texts_per_request": texts_per_request,
            "wall_seconds": wall_seconds, "requests_per_second": len(latencies) / wall_seconds,
            "texts_per_second": len(latencies) * texts_per_request / wall_seconds,
            "p50_ms": percentile(50), "p99_ms": percentile(99), "max_ms": ordered[-1] * 1000}


class Server:
    def __init__(self, serving_dir: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_USE_LEGACY_KERAS", None)
        self.process = subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "--serving-dir",
                                         str(serving_dir), "--port", "0"], cwd=REPO, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def read():
            for line in self.process.stderr:
                if line.startswith("serve:"):
                    self.lines.append(line.strip())
                    if "listening on http://127.0.0.1:" in line:
                        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
                        ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(600):
            self.process.kill()
            raise SystemExit(f"the server did not start: {self.lines}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


def http_burst(port: int, requests: list[list[str]], threads: int, warmup: int) -> tuple[list[float], float]:
    local = threading.local()

    def call(texts: list[str], path: str = "/v1/models/agnews:predict") -> float:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        began = time.perf_counter()
        local.connection.request("POST", path, body=json.dumps({"instances": texts}),
                                 headers={"Content-Type": "application/json"})
        response = local.connection.getresponse()
        body = json.loads(response.read())
        if response.status != 200 or len(body["predictions"]) != len(texts):
            raise RuntimeError(f"request failed: {response.status} {str(body)[:200]}")
        return time.perf_counter() - began

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, requests[:warmup]))
        began = time.perf_counter()
        latencies = list(pool.map(call, requests))
        return latencies, time.perf_counter() - began


def push_to_answer(model_dir: Path, serving_dir: Path, port: int) -> float:
    version, _ = publish_version(model_dir, serving_dir)
    renamed = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while True:
        connection.request("POST", f"/v1/models/agnews/versions/{version}:predict",
                           body=json.dumps({"instances": ["Stocks rally"]}))
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            return time.perf_counter() - renamed
        if time.perf_counter() - renamed > 300:
            raise SystemExit(f"version {version} did not answer within 300 s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per burst")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each burst")
    parser.add_argument("--pushes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve.json")
    args = parser.parse_args()
    machine = run_info.machine()
    started = time.perf_counter()
    texts = read_texts(args.data)
    bursts = {
        "one_text": [[texts[i % len(texts)]] for i in range(args.requests)],
        f"batch_{args.batch_size}": [[texts[(i * args.batch_size + j) % len(texts)] for j in range(args.batch_size)]
                                     for i in range(args.requests)],
    }
    sizes = {"one_text": 1, f"batch_{args.batch_size}": args.batch_size}

    workdir = Path(tempfile.mkdtemp(prefix="agnews-bench-serve-"))
    try:
        serving_dir = workdir / "agnews"
        publish_version(args.model_dir, serving_dir)
        server_started = time.perf_counter()
        server = Server(serving_dir)
        startup_seconds = time.perf_counter() - server_started
        try:
            http_results = {}
            for name, requests in bursts.items():
                latencies, wall = http_burst(server.port, requests, args.threads, args.warmup)
                http_results[name] = summary(latencies, wall, sizes[name])
                print(name, "http", json.dumps(http_results[name]), flush=True)
            pushes = [push_to_answer(args.model_dir, serving_dir, server.port) for _ in range(args.pushes)]
            print("push to answer", pushes, flush=True)
        finally:
            exit_code = server.stop()
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_USE_LEGACY_KERAS", None)
        in_process = subprocess.run(
            [sys.executable, "-c", IN_PROCESS_SCRIPT], input=json.dumps({
                "model_dir": str(args.model_dir), "threads": args.threads, "warmup": args.warmup, "bursts": bursts}),
            capture_output=True, text=True, env=env, check=True, timeout=3600)
        raw = json.loads(in_process.stdout.strip().splitlines()[-1])
        in_process_results = {name: summary(raw[name]["latencies"], raw[name]["wall_seconds"], sizes[name])
                              for name in bursts}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": run_info.command_line(), "machine": machine,
        "model_dir": str(args.model_dir.resolve()),
        "data": f"{(args.data / 'test.csv').resolve()}: {len(texts)} rows, text = title + ' ' + description",
        "threads": args.threads, "warmup": args.warmup, "server_startup_seconds": startup_seconds,
        "server_exit_code_after_sigterm": exit_code,
        "http": http_results, "in_process": in_process_results, "in_process_load_seconds": raw["load_seconds"],
        "push_to_answer_seconds": pushes, "wall_seconds": time.perf_counter() - started,
    }
    rows = []
    for name in bursts:
        for side, results in (("serve (HTTP, JSON)", http_results), ("in-process signature call", in_process_results)):
            result = results[name]
            rows.append(f"| {sizes[name]} | {side} | {result['requests']} | {result['requests_per_second']:.0f} | "
                        f"{result['texts_per_second']:.0f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} |")
    text = "\n".join([
        f"# serve load test ({report['date']})", "",
        f"Command: `{report['command']}`  ", f"Machine: {machine}  ",
        f"Model: `{report['model_dir']}`  ", f"Data: {report['data']}  ",
        f"{args.threads} client threads on 127.0.0.1 (one keep-alive connection each), {args.warmup} untimed "
        f"requests before each burst; server: `agnews-pipeline serve` defaults (4 model threads), started and "
        f"serving in {startup_seconds:.1f}s; exit code after SIGTERM: {exit_code}. In-process: the same "
        f"requests from {args.threads} threads calling `serving_default` after `tf.saved_model.load` in a "
        f"TensorFlow-only process. Wall time {report['wall_seconds']:.0f}s.", "",
        "| texts per request | path | requests | requests/s | texts/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        "Push to answer (pusher's publish_version rename -> first 200 from versions/N:predict, server polls "
        f"every 1 s): {', '.join(f'{s:.2f}s' for s in pushes)}",
    ]) + "\n"
    print(text)
    run_info.write_results(args.out, report, text)


if __name__ == "__main__":
    main()
