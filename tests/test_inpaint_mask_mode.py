"""A1111's "Mask mode" (API ``inpainting_mask_invert``): "Inpaint not masked" redraws everything but
the painted part. Before, the API accepted the field and repainted the painted part anyway."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from sdui.config import Settings
from sdui.server import create_app
from sdui.types import GenerationRequest
from tests.server_util import png_b64

SIZE = 64


def _init() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def _left_half_mask() -> Image.Image:
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    m[:, : SIZE // 2] = 255  # painted: the left half
    return Image.fromarray(m)


def _change(out: Image.Image, init: Image.Image) -> tuple[float, float]:
    """Mean absolute change in the left (painted) and right halves, away from the blurred seam."""
    d = np.abs(np.asarray(out, dtype=float) - np.asarray(init, dtype=float))
    return d[:, : SIZE // 2 - 8].mean(), d[:, SIZE // 2 + 8:].mean()


def test_not_masked_redraws_the_outside_and_keeps_the_painted_part_exactly(make_engine):
    engine = make_engine()
    base = dict(mode="inpaint", prompt="x", steps=3, width=SIZE, height=SIZE, seed=4, save=False, mask_blur=0,
                init_image=_init(), mask=_left_half_mask(), denoising_strength=1.0)  # blur 0: exact halves
    normal = engine.generate(GenerationRequest(**base)).images[0]
    inverted = engine.generate(GenerationRequest(**base, inpainting_mask_invert="Inpaint not masked")).images[0]
    left, right = _change(normal.image, base["init_image"])
    assert left > 10 and right == 0  # the painted part changes, the rest is kept exactly
    left, right = _change(inverted.image, base["init_image"])
    assert left == 0 and right > 10  # and the other way round
    assert "Mask mode: Inpaint not masked" in inverted.infotext and "Mask mode" not in normal.infotext


def test_the_api_honours_inpainting_mask_invert(models_root, tmp_path):
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        body = {"prompt": "x", "steps": 3, "width": SIZE, "height": SIZE, "seed": 4, "denoising_strength": 1.0,
                "init_images": [png_b64(_init())], "mask": png_b64(_left_half_mask()), "inpainting_mask_invert": 1,
                "mask_blur": 0}
        r = c.post("/sdapi/v1/img2img", json=body)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert "inpainting_mask_invert" not in info["ignored"]
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")
        left, right = _change(out, _init())
        assert left == 0 and right > 10
        assert c.post("/sdapi/v1/img2img", json={**body, "inpainting_mask_invert": 2}).status_code == 422
    finally:
        app.state.queue.stop()
