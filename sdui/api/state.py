"""Who is asking and what they chose: the FastAPI dependencies every route takes.

Each client is an owner: its HTTP Basic user, else its ``X-Client-Id`` header, else its address.
Its model and VAE choice and its other A1111 options (``POST options``) are its own; a client
without one gets the server's default, whatever others chose. The most recently active
``MAX_CLIENTS`` clients' choices are kept.

The admin (who may stop the server) is the first ``--api-auth`` user; without credentials, a client
on this machine (a loopback address)."""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from typing import Any, Optional

from fastapi import Request

OWNER_HEADER = "x-client-id"
MAX_CLIENTS = 1024


class _Recent(OrderedDict):
    """A per-client table that forgets the least recently written client beyond MAX_CLIENTS."""

    def put(self, owner: str, value) -> None:
        self[owner] = value
        self.move_to_end(owner)
        while len(self) > MAX_CLIENTS:
            self.popitem(last=False)


class ApiState:
    """Per-client API options (model and VAE choice, A1111 options); everything else lives in the
    engine and queue."""

    def __init__(self, engine, queue, settings):
        self.engine, self.queue, self.settings = engine, queue, settings
        self._model: _Recent = _Recent()
        self._vae: _Recent = _Recent()
        self._options: _Recent = _Recent()
        self._lock = threading.Lock()

    def model_for(self, owner: str) -> Optional[str]:
        """The client's checkpoint choice; None = the server's default."""
        with self._lock:
            return self._model.get(owner)

    def set_model(self, owner: str, name: str) -> None:
        entry = self.engine.find_model(name)  # a listed name only; raises UnknownModelError
        with self._lock:
            self._model.put(owner, entry.name)

    def vae_for(self, owner: str) -> Optional[str]:
        """The client's "SD VAE" choice; None = the server's default."""
        with self._lock:
            return self._vae.get(owner)

    def set_vae(self, owner: str, name: str) -> None:
        name = self.engine.check_vae_choice(name)  # raises UnknownModelError listing the VAEs
        with self._lock:
            self._vae.put(owner, name)

    def stored_options(self, owner: str) -> dict[str, Any]:
        """The A1111 options this client set (``POST options``), other than model and VAE."""
        with self._lock:
            return dict(self._options.get(owner, {}))

    def store_options(self, owner: str, changes: dict[str, Any]) -> None:
        if not changes:
            return
        with self._lock:
            self._options.put(owner, {**self._options.get(owner, {}), **changes})

    def is_admin(self, request: Request) -> bool:
        """The first credential's user; with no credentials, a client on this machine."""
        if self.queue.admins:
            return owner_of(request) in self.queue.admins
        try:
            return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
        except ValueError:
            return False


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
