"""A1111's options (each client's own; see ``client_options``), the server's flags (secrets hidden)
and, for the admin when the owner allows it (``--api-server-stop``), stopping the server."""

from __future__ import annotations

import logging
import signal
import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from . import a1111_flags, client_options
from .errors import error_response
from .request_log import LoggedRoute, note
from .state import ApiState, api_state, owner_of

router = APIRouter(route_class=LoggedRoute)
log = logging.getLogger("sdui.api")


@router.get("/options")
def get_options(state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """This client's options: every key of A1111's settings, with the value sdui uses, then this
    client's own choices (its checkpoint and VAE: the server's default when it chose none, never
    another client's)."""
    return client_options.options_for(state, owner)


@router.post("/options")
def set_options(http: Request, body: dict, state: ApiState = Depends(api_state),
                owner: str = Depends(owner_of)):
    """Change this client's options; the whole dict ``GET options`` gave may be sent back. Applied
    here: ``sd_model_checkpoint`` (or ``sd_checkpoint_hash``), ``sd_vae``, ``samples_save``,
    ``samples_format`` (png, jpg, webp), ``live_previews_enable`` and ``show_progress_every_n_steps``.
    Other A1111 keys are stored (``GET`` shows them) but change nothing here, and are listed in
    ``ignored`` (clip skip and ``eta_noise_seed_delta`` among them); keys A1111 does not have are
    listed in ``ignored`` and ``unknown`` and not stored. Every value must have its A1111 type (422);
    output folders and file-name patterns may only be sent back unchanged (403). Nothing is applied
    when anything is refused."""
    note(http, f"{len(body)} key(s)")
    return client_options.apply_options(state, owner, body).answer()


@router.get("/cmd-flags")
def cmd_flags(state: ApiState = Depends(api_state)):
    """The server's flags in A1111's shape: A1111's flag names, with sdui's value where the flag means
    the same here (A1111's default otherwise), then sdui's own; credentials are shown as ``***``."""
    return a1111_flags.flags(state.settings, state.engine.limits.max_batch_count)


# ---- stopping the server (admin only, and only with --api-server-stop) ---------------------------
def stop_process() -> None:
    """Stop this server as Ctrl+C would (uvicorn shuts down), once the answer has gone out."""
    threading.Timer(0.5, signal.raise_signal, args=(signal.SIGINT,)).start()


def _refusal(state: ApiState, http: Request, route: str):
    """None if this client may stop the server; else the answer: 404 without ``--api-server-stop``
    (A1111 does not have the route then), 403 for anyone but the admin."""
    if not state.settings.api_server_stop:
        return error_response(404, f"the {route} route is off: the server's owner allows it with --api-server-stop",
                              "NotFound")
    if not state.is_admin(http):
        return error_response(403, f"the {route} route is for the admin only (the first --api-auth user; without "
                                   "credentials, a client on this machine)", "Forbidden")
    return None


def _stop(state: ApiState, http: Request, owner: str, route: str):
    refused = _refusal(state, http, route)
    if refused is not None:
        return refused
    log.warning("%s asked to stop the server (%s): stopping", owner, route)
    stop_process()
    return PlainTextResponse("Stopping.")


@router.post("/server-kill")
def server_kill(http: Request, state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Stop the server (admin only, and only with ``--api-server-stop``; otherwise 404, as A1111)."""
    return _stop(state, http, owner, "server-kill")


@router.post("/server-stop")
def server_stop(http: Request, state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Stop the server (admin only, and only with ``--api-server-stop``; otherwise 404, as A1111)."""
    return _stop(state, http, owner, "server-stop")


@router.post("/server-restart")
def server_restart(http: Request, state: ApiState = Depends(api_state)):
    """Restart the server: sdui cannot restart itself, so the admin gets 501, as A1111 answers when it
    was not started by its launcher script (404 without ``--api-server-stop``)."""
    refused = _refusal(state, http, "server-restart")
    if refused is not None:
        return refused
    return error_response(501, "sdui cannot restart itself: stop it (server-stop) and start it again", "NotImplemented")
