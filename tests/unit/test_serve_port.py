"""The port `serve --workers N` holds (apps/serving/workers.reserve_port): shared with its own workers, never
with another server."""
from __future__ import annotations

import socket

import pytest

from apps.serving.workers import reserve_port


def test_a_port_another_serve_with_workers_listens_on_is_refused():
    with reserve_port("127.0.0.1", 0) as first, socket.socket() as worker:
        port = first.getsockname()[1]
        # its worker listens beside it, as SO_REUSEPORT allows (and as aiohttp binds it: both options)
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))
        worker.listen()
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", port)


def test_a_port_a_plain_server_listens_on_is_refused():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", server.getsockname()[1])
