"""`serve --workers N`: N server processes answering on one port, under a supervisor that loads no model.

Why processes: the model calls of one process do not use two cores, whatever its threads
(benchmarks/results/model_processes.md: two threads of one process 1.1-1.6x one thread, two processes
1.7-2.2x), and at 16 one-text clients one process alternates between one model call and answering, using one
core of two. Two workers answered 1.17-1.35x the texts/s of one at 16 x 1
(benchmarks/results/serve_workers.md, serve_workers_quiet.md).

The supervisor reserves the port (a socket bound with SO_REUSEPORT that does not listen: it resolves --port 0
and keeps the port while workers come and go; and a claim that keeps another `serve --workers` off the port,
even while neither one's workers listen yet) and starts each worker, `python -m apps.cli` with the
supervisor's own arguments, handing it its seat and the shared metrics pages (apps/serving/worker_pages.py,
by file descriptor). Each worker is a whole `serve`: its own versions, reloads, batching and admission; once
its model is loaded it listens on the port with SO_REUSEPORT, and the kernel spreads new connections over the
workers listening. So a worker that is (re)starting gets no connection before it can answer one.
  - A worker that exits once it was listening (killed, out of memory) is started again, with a line: at once
    if it had run 5 minutes (STABLE_SECONDS), else after a delay that doubles with each such exit (1 s,
    2 s, ... up to 30 s), so that a worker crashing soon after each start does not load its model in a loop.
  - One that exits before it listened (say its serving folder cannot be read) stops the others, and the
    supervisor exits with a line: restarting it would fail the same way.
  - SIGTERM or SIGINT is passed on to every worker, which finishes its requests in flight; the supervisor
    exits once all have, 0 if each exited 0 or was ended by that SIGTERM while still loading its model. A
    worker whose supervisor is gone (killed) stops by itself.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

from apps.serving.worker_pages import SharedPages

# How a worker learns its seat: "index,count,port,pages fd" (set by the supervisor only).
WORKER_ENVIRONMENT = "AGNEWS_SERVE_WORKER"
POLL_SECONDS = 0.2
# A worker that exits within STABLE_SECONDS of its start is started again after a delay, doubled from
# FIRST_RESTART_SECONDS at each such exit up to MAX_RESTART_SECONDS; one that ran longer, at once.
FIRST_RESTART_SECONDS, MAX_RESTART_SECONDS, STABLE_SECONDS = 1.0, 30.0, 300.0


def restart_delay(previous: float, uptime: float) -> float:
    """Seconds to wait before starting again a worker that exited after `uptime` seconds, the delay before
    its previous start being `previous` (0 for the first start)."""
    if uptime >= STABLE_SECONDS:
        return 0.0
    return min(MAX_RESTART_SECONDS, max(FIRST_RESTART_SECONDS, 2 * previous))


@dataclass(frozen=True)
class WorkerSeat:
    """What a worker process is handed: its index, the number of workers, the port to listen on (with
    SO_REUSEPORT) and the shared metrics pages."""
    index: int
    count: int
    port: int
    pages: SharedPages

    @classmethod
    def from_environment(cls) -> WorkerSeat | None:
        """This process's seat when the supervisor started it, else None."""
        value = os.environ.get(WORKER_ENVIRONMENT)
        if not value:
            return None
        index, count, port, pages_fd = (int(part) for part in value.split(","))
        return cls(index, count, port, SharedPages(pages_fd, count))


class PortReservation:
    """The port `serve --workers N` holds while its workers come and go (reserve_port). A context manager;
    `close` releases the port."""

    def __init__(self, reserved: socket.socket, claim: socket.socket):
        self.reserved, self.claim = reserved, claim

    @property
    def port(self) -> int:
        return self.reserved.getsockname()[1]

    def close(self) -> None:
        self.claim.close()
        self.reserved.close()

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def reserve_port(host: str, port: int) -> PortReservation:
    """The port held for the workers: a socket bound with SO_REUSEPORT that does not listen (so no connection
    waits on it; the workers bind theirs beside it), and a claim on the port number that another `serve
    --workers` cannot take. Port 0: a free port. OSError when the port is taken: by any listening server, or
    by another `serve --workers`, listening or still loading its workers' models (SO_REUSEPORT alone would
    let the two split the connections without a word)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        # without SO_REUSEPORT a bind fails while any socket listens on the port
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    reserved = socket.socket(family, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
        return PortReservation(reserved, _claim(reserved.getsockname()[1]))
    except OSError:
        reserved.close()
        raise


def _claim(port: int) -> socket.socket:
    """A Unix socket bound to a name in Linux's abstract namespace (no file; the kernel frees the name when
    the process ends, however it ends) that only one process can hold per port: the non-listening socket
    above does not keep a second supervisor out (two sockets with SO_REUSEADDR may share a port while neither
    listens)."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0agnews-pipeline serve --workers port {port}".encode())
    except OSError as error:
        claim.close()
        raise OSError(error.errno, f"{error.strerror}: another `serve --workers` holds port {port} (its "
                                   "workers may still be loading their model)") from None
    return claim


