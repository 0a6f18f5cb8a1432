"""`agnews-pipeline serve` in a subprocess on a free port of 127.0.0.1, driven with a real HTTP client
(urllib)."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from support.models import fresh_process_env
from support.paths import PROJECT as REPO

TEXTS = ["Stocks rally as oil prices fall", "Team wins the championship after a late goal", "",
         "Zürich café naïve — 東京 株価 上昇 📈"]
MAX_REQUEST_BYTES = 200_000


class Server:
    """`serve` with `flags`; the constructor returns once it listens, or at once with wait=False."""

    def __init__(self, serving_dir: Path, *flags: str, wait: bool = True):
        self.serving_dir = serving_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "serve", "--serving-dir", str(serving_dir), "--port", "0",
             "--poll-seconds", "0.2", "--max-request-bytes", str(MAX_REQUEST_BYTES), *flags],
            cwd=REPO, env={**fresh_process_env(), "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        # every line of its stderr (its workers' too), and its own lines
        self.stderr: list[str] = []
        self.lines: list[str] = []
        self.port = None
        listening = threading.Event()

        def read():  # keeps the pipe drained and remembers the server's lines
            for line in self.process.stderr:
                self.stderr.append(line)
                if line.startswith("serve:"):
                    self.lines.append(line.strip())
                    if "listening on http://127.0.0.1:" in line:
                        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
                        listening.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if wait and not listening.wait(300):
            self.process.kill()
            raise AssertionError(f"the server did not start: {self.lines}")

    def call(self, method: str, path: str, body=None, raw: bytes | None = None, timeout: float = 60):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def predict(self, texts, path="/v1/models/agnews:predict"):
        status, body = self.call("POST", path, {"instances": texts})
        assert status == 200, body
        return np.array([row["probabilities"] for row in body["predictions"]])

    def wait_for_line(self, fragment: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if fragment in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no server line with {fragment!r}: {self.lines}")


METRICS = "/monitoring/prometheus/metrics"


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, read from the metrics page."""
    with urllib_get(server, METRICS) as text:
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            sample, value = line.rsplit(" ", 1)
            sample_name, _, label_text = sample.partition("{")
            if sample_name != name:
                continue
            if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
                total += float(value)
        return total


class urllib_get:  # a context manager read like a function
    def __init__(self, server: Server, path: str):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        self.text = response.read().decode()
        connection.close()

    def __enter__(self) -> str:
        return self.text

    def __exit__(self, *exc) -> None:
        return None


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def post(server: Server, path: str, body: dict) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(30)
