"""Issue 9: what a remote client may name, what it learns, and what crashes and full disks leave.

The API is driven in process (``TestClient``); nothing here needs a real socket. The hub is played
by a local recording server (no machine here reaches the real one).
"""

from __future__ import annotations

import base64
import errno
import http.server
import io
import os
import shutil
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdui.images import outputs
from sdui.config import Settings
from sdui.jobs import JobQueue
from sdui.server import create_app
from sdui.types import DiskFull, GenerationRequest, GenerationResult, redact_paths

SMALL = {"prompt": "a lantern", "steps": 2, "width": 64, "height": 64, "seed": 3}


@pytest.fixture()
def api(models_root, tmp_path):
    """An in-process API on the tiny models tree; yields (client, app)."""
    apps = []

    def make(**overrides):
        values = dict(models_dir=str(models_root), outputs_dir=str(tmp_path / "outputs"), api=True, queue_size=4)
        values.update(overrides)
        app = create_app(Settings(**values), with_ui=False)
        apps.append(app)
        return TestClient(app, base_url="http://127.0.0.1:7860"), app

    yield make
    for app in apps:
        app.state.queue.stop()
        app.state.engine.manager.release_all()


def _outside_copy(models_root: Path, tmp_path: Path) -> Path:
    """A perfectly good checkpoint that lies outside the models tree."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(models_root / "Stable-diffusion" / "tiny.safetensors", outside / "stray.safetensors")
    shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", outside / "stray.config")
    return outside / "stray.safetensors"


# ---- 1. names only, never paths or Hub ids --------------------------------------------------------
def test_a_path_outside_the_models_tree_is_refused_and_loads_nothing(api, models_root, tmp_path):
    c, app = api()
    stray = _outside_copy(models_root, tmp_path)
    r = c.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": str(stray)}})
    assert r.status_code == 404, r.text
    assert "unknown checkpoint" in r.json()["detail"] and "Available: " in r.json()["detail"]
    assert app.state.engine.manager.cached_names() == []  # nothing was loaded
    r = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": str(stray)})
    assert r.status_code == 404
    # the server still serves everyone's default request
    r = c.post("/sdapi/v1/txt2img", json=SMALL)
    assert r.status_code == 200, r.text


def test_existing_and_missing_server_files_get_the_same_answer(api):
    """No file-existence oracle: /etc/passwd and a path that does not exist answer alike."""
    c, _ = api()
    answers = []
    for path in ("/etc/passwd", "/no/such/file.safetensors"):
        r = c.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": path}})
        answers.append((r.status_code, r.json()["detail"].replace(path, "<p>").replace(Path(path).name, "<p>")))
    assert answers[0] == answers[1] and answers[0][0] == 404
    vae = []
    for path in ("/etc/passwd", "/no/such/vae.safetensors"):
        r = c.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_vae": path}})
        vae.append((r.status_code, r.json()["detail"].replace(path, "<p>").replace(Path(path).name, "<p>")))
    assert vae[0] == vae[1] and vae[0][0] == 422


class _RecordingHub:
    """An HTTP server that answers 404 to everything and remembers every request."""

    def __init__(self):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _any(self):
                hub.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_hub_id_from_a_client_never_contacts_the_hub(api, monkeypatch):
    from huggingface_hub import constants

    from sdui.models import loader, registry

    hub = _RecordingHub()
    try:
        # as if online: the hub (played locally) is reachable and downloads are allowed
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(loader, "hub_offline", lambda: False)
        monkeypatch.setattr(registry, "hub_offline", lambda: False)
        c, app = api()
        for body in ({**SMALL, "override_settings": {"sd_model_checkpoint": "someorg/somerepo"}},):
            r = c.post("/sdapi/v1/txt2img", json=body)
            assert r.status_code == 404, r.text
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "someorg/somerepo"}).status_code == 404
        time.sleep(0.2)
        assert hub.requests == []
        assert app.state.engine.manager.cached_names() == []
    finally:
        hub.close()


def test_the_owner_may_still_name_paths_from_the_command_line(models_root, tmp_path, capsys):
    from sdui import cli

    stray = _outside_copy(models_root, tmp_path)
    code = cli.main(["txt2img", "--prompt", "x", "--steps", "2", "--W", "64", "--H", "64", "--seed", "1",
                     "--ckpt", str(stray), "--models-dir", str(models_root), "--outdir", str(tmp_path / "o"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out.split()[0]
    assert "Model: stray" in Image.open(out).info["parameters"]


# ---- 3. wrong JSON types -------------------------------------------------------------------------
@pytest.mark.parametrize("route,body,field", [
    ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_model_checkpoint": 123}},
     "override_settings.sd_model_checkpoint"),
    ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_vae": ["a"]}}, "override_settings.sd_vae"),
    ("/sdapi/v1/options", {"sd_model_checkpoint": 123}, "options.sd_model_checkpoint"),
    ("/sdapi/v1/options", {"sd_vae": {"x": 1}}, "options.sd_vae"),
])
def test_wrong_json_types_are_a_clear_4xx(api, route, body, field):
    c, _ = api()
    r = c.post(route, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert c.get("/sdapi/v1/options").status_code == 200  # still serving


# ---- 8. one client's model choice never leaks to another -------------------------------------------
def test_a_client_without_a_choice_gets_the_server_default(api):
    c, app = api(api_auth="alice:a,bob:b")
    default = app.state.engine.manager.default_checkpoint()
    assert default is not None and default.name != "other"
    alice, bob = ("alice", "a"), ("bob", "b")
    assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other"}, auth=alice).status_code == 200
    r = c.post("/sdapi/v1/txt2img", json=SMALL, auth=alice)
    assert r.status_code == 200 and '"sd_model_name": "other"' in r.json()["info"]
    assert app.state.engine.manager.current.name == "other"  # alice's job left "other" loaded
    shown = c.get("/sdapi/v1/options", auth=bob).json()["sd_model_checkpoint"]
    assert shown == app.state.engine.manager.find(default.name).title
    r = c.post("/sdapi/v1/txt2img", json=SMALL, auth=bob)
    assert r.status_code == 200 and f'"sd_model_name": "{default.name}"' in r.json()["info"]


# ---- 7. the job table under concurrent reads and writes --------------------------------------------
class _InstantEngine:
    """Stands in for the engine: the race is in the queue's bookkeeping, not in generation."""

    def prepare(self, request):
        return request

    def generate(self, request, on_progress=None, cancel=None, skip=None):
        return GenerationResult(images=[], request=request)


