"""`serve --workers 2`: two worker processes of one supervisor answer on one port, with the model's answers;
the metrics page, whichever worker answers the scrape, shows both workers' series; a killed worker is
started again while the other answers, and later each time it is killed soon after its start; SIGTERM stops
every worker and the supervisor exits 0, also while the workers still load their model; a worker whose
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
from apps.serving.workers import FIRST_RESTART_SECONDS
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


def kill_and_time_the_restart(server: Server, victim: int) -> tuple[int, float]:
    """(the new worker's process id, seconds from the kill of `victim` to the new process)."""
    before = children(server.process.pid)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(server.process.pid) - before) == 1, "a new worker process")
    new, = children(server.process.pid) - before
    return new, time.monotonic() - killed


def test_a_killed_worker_is_started_again_while_the_other_answers_and_later_than_before(workers, models):
    victim = min(children(workers.process.pid))
    new, first_wait = kill_and_time_the_restart(workers, victim)
    workers.wait_for_line(f"(process {victim}) exited with code -9; starting another")
    # the other worker answers meanwhile, and the new one once it listens
    for _ in range(10):
        np.testing.assert_allclose(workers.predict(TEXTS), models[1]["probabilities"], atol=1e-6)
    replaced = next(line for line in workers.lines if f"(process {victim})" in line).split()[2]
    wait_until(lambda: metric(workers, "serve_model_version", worker=replaced) == 1, "the new worker's page",
               timeout=120)
    # Killed again soon after it started: it is started again later still (the delays double), not in a
    # loop that loads the model as fast as it can.
    _, second_wait = kill_and_time_the_restart(workers, new)
    assert first_wait >= FIRST_RESTART_SECONDS and second_wait >= 2 * FIRST_RESTART_SECONDS, (
        first_wait, second_wait)
    wait_until(lambda: metric(workers, "serve_model_version", worker=replaced) == 1, "the new worker's page",
               timeout=120)


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(workers):
    pids = children(workers.process.pid)
    assert len(pids) == 2
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(90) == 0
    assert not any(alive(pid) for pid in pids)
    assert "serve: stopped" in workers.lines


def test_sigterm_while_the_workers_load_their_model_stops_them_and_exits_0(tmp_path, models):
    serving_dir = tmp_path / "serving" / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--workers", "2", wait=False)
    pids: set[int] = set()
    try:
        wait_until(lambda: len(children(server.process.pid)) == 2, "two worker processes", timeout=60)
        pids = children(server.process.pid)
        server.process.send_signal(signal.SIGTERM)  # the workers are still importing TensorFlow or loading
        assert server.process.wait(60) == 0, server.stderr
        server.reader.join(10)  # the server's last lines
        stderr = "".join(server.stderr)
        assert "listening" not in stderr and "serve: stopped" in stderr
        assert not any(alive(pid) for pid in pids)
    finally:
        for pid in pids | {server.process.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.process.wait(30)


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
    supervisor = Supervisor(["serve", "--no-such-flag"], reserved.port, 2, print)
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
