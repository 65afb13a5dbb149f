"""One console line per API request, so a user whose client fails sees why (logger ``sdui.api``).

Every route of the API is a ``LoggedRoute``: it times the request and logs, once it is answered,
who asked (the client's owner id), the route, what the route noted about the work (size, steps,
images), the status and the seconds taken. Requests that do work (POST) log at INFO, look-ups (GET,
polled every second by some clients) at DEBUG; every refused or failed request logs at WARNING (4xx)
or ERROR (5xx) with the reason its client was given. Prompts and images are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable, Optional

from fastapi import Request, Response
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute

from ..types import SduiError, redact_paths
from .errors import status_for
from .state import owner_of

log = logging.getLogger("sdui.api")

_NOTE = "sdui_log_note"
MAX_REASON = 300


def note(request: Request, text: str) -> None:
    """What this request asks for, in a few words ("txt2img 512x512, 20 steps, 1 image"), for its log line."""
    setattr(request.state, _NOTE, text)


def _failure(exc: BaseException) -> tuple[int, str]:
    """(status, reason) of an exception a route raised, as the error handlers will answer it."""
    if isinstance(exc, RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body')}: {e.get('msg')}" for e in exc.errors()]
        return 422, "; ".join(parts)
    if isinstance(exc, SduiError):
        return status_for(type(exc).__name__), redact_paths(str(exc))
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    return 500, f"{type(exc).__name__}: {exc}"


def _reason(response: Response) -> Optional[str]:
    """The ``detail`` of an A1111-shaped error answer."""
    try:
        body = json.loads(bytes(response.body))
    except (AttributeError, TypeError, ValueError):
        return None
    return str(body.get("detail")) if isinstance(body, dict) and body.get("detail") else None


def _write(request: Request, status: int, seconds: float, reason: Optional[str]) -> None:
    if status >= 500 and status != 501:  # 501: a route sdui does not implement, not a failure
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    else:
        level = logging.INFO if request.method == "POST" else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    what = getattr(request.state, _NOTE, "")
    line = f"{owner_of(request)} {request.method} {request.url.path}{' ' + what if what else ''} -> {status} in {seconds:.2f}s"
    if reason:
        line += ": " + (reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "...")
    log.log(level, "%s", line)


class LoggedRoute(APIRoute):
    """An API route that logs one line per request (see the module docstring)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def logged(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                status, reason = _failure(exc)
                _write(request, status, time.perf_counter() - t0, reason)
                raise
            status = response.status_code
            _write(request, status, time.perf_counter() - t0, _reason(response) if status >= 400 else None)
            return response

        return logged
