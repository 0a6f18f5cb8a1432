"""Dynamic batching for `agnews-pipeline serve`, after TF Serving's batching layer (`--enable_batching`), with
a policy that sizes batches to the load by itself.

Requests for the same loaded version and signature wait in one queue. Whenever a batch thread is free, the
queue whose oldest request has waited longest hands over up to `max_batch_size` rows (whole requests; one with
several instances joins as a block): at once when the server is not loaded, else as soon as it holds that many
rows, or every client seen lately is waiting, or its oldest request has waited `batch_timeout_micros`.
Loaded means a batch is running (its clients will send again soon) or the last 100 ms brought requests faster
than one per timeout: so a lone request never waits for others, and under load batches grow with the queue
(requests that arrive while the batch threads are busy join the next batch). "Every client": the server tells
the batcher how many requests it holds (arrived, not yet answered); the most it held over the last 100 ms is
how many clients are about, and once that many requests are queued or in running batches no one else is
coming, so waiting longer only adds latency. 16 clients sending one text each then meet in one batch of 16
instead of two or three smaller ones cut by the timeout (benchmarks/results/serve_all_in.md). A timeout of 100
ms or more makes every request wait for it (or a full batch), as TF Serving does.

The rows are concatenated, padded by repeating the first row up to the next of `allowed_batch_sizes` (a
handful of shapes, so the model's kernels see few batch sizes), run as one model call, and the outputs are
split back per request.

Admission by time: the batcher fits what a batch costs (a fixed part plus a part per row, on recent batches:
apps/serving/admission.py), so the time a request that arrives now takes to be answered is estimated as what
is left of the running batches plus the batches the queued rows make, spread over the batch threads, then its
own batch (no wait at all while the next round of batches takes the whole queue). `admit` refuses it at
arrival (`Overloaded`, which the server answers with 503 before reading its body) when that estimate exceeds
`max_queue_delay_ms`: accepted requests are then answered within about that long. As a hard cap besides, a
queue holds at most `max_enqueued_batches` batches' worth of rows; a request that finds it full is refused at
once too, never left to wait without bound. A request whose client went away before its batch started is
dropped from the queue. If a merged batch fails (say one request's serialized tf.Example does not parse), each
of its requests is run alone, so only the bad one fails.

With batching off (`enabled=False`) the same queue runs every request alone, unpadded, `num_batch_threads`
at a time: TF Serving without `--enable_batching`, with the same bound on waiting rows.
"""
from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Callable

from apps.serving.admission import BatchCost, queue_delay

if TYPE_CHECKING:
    import numpy as np  # imported where it is used: `agnews-pipeline --help` reads BatchingOptions' defaults

