"""The port `serve --workers N` holds (apps/serving/workers.reserve_port): shared with its own workers, never
with another server."""
from __future__ import annotations

import socket

import pytest

from apps.serving.workers import reserve_port


def test_a_port_workers_of_another_serve_listen_on_is_refused_even_when_their_supervisor_is_gone():
    """Workers whose supervisor was killed answer on until they notice: no claim is held, but their
    listening sockets (both options, as aiohttp binds them with reuse_port) still keep the port."""
    with socket.socket() as worker:
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", 0))
        worker.listen()
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", worker.getsockname()[1])


def test_a_port_a_plain_server_listens_on_is_refused():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", server.getsockname()[1])


def test_a_port_another_serve_with_workers_holds_is_refused_while_its_workers_still_load():
    """No worker of the first listens yet (they are loading their model): the second is refused all the same,
    and gets the port once the first has let it go."""
    with reserve_port("127.0.0.1", 0) as first:
        port = first.port
        with pytest.raises(OSError, match=f"another `serve --workers` holds port {port}"):
            reserve_port("127.0.0.1", port)
    with reserve_port("127.0.0.1", port) as again:
        assert again.port == port
