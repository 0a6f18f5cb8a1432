"""`serve` runs its server coroutine on uvloop's event loop (the serve extra installs uvloop: 1.14x the
texts/s of asyncio's loop at 16 connections x 1 text, benchmarks/results/serve_uvloop.md). Observed from
inside the coroutine the server runs: the loop that actually runs it."""
from __future__ import annotations

import asyncio

import uvloop

from apps.serving.http import _run_event_loop


def test_the_server_coroutine_runs_on_uvloop():
    seen = []

    async def main():
        seen.append(type(asyncio.get_running_loop()))

    _run_event_loop(main())
    assert seen == [uvloop.Loop]
