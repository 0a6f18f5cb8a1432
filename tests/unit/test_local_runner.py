"""The default Beam engine (engines/local.py) runs a step's pipeline in process and never tries to download
Prism: observed as connections to a proxy that every download from this process would go through, and as
files under the process's home folder. Beam's own DirectRunner, run the same way, is the control: it does
try, so the test can see a try."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from support.paths import PROJECT

PIPELINE = """
import sys
from pathlib import Path
import apache_beam as beam
from library.beam_options import pipeline_options
out = Path(sys.argv[1])
with beam.Pipeline(options=pipeline_options(tuple(sys.argv[2:]))) as pipeline:
    _ = (pipeline | beam.Create(range(100)) | beam.combiners.Count.Globally()
         | beam.Map(lambda count: out.write_text(str(count))))
"""


class Proxy:
    """A listener on 127.0.0.1 that counts the connections it is offered and closes each at once."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.socket.close()


def start_pipeline(tmp_path, proxy: Proxy, name: str, *beam_args: str) -> subprocess.Popen:
    home = tmp_path / f"home-{name}"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url,
           "https_proxy": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}
    return subprocess.Popen([sys.executable, "-c", PIPELINE, str(tmp_path / f"{name}.txt"), *beam_args],
                            cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finished_pipeline(tmp_path, process: subprocess.Popen, name: str) -> tuple[str, list[str]]:
    """(what the pipeline wrote, the files it left under its home folder)."""
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()[-2000:]
    home = tmp_path / f"home-{name}"
    return (tmp_path / f"{name}.txt").read_text(), sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_the_default_engine_runs_in_process_and_downloads_nothing(tmp_path):
    # the control, side by side: Beam's DirectRunner first tries to fetch Prism from GitHub (then falls back)
    proxies = {"default": Proxy(), "direct": Proxy()}
    try:
        processes = {"default": start_pipeline(tmp_path, proxies["default"], "default"),
                     "direct": start_pipeline(tmp_path, proxies["direct"], "direct", "--runner=DirectRunner")}
        assert finished_pipeline(tmp_path, processes["default"], "default") == ("100", [])
        assert proxies["default"].connections == 0
        count, _ = finished_pipeline(tmp_path, processes["direct"], "direct")
        assert count == "100" and proxies["direct"].connections >= 1
    finally:
        for proxy in proxies.values():
            proxy.close()
