"""One ASGI app: security (auth) in front, the A1111-compatible API under /sdapi/v1, the Gradio
studio at /. ``serve(settings)`` runs it with uvicorn."""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from . import __version__
from .config import Settings
from .engine import Engine
from .jobs import JobQueue

log = logging.getLogger(__name__)


def parse_credentials(text: Optional[str]) -> list[tuple[str, str]]:
    """``user:pass[,user2:pass2]`` (A1111's format); also one pair per line."""
    out = []
    for part in (text or "").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise ValueError(f"credentials entry {part.split(':')[0]!r} has no ':password' part (expected user:pass)")
        user, pw = part.split(":", 1)
        out.append((user.strip(), pw.strip()))
    return out


def ui_credentials(settings: Settings) -> list[tuple[str, str]]:
    creds = parse_credentials(settings.gradio_auth)
    if settings.gradio_auth_path:
        creds += parse_credentials(Path(settings.gradio_auth_path).read_text(encoding="utf-8"))
    return creds


def api_credentials(settings: Settings) -> list[tuple[str, str]]:
    """--api-auth; with --gradio-auth and no --api-auth the API takes the same credentials."""
    return parse_credentials(settings.api_auth) or ui_credentials(settings)


def _basic_user(request: Request, creds: list[tuple[str, str]]) -> Optional[str]:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, pw = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    ok = False
    for u, p in creds:  # compare all, in constant time each, so timing does not reveal which failed
        ok |= secrets.compare_digest(u.encode(), user.encode()) & secrets.compare_digest(p.encode(), pw.encode())
    return user if ok else None


def create_app(settings: Settings, engine: Optional[Engine] = None, queue: Optional[JobQueue] = None,
               with_ui: bool = True) -> FastAPI:
    """The whole server as one app (tests get one from here, ``serve`` runs one)."""
    engine = engine or Engine(settings)
    admins = tuple(u for u, _ in api_credentials(settings))[:1]  # the first credential is the admin
    queue = queue or JobQueue(engine, max_queue=settings.queue_size, admins=tuple(f"user:{a}" for a in admins))
    app = FastAPI(title="sdui", version=__version__,
                  description="A local Stable Diffusion studio. `/sdapi/v1/*` follows AUTOMATIC1111's API.")
    app.state.engine, app.state.queue, app.state.settings = engine, queue, settings
    api_creds = api_credentials(settings)

    @app.middleware("http")
    async def api_auth(request: Request, call_next):
        path = request.url.path
        protected = path.startswith("/sdapi/") or path in ("/docs", "/openapi.json", "/redoc")
        if protected and api_creds:
            user = _basic_user(request, api_creds)
            if user is None:
                return JSONResponse(status_code=401, headers={"WWW-Authenticate": 'Basic realm="sdui"'},
                                    content={"error": "Unauthorized", "detail": "Incorrect username or password",
                                             "body": "", "errors": "Incorrect username or password"})
            request.state.user = user
        return await call_next(request)

    if settings.api:
        from .api.routes import ApiState, build_router, install_error_handlers

        install_error_handlers(app)
        app.include_router(build_router(ApiState(engine, queue, settings)))

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        return {"ok": True, "version": __version__, "queue": queue.pending_count}

    queue.start()  # the worker is started by making the app, never by importing a module

    if with_ui:
        from .ui.app import mount_ui

        app = mount_ui(app, engine, queue, settings, ui_credentials(settings))
    else:
        @app.get("/", include_in_schema=False)
        def root():
            return RedirectResponse("/docs")

    return app


def lan_addresses() -> list[str]:
    addrs = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not info[4][0].startswith("127."):
                addrs.add(info[4][0])
    except OSError:
        pass
    return sorted(addrs)


def serve(settings: Settings) -> int:
    import uvicorn

    try:
        creds = ui_credentials(settings)
        api_credentials(settings)
    except (ValueError, OSError) as e:
        print(f"sdui: error: {e}", file=sys.stderr)
        return 2
    host = "0.0.0.0" if settings.listen else "127.0.0.1"
    app = create_app(settings)
    print(f"sdui {__version__}: open http://127.0.0.1:{settings.port}/ in your browser")
    if settings.listen:
        for addr in lan_addresses():
            print(f"  on the LAN: http://{addr}:{settings.port}/")
        if not creds:
            print("WARNING: --listen without --gradio-auth: anyone on your network can use this machine's GPU "
                  "and see what it makes. Add --gradio-auth user:password.", file=sys.stderr)
    if settings.api:
        print(f"  API: http://127.0.0.1:{settings.port}/sdapi/v1/  (docs: /docs)")
    if settings.open_browser:
        threading.Timer(2.0, lambda: webbrowser.open(f"http://127.0.0.1:{settings.port}/")).start()
    uvicorn.run(app, host=host, port=settings.port, log_level="warning")
    return 0


def main(argv=None) -> int:
    import argparse

    from . import config

    parser = argparse.ArgumentParser(prog="app.py", description="sdui: a local Stable Diffusion studio in your browser.")
    config.add_arguments(parser, groups=("models", "server"))
    args = parser.parse_args(argv)
    return serve(config.settings_from_args(args))
