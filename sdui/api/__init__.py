"""The A1111-compatible REST API under ``/sdapi/v1``, served from the shared job queue.

Routes are module-level functions in ``generation``, ``options`` and ``listing``; they get the
client's owner id and the per-client state through FastAPI dependencies (``state``), convert A1111
bodies in ``convert`` and answer errors in A1111's shape (``errors``). Never imports gradio."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from . import generation, listing, options
from .errors import install_error_handlers
from .state import ApiState

PREFIX = "/sdapi/v1"


def install(app: FastAPI, engine, queue, settings) -> None:
    """Serve the API on ``app``: per-client state, the routes, and A1111-shaped errors."""
    app.state.api = ApiState(engine, queue, settings)
    router = APIRouter(prefix=PREFIX, tags=["A1111-compatible API"])
    for module in (generation, options, listing):
        router.include_router(module.router)
    app.include_router(router)
    install_error_handlers(app)
