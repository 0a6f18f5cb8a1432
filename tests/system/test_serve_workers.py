"""`serve --workers 2`: two worker processes of one supervisor answer on one port, with the model's answers;
the metrics page, whichever worker answers the scrape, shows both workers' series; a killed worker is
started again while the other answers; SIGTERM stops every worker and the supervisor exits 0; a worker whose
supervisor is killed stops by itself; a worker that cannot start stops the supervisor with exit 1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support.paths import PROJECT
from support.processes import alive, children
from support.serving import TEXTS, Server, metric, wait_until

from apps.serving.worker_pages import PUBLISH_SECONDS
from components.pusher.executor import publish_version


def stop_everything(server: Server) -> None:
    """Ends the supervisor and its workers, by process id, whatever state a test left them in."""
    for pid in children(server.process.pid):
        os.kill(pid, signal.SIGKILL)
    if server.process.poll() is None:
        server.process.kill()
    server.process.wait(30)


@pytest.fixture(scope="module")
def workers(tmp_path_factory, models):
    serving_dir = tmp_path_factory.mktemp("serving") / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--workers", "2")
    yield server
    stop_everything(server)


def per_worker_requests(server: Server) -> dict[str, float]:
    return {worker: metric(server, "serve_requests_total", api="predict", code="200", worker=worker)
            for worker in ("0", "1")}


def test_two_workers_answer_on_one_port_and_one_page_counts_both(workers, models):
    assert len(children(workers.process.pid)) == 2
    # urllib opens a connection per request: the kernel spreads them over the two workers
    for _ in range(30):
        np.testing.assert_allclose(workers.predict(TEXTS), models[1]["probabilities"], atol=1e-6)
    time.sleep(PUBLISH_SECONDS + 0.5)  # every worker's copy of its page is newer than the requests
    for _ in range(6):  # scrapes, each on its own connection, answered by either worker
        counts = per_worker_requests(workers)
        assert sum(counts.values()) == 30 and min(counts.values()) > 0, counts


def test_a_killed_worker_is_started_again_while_the_other_answers(workers, models):
    before = children(workers.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(workers.process.pid) - before) == 1, "a new worker process")
    workers.wait_for_line(f"(process {victim}) exited with code -9; starting another")
    # the other worker answers meanwhile, and the new one once it listens
    for _ in range(10):
        np.testing.assert_allclose(workers.predict(TEXTS), models[1]["probabilities"], atol=1e-6)
    replaced = next(line for line in workers.lines if f"(process {victim})" in line).split()[2]
    wait_until(lambda: metric(workers, "serve_model_version", worker=replaced) == 1, "the new worker's page",
               timeout=120)


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(workers):
    pids = children(workers.process.pid)
    assert len(pids) == 2
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(90) == 0
    assert not any(alive(pid) for pid in pids)
    assert "serve: stopped" in workers.lines


def test_workers_stop_when_their_supervisor_is_killed(tmp_path, models):
    serving_dir = tmp_path / "serving" / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--workers", "2")
    try:
        pids = children(server.process.pid)
        assert len(pids) == 2
        server.process.kill()
        server.process.wait(30)
        wait_until(lambda: not any(alive(pid) for pid in pids), "the orphaned workers to stop", timeout=60)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


SUPERVISE = """
import sys
from apps.serving.workers import Supervisor, reserve_port
with reserve_port("127.0.0.1", 0) as reserved:
    supervisor = Supervisor(["serve", "--no-such-flag"], reserved.getsockname()[1], 2, print)
    code = supervisor.run("http://127.0.0.1")
print("worker exit codes", [worker.returncode for worker in supervisor.workers])
sys.exit(code)
"""


def test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_1():
    """The workers' arguments fail to parse: a worker exits 2 before it listens, none is started again, the
    others are stopped, and the supervisor exits 1 (in a process of its own, so that a supervisor that
    restarted them forever is ended by the timeout)."""
    done = subprocess.run([sys.executable, "-c", SUPERVISE], cwd=PROJECT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)}, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exited with code 2 before it was listening" in done.stdout, done.stdout
    assert "starting another" not in done.stdout
    # each worker exited: with its error, or stopped by the supervisor (SIGTERM) while it was still starting
    codes = done.stdout.split("worker exit codes ", 1)[1].strip().strip("[]").split(", ")
    assert 2 in map(int, codes) and set(map(int, codes)) <= {2, -signal.SIGTERM}, done.stdout