class Supervisor:
    """Starts and watches the workers; see the module's docstring."""

    def __init__(self, argv: list[str], port: int, count: int, log: Callable[[str], None]):
        self.argv, self.port, self.log = argv, port, log
        self.pages = SharedPages.create(count)
        # None while a worker waits to be started again (restart_at) or before its first start
        self.workers: list[subprocess.Popen | None] = [None] * count
        self.started_at, self.delays = [0.0] * count, [0.0] * count
        self.restart_at: list[float | None] = [None] * count
        self.stopping = self.failed = False

    def start(self, index: int) -> None:
        self.pages.clear(index)
        self.started_at[index], self.restart_at[index] = time.monotonic(), None
        seat = f"{index},{len(self.workers)},{self.port},{self.pages.fd}"
        self.workers[index] = subprocess.Popen([sys.executable, "-m", "apps.cli", *self.argv],
                                               pass_fds=(self.pages.fd,),
                                               env={**os.environ, WORKER_ENVIRONMENT: seat})
        if self.stopping:  # SIGTERM came while Popen ran: stop() did not see this worker yet
            self.workers[index].send_signal(signal.SIGTERM)

    def stop(self, *_) -> None:
        """SIGTERM and SIGINT: every worker finishes its requests in flight and exits."""
        self.stopping = True
        for worker in self.workers:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    def run(self, url: str) -> int:
        """Runs until the workers have stopped; the exit code (_exit_code)."""
        previous = {signum: signal.signal(signum, self.stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self.workers)):
                if not self.stopping:
                    self.start(index)
            return self._watch(url)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _watch(self, url: str) -> int:
        announced = False
        while True:
            if not announced and all(self.pages.published(i) for i in range(len(self.workers))):
                announced = True
                pids = ", ".join(str(worker.pid) for worker in self.workers if worker is not None)
                self.log(f"serve: listening on {url} with {len(self.workers)} workers (process ids {pids})")
            for index, worker in enumerate(self.workers):
                due = self.restart_at[index]
                if due is not None and not self.stopping and time.monotonic() >= due:
                    self.start(index)
                code = worker.poll() if worker is not None else None
                if code is None or self.stopping:
                    continue
                if not self.pages.published(index):
                    self.log(f"serve: worker {index} exited with code {code} before it was listening (its "
                             "lines above say why); stopping the others")
                    self.failed = True
                    self.stop()
                    break
                self._schedule_restart(index, worker, code)
            if self.stopping and all(worker is None or worker.poll() is not None for worker in self.workers):
                return self._exit_code()
            time.sleep(POLL_SECONDS)

    def _schedule_restart(self, index: int, worker: subprocess.Popen, code: int) -> None:
        """A worker that exited after it listened is started again, at once or after restart_delay."""
        self.delays[index] = restart_delay(self.delays[index], time.monotonic() - self.started_at[index])
        after = f" in {self.delays[index]:g} s" if self.delays[index] else ""
        self.log(f"serve: worker {index} (process {worker.pid}) exited with code {code}; starting "
                 f"another{after}")
        self.workers[index], self.restart_at[index] = None, time.monotonic() + self.delays[index]

    def _exit_code(self) -> int:
        """0 when the workers stopped as asked: each exited 0 or was ended by the SIGTERM passed on (a worker
        still loading its model has no handler yet); 1 after a worker could not start or a worker failed."""
        stopped = (0, -signal.SIGTERM)
        return 1 if self.failed or any(worker is not None and worker.returncode not in stopped
                                       for worker in self.workers) else 0
