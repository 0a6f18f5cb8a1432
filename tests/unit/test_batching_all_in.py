"""The batcher of `agnews-pipeline serve` (apps/serving/batching.py) stops waiting for more requests once
every client seen lately is waiting: the requests queued and in running batches are as many as the most
requests the server held over the last 100 ms. A real Batcher on a real event loop and batch threads; the
model is a numpy function, so what is observed is which rows each call got and when."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from apps.serving.batching import Batcher, BatchingOptions

# Long, so that a batch dispatched well before it was not dispatched by the timeout; below the 100 ms rate
# window, as from there on every batch waits for the timeout (TF Serving's batching).
TIMEOUT_S = 0.09
GAP_S = 0.002  # between a wave's requests
OPENER = 100  # a request answered at once (nothing else came lately) that makes the wave's arrivals a load


class Model:
    """Doubles its input; records each call's rows; the call with row 0 waits for `release` when `hold`."""

    def __init__(self, hold: bool = False):
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.hold = hold

    def __call__(self, servable, signature, inputs):
        self.calls.append([int(value) for value in inputs["x"][:, 0]])
        if self.hold and 0 in self.calls[-1]:
            self.release.wait(10)
        return {"y": inputs["x"] * 2}


def batcher(model: Model, held: list[int], threads: int) -> Batcher:
    options = BatchingOptions(batch_timeout_micros=int(TIMEOUT_S * 1e6), max_queue_delay_ms=0,
                              num_batch_threads=threads, max_batch_size=64)
    made = Batcher(options, model)
    made.requests_held = lambda: held[0]
    return made


async def opener(made: Batcher) -> None:
    await answered_within([made.submit("servable", "serving_default", {"x": np.array([[OPENER]])}, rows=1)],
                          OPENER, time.monotonic())


async def wave(made: Batcher, first: int, count: int) -> tuple[list[asyncio.Future], float]:
    """Submits requests `first`..`first + count - 1` (one row each) GAP_S apart; returns them and when the
    last was submitted."""
    futures = []
    for value in range(first, first + count):
        if futures:
            await asyncio.sleep(GAP_S)
        futures.append(made.submit("servable", "serving_default", {"x": np.array([[value]])}, rows=1))
    return futures, time.monotonic()


async def answered_within(futures: list[asyncio.Future], first: int, since: float) -> float:
    """Seconds from `since` until every request got its own row back (requests first, first + 1, ...)."""
    results = await asyncio.wait_for(asyncio.gather(*futures), timeout=5)
    assert [int(result["y"][0, 0]) for result in results] == [2 * value for value in
                                                              range(first, first + len(futures))]
    return time.monotonic() - since


def test_a_wave_of_every_client_is_one_batch_at_once_and_unknown_clients_wait_for_the_timeout():
    async def scenario(held: list[int]) -> tuple[list[list[int]], float]:
        model = Model()
        made = batcher(model, held, threads=1)
        await opener(made)
        futures, last = await wave(made, 0, 8)
        seconds = await answered_within(futures, 0, last)
        made.shutdown()
        return model.calls, seconds

    # The server holds the 8 requests: the 8th completes the wave.
    calls, seconds = asyncio.run(scenario([8]))
    assert calls == [[OPENER], list(range(8))]
    assert seconds < TIMEOUT_S / 2, seconds
    # One client more than came: the batch waits for it, up to the timeout (from the first request's arrival).
    calls, seconds = asyncio.run(scenario([9]))
    assert calls == [[OPENER], list(range(8))]
    assert seconds > TIMEOUT_S - 8 * GAP_S - 0.01, seconds
    # The server's count unknown (0): as before, up to the timeout.
    calls, seconds = asyncio.run(scenario([0]))
    assert calls == [[OPENER], list(range(8))]
    assert seconds > TIMEOUT_S - 8 * GAP_S - 0.01, seconds


def test_requests_in_a_running_batch_count_as_waiting():
    async def scenario() -> tuple[Model, float, bool]:
        model = Model(hold=True)
        held = [4]
        made = batcher(model, held, threads=2)
        await opener(made)
        first, _ = await wave(made, 0, 4)  # all 4 clients: a batch at once, held in the model
        held[0] = 8
        second, last = await wave(made, 10, 4)  # with the 4 running, all 8 are in
        seconds = await answered_within(second, 10, last)
        running = not first[0].done()
        model.release.set()
        await answered_within(first, 0, last)
        made.shutdown()
        return model, seconds, running

    model, seconds, first_still_running = asyncio.run(scenario())
    assert model.calls == [[OPENER], [0, 1, 2, 3], [10, 11, 12, 13]]
    assert first_still_running
    assert seconds < TIMEOUT_S / 2, seconds
