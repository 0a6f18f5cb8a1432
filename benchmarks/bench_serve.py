"""The serving benchmark: the exported SavedModel in a TensorFlow-only process, and `agnews-pipeline serve` under
load on 127.0.0.1 with batching off (before) and on (after), all in one run.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_serve.py --data ../shared/data/ag_news \
        --model-dir <serving dir>/<version>      # or PIPELINE_ROOT/runs/<run>/trainer/model/serving_model

1. In-process (a process that imports only TensorFlow, then this project's request-path helpers): load time,
   --sequential one-text calls of `serving_default` (Python string in, numpy out), every test row in batches of
   64 (texts/s, and the served model's accuracy), the modules loading and serving imported, and where a
   request's time goes outside the model (JSON parsing and encoding with json and orjson, input checks, output
   conversion, the hop to a thread and back), per 1-text and 64-text request.
2. Over HTTP: the model is copied as version 1 into a temporary serving folder and `agnews-pipeline serve
   --port 0` is started on it twice, with --no-batching and with its defaults; both stay up. This process
   is the client (asyncio, one keep-alive HTTP/1.1 connection per simulated client, no TensorFlow); it runs
   1 connection x 1 text sequential, 16 connections x 1 text, 64 connections x 1 text and 16 connections x
   64 texts, each for --seconds per server in quarters ordered off, on, on, off, off, on, on, off (each after
   one untimed second), so the other load on a shared machine hits both alike. Latency is from sending a
   request to its parsed JSON answer; texts/s counts answered texts in the timed window. After each load the server's
   /monitoring/prometheus/metrics page gives model calls, rows per call, and the server-side time split
   (queue, model, whole request); the CPU time of the server and of this client are read from /proc.
3. Overload (batching on): open-loop arrivals of 64-text requests at --overload-factor x the rate the
   16 x 64 load reached, a new connection whenever all are busy: 503s, and p50/p99 of the accepted requests;
   then the same arrivals against a server started with --max-enqueued-batches 4 (a shorter queue).
4. Push to answer: --pushes times, the model is published as the next version (the pusher's publish_version)
   and versions/<N>:predict is polled every 50 ms until it answers 200.

Writes benchmarks/results/serve.json and serve.md. The machine is shared: compare ratios from one run, and
read the load average stated with them.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
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

import run_info  # benchmarks/ is on sys.path when a script here runs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from components.pusher.executor import publish_version  # noqa: E402  (standard library + contract.artifacts only)

RESULTS_DIR = Path(__file__).parent / "results"
PATH = "/v1/models/agnews:predict"
METRICS_PATH = "/monitoring/prometheus/metrics"
SHORT_QUEUE_FLAGS = ["--max-enqueued-batches", "4"]
LOADS = (("1 connection x 1 text, sequential", 1, 1), ("16 connections x 1 text", 16, 1),
         ("64 connections x 1 text", 64, 1), ("16 connections x 64 texts", 16, 64))

# The TensorFlow-only side. It records what loading and serving imported before it imports the server's
# helpers for the request-path breakdown.
IN_PROCESS_SCRIPT = r"""
import asyncio, concurrent.futures, json, statistics, sys, time
import numpy as np
import tensorflow as tf

WATCHED = ("keras", "tf_keras", "tensorflow_transform", "keras_tuner", "apache_beam", "components", "pipeline")
config = json.loads(sys.stdin.read())
texts, labels = config["texts"], np.array(config["labels"])
before = {name for name in WATCHED if name in sys.modules}
started = time.perf_counter()
signature = tf.saved_model.load(config["model_dir"]).signatures["serving_default"]
result = {"load_seconds": time.perf_counter() - started}

def classify(batch):
    return signature(text=tf.constant(batch))["probabilities"].numpy()

for text in texts[:20]:
    classify([text])
single = []
for index in range(config["sequential"]):
    began = time.perf_counter()
    classify([texts[index % len(texts)]])
    single.append(time.perf_counter() - began)
