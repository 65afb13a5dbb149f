"""Send to txt2img / img2img / inpaint (PNG Info and the generation tabs' galleries) restore the
variation-seed "Extra" panel and the inpaint options an infotext holds: the click handlers of the
built UI, called directly (no browser)."""

from __future__ import annotations

import pytest
from PIL import Image

from sdui.images import infotext

VARIED = ("a fox\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 64x64, Variation seed: 5, "
          "Variation seed strength: 0.3, Seed resize from: 640x480")
INPAINTED = ("a fox\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 64x64, Denoising strength: 0.75, Mask blur: 8, "
             "Masked content: latent noise, Mask mode: Inpaint not masked, Inpaint area: Only masked, "
             "Masked area padding: 48")
PLAIN = "a fox\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 64x64"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.jobs import JobQueue
    from sdui.ui.app import build_ui

    root = tmp_path_factory.mktemp("send-to")
    (root / "models").mkdir()
    engine = Engine(Settings(models_dir=str(root / "models"), outputs_dir=str(root / "outputs")))
    demo = build_ui(engine, JobQueue(engine), engine.settings)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}

    def handler(button_elem_id: str):
        """The first function a click on that button runs."""
        target = by_id[button_elem_id]._id
        for fn in demo.fns.values():
            if any(t[0] == target and t[1] == "click" for t in fn.targets):
                return fn.fn
        raise AssertionError(f"no click handler on {button_elem_id}")

    def values(out: dict) -> dict:
        """{elem_id: value} of a handler's answer."""
        return {comp.elem_id: value for comp, value in out.items() if getattr(comp, "elem_id", None)}

    return handler, values


def test_png_info_send_to_txt2img_ticks_extra_and_fills_the_variation_seed(ui):
    handler, values = ui
    got = values(handler("pnginfo_send_to_txt2img")(infotext.parse_infotext(VARIED)))
    assert got["txt2img_subseed_show"] is True
    assert (got["txt2img_subseed"], got["txt2img_subseed_strength"]) == (5, 0.3)
    assert (got["txt2img_seed_resize_from_w"], got["txt2img_seed_resize_from_h"]) == (640, 480)
    assert got["txt2img_seed"] == 1


def test_png_info_send_to_txt2img_without_variation_unticks_extra_and_resets_what_is_left_out(ui):
    handler, values = ui
    plain = values(handler("pnginfo_send_to_txt2img")(infotext.parse_infotext(PLAIN)))
    assert plain["txt2img_subseed_show"] is False
    only_resize = values(handler("pnginfo_send_to_txt2img")(infotext.parse_infotext(PLAIN + ", Seed resize from: 128x96")))
    assert only_resize["txt2img_subseed_show"] is True
    assert (only_resize["txt2img_seed_resize_from_w"], only_resize["txt2img_seed_resize_from_h"]) == (128, 96)
    assert only_resize["txt2img_subseed_strength"] == 0.0  # left out = no variation, not what the slider held


def test_png_info_send_to_img2img_fills_the_inpaint_options(ui):
    handler, values = ui
    got = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(INPAINTED), None))
    assert {k: got[k] for k in ("img2img_mask_blur", "img2img_inpainting_fill", "img2img_mask_mode",
                                "img2img_inpaint_full_res", "img2img_inpaint_full_res_padding")} == {
        "img2img_mask_blur": 8, "img2img_inpainting_fill": "latent noise", "img2img_mask_mode": "Inpaint not masked",
        "img2img_inpaint_full_res": "Only masked", "img2img_inpaint_full_res_padding": 48}


def test_an_inpaint_infotext_without_mask_mode_or_area_means_a1111s_defaults(ui):
    handler, values = ui
    text = PLAIN + ", Mask blur: 4, Masked content: fill"
    got = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(text), None))
    assert (got["img2img_mask_blur"], got["img2img_inpainting_fill"]) == (4, "fill")
    assert (got["img2img_mask_mode"], got["img2img_inpaint_full_res"]) == ("Inpaint masked", "Whole picture")
    assert "img2img_inpaint_full_res_padding" not in got  # not written: the slider keeps its value


def test_a_plain_infotext_leaves_the_inpaint_options_alone(ui):
    handler, values = ui
    got = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(PLAIN), None))
    assert got["img2img_seed"] == 1
    assert not {"img2img_mask_blur", "img2img_inpainting_fill", "img2img_mask_mode"} & set(got)


def test_gallery_send_to_inpaint_carries_the_inpaint_options(ui, tmp_path):
    handler, values = ui
    path = tmp_path / "out.png"
    Image.new("RGB", (64, 64), "white").save(path)
    meta = [{"infotext": INPAINTED}]
    got = values(handler("img2img_send_to_inpaint")(meta, 0, [(str(path), None)]))
    assert got["img2img_mode"].startswith("Inpaint")
    assert (got["img2img_mask_blur"], got["img2img_inpaint_full_res"], got["img2img_inpaint_full_res_padding"]) == (
        8, "Only masked", 48)


def test_png_info_send_to_img2img_ticks_extra_and_fills_the_variation_seed(ui):
    handler, values = ui
    got = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(VARIED), None))
    assert got["img2img_subseed_show"] is True
    assert (got["img2img_subseed"], got["img2img_subseed_strength"]) == (5, 0.3)
    assert (got["img2img_seed_resize_from_w"], got["img2img_seed_resize_from_h"]) == (640, 480)
    plain = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(PLAIN), None))
    assert plain["img2img_subseed_show"] is False


def test_png_info_send_to_inpaint_opens_inpaint_mode_with_the_picture_size_and_options(ui):
    handler, values = ui
    picture = Image.new("RGB", (100, 72), "white")
    got = values(handler("pnginfo_send_to_inpaint")(infotext.parse_infotext(INPAINTED), picture))
    assert got["img2img_mode"] == "Inpaint (paint the mask)"
    assert (got["img2img_width"], got["img2img_height"]) == (96, 72)  # the picture's size, on the 8 px grid
    assert (got["img2img_mask_blur"], got["img2img_inpainting_fill"], got["img2img_inpaint_full_res"]) == (
        8, "latent noise", "Only masked")


def test_png_info_send_to_img2img_of_an_inpainted_image_still_opens_plain_img2img(ui):
    """As in A1111: the button picks the mode, the infotext only fills the (hidden) mask options."""
    handler, values = ui
    got = values(handler("pnginfo_send_to_img2img")(infotext.parse_infotext(INPAINTED), Image.new("RGB", (64, 64))))
    assert got["img2img_mode"] == "img2img (sketch or photo)"
    assert got["img2img_mask_blur"] == 8
