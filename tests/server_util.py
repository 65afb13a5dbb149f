"""Run the real server (uvicorn, real sockets) on a free loopback port for a test."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app, port: int | None = None):
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        queue = getattr(app.state, "queue", None)
        if queue is not None:
            queue.stop()


def client(base: str, **kw) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=300, **kw)