classify(texts[:64])
batch_seconds, predicted = [], []
for start in range(0, len(texts), 64):
    began = time.perf_counter()
    probabilities = classify(texts[start:start + 64])
    batch_seconds.append(time.perf_counter() - began)
    predicted.append(probabilities.argmax(axis=-1))
result.update(single=single, batch_seconds=batch_seconds, batch_texts=len(texts),
              accuracy=float((np.concatenate(predicted) == labels).mean()),
              imported_by_import_tensorflow=sorted(before),
              imported_by_serving=sorted({n for n in WATCHED if n in sys.modules} - before))

# Where a request's time goes outside the model: each step of apps/serving's path, median of many runs.
sys.path.insert(0, config["repo"])
import orjson
from apps.serving import codec, versions
servable, _ = versions.load_servable(__import__("pathlib").Path(config["model_dir"]), 1)
spec = servable.inputs["serving_default"]["text"]

def median_us(step, repeat=300):
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6

steps = {}
for size in (1, 64):
    batch = texts[100:100 + size]
    raw = json.dumps({"instances": batch}).encode()
    array = codec.request_array(batch, spec, "input")
    outputs = versions.run_model(servable, "serving_default", {"text": array})
    converted = {name: codec.response_json(name, value) for name, value in outputs.items()}
    answer = {"predictions": [{name: column[i] for name, column in converted.items()} for i in range(size)]}
    executor = concurrent.futures.ThreadPoolExecutor(1)

    async def hops(n=300):
        loop, times = asyncio.get_running_loop(), []
        for _ in range(n):
            began = time.perf_counter()
            await loop.run_in_executor(executor, int)
            times.append(time.perf_counter() - began)
        return statistics.median(times) * 1e6

    steps[size] = {
        "json.loads (before)": median_us(lambda: json.loads(raw)),
        "orjson.loads (after)": median_us(lambda: orjson.loads(raw)),
        "tensor per request: tf.constant (before)": median_us(lambda: tf.constant([t.encode() for t in batch])),
        "input check, bytes array (after; the tensor is built once per batch)":
            median_us(lambda: codec.request_array(batch, spec, "input")),
        "model call incl. tensor and .numpy()": median_us(lambda: versions.run_model(
            servable, "serving_default", {"text": array}), repeat=50 if size > 1 else 300),
        "outputs to JSON values": median_us(lambda: {n: codec.response_json(n, v) for n, v in outputs.items()}),
        "json.dumps (before)": median_us(lambda: json.dumps(answer).encode()),
        "orjson.dumps (after)": median_us(lambda: orjson.dumps(answer)),
        "event loop -> thread -> event loop": asyncio.run(hops()),
    }
    executor.shutdown()
