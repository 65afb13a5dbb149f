"""The studio page's early script (sdui.ui.page_script): written into the HTML before Gradio's modules,
nothing else touched. In process (httpx over ASGI); the frame rate it buys is measured in a real
browser in tests/test_ui_browser.py."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from sdui.config import Settings
from sdui.server import create_app
from sdui.ui.page_script import FRAME_THROTTLE, PageScript

PAGE = "<!doctype html><html><head><script type=module src=./assets/index.js></script></head><body>hi</body></html>"


def _get(app, path: str, method: str = "GET") -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:7860") as c:
            return await c.request(method, path)
    return asyncio.run(go())


def _toy():
    async def streamed(request):
        async def parts():
            for part in ("<html><he", "ad><title>x</title></head>", "<body>streamed</body></html>"):
                yield part
        return StreamingResponse(parts(), media_type="text/html")

    routes = [Route("/", lambda r: HTMLResponse(PAGE), methods=["GET", "POST"]),
              Route("/config", lambda r: JSONResponse({"head": "<head>"})),
              Route("/other", lambda r: HTMLResponse(PAGE)),
              Route("/streamed", streamed)]
    return Starlette(routes=routes)


def test_the_script_goes_first_in_the_head_and_the_length_follows():
    r = _get(PageScript(_toy()), "/")
    assert r.text.startswith("<!doctype html><html><head>" + FRAME_THROTTLE + "<script type=module")
    assert int(r.headers["content-length"]) == len(r.content) == len(PAGE) + len(FRAME_THROTTLE.encode())


def test_other_paths_methods_and_types_pass_untouched():
    app = PageScript(_toy())
    assert _get(app, "/other").text == PAGE
    assert _get(app, "/", method="POST").text == PAGE
    assert _get(app, "/config").json() == {"head": "<head>"}


def test_a_streamed_page_split_inside_the_tag_is_rewritten_whole():
    r = _get(PageScript(_toy(), path="/streamed"), "/streamed")
    assert r.text == "<html><head>" + FRAME_THROTTLE + "<title>x</title></head><body>streamed</body></html>"
    assert int(r.headers["content-length"]) == len(r.content)


def test_the_studio_page_carries_it_before_gradios_modules(tmp_path):
    app = create_app(Settings(models_dir=str(tmp_path / "m"), outputs_dir=str(tmp_path / "o"),
                              settings_file=str(tmp_path / "s.json"), styles_file=str(tmp_path / "st.csv")))
    page = _get(app, "/").text
    assert page.count(FRAME_THROTTLE) == 1
    assert page.index(FRAME_THROTTLE) < page.index('<script type="module"')