def test_the_job_table_survives_concurrent_reads_and_writes(monkeypatch):
    from sdui import jobs

    monkeypatch.setattr(jobs, "KEEP_FINISHED", 50)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose unlocked iteration
    queue = JobQueue(_InstantEngine(), max_queue=10_000).start()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                queue.jobs_for("owner-3")
                queue.current_for("owner-5")
            except BaseException as e:  # noqa: BLE001 - the test collects what the reader hit
                errors.append(e)
                return

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        last = None
        for i in range(3000):
            last = queue.submit(GenerationRequest(prompt=str(i)), f"owner-{i % 7}")
        assert last.wait(30)
    finally:
        stop.set()
        for t in readers:
            t.join(10)
        queue.stop()
        sys.setswitchinterval(old_interval)
    assert errors == []


# ---- 7. gallery copies stay bounded -----------------------------------------------------------------
def test_gallery_copies_are_made_once_and_stay_bounded(tmp_path, monkeypatch):
    from gradio import utils as gradio_utils

    from sdui.ui import session

    upload = tmp_path / "gradio-upload"
    monkeypatch.setattr(gradio_utils, "get_upload_folder", lambda: str(upload))
    saved = []
    for i in range(6):
        img = Image.new("RGB", (32, 32), (i * 40, 0, 0))
        saved.append(outputs.save_png(img, tmp_path / "outputs", i, f"image {i}"))

    def folder_files():
        return [p for p in upload.rglob("*") if p.is_file()]

    pub = session.Publisher()
    for _ in range(500):  # 500 page loads showing the same six images
        shown = [pub.publish(str(p)) for p in saved]
    assert len(folder_files()) == 6
    assert all(Path(s).read_bytes() == p.read_bytes() for s, p in zip(shown, saved, strict=False))
    one = saved[0].stat().st_size
    small = session.Publisher(budget_bytes=3 * one + one // 2)
    for p in saved * 3:
        small.publish(str(p))
    assert small.count <= 3
    assert len(folder_files()) <= 6 + 3


# ---- 9. full disks and crashes leave no debris ----------------------------------------------------
def _disk_fills_mid_write(monkeypatch):
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if hasattr(fp, "write"):
            fp.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


def test_a_full_disk_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    _disk_fills_mid_write(monkeypatch)
    folder = tmp_path / "day"
    with pytest.raises(DiskFull, match="The disk is full: image not saved"):
        outputs.save_png(Image.new("RGB", (8, 8)), folder, 1, "x")
    assert list(folder.iterdir()) == []


def test_the_api_reports_a_full_disk_and_keeps_serving(api, monkeypatch):
    c, app = api()
    _disk_fills_mid_write(monkeypatch)
    r = c.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True})
    assert r.status_code == 507, r.text
    assert r.json()["detail"] == "The disk is full: image not saved"
    monkeypatch.undo()
    r = c.post("/sdapi/v1/txt2img", json=SMALL)
    assert r.status_code == 200
    outputs = Path(app.state.settings.outputs_dir)
    assert not [p for p in outputs.rglob(".tmp-*")] if outputs.exists() else True