result["steps_us"] = steps
print(json.dumps(result))
"""


def read_test_rows(csv_dir: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(csv_dir / "test.csv", newline="", encoding="utf-8") as handle:
        for class_text, title, description in csv.reader(handle):
            texts.append(f"{title} {description}")
            labels.append(int(class_text) - 1)
    return texts, labels


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(percent / 100 * (len(ordered) - 1))))] * 1000 if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------
# The HTTP client: asyncio streams, keep-alive HTTP/1.1, Content-Length bodies (what serve answers).


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def check(status: int, answer: bytes, texts: int) -> None:
    if status == 200 and len(json.loads(answer)["predictions"]) == texts:
        return
    if status != 503:
        raise SystemExit(f"request failed: {status} {answer[:200]!r}")


async def closed_loop(port: int, connections: int, bodies: list[bytes], texts: int,
                      seconds: float) -> tuple[list[float], int]:
    """`connections` clients, each sending its next request when the last is answered, for 1 untimed second
    and then `seconds`: (latencies of answered requests in the timed window, 503s in it)."""
    latencies: list[float] = []
    refused = 0
    start = time.perf_counter()
    timed_from, until = start + 1.0, start + 1.0 + seconds
    counter = iter(range(10 ** 9))

    async def client() -> None:
        nonlocal refused
        connection = Connection(port)
        try:
            while True:
                began = time.perf_counter()
                if began >= until:
                    return
                status, answer = await connection.request("POST", PATH, bodies[next(counter) % len(bodies)])
                check(status, answer, texts)
                ended = time.perf_counter()
                if began >= timed_from and ended <= until:
                    if status == 503:
                        refused += 1
                    else:
                        latencies.append(ended - began)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return latencies, refused


async def open_loop(port: int, rate: float, bodies: list[bytes], texts: int, seconds: float) -> dict:
    """Requests arrive at `rate` per second whatever the answers; a new connection when all are busy."""
    idle: list[Connection] = []
    accepted: list[float] = []
    refused: list[float] = []
    opened = 0

    async def one(body: bytes) -> None:
        nonlocal opened
        if idle:
            connection = idle.pop()
        else:
            connection, opened = Connection(port), opened + 1
        began = time.perf_counter()
        status, answer = await connection.request("POST", PATH, body)
        check(status, answer, texts)
        (accepted if status == 200 else refused).append(time.perf_counter() - began)
        idle.append(connection)

    start = time.perf_counter()
    tasks = []
    for index in range(int(rate * seconds)):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(bodies[index % len(bodies)])))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    for connection in idle:
        connection.close()
    return {"offered_requests_per_second": rate, "offered_texts_per_second": rate * texts,
            "sent": len(tasks), "accepted": len(accepted), "refused_503": len(refused),
            "accepted_texts_per_second": len(accepted) * texts / wall, "connections_opened": opened,
            "accepted_p50_ms": percentile(accepted, 50), "accepted_p99_ms": percentile(accepted, 99),
            "accepted_max_ms": percentile(accepted, 100), "refused_p50_ms": percentile(refused, 50),
            "refused_p99_ms": percentile(refused, 99), "wall_seconds": wall}


async def scrape(port: int) -> dict[str, float]:
    """The metrics page as {sample name: value summed over labels}."""
    connection = Connection(port)
    try:
        status, page = await connection.request("GET", METRICS_PATH)
    finally:
        connection.close()
    totals: dict[str, float] = {}
    for line in page.decode().splitlines():
        if line and not line.startswith("#"):
            sample, value = line.rsplit(" ", 1)
            name = sample.split("{", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def server_split(before: dict[str, float], after: dict[str, float]) -> dict:
    """Per-load deltas of the server's own counters: model calls, rows per call, mean times."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    calls, requests = delta("serve_batch_size_count"), delta("serve_request_latency_seconds_count")
    return {"model_calls": calls, "mean_rows_per_call": delta("serve_batch_size_sum") / calls if calls else 0,
            "mean_requests_per_call": delta("serve_batch_requests_sum") / calls if calls else 0,
            "mean_model_ms": 1000 * delta("serve_model_latency_seconds_sum") / calls if calls else 0,
            "mean_queue_ms": 1000 * delta("serve_queue_latency_seconds_sum") / requests if requests else 0,
            "mean_server_request_ms": 1000 * delta("serve_request_latency_seconds_sum") / requests if requests else 0,
            "padding_rows": delta("serve_padding_rows_total")}


class Server:
    def __init__(self, serving_dir: Path, flags: list[str]):
        env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_USE_LEGACY_KERAS", None)
        self.process = subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "--serving-dir",
                                         str(serving_dir), "--port", "0", *flags], cwd=REPO, env=env,
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


