"""First start: fetching the default checkpoint. The hub cannot be reached from here, so a local
HTTP server plays it (fake_hub): the same URL layout, a redirect to a "CDN" carrying the file's
SHA-256 in X-Linked-Etag as the real hub does."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from sdui.models import download, formats
from sdui.models.download import HubFile
from sdui.types import ModelLoadError
from tests import tiny

FILE = HubFile("someone/tiny-sd", "tiny-sd.safetensors", "Tiny SD", 0)


class FakeHub:
    def __init__(self, payload: bytes):
        self.payload = payload
        self.mode = "ok"  # ok | bad-sha | truncate | missing
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _resolve(self, body: bool):
                if hub.mode == "missing":
                    self.send_response(404)
                    self.end_headers()
                    return
                sha = hashlib.sha256(hub.payload if hub.mode != "bad-sha" else b"other").hexdigest()
                self.send_response(302)
                self.send_header("Location", f"/cdn/{FILE.filename}")
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _cdn(self, body: bool):
                data = hub.payload
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data[: len(data) // 2] if hub.mode == "truncate" else data)
                    self.wfile.flush()
                    if hub.mode == "truncate":
                        self.close_connection = True

            def _route(self, body: bool):
                if self.path == f"/{FILE.repo}/resolve/main/{FILE.filename}":
                    self._resolve(body)
                elif self.path == f"/cdn/{FILE.filename}":
                    self._cdn(body)
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_HEAD(self):
                self._route(False)

            def do_GET(self):
                self._route(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def payload(tiny_pipe, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("hubfile") / "tiny.safetensors"
    tiny.save_single_file(tiny_pipe, path, with_config=False)
    return path.read_bytes()


@pytest.fixture()
def fake_hub(payload, monkeypatch):
    hub = FakeHub(payload)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fake_hub_download_is_verified_and_lands_whole(fake_hub, tmp_path, payload):
    seen = []
    dest = download.download(FILE, tmp_path / "Stable-diffusion", on_progress=seen.append)
    assert dest.read_bytes() == payload and formats.sniff_format(dest) == formats.SAFETENSORS
    assert _leftovers(tmp_path / "Stable-diffusion") == [FILE.filename]
    assert seen and seen[-1].done == seen[-1].total == len(payload) and seen[-1].fraction == 1.0
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    with pytest.raises(ModelLoadError, match="already exists"):
        download.download(FILE, tmp_path / "Stable-diffusion")
    assert dest.read_bytes() == payload


@pytest.mark.parametrize("mode,reason", [("bad-sha", "differs from the hub"), ("truncate", "ended after|download failed"),
                                         ("missing", "HTTP 404")])
def test_fake_hub_bad_download_leaves_nothing_behind(fake_hub, tmp_path, mode, reason):
    fake_hub.mode = mode
    with pytest.raises(ModelLoadError, match=reason):
        download.download(FILE, tmp_path / "sd")
    assert _leftovers(tmp_path / "sd") == []


def test_fake_hub_cancel_stops_and_cleans_up(fake_hub, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(ModelLoadError, match="cancelled"):
        download.download(FILE, tmp_path / "sd", cancel=stop)
    assert _leftovers(tmp_path / "sd") == []


def test_reachability(fake_hub, monkeypatch):
    assert download.hub_reachable(FILE)
    fake_hub.mode = "missing"
    assert not download.hub_reachable(FILE)
    fake_hub.mode = "ok"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not download.hub_reachable(FILE)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        download.download(FILE, "unused")


def test_unreachable_hub_is_reported_quickly(monkeypatch):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    assert not download.hub_reachable(FILE, timeout=2)
    assert time.monotonic() - t0 < 5


def test_cli_download_from_fake_hub(fake_hub, tmp_path, payload, monkeypatch, capsys):
    from sdui import cli

    monkeypatch.setattr(download, "DEFAULT_MODEL", FILE)
    assert cli.main(["download", "--models-dir", str(tmp_path / "models")]) == 0
    dest = tmp_path / "models" / "Stable-diffusion" / FILE.filename
    assert capsys.readouterr().out.strip() == str(dest) and dest.read_bytes() == payload
    fake_hub.mode = "bad-sha"
    dest.unlink()
    assert cli.main(["download", "--models-dir", str(tmp_path / "models")]) != 0
    assert "differs from the hub" in capsys.readouterr().err and not dest.exists()
