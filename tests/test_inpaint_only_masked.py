"""A1111's "Inpaint area: Only masked" (API ``inpaint_full_res`` / ``inpaint_full_res_padding``): the
masked part plus the padding is cropped, widened to the working aspect ratio, inpainted at width x
height and pasted back; the output keeps the input's size and every pixel outside the blurred mask."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from sdui.config import Settings
from sdui.pipelines.inpaint import expand_crop_region, get_crop_region, prepare_mask
from sdui.server import create_app
from sdui.types import GenerationRequest
from tests.server_util import png_b64


def _mask(w: int, h: int, box) -> Image.Image:
    m = np.zeros((h, w), dtype=np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 255
    return Image.fromarray(m)


def _init(w: int, h: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8))


# ---- the crop region (A1111 masking.get_crop_region / expand_crop_region) ------------------------------
def test_crop_region_is_the_masks_box_plus_padding_clamped_to_the_image():
    assert get_crop_region(_mask(100, 80, (40, 30, 50, 45))) == (40, 30, 50, 45)
    assert get_crop_region(_mask(100, 80, (40, 30, 50, 45)), pad=8) == (32, 22, 58, 53)
    assert get_crop_region(_mask(100, 80, (2, 70, 95, 80)), pad=10) == (0, 60, 100, 80)  # clamped at the edges
    assert get_crop_region(np.zeros((8, 8), dtype=np.uint8), pad=4) is None  # nothing painted


def test_expand_crop_region_widens_the_short_side_to_the_working_aspect_ratio():
    # A1111's docstring example: a 128x32 region processed at 512x512 becomes 128x128, centred on it
    assert expand_crop_region((100, 200, 228, 232), 512, 512, 1000, 1000) == (100, 152, 228, 280)
    # tall region, wide working size (2:1): the width grows to twice the height
    assert expand_crop_region((40, 10, 60, 50), 128, 64, 200, 100) == (10, 10, 90, 50)
    # already the right ratio: unchanged
    assert expand_crop_region((10, 10, 42, 42), 64, 64, 100, 100) == (10, 10, 42, 42)


def test_expand_crop_region_shifts_back_inside_and_cuts_at_the_border():
    # sticks out at the bottom: shifted up by as much, same size
    assert expand_crop_region((0, 90, 40, 100), 64, 64, 100, 100) == (0, 60, 40, 100)
    # sticks out at the top: shifted down
    assert expand_crop_region((0, 0, 40, 10), 64, 64, 100, 100) == (0, 0, 40, 40)
    # wider than the image can be tall: cut at the image's height
    assert expand_crop_region((0, 40, 100, 50), 64, 64, 100, 60) == (0, 0, 100, 60)


# ---- the pipeline, on the tiny model ---------------------------------------------------------------------
W, H = 96, 80  # the image is not the working size (64x64): the output must still be 96x80
BOX = (60, 20, 76, 36)


def _request(**over) -> GenerationRequest:
    base = dict(mode="inpaint", prompt="x", steps=3, width=64, height=64, seed=7, save=False, mask_blur=2,
                init_image=_init(W, H), mask=_mask(W, H, BOX), denoising_strength=1.0, inpaint_full_res="Only masked",
                inpaint_full_res_padding=4)
    base.update(over)
    return GenerationRequest(**base)


def test_only_masked_keeps_the_image_size_and_every_unmasked_pixel_exactly(make_engine):
    engine = make_engine()
    req = _request()
    r = engine.generate(req)
    out = np.asarray(r.images[0].image, dtype=int)
    init = np.asarray(req.init_image, dtype=int)
    assert r.images[0].image.size == (W, H)
    blurred = np.asarray(prepare_mask(req.mask, W, H, req.mask_blur, "Just resize"))
    outside = blurred == 0
    assert outside.sum() > 0.9 * W * H
    assert (out[outside] == init[outside]).all()  # byte for byte outside the blurred mask
    x1, y1, x2, y2 = BOX
    assert np.abs(out[y1:y2, x1:x2] - init[y1:y2, x1:x2]).mean() > 10  # the masked part was redrawn
    assert "Inpaint area: Only masked" in r.images[0].infotext and "Masked area padding: 4" in r.images[0].infotext


def test_only_masked_differs_from_whole_picture_which_works_at_width_x_height(make_engine):
    engine = make_engine()
    whole = engine.generate(_request(inpaint_full_res="Whole picture")).images[0]
    assert whole.image.size == (64, 64)  # the whole picture is inpainted (and returned) at the working size
    assert "Inpaint area" not in whole.infotext


def test_only_masked_with_an_empty_mask_falls_back_to_the_whole_picture_with_a_warning(make_engine):
    engine = make_engine()
    r = engine.generate(_request(mask=Image.new("L", (W, H), 0)))
    assert r.images[0].image.size == (64, 64)
    assert any("mask is empty" in w for w in r.warnings)


def test_the_api_follows_a1111s_default_only_masked_and_reports_nothing_ignored(models_root, tmp_path):
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        body = {"prompt": "x", "steps": 3, "width": 64, "height": 64, "seed": 4, "denoising_strength": 1.0,
                "init_images": [png_b64(_init(W, H))], "mask": png_b64(_mask(W, H, BOX)), "mask_blur": 0}
        r = c.post("/sdapi/v1/img2img", json=body)  # no inpaint_full_res: A1111's API default is True
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert "Inpaint area: Only masked" in info["infotexts"][0] and "Masked area padding: 0" in info["infotexts"][0]
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        assert out.size == (W, H)
        r = c.post("/sdapi/v1/img2img", json={**body, "inpaint_full_res": False, "inpaint_full_res_padding": 32})
        info = json.loads(r.json()["info"])
        assert "inpaint_full_res" not in info["ignored"] and "inpaint_full_res_padding" not in info["ignored"]
        assert "Inpaint area" not in info["infotexts"][0]
        bad = c.post("/sdapi/v1/img2img", json={**body, "inpaint_full_res_padding": 300})
        assert bad.status_code == 422 and "inpaint_full_res_padding" in bad.text and "0 to 256" in bad.text
    finally:
        app.state.queue.stop()


def test_an_a1111_infotext_sets_the_inpaint_area_and_mask_mode_by_name(models_root, tmp_path):
    """A1111 1.7+'s ``infotext`` field fills what the request leaves out; its inpaint keys are names
    ("Only masked", "Inpaint not masked"), not the API's 0/1."""
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        text = ("x\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 4, Size: 64x64, Denoising strength: 0.9, Mask blur: 0, "
                "Mask mode: Inpaint not masked, Inpaint area: Only masked, Masked area padding: 8")
        body = {"init_images": [png_b64(_init(W, H))], "mask": png_b64(_mask(W, H, BOX)), "infotext": text}
        r = c.post("/sdapi/v1/img2img", json=body)
        assert r.status_code == 200, r.text
        written = json.loads(r.json()["info"])["infotexts"][0]
        for key in ("Mask mode: Inpaint not masked", "Inpaint area: Only masked", "Masked area padding: 8"):
            assert key in written, key
    finally:
        app.state.queue.stop()
