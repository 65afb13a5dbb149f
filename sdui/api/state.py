"""Who is asking and what they chose: the FastAPI dependencies every route takes.

Each client is an owner: its HTTP Basic user, else its ``X-Client-Id`` header, else its address.
Its model and VAE choice (``POST options``) is its own; a client without one gets the server's
default, whatever others chose."""

from __future__ import annotations

import threading
from typing import Optional

from fastapi import Request

OWNER_HEADER = "x-client-id"


class ApiState:
    """Per-client API options (model and VAE choice); everything else lives in the engine and queue."""

    def __init__(self, engine, queue, settings):
        self.engine, self.queue, self.settings = engine, queue, settings
        self._model: dict[str, str] = {}
        self._vae: dict[str, str] = {}
        self._lock = threading.Lock()

    def model_for(self, owner: str) -> Optional[str]:
        """The client's checkpoint choice; None = the server's default."""
        with self._lock:
            return self._model.get(owner)

    def set_model(self, owner: str, name: str) -> None:
        entry = self.engine.find_model(name)  # a listed name only; raises UnknownModelError
        with self._lock:
            self._model[owner] = entry.name

    def vae_for(self, owner: str) -> Optional[str]:
        """The client's "SD VAE" choice; None = the server's default."""
        with self._lock:
            return self._vae.get(owner)

    def set_vae(self, owner: str, name: str) -> None:
        name = self.engine.check_vae_choice(name)  # raises UnknownModelError listing the VAEs
        with self._lock:
            self._vae[owner] = name


def api_state(request: Request) -> ApiState:
    """Dependency: the app's ApiState (made by ``sdui.api.install``)."""
    return request.app.state.api


def owner_of(request: Request) -> str:
    """Dependency: the queue owner of this client."""
    user = getattr(request.state, "user", None)
    if user:
        return f"user:{user}"
    cid = request.headers.get(OWNER_HEADER)
    if cid:
        return f"client:{cid[:64]}"
    return f"client:{request.client.host if request.client else 'unknown'}"
