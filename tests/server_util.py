"""Serve an app to a test: in process (``in_process``: Starlette's TestClient, no socket, the
default) or as the real server (``running_server``: uvicorn on a free loopback port, real sockets;
for the few tests that need a published client library or a browser).

Either way the app is then shut down: its job queue stopped and its models released.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from contextlib import contextmanager

import httpx

# In-process requests name the server as a browser on this machine would: a loopback Host with the
# default port (the server refuses Host names it does not serve).
LOCAL_BASE = "http://127.0.0.1:7860"


def png_b64(img) -> str:
    """A PIL image as the API takes images: base64 of its PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown_app(app) -> None:
    """Stop the app's job queue and free its models (what a server's exit does)."""
    queue = getattr(app.state, "queue", None)
    if queue is not None:
        queue.stop()
    engine = getattr(app.state, "engine", None)
    if engine is not None:
        engine.manager.release_all()


def app_client(app, **kw):
    """An in-process HTTP client for ``app`` (no socket), addressed as ``LOCAL_BASE``."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL_BASE, **kw)


@contextmanager
def in_process(app, **kw):
    """``with in_process(app) as c:`` an in-process client; the app is shut down afterwards."""
    try:
        with app_client(app, **kw) as c:
            yield c
    finally:
        shutdown_app(app)


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
        shutdown_app(app)


def client(base: str, **kw) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=300, **kw)
