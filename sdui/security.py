"""HTTP hardening for the one ASGI app: small pure-ASGI middlewares, each stopping one attack.

``sdui.server`` decides the policy (which hosts and origins are ours, the size limit) and stacks
them; this module only enforces it. Every refusal is one sentence in AUTOMATIC1111's error shape
(``{"error", "detail", "body", "errors"}``), so A1111 clients and FastAPI-style clients (which read
``detail``) both show it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_JSON_DEPTH = 64
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# ---- names and origins -------------------------------------------------------------------------------
def split_list(text: Optional[str]) -> list[str]:
    """A comma-separated flag value as a list of its non-empty entries."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def split_host(value: str) -> tuple[str, Optional[int]]:
    """``Host`` header value -> (lower-case name without brackets or trailing dot, port or None)."""
    value = value.strip().lower()
    port: Optional[int] = None
    if value.startswith("["):  # [v6] or [v6]:port
        name, _, rest = value[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif value.count(":") == 1:
        name, _, tail = value.partition(":")
        port = int(tail) if tail.isdigit() else None
    else:
        name = value  # a bare name, or a bare IPv6 address
    return name.rstrip("."), port


def ip_literal(name: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(name: str) -> bool:
    ip = ip_literal(name)
    return name == "localhost" or (ip is not None and ip.is_loopback)


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's ``Origin`` names the server the request reached (its ``Host``)."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    name, port = split_host(host)
    same_name = bool(parts.hostname) and parts.hostname.rstrip(".") == name
    return same_name and origin_port == (port or _DEFAULT_PORTS.get(parts.scheme))


def origin_for(name: str, port: int) -> str:
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, kind: str) -> None:
    """Answer with one sentence, or refuse a WebSocket handshake (the server answers it with 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await error_response(status, message, kind)(scope, receive, send)


# ---- the middlewares ---------------------------------------------------------------------------------
class HostCheck:
    """DNS rebinding: a hostile page whose name re-resolves to 127.0.0.1 (or to this machine's LAN
    address) reaches the studio with its own name in ``Host``; the browser then lets it read the
    answers, since to the browser it is same-origin. Only names this server serves are answered:
    loopback names, the names it was given (``--allowed-hosts``, and with ``--listen`` its own
    hostname), and, with ``--listen``, any IP address: an address cannot be rebound, so a request
    naming one was meant for whatever machine answers on it (this one, or a NAT/Docker host in front).
    A request without ``Host`` (HTTP/1.0, never a browser) is let through."""

    def __init__(self, app: ASGIApp, names: Iterable[str], any_address: bool, flag: str = "--allowed-hosts"):
        self.app, self.any_address, self.flag = app, any_address, flag
        self.names = {split_host(n)[0] for n in names}
        self.allow_all = "*" in self.names

    def allows(self, host: str) -> bool:
        name, _ = split_host(host)
        if self.allow_all or name in self.names or is_loopback(name):
            return True
        return self.any_address and ip_literal(name) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if host is not None and not self.allows(host):
                name = split_host(host)[0] or host
                await refuse(scope, receive, send, 400,
                             f"Host {name!r} is not a name this server answers to; if it should be, start sdui "
                             f"with {self.flag} {name}.", "InvalidHost")
                return
        await self.app(scope, receive, send)


class OriginCheck:
    """Cross-site request forgery: any page a user visits can make the browser send a "simple" POST
    (a form, ``text/plain``, no body) with the user's cookies to ``/sdapi/v1/interrupt``, ``/login`` or
    Gradio's queue, without being able to read the answer. Browsers put ``Origin`` on every POST, PUT,
    PATCH and DELETE (``null`` when they hide it), and on WebSocket handshakes, so a state-changing
    request whose ``Origin`` is neither this server's own (as named in ``Host``) nor one the owner
    allowed (``--cors-allow-origins``) is refused with 403. Requests with no ``Origin`` come from
    programs (A1111 clients post ``/interrupt`` with no body), not from another site's page; a
    browser that names the request ``Sec-Fetch-Site: cross-site`` without an ``Origin`` is still refused."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str], flag: str = "--cors-allow-origins"):
        self.app, self.flag = app, flag
        self.allowed = {o.rstrip("/") for o in allowed_origins}
        self.allow_all = "*" in self.allowed

    def allows(self, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site") not in ("cross-site", "same-site")
        if self.allow_all or origin.rstrip("/") in self.allowed:
            return True
        return origin != "null" and same_origin(origin, headers.get("host", ""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] == "websocket" or (scope["type"] == "http" and scope["method"] not in SAFE_METHODS)
        if checked:
            headers = Headers(scope=scope)
            if not self.allows(headers):
                origin = headers.get("origin") or "another site"
                await refuse(scope, receive, send, 403,
                             f"Cross-site request refused: {origin} may not send requests to this server "
                             f"(the owner can allow it with {self.flag}).", "Forbidden")
                return
        await self.app(scope, receive, send)


class LoginCookieFlags:
    """Gradio sets its login cookies ``SameSite=None``, so the browser attaches them to requests that
    other sites' pages make. Each ``access-token*`` cookie is rewritten to ``SameSite=Lax`` (sent on
    this server's own requests and on top-level navigation to it, never on another site's
    fetch/form POST) and ``HttpOnly`` (page scripts cannot read it)."""

    def __init__(self, app: ASGIApp, prefix: str = "access-token"):
        self.app, self.prefix = app, prefix

    def harden(self, cookie: str) -> str:
        name = cookie.split("=", 1)[0].strip()
        if not name.startswith(self.prefix):
            return cookie
        value, *attrs = [a.strip() for a in cookie.split(";")]
        kept = [a for a in attrs if a and a.split("=", 1)[0].strip().lower() not in ("samesite", "httponly")]
        return "; ".join([value, *kept, "HttpOnly", "SameSite=Lax"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, self.harden(v.decode("latin-1")).encode("latin-1"))
                                      if k.lower() == b"set-cookie" else (k, v)
                                      for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, send_hardened)


def _is_json(content_type: Optional[str]) -> bool:
    """FastAPI parses a body as JSON when it says so (``application/json``, ``application/*+json``)
    and also when it has no ``Content-Type`` at all."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than ``limit``, without parsing it: strings are
    cut out (C-speed regex), the brackets left are summed as +1/-1 steps (numpy, in slices)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    skeleton = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if skeleton.count(b"[") + skeleton.count(b"{") <= limit:
        return False
    import numpy as np

    steps = np.frombuffer(skeleton.translate(_STEPS), dtype=np.int8)
    depth = 0
    for start in range(0, len(steps), 1 << 20):
        running = np.cumsum(steps[start:start + (1 << 20)], dtype=np.int64) + depth
        if running.max() > limit:
            return True
        depth = int(running[-1])
    return False


async def _off_loop(check: Callable[[bytes], bool], body: bytes) -> bool:
    """Run a check of a big body on a worker thread, so other requests are not held up meanwhile."""
    if len(body) < 1 << 20:
        return check(body)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(check, body)


class BodyLimit:
    """Memory and disk exhaustion, and a crash: request bodies (API JSON, Gradio uploads) are capped
    at ``max_bytes`` for every route. A declared ``Content-Length`` over the cap is refused with 413
    before a byte is read (the server never delivers more than that length). A body sent without
    one (chunked) is read into memory, counting, and refused with 413 the moment it passes the cap,
    before the app sees any of it, so no partial upload lands on disk. JSON bodies are also checked
    for nesting: a txt2img request with ``override_settings`` nested 900 levels deep used to run the
    whole job and then answer 500 (pydantic cannot serialize the echoed parameters that deep), so a
    body nested deeper than ``MAX_JSON_DEPTH`` levels is refused with 400 before any work."""

    def __init__(self, app: ASGIApp, max_bytes: int, flag: str = "--max-request-mb"):
        self.app, self.max_bytes, self.flag = app, max_bytes, flag

    def too_large(self) -> str:
        return (f"Request body is larger than this server's limit of {self.max_bytes / 2**20:g} MB "
                f"(the owner sets it with {self.flag}).")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await refuse(scope, receive, send, 400, f"Content-Length {length!r} is not a number of bytes.",
                             "BadRequest")
                return
            if int(length) > self.max_bytes:
                await refuse(scope, receive, send, 413, self.too_large(), "PayloadTooLarge")
                return
        is_json = _is_json(headers.get("content-type"))
        if length is not None and not is_json:
            await self.app(scope, receive, send)  # streamed as it comes: at most Content-Length bytes
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await refuse(scope, receive, send, 413, self.too_large(), "PayloadTooLarge")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if is_json and await _off_loop(json_too_deep, body):
            await refuse(scope, receive, send, 400, f"JSON nested too deeply (at most {MAX_JSON_DEPTH} levels).",
                         "BadRequest")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


_API_INFO = re.compile(r"window\.gradio_api_info = .*?;</script>", re.DOTALL)
_NO_API_INFO = 'window.gradio_api_info = {"named_endpoints":{},"unnamed_endpoints":{}};</script>'
# Gradio's login form empties both boxes after a wrong password; this puts the user name back (and the
# cursor in the password box): after its POST to /login answers 400, the name it sent goes back into the
# first text box, with an input event so the form's own state has it too.
_KEEP_LOGIN_NAME = """<script>(() => {
  const plainFetch = window.fetch;
  window.fetch = async function (input, init) {
    const answer = await plainFetch.apply(this, arguments);
    try {
      const url = new URL(typeof input === "string" ? input : input.url, location.href);
      const body = init && init.body;
      if (answer.status === 400 && /\\/login\\/?$/.test(url.pathname) && body instanceof FormData && body.get("username")) {
        const name = String(body.get("username"));
        setTimeout(() => {
          const box = document.querySelector("input:not([type=password]):not([type=hidden]):not([type=checkbox])");
          if (!box || box.value) return;
          box.value = name;
          box.dispatchEvent(new Event("input", { bubbles: true }));
          const secret = document.querySelector("input[type=password]");
          if (secret) secret.focus();
        }, 0);
      }
    } catch (err) { /* never in the way of the login itself */ }
    return answer;
  };
})();</script>"""


class LoginGate:
    """The login page leaking the studio: with ``--gradio-auth``, Gradio's page at ``/`` embeds the
    API description of every event (with the checkpoint dropdown's choices) even before login, and
    a few of its routes answer anyone. Until a request carries a logged-in session, only the login
    page and its static files are served, and the page's embedded API description is emptied;
    everything else of the UI answers 401. The API (``/sdapi/``, ``/docs``, ``/openapi.json``) has
    its own HTTP Basic check and passes through, as does ``/healthz``."""

    LOGIN_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/gradio_api/login_check", "/gradio_api/login_check/",
                             "/theme.css", "/gradio_api/theme.css", "/favicon.ico", "/robots.txt", "/manifest.json"})
    STATIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
    OWN_AUTH = ("/sdapi/", "/docs", "/openapi.json", "/redoc", "/healthz")

    def __init__(self, app: ASGIApp, session_user: Callable[[dict], Optional[str]]):
        self.app, self.session_user = app, session_user

    def logged_in(self, scope: Scope) -> bool:
        cookies = {}
        for part in Headers(scope=scope).get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                cookies[name] = value
        return self.session_user(cookies) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path.startswith(self.OWN_AUTH) or self.logged_in(scope):
            await self.app(scope, receive, send)
            return
        if path in self.LOGIN_PATHS or path.startswith(self.STATIC_PREFIXES):
            await self.app(scope, receive, send if path != "/" else self._login_page(send))
            return
        await refuse(scope, receive, send, 401, "Not logged in: log in on this server's page first.",
                     "Unauthorized")

    @staticmethod
    def _login_page(send: Send) -> Send:
        """Replace the login page's embedded API description by an empty one and add the script that
        keeps the user name after a wrong password."""

        def edit(body: bytes) -> bytes:
            page = _API_INFO.sub(lambda _: _NO_API_INFO, body.decode("utf-8"))
            return page.replace("</head>", _KEEP_LOGIN_NAME + "</head>", 1).encode("utf-8")

        return edit_html_answer(send, edit)


def edit_html_answer(send: Send, edit: Callable[[bytes], bytes], encoded_too: bool = True) -> Send:
    """A ``send`` for a middleware: an HTML answer (with ``encoded_too`` false, only one without a
    Content-Encoding) is held until its whole body is here, passed through ``edit`` and sent with a
    Content-Length to match; every other answer passes through untouched."""
    start: Optional[Message] = None
    chunks: list[bytes] = []

    async def send_edited(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = Headers(raw=message.get("headers", []))
            if headers.get("content-type", "").startswith("text/html") and (encoded_too or "content-encoding" not in headers):
                start = message
                return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = edit(b"".join(chunks))
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        headers["content-length"] = str(len(body))
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return send_edited
