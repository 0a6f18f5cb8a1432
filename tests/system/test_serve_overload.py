"""Admission control by time (`serve --max-queue-delay-ms`): under an open-loop burst of about twice what the
server can answer, a good part is refused (503, TF Serving's error JSON) and accepted ones wait about the
delay bound, not the burst's backlog.

A real server process (test_serve's tiny model) and a real asyncio HTTP client on 127.0.0.1. The queue's hard
cap (--max-enqueued-batches) is set out of reach, so only the check by time can keep the waits bounded.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
from support.serving import TEXTS, Server, stop

from components.pusher.executor import publish_version

ROWS = 1024  # texts per request: a model call long enough to time, few enough requests for a Python client
DELAY_MS = 100
PATH = "/v1/models/agnews:predict"


async def _closed_loop(port: int, body: bytes, clients: int, seconds: float) -> float:
    """Requests answered per second by `clients` clients each sending its next request when answered."""
    answered = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while time.monotonic() < deadline:
            async with session.post(f"http://127.0.0.1:{port}{PATH}", data=body) as response:
                await response.read()
                assert response.status == 200, await response.text()
                answered += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return answered / (time.monotonic() - started)


async def _open_loop(port: int, body: bytes, rate: float, seconds: float) -> list[tuple[int, float, dict]]:
    """Sends a request every 1/rate seconds whatever the answers do; (status, seconds to answer, body)
    each."""
    async def one(session: aiohttp.ClientSession) -> tuple[int, float, dict]:
        started = time.monotonic()
        async with session.post(f"http://127.0.0.1:{port}{PATH}", data=body) as response:
            status = response.status  # the answer's head: when the server decided
            seconds = time.monotonic() - started
            return status, seconds, json.loads(await response.read())

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        started, tasks = time.monotonic(), []
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(session)))
        return await asyncio.gather(*tasks)


def test_under_2x_overload_refusals_are_fast_and_accepted_waits_stay_bounded(tmp_path, models):
    serving_dir = tmp_path / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--max-batch-size", str(ROWS), "--max-enqueued-batches", "100000",
                    "--max-queue-delay-ms", str(DELAY_MS), "--max-request-bytes", str(8 << 20))
    try:
        body = json.dumps({"instances": (TEXTS * ROWS)[:ROWS]}).encode()
        asyncio.run(_closed_loop(server.port, body, clients=1, seconds=1.0))  # warm-up, seeds the estimate
        # One client per batch thread (2 cores): the server kept busy with nothing queued.
        capacity = asyncio.run(_closed_loop(server.port, body, clients=2, seconds=3.0))
        answers = asyncio.run(_open_loop(server.port, body, rate=2 * capacity, seconds=4.0))
    finally:
        stop(server)
    refused = [seconds for status, seconds, _ in answers if status == 503]
    accepted = np.array([seconds for status, seconds, _ in answers if status == 200])
    assert {status for status, _, _ in answers} <= {200, 503}, [a for a in answers if a[0] not in (200, 503)][
        :3
    ]
    for status, _, answer in answers:
        if status == 503:
            assert list(answer) == ["error"] and "overloaded" in answer["error"], answer
        else:
            assert len(answer["predictions"]) == ROWS
    call = 2 / capacity  # one request's time with the server just busy: about one model call
    refused_p50, accepted_p50 = np.percentile(refused or [np.inf], 50), np.percentile(accepted, 50)
    summary = (
        f"capacity {capacity:.1f} req/s (one call ~{call * 1e3:.0f} ms), offered {2 * capacity:.1f} req/s; "
        f"{len(refused)} refused (p50 {refused_p50 * 1e3:.1f} ms, max {max(refused, default=0) * 1e3:.1f} "
        f"ms), {len(accepted)} accepted (p50 {accepted_p50 * 1e3:.0f} ms, "
        f"p99 {np.percentile(accepted, 99) * 1e3:.0f} ms)"
    )
    print(summary)
    # Offered twice the capacity: a good part is refused (with the check off, none is: the cap is out of
    # reach).
    assert len(refused) >= len(answers) // 5 and len(accepted) >= len(answers) // 10, summary
    # How fast the 503s come is printed, not asserted: at 100+ requests/s on a loaded 2-core machine the
    # client-side time is mostly connection handling on the server's event loop and the Python client's own
    # lag (refused p50 was 29 ms in one run, 703 ms in the next), which admission control does not change.
    # Accepted requests wait about the delay bound, not the whole burst's backlog (seconds with the check
    # off). Generous for a loaded 2-core machine: the client shares the cores with the server and other work.
    assert accepted_p50 < DELAY_MS / 1e3 + 3 * call + 0.3, summary