def test_stale_temporaries_are_cleaned_at_start_and_nothing_else(models_root, tmp_path):
    from sdui.engine import Engine

    day = tmp_path / "outputs" / "txt2img-images" / "2026-01-01"
    day.mkdir(parents=True)
    dead = day / ".tmp-999999999-1-2.png"  # no such process
    live = day / f".tmp-{os.getpid()}-1-2.png"  # a save in progress in this process
    notes = day / ".tmp-notes.png"  # not our naming pattern: the user's
    kept = day / "00000-1.png"
    for p in (dead, live, notes, kept):
        p.write_bytes(b"x")
    outside = tmp_path / ".tmp-999999999-1-2.png"  # outside the outputs folder
    outside.write_bytes(b"x")
    Engine(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "outputs")))
    assert not dead.exists()
    assert live.exists() and notes.exists() and kept.exists() and outside.exists()


# ---- no server paths in errors, broken uploads are 4xx ----------------------------------------------
def test_errors_name_files_never_server_paths(api, models_root, tmp_path):
    tree = tmp_path / "models"
    sd = tree / "Stable-diffusion"
    sd.mkdir(parents=True)
    data = (models_root / "Stable-diffusion" / "tiny.safetensors").read_bytes()
    (sd / "broken.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", sd / "broken.config")
    (sd / "good.safetensors").write_bytes(data)
    shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", sd / "good.config")
    c, _ = api(models_dir=str(tree))
    r = c.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "broken"}})
    assert r.status_code >= 400
    detail = r.json()["detail"]
    assert "broken.safetensors" in detail and str(tmp_path) not in detail


def test_redact_paths_keeps_names_and_urls():
    assert redact_paths("/home/me/models/Stable-diffusion/x.safetensors: bad") == "x.safetensors: bad"
    assert redact_paths(r"C:\Users\me\models\y.ckpt: bad") == "y.ckpt: bad"
    assert redact_paths("see http://127.0.0.1:7860/sdapi/v1/options") == "see http://127.0.0.1:7860/sdapi/v1/options"
    assert redact_paths("width must be 64/8") == "width must be 64/8"


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(raw)


@pytest.mark.parametrize("payload", [
    base64.b64encode(b"this is not an image").decode(),
    "data:image/png;base64," + base64.b64encode(_png_claiming(64, 64)[:40]).decode(),  # truncated
    base64.b64encode(_png_claiming(60000, 60000)).decode(),  # a bomb
])
def test_broken_uploads_are_4xx_and_the_server_keeps_serving(api, payload):
    c, _ = api()
    r = c.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [payload]})
    assert r.status_code == 422, r.text
    assert "init_images" in r.json()["detail"]
    r = c.post("/sdapi/v1/png-info", json={"image": payload})
    assert r.status_code == 422, r.text
    assert c.get("/sdapi/v1/sd-models").status_code == 200


def test_the_queue_keeps_the_last_preview_between_preview_steps():
    """Previews are made every few steps; a client polling in between still gets the latest one, with
    the step it was made at."""
    from sdui.jobs import Job, _record_progress
    from sdui.types import Progress

    job = Job(request=GenerationRequest(), owner="o")
    img = Image.new("RGB", (8, 8))
    _record_progress(job, Progress(step=4, total=20, elapsed=1, eta=4, preview=img))
    _record_progress(job, Progress(step=5, total=20, elapsed=1, eta=4))
    assert job.progress.step == 5 and job.progress.preview is img and job.progress.preview_step == 4
    newer = Image.new("RGB", (8, 8), (255, 0, 0))
    _record_progress(job, Progress(step=8, total=20, elapsed=1, eta=4, preview=newer))
    assert job.progress.preview is newer and job.progress.preview_step is None  # made at this step
