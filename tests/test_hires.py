"""Hires. fix (A1111's txt2img second pass) on the tiny models, 64 -> 128: the target size rules, the
same seeds in both passes, one progress count, every latent mode and the pixel upscalers, the
infotext and its PNG-Info round trip, the API, and the pixels of a plain diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdui import fields
from sdui.images import infotext
from sdui.pipelines import hires, img2img, txt2img
from sdui.types import GenerationRequest, InvalidRequest, hires_target
from tests import tiny

BASE = dict(prompt="a lighthouse", negative_prompt="blurry", sampler="Euler", steps=3, cfg_scale=7.0, width=64,
            height=64, seed=11, save=False, watermark=False, model="tiny")
HIRES = dict(BASE, enable_hr=True, hr_scale=2.0, denoising_strength=0.7)
LATENT_MODES = list(fields.LATENT_UPSCALE_MODES)


@pytest.fixture(scope="module")
def engine(models_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("hires-out"))))
    yield e
    e.manager.release_all()


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im.image, dtype=np.int16) for im in result.images]


# ---- the target size: A1111's calculate_target_resolution ------------------------------------------------
@pytest.mark.parametrize("size,scale,resize,expected", [
    ((64, 64), 2.0, (0, 0), (128, 128)),
    ((512, 768), 1.5, (0, 0), (768, 1152)),
    ((64, 64), 1.3, (0, 0), (80, 80)),  # int(83.2) = 83 -> the 8 px grid below
    ((64, 96), 2.0, (128, 0), (128, 192)),  # only the width: the height keeps the aspect ratio
    ((64, 96), 2.0, (0, 128), (80, 128)),  # only the height: 128 * 64 // 96 = 85 -> 80
    ((64, 64), 2.0, (128, 96), (128, 96)),  # both: cover 128x128, crop 4 latent rows (2 top, 2 bottom)
    ((64, 64), 2.0, (96, 128), (96, 128)),
])
def test_target_size_follows_a1111(size, scale, resize, expected):
    t = hires_target(*size, scale, *resize)
    assert (t.width, t.height) == expected


def test_invalid_hires_requests_name_the_field(engine):
    with pytest.raises(InvalidRequest, match="hr_scale=4.0 is not allowed: a Hires. fix size"):
        engine.prepare(GenerationRequest(**dict(HIRES, width=1024, height=1024, hr_scale=4.0)))
    with pytest.raises(InvalidRequest, match="denoising_strength=0.1 .*at least 0.25 with 4 hires steps"):
        engine.prepare(GenerationRequest(**dict(HIRES, denoising_strength=0.1, hr_second_pass_steps=4)))
    with pytest.raises(InvalidRequest, match="hr_upscaler='Latent \\(fancy\\)' .*one of Latent, Latent \\(antialiased\\)"):
        engine.prepare(GenerationRequest(**dict(HIRES, hr_upscaler="Latent (fancy)")))
    with pytest.raises(InvalidRequest, match="hr_sampler='no such sampler'"):
        engine.prepare(GenerationRequest(**dict(HIRES, hr_sampler="no such sampler")))
    with pytest.raises(InvalidRequest, match="enable_hr='yes' is not allowed: true or false"):
        engine.prepare(GenerationRequest(**dict(HIRES, enable_hr="yes")))
    # A1111's "Use same ..." choices, and an old combined sampler name, are understood
    req = engine.prepare(GenerationRequest(**dict(HIRES, hr_sampler="Use same sampler", hr_scheduler="Use same scheduler")))
    assert (req.hr_sampler, req.hr_scheduler) == ("", "")
    req = engine.prepare(GenerationRequest(**dict(HIRES, hr_sampler="DPM++ 2M Karras")))
    assert (req.hr_sampler, req.hr_scheduler) == ("DPM++ 2M", "Karras")


# ---- the engine: size, seeds, progress ---------------------------------------------------------------------
def test_hires_makes_the_target_size_and_keeps_the_first_pass_size_in_the_infotext(engine):
    r = engine.generate(GenerationRequest(**HIRES))
    assert r.images[0].image.size == (128, 128)
    text = r.images[0].infotext
    params = text.split("\n")[-1]
    assert "Size: 64x64" in params and "Denoising strength: 0.7" in params
    assert "Hires upscale: 2, Hires upscaler: Latent" in params
    assert "Hires steps" not in params and "Hires resize" not in params and "Hires sampler" not in params
    keys = [kv.split(":")[0].strip() for kv in params.split(", ")]
    # A1111's create_infotext order: Size ... Denoising strength, then extra_generation_params
    assert keys.index("Size") < keys.index("Denoising strength") < keys.index("Hires upscale") < keys.index(
        "Hires upscaler") < keys.index("Version")
    # different from the plain 64x64 image made bigger: the second pass redrew it
    plain = engine.generate(GenerationRequest(**BASE))
    assert plain.images[0].image.size == (64, 64) and "Hires" not in plain.images[0].infotext
    assert "Denoising strength" not in plain.images[0].infotext


def test_resize_to_width_and_height_crops_as_a1111(engine):
    r = engine.generate(GenerationRequest(**dict(HIRES, hr_resize_x=128, hr_resize_y=96, steps=2)))
    assert r.images[0].image.size == (128, 96)
    assert "Hires resize: 128x96" in r.images[0].infotext and "Hires upscale:" not in r.images[0].infotext


def test_the_second_pass_uses_fresh_generators_of_the_same_seeds(engine, monkeypatch):
    seen: dict[str, list] = {"first": [], "second": []}

    def recording(where, real):
        def make(seeds):
            gens = real(seeds)
            seen[where].append([g.initial_seed() for g in gens])
            return gens
        return make

    monkeypatch.setattr(txt2img, "generators", recording("first", txt2img.generators))
    monkeypatch.setattr(img2img, "generators", recording("second", img2img.generators))  # the second pass denoises as img2img
    r = engine.generate(GenerationRequest(**dict(HIRES, steps=2, batch_size=2, batch_count=2)))
    assert seen["first"] == seen["second"] == [[11, 12], [13, 14]]
    assert r.seeds == [11, 12, 13, 14] and all(im.image.size == (128, 128) for im in r.images)
    # each image can be made again alone from its own seed (batch position does not matter)
    alone = engine.generate(GenerationRequest(**dict(HIRES, steps=2, seed=12)))
    assert np.abs(_pixels(alone)[0] - _pixels(r)[1]).max() <= 1


def test_progress_counts_both_passes_as_one(engine):
    seen = []
    engine.generate(GenerationRequest(**dict(HIRES, steps=3, hr_second_pass_steps=4, denoising_strength=0.5)),
                    on_progress=lambda p: seen.append((p.stage, p.step, p.total)))
    # 3 first-pass steps, then 4 x 0.5 = 2 second-pass steps (img2img runs steps x strength)
    assert seen == [("sampling", 1, 5), ("sampling", 2, 5), ("sampling", 3, 5), ("hires", 4, 5), ("hires", 5, 5)]


def test_an_interrupt_keeps_the_partial_image_of_the_pass_it_stopped(engine):
    from sdui.types import Cancelled

    seen: list = []
    req = GenerationRequest(**dict(HIRES, steps=2, hr_second_pass_steps=4, denoising_strength=1.0))
    with pytest.raises(Cancelled) as stop:  # in the second pass: its latents so far, at the target size
        engine.generate(req, on_progress=seen.append, cancel=lambda: bool(seen) and seen[-1].stage == "hires")
    partial = stop.value.partial.images
    assert len(partial) == 1 and partial[0].partial and partial[0].image.size == (128, 128)
    assert "Size: 64x64" in partial[0].infotext and partial[0].path is None
    seen.clear()
    with pytest.raises(Cancelled) as stop:  # between the passes: the first pass's image, as A1111 answers
        engine.generate(req, on_progress=seen.append, cancel=lambda: bool(seen) and seen[-1].step == 2)
    assert [im.image.size for im in stop.value.partial.images] == [(64, 64)]


# ---- the upscalers ---------------------------------------------------------------------------------------
def test_latent_modes_interpolate_as_a1111s_table():
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    target = hires_target(64, 64, 1.5)
    for name, (mode, antialias) in fields.LATENT_UPSCALE_MODES.items():
        expected = torch.nn.functional.interpolate(latents, size=(12, 12), mode=mode, antialias=antialias)
        assert torch.equal(hires.upscale_latents(latents, target, name), expected), name
    cropped = hires.upscale_latents(latents, hires_target(64, 64, 2.0, 128, 96), "Latent")
    full = torch.nn.functional.interpolate(latents, size=(16, 16), mode="bilinear")
    assert torch.equal(cropped, full[:, :, 2:14])  # 4 rows cropped, half on each side


def test_every_latent_mode_gives_the_size_and_its_own_pixels(engine):
    """At 1.5x (64 -> 96) the interpolations differ (at exactly 2x nearest and nearest-exact agree)."""
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    target = hires_target(64, 64, 1.5)
    images = {}
    for name in LATENT_MODES:
        r = engine.generate(GenerationRequest(**dict(HIRES, steps=2, hr_scale=1.5, hr_upscaler=name,
                                                     denoising_strength=0.5)))
        assert r.images[0].image.size == (96, 96), name
        assert f"Hires upscaler: {quote(name)}" in r.images[0].infotext
        images[name] = _pixels(r)[0]
    for a in LATENT_MODES:
        differs = [b for b in LATENT_MODES if b != a and not np.array_equal(images[a], images[b])]
        assert differs, a
        for b in LATENT_MODES:  # images differ exactly where the upscaled latents do
            same_latents = torch.equal(hires.upscale_latents(latents, target, a), hires.upscale_latents(latents, target, b))
            if not same_latents:
                assert not np.array_equal(images[a], images[b]), (a, b)


def quote(text: str) -> str:
    return infotext.quote(text)


@pytest.mark.parametrize("name", ["Lanczos", "Nearest", "None", "tiny-esrgan"])
def test_pixel_upscalers_upscale_the_decoded_image(engine, name):
    r = engine.generate(GenerationRequest(**dict(HIRES, steps=2, hr_upscaler=name)))
    assert r.images[0].image.size == (128, 128)
    assert f"Hires upscaler: {name}" in r.images[0].infotext
    latent = engine.generate(GenerationRequest(**dict(HIRES, steps=2)))
    assert not np.array_equal(_pixels(r)[0], _pixels(latent)[0])


def test_pixel_upscale_follows_a1111s_resize_image():
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    target = hires_target(64, 48, 1.3)  # 83x62: Lanczos to 83x62, then the latent grid's 80x56
    out = hires.upscale_pixels(img, target, hires.simple_upscaler("Lanczos"))
    assert out.size == (target.width, target.height) == (80, 56)
    calls = []

    def fixed_x2(im, scale):  # a model of a fixed scale runs until it is big enough (A1111: at most 3 times)
        calls.append(im.size)
        return im.resize((im.width * 2, im.height * 2))

    out = hires.upscale_pixels(img, hires_target(64, 48, 3.0), fixed_x2)
    assert calls == [(64, 48), (128, 96)] and out.size == (192, 144)


# ---- reference: the same pixels as plain diffusers calls --------------------------------------------------
def _reference(models_root: Path, upscaler: str) -> np.ndarray:
    """A plain diffusers txt2img (the first pass), A1111's upscale of its latents or image, then a plain
    StableDiffusionImg2ImgPipeline on that input with a fresh generator of the same seed."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    config = json.loads((models_root / "Stable-diffusion" / "tiny.config" / "scheduler" /
                         "scheduler_config.json").read_text())
    pipe = tiny.tiny_pipeline(seed=0)
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    common = dict(prompt=BASE["prompt"], negative_prompt=BASE["negative_prompt"], guidance_scale=BASE["cfg_scale"],
                  num_inference_steps=BASE["steps"])
    seed = BASE["seed"]
    first = pipe(**common, height=64, width=64, generator=[torch.Generator("cpu").manual_seed(seed)],
                 output_type="latent" if upscaler == "Latent" else "pil").images
    if upscaler == "Latent":
        start = torch.nn.functional.interpolate(first, size=(16, 16), mode="bilinear", antialias=False)
    else:
        start = [first[0].resize((128, 128), resample=Image.LANCZOS)]
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.scheduler = EulerDiscreteScheduler.from_config(config)
    i2i.set_progress_bar_config(disable=True)
    out = i2i(**common, image=start, strength=HIRES["denoising_strength"],
              generator=[torch.Generator("cpu").manual_seed(seed)], output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_the_second_pass_equals_a_plain_diffusers_img2img(engine, models_root, upscaler):
    ours = engine.generate(GenerationRequest(**dict(HIRES, hr_upscaler=upscaler)))
    assert np.abs(_pixels(ours)[0] - _reference(models_root, upscaler)).max() <= 1


# ---- infotext and PNG Info ---------------------------------------------------------------------------------
def test_infotext_round_trips_the_hires_fields_and_remakes_the_image(engine):
    asked = dict(HIRES, steps=2, hr_second_pass_steps=3, hr_upscaler="Latent (bicubic)", hr_resize_x=128,
                 hr_resize_y=96, hr_sampler="DDIM", hr_prompt="a lighthouse, at night", hr_negative_prompt="fog",
                 denoising_strength=0.66)
    r = engine.generate(GenerationRequest(**asked))
    text = r.images[0].infotext
    assert ('Hires sampler: DDIM, Hires prompt: "a lighthouse, at night", Hires negative prompt: fog, '
            'Hires resize: 128x96, Hires steps: 3, Hires upscaler: Latent (bicubic)') in text
    parsed = infotext.parse_infotext(text)
    assert fields.hires_in_infotext(parsed)
    back = infotext.infotext_to_request_fields(parsed)
    for name in ("hr_second_pass_steps", "hr_upscaler", "hr_resize_x", "hr_resize_y", "hr_sampler", "hr_prompt",
                 "hr_negative_prompt", "denoising_strength", "width", "height", "steps", "seed"):
        assert back[name] == asked[name], name
    back.pop("model_hint")
    again = engine.generate(GenerationRequest(**back, enable_hr=True, model="tiny", save=False, watermark=False))
    assert again.images[0].image.size == (128, 96)
    assert np.array_equal(_pixels(again)[0], _pixels(r)[0])
    # an image without Hires. fix is not one (A1111's rule needs a Hires key besides the strength)
    assert not fields.hires_in_infotext(infotext.parse_infotext("x\nSteps: 2, Seed: 1, Denoising strength: 0.5"))


def test_png_info_send_fills_the_hires_accordion():
    from sdui.ui.tabs.txt2img import fill_hires, hires_request_fields, hires_size_text

    names = ("enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x",
             "hr_resize_y", "hr_sampler", "hr_scheduler", "hr_prompt", "hr_negative_prompt")
    comps = {n: object() for n in names}
    text = ("a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.45, "
            "Hires upscale: 1.5, Hires steps: 10, Hires upscaler: Latent (nearest-exact)")
    out = fill_hires(comps, infotext.parse_infotext(text), [*fields.LATENT_UPSCALE_MODES, "None", "Lanczos"])
    got = {n: out[c] for n, c in comps.items() if c in out}
    assert got == {"enable_hr": True, "hr_upscaler": "Latent (nearest-exact)", "hr_second_pass_steps": 10,
                   "denoising_strength": 0.45, "hr_scale": 1.5, "hr_resize_x": 0, "hr_resize_y": 0,
                   "hr_sampler": "Use same sampler", "hr_scheduler": "Use same scheduler", "hr_prompt": "",
                   "hr_negative_prompt": ""}
    plain = fill_hires(comps, infotext.parse_infotext("a fox\nSteps: 20, Sampler: Euler a, Seed: 1"), [])
    assert plain == {comps["enable_hr"]: False}
    data = {comps[n]: v for n, v in got.items()}
    fields_back = hires_request_fields(comps, data)
    assert fields_back["hr_sampler"] == fields_back["hr_scheduler"] == "" and fields_back["hr_scale"] == 1.5
    assert hires_size_text(True, 512, 512, 1.5, 0, 0) == ("from <span class='resolution'>512x512</span> to "
                                                         "<span class='resolution'>768x768</span>")
    assert hires_size_text(False, 512, 512, 2, 0, 0) == ""


def test_the_txt2img_tab_has_a1111s_hires_accordion(models_root, tmp_path):
    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.jobs import JobQueue
    from sdui.ui.app import build_ui

    e = Engine(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path)))
    demo = build_ui(e, JobQueue(e), e.settings)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    labels = {elem: by_id[elem].label for elem in ("txt2img_enable_hr", "txt2img_hr_upscaler", "txt2img_hires_steps",
                                                    "txt2img_denoising_strength", "txt2img_hr_scale",
                                                    "txt2img_hr_resize_x", "txt2img_hr_resize_y")}
    assert labels == {"txt2img_enable_hr": "Hires. fix", "txt2img_hr_upscaler": "Upscaler",
                      "txt2img_hires_steps": "Hires steps", "txt2img_denoising_strength": "Denoising strength",
                      "txt2img_hr_scale": "Upscale by", "txt2img_hr_resize_x": "Resize width to",
                      "txt2img_hr_resize_y": "Resize height to"}
    assert by_id["txt2img_denoising_strength"].value == 0.7  # A1111's txt2img slider
    assert (by_id["txt2img_hr_scale"].minimum, by_id["txt2img_hr_scale"].maximum) == (1.0, 4.0)
    choices = [c[0] if isinstance(c, tuple) else c for c in by_id["txt2img_hr_upscaler"].choices]
    assert choices == [*fields.LATENT_UPSCALE_MODES, "None", "Lanczos", "Nearest", "tiny-esrgan"]
    assert "txtimg_hr_finalres" in by_id


