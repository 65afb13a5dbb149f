"""Interrupted jobs: the finished images are kept and, as A1111 does, the current partial image is
returned to API clients, marked partial and never saved (the UI rule "a cancelled image is never
saved" stays)."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from sdui.config import Settings
from sdui.server import create_app
from sdui.types import Cancelled, GenerationRequest


def _cancel_at(step: int):
    """A cancel callable that says stop once the job reached ``step`` of its first image."""
    seen = {"n": 0}
    event = threading.Event()

    def on_progress(p):
        seen["n"] = p.step
        if p.image_index == 1 and p.step >= step:
            event.set()

    return event, on_progress


def test_an_interrupted_job_keeps_finished_images_and_returns_the_partial_one_unsaved(make_engine, tmp_path):
    engine = make_engine()
    event, on_progress = _cancel_at(2)
    req = GenerationRequest(prompt="x", steps=4, width=64, height=64, seed=5, batch_count=2, save=True)
    try:
        engine.generate(req, on_progress=on_progress, cancel=event)
        raise AssertionError("not interrupted")
    except Cancelled as stop:
        result = stop.partial
    assert [im.partial for im in result.images] == [False, True]
    done, partial = result.images
    assert done.path and Path(done.path).exists()
    assert partial.path is None and partial.image.size == (64, 64) and partial.seed == 6
    saved = list(Path(engine.settings.outputs_dir).rglob("*.png"))
    assert saved == [Path(done.path)]  # the partial image was never written
    full = engine.generate(req.replace(batch_count=1, seed=6, save=False)).images[0].image
    assert partial.image.tobytes() != full.tobytes()  # it really is the unfinished image


def test_skip_ends_the_current_image_unsaved_and_goes_on_with_the_next(make_engine):
    """A1111's Skip: image 1 of a batch count of 3 is ended at step 2 (kept as a partial image, not
    saved); images 2 and 3 are made and saved, and the engine clears the skip event."""
    engine = make_engine()
    skip = threading.Event()

    def on_progress(p):
        if p.image_index == 0 and p.step == 2:
            skip.set()

    req = GenerationRequest(prompt="x", steps=4, width=64, height=64, seed=20, batch_count=3, save=True)
    result = engine.generate(req, on_progress=on_progress, cancel=threading.Event(), skip=skip)
    assert [(im.partial, im.seed) for im in result.images] == [(True, 20), (False, 21), (False, 22)]
    assert result.images[0].path is None and all(Path(im.path).exists() for im in result.images[1:])
    assert not skip.is_set()
    saved = sorted(Path(engine.settings.outputs_dir).rglob("*.png"))
    assert saved == sorted(Path(im.path) for im in result.images[1:])


def test_the_api_answers_an_interrupted_job_with_the_partial_image_marked(models_root, tmp_path, monkeypatch):
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    queue = app.state.queue
    real_generate = app.state.engine.generate

    def interrupted_at_step_2(request, on_progress=None, cancel=None, skip=None):
        def progress(p):
            if on_progress:
                on_progress(p)
            if p.step >= 2:
                cancel.set()  # as a POST /interrupt from the same client would, mid-image
        return real_generate(request, on_progress=progress, cancel=cancel, skip=skip)

    monkeypatch.setattr(app.state.engine, "generate", interrupted_at_step_2)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 4, "width": 64, "height": 64, "seed": 3,
                                               "save_images": True})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert len(r.json()["images"]) == 1 and info["partial_images"] == [0] and info["saved"] == []
        img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        assert img.size == (64, 64)
        assert not list(Path(tmp_path).rglob("*.png"))
    finally:
        queue.stop()