# Called in a batch thread: (servable, signature, {input name: array [rows, ...]}) -> {output name: array}.
RunModel = Callable[[Any, str, "dict[str, np.ndarray]"], "dict[str, np.ndarray]"]


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters (its --batching_parameters_file), with the same names."""
    enabled: bool = True
    # An XLA export runs a batch above 64 rows in chunks of 64 sorted by length (library/xla_buckets.py), so
    # larger batches cost less per row: 256 random test texts a call gave 1.57x the rows per second of 64
    # (benchmarks/results/export_chunks.md), and 16 clients of 64 texts fit one round of 2 batch threads.
    max_batch_size: int = 256
    # The longest a request waits for others to join its batch; it waits only while the next request is
    # expected sooner (arrivals faster than one per timeout), and no longer than until every client seen
    # lately is waiting, so a lone request never waits. 3 ms: 16 clients' requests reach the queue over 2-3
    # ms on 2 loaded cores; with 1 ms they made batches of 7-8 rows, with 3 ms of 16, at 0.75x the CPU.
    batch_timeout_micros: int = 3000
    max_enqueued_batches: int = 32
    # Refuse a request whose estimated time to answer exceeds this (0: no check by time, only the hard
    # cap). Below 100 ms: the estimate is a mean, and 2x overload answered in 120 ms at p99 with 100.
    max_queue_delay_ms: float = 75.0
    # TF Serving's default too: one batch per core at a time (a batch's TensorFlow ops also use every core,
    # but while one batch converts its inputs and outputs in Python the other computes).
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    # () = 1, 2, 3, 4, 6, 8, 12, ... below max_batch_size, and it
    allowed_batch_sizes: tuple[int, ...] = ()

    def problem(self) -> str | None:
        """What is wrong with these options, as a flag would name it, or None."""
        for flag, value in (("--max-batch-size", self.max_batch_size),
                            ("--max-enqueued-batches", self.max_enqueued_batches),
                            ("--num-batch-threads", self.num_batch_threads)):
            if value <= 0:
                return f"{flag} must be positive, got {value}"
        if self.max_queue_delay_ms < 0:
            return f"--max-queue-delay-ms must be 0 (off) or more, got {self.max_queue_delay_ms:g}"
        if self.batch_timeout_micros < 0:
            return f"--batch-timeout-micros must be 0 or more, got {self.batch_timeout_micros}"
        sizes = self.allowed_batch_sizes
        if sizes and (any(size <= 0 for size in sizes) or list(sizes) != sorted(set(sizes))
                      or sizes[-1] != self.max_batch_size):
            return (f"--allowed-batch-sizes must be increasing positive sizes ending with --max-batch-size "
                    f"({self.max_batch_size}), got {','.join(map(str, sizes))}")
        return None

    def batch_sizes(self) -> tuple[int, ...]:
        if self.allowed_batch_sizes:
            return self.allowed_batch_sizes
        # Powers of two and the sizes halfway between them: padding adds at most a third to a batch.
        steps = sorted({size for bit in range(self.max_batch_size.bit_length())
                        for size in (1 << bit, 3 << bit >> 1) if 0 < size < self.max_batch_size})
        return (*steps, self.max_batch_size)

    def padded_size(self, rows: int) -> int:
        """The batch size `rows` rows are padded to: the next allowed size; a larger request runs unpadded."""
        if not self.enabled:
            return rows
        return next((size for size in self.batch_sizes() if size >= rows), rows)

    def queue_capacity(self) -> int:
        """Rows a queue may hold before new requests are refused (the same with batching off)."""
        return self.max_enqueued_batches * self.max_batch_size


# the arrival rate is counted over this window; bursts within it average out
RATE_WINDOW_SECONDS = 0.1
# Weight of the newest batch in the fit of what a batch costs (earlier ones decay by 1 - this per batch).
COST_WEIGHT = 0.2


class Overloaded(Exception):
    """The request's queue is full: answer 503 at once."""


@dataclass
class BatchStats:
    """What one model call did, for the metrics: rows of real requests, rows after padding, seconds."""
    servable: Any
    signature: str
    requests: int
    rows: int
    padded_rows: int
    queue_seconds: list[float]
    model_seconds: float
    # concatenating and padding the inputs, splitting the outputs
    split_seconds: float


class _Task:
    __slots__ = ("inputs", "rows", "solo", "future", "enqueued", "taken")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, solo: bool, future: asyncio.Future,
                 enqueued: float):
        self.inputs, self.rows, self.solo, self.future, self.enqueued = inputs, rows, solo, future, enqueued
        self.taken = False


class _Queue:
    """The waiting requests of one (loaded version, signature)."""

    def __init__(self, servable: Any, signature: str):
        self.servable, self.signature = servable, signature
        self.tasks: deque[_Task] = deque()
        # rows of the waiting requests whose clients are still there
        self.rows = 0

    def take(self, max_rows: int, merge: bool) -> list[_Task]:
        """The oldest requests that fit in one batch; requests whose clients went away are dropped."""
        tasks: list[_Task] = []
        rows = 0
        while self.tasks:
            task = self.tasks[0]
            # cancelled: its client went away (rows already given back)
            if task.future.done():
                self.tasks.popleft()
                continue
            if tasks and (not merge or task.solo or tasks[0].solo or rows + task.rows > max_rows):
                break
            self.tasks.popleft()
            task.taken = True
            tasks.append(task)
            rows += task.rows
            self.rows -= task.rows
        return tasks

    def oldest(self) -> _Task | None:
        while self.tasks and self.tasks[0].future.done():
            self.tasks.popleft()
        return self.tasks[0] if self.tasks else None


