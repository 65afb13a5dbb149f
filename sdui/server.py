"""One ASGI app: security in front, the A1111-compatible API under /sdapi/v1, the Gradio studio at /.
``serve(settings)`` runs it with uvicorn.

Security rules, outermost first (the middlewares live in ``sdui.security``; each request meets them
in this order, and every refusal is one sentence in A1111's error shape):

1. Host (DNS rebinding). A request is answered only when its ``Host`` names this server: a loopback
   name or address (``localhost``, ``127.x``, ``[::1]``), a name from ``--allowed-hosts`` (``*``
   answers any), and with ``--listen`` also the machine's hostname (and ``<hostname>.local``) and any
   IP address (addresses cannot be rebound). Anything else: 400 naming the host and the flag. A
   request with no ``Host`` at all (HTTP/1.0; browsers always send one) is let through.
2. CORS. Only this server's own origins (``http://<served name>:<port>``) and those named by
   ``--cors-allow-origins`` get ``Access-Control-Allow-Origin`` (with credentials); a foreign
   origin's preflight gets none, whatever the ``Host``. Installing Starlette's ``CORSMiddleware`` on
   this app is Gradio's documented switch for turning its own origin-reflecting CORS off.
3. Login cookies. Gradio's ``access-token*`` cookies are rewritten to ``HttpOnly; SameSite=Lax``.
4. Origin (cross-site requests). Every state-changing request (any method but GET, HEAD, OPTIONS,
   on every route: API, Gradio, login) and every WebSocket handshake that carries an ``Origin``
   must come from this server's own origin (the one its ``Host`` names) or an allowed one; ``null``
   never matches. Browsers always send ``Origin`` on such requests, so a form or ``text/plain``
   POST from another site's page to ``/sdapi/v1/interrupt`` is refused with 403. A request with no
   ``Origin`` is a program (A1111 clients post ``/interrupt`` and ``/skip`` with no body) and is
   let through, unless the browser marks it ``Sec-Fetch-Site: cross-site``. A JSON content type or
   a custom header is therefore not demanded: it would break those clients and adds nothing once
   ``Origin`` is checked.
5. Size. A body over ``--max-request-mb`` is refused with 413 (by ``Content-Length`` up front, by
   counting for chunked bodies); Gradio's upload route gets the same cap as ``max_file_size``. A
   JSON body nested deeper than 64 levels is refused with 400 instead of crashing validation.
6. Login gate (``--gradio-auth``). Before login only the login page and its static files are served,
   and the page's embedded API description is emptied; the rest of the UI answers 401.
7. API auth. ``/sdapi/``, ``/docs`` and ``/openapi.json`` take HTTP Basic credentials
   (``--api-auth``, else the ``--gradio-auth`` users).
"""

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
from fastapi.responses import RedirectResponse
from starlette.middleware.cors import CORSMiddleware

from . import __version__
from .api.errors import unauthorized
from .config import Settings
from .engine import Engine
from .jobs import JobQueue
from .security import (LOOPBACK_NAMES, BodyLimit, HostCheck, LoginCookieFlags, LoginGate, OriginCheck, origin_for,
                       split_list)

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
    if queue is None:
        pool = make_workers(engine, settings)
        queue = JobQueue(engine, max_queue=settings.queue_size, admins=tuple(f"user:{a}" for a in admins), workers=pool)
        if any(w.remote for w in pool):
            from . import cluster

            cluster.watch(queue, engine, settings)  # actors that join the Ray cluster later take jobs too
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
                if path.startswith("/sdapi/"):  # a program failing; a browser on /docs asks for the password first
                    host = request.client.host if request.client else "unknown"
                    logging.getLogger("sdui.api").warning("client:%s %s %s -> 401: no or wrong HTTP Basic credentials "
                                                          "(--api-auth)", host, request.method, path)
                return unauthorized()
            request.state.user = user
        return await call_next(request)

    if settings.api:
        from . import api

        api.install(app, engine, queue, settings)

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

    add_security(app, settings)
    return app