# ---- the API -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(models_root, tmp_path_factory):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("hires-api")),
                              api=True), with_ui=False)
    try:
        yield TestClient(app, base_url="http://127.0.0.1:7860")
    finally:
        app.state.queue.stop()


def _png(b64: str) -> Image.Image:
    import base64
    import io

    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_the_api_makes_the_hires_size_and_no_longer_ignores_enable_hr(api):
    body = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 3, "enable_hr": True,
            "hr_scale": 2, "hr_upscaler": "Latent", "hr_sampler_name": "Use same sampler",
            "hr_checkpoint_name": "Use same checkpoint"}
    r = api.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    img = _png(r.json()["images"][0])
    assert img.size == (128, 128)
    info = json.loads(r.json()["info"])
    assert "enable_hr" not in info["ignored"] and not any(k.startswith("hr_") for k in info["ignored"])
    assert (info["width"], info["height"]) == (64, 64) and info["denoising_strength"] == 0.75  # A1111's default
    assert "Hires upscale: 2" in info["infotexts"][0] and "Denoising strength: 0.75" in info["infotexts"][0]
    # A1111's infotext field turns Hires. fix on from a Hires. fix text
    again = api.post("/sdapi/v1/txt2img", json={"infotext": info["infotexts"][0]})
    assert again.status_code == 200, again.text
    assert _png(again.json()["images"][0]).size == (128, 128)
    bad = api.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "R-ESRGAN 4x+"})
    assert bad.status_code == 422 and "hr_upscaler" in bad.text
    i2i = api.post("/sdapi/v1/img2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "enable_hr": True,
                                              "init_images": [r.json()["images"][0]], "denoising_strength": 0.5})
    assert i2i.status_code == 200 and "enable_hr" in json.loads(i2i.json()["info"])["ignored"]


def test_the_api_lists_a1111s_latent_upscale_modes(api):
    assert api.get("/sdapi/v1/latent-upscale-modes").json() == [
        {"name": "Latent"}, {"name": "Latent (antialiased)"}, {"name": "Latent (bicubic)"},
        {"name": "Latent (bicubic antialiased)"}, {"name": "Latent (nearest)"}, {"name": "Latent (nearest-exact)"}]