async def push_to_answer(model_dir: Path, serving_dir: Path, port: int) -> float:
    version, _ = publish_version(model_dir, serving_dir)
    renamed = time.perf_counter()
    connection = Connection(port)
    body = json.dumps({"instances": ["Stocks rally"]}).encode()
    try:
        while True:
            status, _ = await connection.request("POST", f"/v1/models/agnews/versions/{version}:predict", body)
            if status == 200:
                return time.perf_counter() - renamed
            if time.perf_counter() - renamed > 300:
                raise SystemExit(f"version {version} did not answer within 300 s")
            await asyncio.sleep(0.05)
    finally:
        connection.close()


async def run_loads(servers: dict[str, Server], bodies: dict[int, list[bytes]], seconds: float) -> dict:
    """Every load against every server, in quarters ordered A B B A A B B A, so a load change on the shared
    machine during a load hits both servers alike."""
    first, second = servers
    results: dict[str, dict] = {label: {} for label in servers}
    for name, connections, texts in LOADS:
        runs = {label: {"latencies": [], "refused": 0, "metrics": {}, "server_cpu": 0.0, "client_cpu": 0.0,
                        "wall": 0.0, "load": []} for label in servers}
        for label in (first, second, second, first) * 2:
            server, run = servers[label], runs[label]
            metrics_before = await scrape(server.port)
            cpu_before, client_before, wall_before = cpu_seconds(server.process.pid), time.process_time(), time.time()
            latencies, refused = await closed_loop(server.port, connections, bodies[texts], texts, seconds / 4)
            run["wall"] += time.time() - wall_before
            run["server_cpu"] += cpu_seconds(server.process.pid) - cpu_before
            run["client_cpu"] += time.process_time() - client_before
            run["latencies"] += latencies
            run["refused"] += refused
            run["load"].append(os.getloadavg()[0])
            for metric, value in (await scrape(server.port)).items():
                run["metrics"][metric] = run["metrics"].get(metric, 0.0) + value - metrics_before.get(metric, 0.0)
        for label, run in runs.items():
            latencies = run["latencies"]
            results[label][name] = result = {
                "connections": connections, "texts_per_request": texts, "requests": len(latencies),
                "refused_503": run["refused"], "texts_per_second": len(latencies) * texts / seconds,
                "requests_per_second": len(latencies) / seconds, "p50_ms": percentile(latencies, 50),
                "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else 0.0,
                "p99_ms": percentile(latencies, 99), "max_ms": percentile(latencies, 100),
                **server_split({}, run["metrics"]),
                "server_cpu_percent": 100 * run["server_cpu"] / run["wall"],
                "client_cpu_percent": 100 * run["client_cpu"] / run["wall"],
                "load_average": sum(run["load"]) / len(run["load"])}
            print(name, label, json.dumps(result), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News test.csv")
    parser.add_argument("--model-dir", type=Path, required=True, help="a serving SavedModel folder")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per load")
    parser.add_argument("--sequential", type=int, default=300, help="in-process one-text calls")
    parser.add_argument("--overload-factor", type=float, default=2.0)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--pushes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serve.json")
    args = parser.parse_args()
    machine = run_info.machine()
    started = time.perf_counter()
    texts, labels = read_test_rows(args.data)
    bodies = {size: [json.dumps({"instances": [texts[(i * size + j) % len(texts)] for j in range(size)]}).encode()
                     for i in range(len(texts) // size)] for size in (1, 64)}

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    in_process = json.loads(subprocess.run(
        [sys.executable, "-c", IN_PROCESS_SCRIPT], input=json.dumps({
            "model_dir": str(args.model_dir), "texts": texts, "labels": labels, "sequential": args.sequential,
            "repo": str(REPO)}), capture_output=True, text=True, env=env, check=True, timeout=3600,
    ).stdout.strip().splitlines()[-1])
    batch_total = sum(in_process["batch_seconds"])
    baseline = {"load_seconds": in_process["load_seconds"],
                "one_text": {"calls": len(in_process["single"]), "p50_ms": percentile(in_process["single"], 50),
                             "p99_ms": percentile(in_process["single"], 99)},
                "batch_64": {"texts": in_process["batch_texts"],
                             "texts_per_second": in_process["batch_texts"] / batch_total,
                             "p50_ms": percentile(in_process["batch_seconds"], 50),
                             "p99_ms": percentile(in_process["batch_seconds"], 99)},
                "accuracy": in_process["accuracy"], "steps_us": in_process["steps_us"],
                "imported_by_import_tensorflow": in_process["imported_by_import_tensorflow"],
                "imported_by_serving": in_process["imported_by_serving"]}
    print("in-process", json.dumps({k: v for k, v in baseline.items() if k != "steps_us"}), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="agnews-bench-serve-"))
    configurations = {"batching off (before)": ["--no-batching"], "batching on (after)": []}
    http: dict[str, dict] = {label: {"flags": flags} for label, flags in configurations.items()}
    servers: dict[str, Server] = {}
    try:
        for label, flags in configurations.items():
            publish_version(args.model_dir, workdir / label.split()[1] / "agnews")
            servers[label] = Server(workdir / label.split()[1] / "agnews", flags)
        loads = asyncio.run(run_loads(servers, bodies, args.seconds))
        after = http["batching on (after)"]
        for label in configurations:
            http[label]["loads"] = loads[label]
        capacity = after["loads"]["16 connections x 64 texts"]["requests_per_second"]
        after["overload"] = asyncio.run(open_loop(servers["batching on (after)"].port, args.overload_factor * capacity,
                                                  bodies[64], 64, args.overload_seconds))
        print("overload", json.dumps(after["overload"]), flush=True)
        after["push_to_answer_seconds"] = [
            asyncio.run(push_to_answer(args.model_dir, workdir / "on" / "agnews", servers["batching on (after)"].port))
            for _ in range(args.pushes)]
        for label, server in servers.items():
            http[label]["exit_code_after_sigterm"] = server.stop()
        serving_dir = workdir / "short-queue" / "agnews"
        publish_version(args.model_dir, serving_dir)
        server = Server(serving_dir, SHORT_QUEUE_FLAGS)
        try:
            short_queue = asyncio.run(open_loop(server.port, http["batching on (after)"]["overload"][
                "offered_requests_per_second"], bodies[64], 64, args.overload_seconds))
            print("overload, short queue", json.dumps(short_queue), flush=True)
        finally:
            server.stop()
    finally:
        for server in servers.values():
            if server.process.poll() is None:
                server.process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": run_info.command_line(), "machine": machine,
              "load_average_at_end": os.getloadavg()[0], "model_dir": str(args.model_dir.resolve()),
              "data": f"{(args.data / 'test.csv').resolve()}: {len(texts)} rows, text = title + ' ' + description",
              "seconds_per_load": args.seconds, "in_process": baseline, "http": http,
              "overload_short_queue": {"flags": SHORT_QUEUE_FLAGS, **short_queue},
              "wall_seconds": time.perf_counter() - started}
    text = markdown(report)
    print(text)
    run_info.write_results(args.out, report, text)


def markdown(report: dict) -> str:
    baseline, http = report["in_process"], report["http"]
    rows = [f"| in-process, 1 text, sequential | | {1000 / baseline['one_text']['p50_ms']:.0f} | "
            f"{baseline['one_text']['p50_ms']:.1f} | {baseline['one_text']['p99_ms']:.1f} | | | | |",
            f"| in-process, batches of 64 | | {baseline['batch_64']['texts_per_second']:.0f} | "
            f"{baseline['batch_64']['p50_ms']:.1f} | {baseline['batch_64']['p99_ms']:.1f} | | | | |"]
    for name, *_ in LOADS:
        for label, server in http.items():
            r = server["loads"][name]
            rows.append(f"| {name} | {label} | {r['texts_per_second']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                        f"{r['model_calls']:.0f} ({r['mean_rows_per_call']:.1f} rows) | {r['mean_queue_ms']:.1f} / "
                        f"{r['mean_model_ms']:.1f} / {r['mean_server_request_ms']:.1f} | "
                        f"{r['server_cpu_percent']:.0f}% / {r['client_cpu_percent']:.0f}% | {r['load_average']:.1f} |")
    after = http["batching on (after)"]

    def overload_line(overload: dict) -> str:
        return (f"{overload['accepted']} accepted ({overload['accepted_texts_per_second']:.0f} texts/s, p50 "
                f"{overload['accepted_p50_ms']:.0f} ms, p99 {overload['accepted_p99_ms']:.0f} ms, max "
                f"{overload['accepted_max_ms']:.0f} ms), {overload['refused_503']} refused with 503 (p50 "
                f"{overload['refused_p50_ms']:.1f} ms, p99 {overload['refused_p99_ms']:.1f} ms); "
                f"{overload['connections_opened']} connections")

    overload = after["overload"]
    # The same run's model time for one text, measured by the server while the 1-connection load ran.
    single = {label: server["loads"][LOADS[0][0]] for label, server in http.items()}
    overhead = "; ".join(f"{label}: client mean {r['mean_ms']:.2f} ms, p50 {r['p50_ms']:.2f} ms, of which the "
                         f"model call {r['mean_model_ms']:.2f} ms and the whole request in the server "
                         f"{r['mean_server_request_ms']:.2f} ms" for label, r in single.items())
    steps = baseline["steps_us"]
    step_rows = [f"| {step} | {steps['1'][step]:.0f} | {steps['64'][step]:.0f} |" for step in steps["1"]]
    return "\n".join([
        f"# serve benchmark ({report['date']})", "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; load average {report['load_average_at_end']:.1f}"
        f" at the end  ", f"Model: `{report['model_dir']}`  ", f"Data: {report['data']}  ",
        f"Each HTTP load: {report['seconds_per_load']:.0f} timed seconds per server, in quarters ordered off, on, "
        f"on, off, off, on, on, off (each after 1 untimed second); client: this process (asyncio, keep-alive "
        f"HTTP/1.1), servers: "
        f"`agnews-pipeline serve` in their own processes, both up throughout. Load avg: the mean of the quarters' "
        f"1-minute load averages. Wall time "
        f"{report['wall_seconds']:.0f}s.", "",
        "| load | server | texts/s | p50 ms | p99 ms | model calls (rows per call) | server mean queue / model / "
        "request ms | CPU server / client | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        f"One connection, 1 text (the same run, the same seconds): {overhead}.", "",
        f"Overload (batching on, defaults): 64-text requests arriving at "
        f"{overload['offered_requests_per_second']:.1f}/s "
        f"({overload['offered_texts_per_second']:.0f} texts/s offered) for {overload['wall_seconds']:.0f}s: "
        f"{overload_line(overload)}. The same arrivals with `{' '.join(SHORT_QUEUE_FLAGS)}`: "
        f"{overload_line(report['overload_short_queue'])}.", "",
        "Where a request's time goes outside the model (in-process, median microseconds):", "",
        "| step | 1 text | 64 texts |", "| --- | --- | --- |", *step_rows, "",
        f"In-process: SavedModel load {baseline['load_seconds']:.1f}s; accuracy on the test rows "
        f"{baseline['accuracy']:.4f}; loading and serving imported "
        f"{', '.join(baseline['imported_by_serving']) or 'none'} of keras, tf_keras, tensorflow_transform, "
        f"keras_tuner, apache_beam and this project (`import tensorflow` itself imported "
        f"{', '.join(baseline['imported_by_import_tensorflow']) or 'none'}).  ",
        "Push to answer (batching on): " + ", ".join(f"{s:.1f}s" for s in after["push_to_answer_seconds"]) +
        "; exit codes after SIGTERM: " + ", ".join(f"{label} {server['exit_code_after_sigterm']}"
                                                   for label, server in http.items()),
    ]) + "\n"


if __name__ == "__main__":
    main()