def make_workers(engine: Engine, settings: Settings) -> list:
    """The queue's workers: Ray actors with ``--ray-address`` (when Ray is installed), else one per
    local device (``--devices``; by default the engine alone, as a single-device studio always ran)."""
    from . import workers

    if settings.ray_address:
        try:
            from . import cluster

            return cluster.ray_workers(engine, settings)
        except cluster.RayMissing as e:
            log.warning("%s; running the embedded worker instead", e)
    return workers.local_workers(engine, settings)


def served_names(settings: Settings) -> list[str]:
    """Host names this server answers to (rule 1 of the module docstring)."""
    names = list(LOOPBACK_NAMES)
    if settings.listen:
        host = socket.gethostname().lower()
        short = host.split(".")[0]
        names += lan_addresses() + sorted({host, short, f"{short}.local"} - {""})
    return names + split_list(settings.allowed_hosts)


def allowed_origins(settings: Settings, names: list[str]) -> list[str]:
    """This server's own origins (one per served name), then the owner's --cors-allow-origins."""
    own = [origin_for(name, settings.port) for name in names if name != "*"]
    return own + split_list(settings.cors_allow_origins)


def add_security(app: FastAPI, settings: Settings) -> None:
    """Stack the middlewares of the module docstring; the last one added runs first."""
    names = served_names(settings)
    origins = allowed_origins(settings, names)
    session_user = getattr(app.state, "ui_session_user", None)  # set by mount_ui when the UI has a login
    if session_user is not None:
        app.add_middleware(LoginGate, session_user=session_user)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_mb * 2**20)
    app.add_middleware(OriginCheck, allowed_origins=origins)
    app.add_middleware(LoginCookieFlags)
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"],
                       allow_headers=["*"], allow_private_network=True)
    app.add_middleware(HostCheck, names=names, any_address=settings.listen)


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback and link-local: those of its network
    interfaces, and only those (what the hostname resolves to may be 127.0.1.1, a stale /etc/hosts
    line or a DNS answer for another machine: not an address this server can be reached at)."""
    import psutil

    addrs = set()
    try:
        for nics in psutil.net_if_addrs().values():
            addrs.update(a.address for a in nics if a.family == socket.AF_INET)
    except OSError:
        pass
    return sorted(a for a in addrs if not a.startswith(("127.", "169.254.")))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    """sdui's log lines (the API's one line per request among them) on the console at ``--log-level``.
    A handler goes on the ``sdui`` logger unless the root logger already has one (an embedding
    program's logging set-up is left alone); libraries keep their own levels."""
    logger = logging.getLogger("sdui")
    logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not any(getattr(h, "_sdui", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        handler._sdui = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def serve(settings: Settings) -> int:
    import uvicorn

    configure_logging(settings.log_level)
    try:
        creds = ui_credentials(settings)
        api_credentials(settings)
    except (ValueError, OSError) as e:
        print(f"sdui: error: {e}", file=sys.stderr)
        return 2
    host = "0.0.0.0" if settings.listen else "127.0.0.1"
    try:
        app = create_app(settings)
    except (ValueError, RuntimeError) as e:  # a bad --devices, a Ray cluster that is not there
        if type(e).__name__ not in ("ValueError", "ClusterError"):
            raise
        print(f"sdui: error: {e}", file=sys.stderr)
        return 2
    print(f"sdui {__version__}: open http://127.0.0.1:{settings.port}/ in your browser")
    if settings.listen:
        for addr in lan_addresses():
            print(f"  on the LAN: http://{addr}:{settings.port}/")
        if not creds:
            print("WARNING: --listen without --gradio-auth: anyone on your network can use this machine's GPU "
                  "and see what it makes. Add --gradio-auth user:password.", file=sys.stderr)
    for flag, value in (("--allowed-hosts", settings.allowed_hosts),
                        ("--cors-allow-origins", settings.cors_allow_origins)):
        if "*" in split_list(value):
            print(f"WARNING: {flag} '*' turns off a protection: any web page you visit may be able to use this "
                  "server as you (see the README's Security section).", file=sys.stderr)
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
