"""HTTP-level attacks on the server, driven in process (httpx over ASGI, no socket): cross-site
requests, CORS, DNS rebinding, the login cookie, what the login page tells a stranger, request
size and JSON nesting. No model is loaded; the routes used never generate."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import anyio.from_thread
import httpx
import pytest

from sdui import server
from sdui.config import Settings
from sdui.server import create_app

EVIL = "http://evil.example"
FRIEND = "http://friend.example"
LAN_HOST = "192.168.1.5:7860"
A1111_ERROR = {"error", "detail", "body", "errors"}
# What an anonymous visitor must not learn: checkpoint names, the UI's element ids and event names.
SECRETS = ("tiny", "txt2img", "/generate")


@pytest.fixture(scope="module")
def portal():
    """One event loop for the module's in-process requests (Gradio's app keeps loop-bound state)."""
    with anyio.from_thread.start_blocking_portal() as p:
        yield p


class Client:
    """A synchronous in-process client of one app that keeps its cookies, like a browser tab.
    Request bodies are streamed to the app as they are produced (nothing is read ahead)."""

    def __init__(self, app, portal, host: str = "127.0.0.1:7860"):
        self.app, self.portal, self.base, self.cookies = app, portal, f"http://{host}", httpx.Cookies()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        async def go():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=self.base, cookies=self.cookies) as c:
                r = await c.request(method, path, **kw)
                self.cookies = httpx.Cookies(c.cookies)
                return r

        return self.portal.call(go)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def options(self, path, **kw):
        return self.request("OPTIONS", path, **kw)


@pytest.fixture(scope="module")
def local_ui(models_root, tmp_path_factory):
    """The studio as a plain start makes it: loopback only, no login, the API on."""
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("local-out")), api=True)
    app = create_app(settings)
    yield app
    app.state.queue.stop()


@pytest.fixture(scope="module")
def lan_ui(models_root, tmp_path_factory):
    """``--listen --gradio-auth ann:pw --api --cors-allow-origins http://friend.example
    --max-request-mb 1`` on a machine whose LAN address is 192.168.1.5; Gradio's uploads go to a
    folder of this fixture's own."""
    uploads = tmp_path_factory.mktemp("gradio-uploads")
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("lan-out")), api=True,
                        listen=True, gradio_auth="ann:pw", cors_allow_origins=FRIEND, max_request_mb=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server, "lan_addresses", lambda: ["192.168.1.5"])
        mp.setenv("GRADIO_TEMP_DIR", str(uploads))
        app = create_app(settings)
    yield app, uploads
    app.state.queue.stop()


def record_cancels(app, monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(app.state.queue, "cancel", lambda owner, *a, **kw: calls.append(owner) or 0)
    return calls


def assert_refused(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == A1111_ERROR and body["detail"] == body["errors"]
    assert body["detail"].count(". ") == 0 and body["detail"].endswith("."), "one sentence"
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])


def logged_in(app, portal, host: str = "127.0.0.1:7860") -> Client:
    c = Client(app, portal, host)
    assert c.post("/login", data={"username": "ann", "password": "pw"}).status_code == 200
    return c


def all_files(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.is_file()}