class Batcher:
    """Queues, batches and runs model calls. Every method except the model call runs on the event loop."""

    def __init__(self, options: BatchingOptions, run_model: RunModel,
                 on_batch: Callable[[BatchStats], None] = lambda stats: None,
                 on_dropped: Callable[[int], None] = lambda rows: None):
        self.options = options
        self.run_model = run_model
        self.on_batch = on_batch
        self.on_dropped = on_dropped
        # The batch threads take (loop, servable, signature, tasks) and hand the outcome straight back to the
        # loop (one call_soon_threadsafe: no executor future, no wrapped asyncio future, no extra loop turn):
        # 0.92x the event loop's CPU per request against a ThreadPoolExecutor
        # (benchmarks/results/serve_request_path_batch_threads.md).
        self._work: SimpleQueue = SimpleQueue()
        self._threads = [threading.Thread(target=self._batch_thread, name=f"batch_{index}", daemon=True)
                         for index in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()
        self.free_threads = options.num_batch_threads
        self.queues: dict[tuple[int, str], _Queue] = {}
        self.draining = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        # arrival times in the last RATE_WINDOW_SECONDS
        self._arrivals: deque[float] = deque()
        # what a batch of r rows costs, fitted on recent batches
        self.cost = BatchCost(COST_WEIGHT)
        # the batches running now: {id of its task list: (start, rows, requests)}
        self._running: dict[int, tuple[float, int, int]] = {}
        # Requests the server holds now, from arrival to answer (the server sets it; always 0: unknown, so
        # batches wait for the timeout), and (time, held) at each submit over the last RATE_WINDOW_SECONDS,
        # held decreasing, so the first is the window's most: the clients about.
        self.requests_held: Callable[[], int] = lambda: 0
        self._held_peaks: deque[tuple[float, int]] = deque()

    def queued_rows(self) -> int:
        return sum(queue.rows for queue in self.queues.values())

    def queued_requests(self) -> int:
        return sum(len(queue.tasks) for queue in self.queues.values())

    def estimated_delay(self) -> float:
        """Seconds until a request arriving now would be answered: what is left of the running batches and the
        queued rows of every version (the batch threads are shared) in batches of max_batch_size, at the
        fitted cost, spread over the batch threads, then its own batch. 0 before the first batch has been
        timed, and while the next round of batches takes the whole queue (apps/serving/admission.py)."""
        requests = self.queued_requests()
        now = time.monotonic()
        running_left = sum(max(0.0, self.cost.seconds(rows) - (now - started))
                           for started, rows, _ in self._running.values()) if self.cost.sums else 0.0
        return queue_delay(self.cost, self.queued_rows(), requests, self.options.max_batch_size,
                           self.options.num_batch_threads, self.options.enabled, running_left)

    def admit(self) -> None:
        """Raises Overloaded when a request arriving now would be answered later than max_queue_delay_ms.
        Cheap (no allocation beyond the message), so the server calls it before reading the request's body."""
        bound = self.options.max_queue_delay_ms / 1e3
        if bound and (delay := self.estimated_delay()) > bound:
            raise Overloaded(f"the estimated delay of {delay * 1e3:.0f} ms is over "
                             f"--max-queue-delay-ms {self.options.max_queue_delay_ms:g}")

    def submit(self, servable: Any, signature: str, inputs: dict[str, np.ndarray], rows: int,
               solo: bool = False) -> asyncio.Future:
        """Queues one request; its future gets {output name: this request's rows}. Raises Overloaded when the
        queue is full or its estimated time to answer is over the bound. `solo`: never merged or padded
        (inputs that are not batched along their first axis)."""
        key = (id(servable), signature)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = _Queue(servable, signature)
        if queue.rows >= self.options.queue_capacity():
            raise Overloaded(
                f"the queue of version {getattr(servable, 'version', '?')} signature {signature!r} "
                f"is full ({queue.rows} rows waiting; --max-enqueued-batches "
                f"{self.options.max_enqueued_batches} x --max-batch-size {self.options.max_batch_size})"
            )
        # again, now that the requests admitted with this one while their bodies came are queued
        self.admit()
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._arrivals.append(now)
        held = self.requests_held()
        while self._held_peaks and self._held_peaks[-1][1] <= held:
            self._held_peaks.pop()
        self._held_peaks.append((now, held))
        task = _Task(inputs, rows, solo or rows == 0, loop.create_future(), now)
        task.future.add_done_callback(functools.partial(self._cancelled, queue, task))
        queue.tasks.append(task)
        queue.rows += rows
        self._dispatch()
        return task.future

    def _cancelled(self, queue: _Queue, task: _Task, future: asyncio.Future) -> None:
        # the client went away before its batch started
        if future.cancelled() and not task.taken:
            queue.rows -= task.rows
            self.on_dropped(task.rows)

    def _dispatch(self) -> None:
        """Starts batches while batch threads are free; otherwise wakes up when the oldest request is due."""
        loop = asyncio.get_running_loop()
        timeout = self.options.batch_timeout_micros / 1e6
        max_rows = self.options.max_batch_size
        while self.free_threads > 0:
            ready, ready_task, wake_at, now = None, None, None, time.monotonic()
            loaded = self._loaded(now)
            all_in = loaded and self._all_clients_waiting(now)
            for key, queue in list(self.queues.items()):
                task = queue.oldest()
                if task is None:
                    # nothing waits for this version: let it go
                    del self.queues[key]
                    continue
                due = task.enqueued + timeout
                if (
                    not loaded
                    or due <= now
                    or queue.rows >= max_rows
                    or all_in
                    or not self.options.enabled
                    or task.solo
                    or self.draining
                ):
                    if ready_task is None or task.enqueued < ready_task.enqueued:
                        ready, ready_task = queue, task
                elif wake_at is None or due < wake_at:
                    wake_at = due
            if ready is None:
                self._wake_at(loop, wake_at, now)
                return
            tasks = ready.take(max_rows, merge=self.options.enabled)
            self.free_threads -= 1
            self._running[id(tasks)] = (now, sum(task.rows for task in tasks), len(tasks))
            self._work.put((loop, ready.servable, ready.signature, tasks))
        # every batch thread is busy: the end of a batch dispatches again
        self._wake_at(loop, None, 0.0)

    def _wake_at(self, loop: asyncio.AbstractEventLoop, due: float | None, now: float) -> None:
        """Keeps one timer that dispatches at `due` (None: none). A deadline that has not changed keeps its
        timer: each request arriving while a batch fills would otherwise cancel and set one."""
        if self._timer is not None:
            if due is not None and due == self._timer_due:
                return
            self._timer.cancel()
            self._timer = None
        if due is not None:
            self._timer_due = due
            self._timer = loop.call_later(max(0.0, due - now), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._dispatch()

    def _loaded(self, now: float) -> bool:
        """Whether waiting for more rows pays: a batch is running (its clients send again soon), or the last
        RATE_WINDOW_SECONDS brought requests faster than one per timeout. Otherwise a lone request starts at
        once. (With a timeout of RATE_WINDOW_SECONDS or more every request waits, as in TF Serving.)"""
        while self._arrivals and self._arrivals[0] < now - RATE_WINDOW_SECONDS:
            self._arrivals.popleft()
        return (self.free_threads < self.options.num_batch_threads
                or len(self._arrivals) * self.options.batch_timeout_micros > RATE_WINDOW_SECONDS * 1e6)

    def _all_clients_waiting(self, now: float) -> bool:
        """Whether the queued requests and those in running batches are as many as the most requests the
        server held over the last RATE_WINDOW_SECONDS: then no other client is about to send one. Never with
        a timeout of RATE_WINDOW_SECONDS or more, where every batch waits for it, as in TF Serving."""
        while self._held_peaks and self._held_peaks[0][0] < now - RATE_WINDOW_SECONDS:
            self._held_peaks.popleft()
        clients = self._held_peaks[0][1] if self._held_peaks else 0
        # unknown; or TF Serving's batching asked for (a timeout of the window or more): every batch waits
        if clients == 0 or self.options.batch_timeout_micros >= RATE_WINDOW_SECONDS * 1e6:
            return False
        running = sum(requests for _, _, requests in self._running.values())
        return self.queued_requests() + running >= clients

    def _batch_thread(self) -> None:
        """One batch thread: runs the batches it is handed until it is handed None."""
        while (work := self._work.get()) is not None:
            loop, servable, signature, tasks = work
            results, error = None, None
            try:
                results = self._run_batch(servable, signature, tasks)
            # handed to the batch's requests, as an executor would
            except BaseException as caught:
                error = caught
            try:
                loop.call_soon_threadsafe(self._finished, tasks, results, error)
            # the loop has closed (the server stopped): nobody waits for these answers
            except RuntimeError:
                pass

    def _finished(self, tasks: list[_Task], results: list | None, error: BaseException | None) -> None:
        self.free_threads += 1
        started, rows, _ = self._running.pop(id(tasks))
        # the batch thread's whole time (inputs, model, outputs): what draining a row costs
        if error is None:
            self.cost.observe(rows, time.monotonic() - started)
        outcomes = [(None, error)] * len(tasks) if error else results
        for task, (result, task_error) in zip(tasks, outcomes):
            if task.future.done():
                # the client went away while its batch ran
                continue
            if task_error is not None:
                task.future.set_exception(task_error)
            else:
                task.future.set_result(result)
        self._dispatch()

    def _run_batch(
        self, servable: Any, signature: str, tasks: list[_Task]
    ) -> list[tuple[Any, Exception | None]]:
        """In a batch thread: one model call for `tasks`, split back; each task alone if the batch fails."""
        started = time.monotonic()
        rows = sum(task.rows for task in tasks)
        padded = rows if tasks[0].solo else self.options.padded_size(rows)
        inputs = tasks[0].inputs if tasks[0].solo else {
            name: _concatenate([task.inputs[name] for task in tasks], padded) for name in tasks[0].inputs}
        model_started = time.monotonic()
        try:
            outputs = self.run_model(servable, signature, inputs)
            for name, array in outputs.items():
                if not tasks[0].solo and (array.ndim == 0 or array.shape[0] != padded):
                    raise RuntimeError(
                        f"output {name!r} has shape {list(array.shape)}, not one row per input row, "
                        "so batched answers cannot be split; start serve with --no-batching"
                    )
        # handed to the requests; a merged batch is retried per request
        except Exception as error:
            if len(tasks) == 1:
                return [(None, error)]
            return [self._run_batch(servable, signature, [task])[0] for task in tasks]
        finished = time.monotonic()
        if len(tasks) == 1 and padded == rows:
            results = [(outputs, None)]
        else:
            results, start = [], 0
            for task in tasks:
                results.append(
                    ({name: array[start : start + task.rows] for name, array in outputs.items()}, None)
                )
                start += task.rows
        self.on_batch(BatchStats(servable, signature, len(tasks), rows, padded,
                                 [started - task.enqueued for task in tasks], finished - model_started,
                                 time.monotonic() - finished + model_started - started))
        return results

    def drain(self) -> None:
        """From now on a batch starts as soon as a batch thread is free, without waiting for more requests."""
        self.draining = True
        self._dispatch()

    def shutdown(self) -> None:
        """Ends the batch threads once the batches handed to them have run."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


def _concatenate(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    """The arrays one after the other along the first axis, then the first row repeated up to `rows` rows."""
    import numpy as np

    joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    missing = rows - len(joined)
    return joined if missing <= 0 else np.concatenate([joined, np.repeat(joined[:1], missing, axis=0)])
