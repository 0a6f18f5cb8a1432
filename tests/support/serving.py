"""`agnews-pipeline serve` in a subprocess on a free port of 127.0.0.1, driven with a real HTTP client (urllib)."""
from __future__ import annotations

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
    def __init__(self, serving_dir: Path, *flags: str):
        self.serving_dir = serving_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "serve", "--serving-dir", str(serving_dir), "--port", "0",
             "--poll-seconds", "0.2", "--max-request-bytes", str(MAX_REQUEST_BYTES), *flags],
            cwd=REPO, env={**fresh_process_env(), "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.port = None
        listening = threading.Event()

        def read():  # keeps the pipe drained and remembers the server's own lines
            for line in self.process.stderr:
                if line.startswith("serve:"):
                    self.lines.append(line.strip())
                    if "listening on http://127.0.0.1:" in line:
                        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
                        listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(300):
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