# ---- cross-site requests -----------------------------------------------------------------------------
def test_cross_site_simple_posts_cannot_interrupt_or_skip_but_pages_and_programs_can(local_ui, portal, monkeypatch):
    calls = record_cancels(local_ui, monkeypatch)
    c = Client(local_ui, portal)
    # what a hostile page can make a browser send: a form / text/plain POST, or fetch() with no body
    r = c.post("/sdapi/v1/interrupt", content=b"x=1", headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert_refused(r, 403, EVIL, "--cors-allow-origins")
    assert_refused(c.post("/sdapi/v1/interrupt", headers={"Origin": "null"}), 403, "null")
    assert_refused(c.post("/sdapi/v1/skip", headers={"Origin": EVIL}), 403)
    assert_refused(c.post("/sdapi/v1/interrupt", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    # a same-host page on another port is another origin
    assert_refused(c.post("/sdapi/v1/interrupt", headers={"Origin": "http://127.0.0.1:8080"}), 403)
    assert calls == [], "a cross-site request cancelled the owner's job"
    # the studio's own page, and server-side A1111 clients (no Origin, no body), still work
    assert c.post("/sdapi/v1/interrupt", headers={"Origin": "http://127.0.0.1:7860"}).json() == {"interrupted": 0}
    assert c.post("/sdapi/v1/interrupt").status_code == 200
    assert c.post("/sdapi/v1/skip").status_code == 200
    assert len(calls) == 2
    assert c.get("/sdapi/v1/sd-models").status_code == 200


def test_cross_site_posts_to_the_ui_and_login_are_refused(lan_ui, portal):
    app, _ = lan_ui
    c = Client(app, portal)
    r = c.post("/login", data={"username": "ann", "password": "pw"}, headers={"Origin": EVIL})
    assert_refused(r, 403, EVIL)
    assert "set-cookie" not in r.headers
    friend = c.post("/login", data={"username": "ann", "password": "pw"}, headers={"Origin": FRIEND})
    assert friend.status_code == 200
    join = {"data": [], "fn_index": 0, "session_hash": "x"}
    r = c.post("/gradio_api/queue/join", json=join, headers={"Origin": EVIL})
    assert_refused(r, 403, EVIL)


# ---- CORS ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/sdapi/v1/interrupt", "/gradio_api/queue/join", "/login"])
def test_foreign_preflight_gets_no_cors_headers_even_on_a_lan_host(lan_ui, portal, path):
    app, _ = lan_ui
    c = Client(app, portal, LAN_HOST)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    r = c.options(path, headers={"Origin": EVIL, **preflight})
    assert "access-control-allow-origin" not in r.headers, dict(r.headers)
    r = c.get("/", headers={"Origin": EVIL})
    assert "access-control-allow-origin" not in r.headers
    # an origin the owner named (--cors-allow-origins), and the server's own LAN origin, do get them
    for origin in (FRIEND, "http://192.168.1.5:7860"):
        r = c.options(path, headers={"Origin": origin, **preflight})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-credentials"] == "true"


# ---- DNS rebinding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/sdapi/v1/sd-models", "/config", "/gradio_api/info"])
def test_a_foreign_host_name_is_refused(local_ui, portal, path):
    r = Client(local_ui, portal, "evil.example:7860").get(path)
    assert_refused(r, 400, "'evil.example'", "--allowed-hosts")
    assert not any(s in r.text for s in SECRETS)
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "127.0.0.2:7860"):
        assert Client(local_ui, portal, host).get(path).status_code == 200, host


def test_host_names_with_listen_and_allowed_hosts(lan_ui, models_root, tmp_path, portal, monkeypatch):
    app, _ = lan_ui
    auth = ("ann", "pw")
    assert_refused(Client(app, portal, "evil.example").get("/sdapi/v1/sd-models", auth=auth), 400, "evil.example")
    for host in (LAN_HOST, "10.1.2.3:7860", "localhost:7860"):  # with --listen any address: it cannot be rebound
        assert Client(app, portal, host).get("/sdapi/v1/sd-models", auth=auth).status_code == 200, host
    monkeypatch.setattr(server.socket, "gethostname", lambda: "studio")
    monkeypatch.setattr(server, "lan_addresses", lambda: [])  # no name lookups of the made-up hostname
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), api=True,
                        allowed_hosts="sd.example.org")
    plain = create_app(settings, with_ui=False)
    try:
        assert Client(plain, portal, "sd.example.org").get("/sdapi/v1/sd-models").status_code == 200
        assert Client(plain, portal, "studio:7860").get("/sdapi/v1/sd-models").status_code == 400  # no --listen
        assert Client(plain, portal, "192.168.1.5:7860").get("/sdapi/v1/sd-models").status_code == 400
        listening = create_app(settings.replace(listen=True), with_ui=False)
        assert Client(listening, portal, "studio.local:7860").get("/sdapi/v1/sd-models").status_code == 200
        listening.state.queue.stop()
    finally:
        plain.state.queue.stop()


def test_listen_prints_every_interface_address_and_not_the_hostnames_resolution(monkeypatch, capsys, tmp_path):
    """psutil's interface list and the name lookup are faked: the test must not depend on this machine's network."""
    import psutil

    def nic(address, family=server.socket.AF_INET):  # what psutil lists per interface (family, address, ...)
        return SimpleNamespace(family=family, address=address, netmask=None, broadcast=None, ptp=None)

    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {
        "lo": [nic("127.0.0.1")], "eth0": [nic("192.168.1.5"), nic("fe80::1", server.socket.AF_INET6)],
        "wlan0": [nic("10.0.0.7")], "usb0": [nic("169.254.3.3")]})

    def no_lookup(*args, **kw):
        raise AssertionError("the hostname must not be resolved")

    monkeypatch.setattr(server.socket, "getaddrinfo", no_lookup)
    monkeypatch.setattr(server.socket, "gethostbyname", no_lookup)
    assert server.lan_addresses() == ["10.0.0.7", "192.168.1.5"]
    # the start banner: no app is built and no server started (both faked), only what is printed
    monkeypatch.setattr(server, "create_app", lambda settings: object())
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    settings = Settings(models_dir=str(tmp_path), outputs_dir=str(tmp_path / "o"), listen=True, gradio_auth="ann:pw")
    assert server.serve(settings) == 0
    out = capsys.readouterr().out
    lan = [line.strip() for line in out.splitlines() if "on the LAN" in line]
    assert lan == [f"on the LAN: http://10.0.0.7:{settings.port}/", f"on the LAN: http://192.168.1.5:{settings.port}/"]


# ---- the login cookie and what the login page tells -----------------------------------------------------
def test_login_cookies_are_lax_and_httponly_and_login_still_works(lan_ui, portal):
    app, _ = lan_ui
    c = Client(app, portal)
    r = c.post("/login", data={"username": "ann", "password": "pw"}, headers={"Origin": "http://127.0.0.1:7860"})
    assert r.status_code == 200, r.text
    cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 2 and all(v.startswith("access-token") for v in cookies)
    for v in cookies:
        attrs = [a.strip().lower() for a in v.split(";")]
        assert "httponly" in attrs and "samesite=lax" in attrs and "samesite=none" not in attrs, v
    page = c.get("/")
    assert page.status_code == 200 and "txt2img_prompt" in page.text and "tiny" in page.text
    assert "txt2img_prompt" in c.get("/config").text
    assert Client(app, portal).post("/login", data={"username": "ann", "password": "no"}).status_code == 400


PRE_LOGIN_PATHS = ("/", "/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/runs",
                   "/gradio_api/app_id", "/gradio_api/startup-events", "/openapi.json", "/docs", "/sdapi/v1/sd-models",
                   "/sdapi/v1/options")


def test_nothing_about_models_or_endpoints_before_login(lan_ui, portal):
    app, _ = lan_ui
    answers = {}
    for host in ("127.0.0.1:7860", LAN_HOST):
        for path in PRE_LOGIN_PATHS:
            r = Client(app, portal, host).get(path)
            answers[host, path] = (r.status_code, [s for s in SECRETS if s in r.text])
            if path == "/":
                assert '"auth_required":true' in r.text  # it is the login page
                assert "window.fetch" in r.text  # with the script that keeps the user name after a wrong password
    expected = {(host, path): (200 if path == "/" else 401, []) for host, path in answers}
    assert answers == expected


# ---- request size and JSON nesting ----------------------------------------------------------------------
def _multipart(size: int, boundary: str = "b0undary"):
    """A multipart upload of ``size`` bytes, produced 64 KiB at a time (never held in memory)."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    sent = {"bytes": 0}

    async def body():
        for part in (head, *([b"\0" * 65536] * (size // 65536)), tail):
            sent["bytes"] += len(part)
            yield part

    total = len(head) + (size // 65536) * 65536 + len(tail)
    return body(), total, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, sent


def test_request_size_limit_covers_uploads_and_api(lan_ui, portal):
    app, uploads = lan_ui
    before = all_files(uploads)
    anonymous = Client(app, portal)
    # 150 MB declared: refused before it is read, login or not
    body, total, headers, sent = _multipart(150 * 2**20)
    r = anonymous.post("/gradio_api/upload", content=body, headers={**headers, "Content-Length": str(total)})
    assert_refused(r, 413, "1 MB", "--max-request-mb")
    assert sent["bytes"] < 2**20, "the body was read although its length was refused"
    # 2 MB chunked (no Content-Length), from a logged-in user: cut off at the limit, nothing kept
    user = logged_in(app, portal)
    body, _, headers, _ = _multipart(2 * 2**20)
    assert_refused(user.post("/gradio_api/upload", content=body, headers=headers), 413, "--max-request-mb")
    assert all_files(uploads) == before, "a refused upload left files behind"
    # the API's JSON bodies too, and the server goes on serving
    big = {"prompt": "x" * (2 * 2**20), "steps": 2}
    assert_refused(user.post("/sdapi/v1/txt2img", json=big, auth=("ann", "pw")), 413, "1 MB")
    small = user.post("/gradio_api/upload", files={"files": ("small.png", b"\x89PNG small", "image/png")})
    assert small.status_code == 200 and len(small.json()) == 1
    assert user.get("/sdapi/v1/sd-models", auth=("ann", "pw")).status_code == 200


def _nested(depth: int) -> bytes:
    return b'{"prompt": "x", "override_settings": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


def test_deeply_nested_json_is_a_400_not_a_crash(local_ui, portal):
    c = Client(local_ui, portal)
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options"):
        for content_type in ("application/json", None):
            headers = {"Content-Type": content_type} if content_type else {}
            r = c.post(path, content=_nested(900), headers=headers)
            assert_refused(r, 400, "JSON nested too deeply", "64 levels")
    deep_list = b'{"prompt": ' + b"[" * 900 + b"]" * 900 + b"}"
    assert_refused(c.post("/sdapi/v1/txt2img", content=deep_list, headers={"Content-Type": "application/json"}), 400)
    # brackets inside strings are text, not nesting (A1111 prompts use [[[de-emphasis]]])
    r = c.post("/sdapi/v1/options", json={"sd_vae": None, "note": "[" * 500 + "{" * 500, "a": json.loads(_nested(60))})
    assert r.status_code == 200, r.text
    assert c.get("/sdapi/v1/sd-models").status_code == 200
