"""A1111's variation seed and seed resize in img2img and inpaint (and the Hires. fix pass): the random
start of image i (the VAE's sample of the image and the noise added to it) slerped toward that of
subseed + i, or drawn at another size and pasted centred; pixels against a stock diffusers call whose
draws the test makes itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sdui import samplers
from sdui.fields import INPAINT_AREAS
from sdui.images import infotext
from sdui.pipelines.common import slerp
from sdui.types import GenerationRequest

BASE = dict(prompt="a watercolor fox", sampler="Euler", steps=2, width=64, height=64, model="tiny", save=False,
            denoising_strength=0.75)


def _init_image() -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def _mask() -> Image.Image:
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    return Image.fromarray(m)


def _i2i(**kw) -> GenerationRequest:
    return GenerationRequest(**BASE, mode="img2img", init_image=_init_image(), **kw)


def _inpaint(**kw) -> GenerationRequest:
    return GenerationRequest(**BASE, mode="inpaint", init_image=_init_image(), mask=_mask(), mask_blur=0,
                             inpainting_fill="original", inpaint_full_res=INPAINT_AREAS[0], **kw)


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im.image, dtype=np.int16) for im in result.images]


def _bytes(result) -> list[bytes]:
    return [im.image.tobytes() for im in result.images]


@pytest.fixture()
def engine(make_engine):
    return make_engine(no_watermark=True)


def _slerped_randn(monkeypatch, modules, seed: int, subseed: int, strength: float) -> None:
    """Every ``randn_tensor`` of ``modules`` (a stock pipeline's and the VAE's) returns A1111's slerp of the
    next draw of a generator of ``seed`` and of one of ``subseed`` (each (1, C, H, W) draw as its (C, H, W))."""
    gens = (torch.Generator("cpu").manual_seed(seed), torch.Generator("cpu").manual_seed(subseed))

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        a, b = (torch.randn(shape, generator=g, dtype=dtype) for g in gens)
        return slerp(strength, a[0].float(), b[0].float()).unsqueeze(0).to(device=device, dtype=dtype)

    for module in modules:
        monkeypatch.setattr(f"{module}.randn_tensor", randn_tensor)


def _resized_randn(monkeypatch, modules, seed: int, subseed: int, strength: float, small: tuple[int, int]) -> None:
    """As ``_slerped_randn`` for "Resize seed from": each draw is that of a generator of ``seed`` at the real
    size with, in its middle, the slerp of the draws at the ``small`` (latent h, w) size of generators of
    ``seed`` and ``subseed`` of their own (A1111's ``ImageRNG.first``, draw by draw)."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in (seed, seed, subseed)]

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        x = torch.randn(shape, generator=gens[0], dtype=dtype)[0]
        a, b = (torch.randn((shape[1], *small), generator=g, dtype=dtype) for g in gens[1:])
        noise = slerp(strength, a.float(), b.float()).to(x.dtype)
        top, left = (x.shape[1] - small[0]) // 2, (x.shape[2] - small[1]) // 2
        x[:, top:top + small[0], left:left + small[1]] = noise
        return x.unsqueeze(0).to(device=device, dtype=dtype)

    for module in modules:
        monkeypatch.setattr(f"{module}.randn_tensor", randn_tensor)


def _stock(engine, cls_name: str, **kwargs) -> np.ndarray:
    """A stock diffusers call of ``cls_name`` built from the loaded model, with the engine's Euler scheduler."""
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pipe(engine.manager.current.pipe)
    pipe.scheduler = samplers.make_scheduler(engine.manager.current.base_scheduler_config, "Euler")
    out = pipe("a watercolor fox", num_inference_steps=2, guidance_scale=7.0, strength=0.75, output_type="pil", **kwargs)
    return out.images[0]


VAE_MODULE = "diffusers.models.autoencoders.vae"
I2I_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img"
INPAINT_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint"


# ---- img2img ----------------------------------------------------------------------------------------------
def test_img2img_strength_0_is_the_plain_seeds_pixels_exactly(engine):
    plain = engine.generate(_i2i(seed=11))
    varied = engine.generate(_i2i(seed=11, subseed=99, subseed_strength=0.0))
    assert _bytes(plain) == _bytes(varied)
    assert "Variation seed" not in varied.images[0].infotext


def test_img2img_strength_1_is_the_plain_job_of_the_variation_seed(engine):
    varied = engine.generate(_i2i(seed=11, subseed=99, subseed_strength=1.0))
    other_seed = engine.generate(_i2i(seed=99))
    assert np.abs(_pixels(varied)[0] - _pixels(other_seed)[0]).max() <= 1


def test_img2img_strength_half_is_a1111s_slerp_of_the_two_seeds_draws(engine, monkeypatch):
    varied = engine.generate(_i2i(seed=11, subseed=99, subseed_strength=0.5))
    plain = engine.generate(_i2i(seed=11))
    assert np.abs(_pixels(varied)[0] - _pixels(plain)[0]).max() > 1  # the start really moved
    _slerped_randn(monkeypatch, (I2I_MODULE, VAE_MODULE), 11, 99, 0.5)
    want = np.asarray(_stock(engine, "StableDiffusionImg2ImgPipeline", image=_init_image()), dtype=np.int16)
    assert np.abs(_pixels(varied)[0] - want).max() <= 1


def test_img2img_batch_image_i_uses_subseed_plus_i_and_writes_a1111s_keys(engine):
    batch = engine.generate(_i2i(seed=11, subseed=40, subseed_strength=0.3, batch_size=2))
    second = engine.generate(_i2i(seed=12, subseed=41, subseed_strength=0.3))
    assert np.abs(_pixels(batch)[1] - _pixels(second)[0]).max() <= 1
    keys = [infotext.parse_infotext(im.infotext) for im in batch.images]
    assert [(k["Seed"], k["Variation seed"], k["Variation seed strength"]) for k in keys] == \
        [("11", "40", "0.3"), ("12", "41", "0.3")]
    back = infotext.infotext_to_request_fields(keys[1])
    assert (back["subseed"], back["subseed_strength"]) == (41, 0.3)
    assert batch.images[0].image.tobytes() != engine.generate(_i2i(seed=11)).images[0].image.tobytes()


def test_img2img_seed_resize_pastes_the_smaller_draws_centred(engine, monkeypatch):
    """Resize seed from 32x32 into 64x64 at strength 0.25: the 4x4 middle of each 8x8 draw is the slerp of
    draws made as for 32x32; written as A1111's "Seed resize from: 32x32"."""
    r = engine.generate(_i2i(seed=5, subseed=8, subseed_strength=0.25, seed_resize_from_w=32, seed_resize_from_h=32))
    _resized_randn(monkeypatch, (I2I_MODULE, VAE_MODULE), 5, 8, 0.25, (4, 4))
    want = np.asarray(_stock(engine, "StableDiffusionImg2ImgPipeline", image=_init_image()), dtype=np.int16)
    assert np.abs(_pixels(r)[0] - want).max() <= 1
    assert "Variation seed: 8, Variation seed strength: 0.25, Seed resize from: 32x32" in r.images[0].infotext
    only_resize = engine.generate(_i2i(seed=5, seed_resize_from_w=32, seed_resize_from_h=32))
    assert np.abs(_pixels(only_resize)[0] - _pixels(engine.generate(_i2i(seed=5)))[0]).max() > 1


def test_img2img_random_variation_seed_is_fixed(engine):
    req = engine.prepare(_i2i(seed=1, subseed=-1, subseed_strength=0.5))
    assert 0 <= req.subseed < 2**32


def test_img2img_leaves_the_pipeline_as_it_was(engine):
    """The start methods are replaced only during the call (the pipeline is shared by later jobs)."""
    engine.generate(_i2i(seed=3, subseed=4, subseed_strength=0.5))
    pipe = engine.manager.current.pipe
    assert "prepare_latents" not in vars(pipe) and "prepare_mask_latents" not in vars(pipe)


# ---- inpaint ----------------------------------------------------------------------------------------------
def test_inpaint_strength_0_is_the_plain_seeds_pixels_exactly(engine):
    plain = engine.generate(_inpaint(seed=11))
    varied = engine.generate(_inpaint(seed=11, subseed=99, subseed_strength=0.0))
    assert _bytes(plain) == _bytes(varied)


def test_inpaint_strength_1_is_the_plain_job_of_the_variation_seed(engine):
    varied = engine.generate(_inpaint(seed=11, subseed=99, subseed_strength=1.0))
    other_seed = engine.generate(_inpaint(seed=99))
    assert np.abs(_pixels(varied)[0] - _pixels(other_seed)[0]).max() <= 1


def test_inpaint_strength_half_is_a1111s_slerp_and_keeps_the_unmasked_pixels(engine, monkeypatch):
    varied = engine.generate(_inpaint(seed=11, subseed=99, subseed_strength=0.5))
    plain = engine.generate(_inpaint(seed=11))
    got, before = _pixels(varied)[0], _pixels(plain)[0]
    assert np.abs(got - before).max() > 1
    outside = np.asarray(_mask()) == 0
    assert np.array_equal(got[outside], np.asarray(_init_image(), dtype=np.int16)[outside])
    _slerped_randn(monkeypatch, (INPAINT_MODULE, VAE_MODULE), 11, 99, 0.5)
    out = _stock(engine, "StableDiffusionInpaintPipeline", image=_init_image(), mask_image=_mask(), height=64, width=64)
    want = np.asarray(Image.composite(out, _init_image(), _mask()), dtype=np.int16)
    assert np.abs(got - want).max() <= 1
    keys = infotext.parse_infotext(varied.images[0].infotext)
    assert (keys["Variation seed"], keys["Variation seed strength"]) == ("99", "0.5")


def test_inpaint_batch_image_i_uses_subseed_plus_i(engine):
    """Compared batch to batch: diffusers' inpaint pipeline encodes the one init image with the first image's
    generator for the whole batch, so image 2 of a batch is not the single job of its seed (with or without a
    variation seed); at strength 1 the batch of subseed 70 is the plain batch of seed 70 (images 70 and 71)."""
    batch = engine.generate(_inpaint(seed=20, subseed=70, subseed_strength=1.0, batch_size=2))
    plain = engine.generate(_inpaint(seed=70, batch_size=2))
    assert max(np.abs(a - b).max() for a, b in zip(_pixels(batch), _pixels(plain), strict=True)) <= 1
    assert [infotext.parse_infotext(im.infotext)["Variation seed"] for im in batch.images] == ["70", "71"]
    half = engine.generate(_inpaint(seed=20, subseed=70, subseed_strength=0.4, batch_size=2))
    assert [infotext.parse_infotext(im.infotext)["Variation seed"] for im in half.images] == ["70", "71"]


# ---- Hires. fix second pass -------------------------------------------------------------------------------
def test_hires_second_pass_uses_the_variation_seed_too(engine):
    """A1111's sample_hr_pass makes its noise with the same seeds and subseeds: strength 1 with subseed S is
    the plain Hires. fix job of seed S, both passes."""
    hr = dict(BASE, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.6)
    varied = engine.generate(GenerationRequest(**hr, seed=5, subseed=6, subseed_strength=1.0))
    other_seed = engine.generate(GenerationRequest(**hr, seed=6))
    assert np.abs(_pixels(varied)[0] - _pixels(other_seed)[0]).max() <= 1
    plain = engine.generate(GenerationRequest(**hr, seed=5))
    assert np.abs(_pixels(varied)[0] - _pixels(plain)[0]).max() > 1


# ---- API --------------------------------------------------------------------------------------------------
def test_api_img2img_takes_the_variation_seed_and_answers_it_in_info(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import png_b64

    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        r = c.post("/sdapi/v1/img2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 2,
                                               "init_images": [png_b64(_init_image())], "subseed": 9,
                                               "subseed_strength": 0.4, "batch_size": 2, "seed_resize_from_w": 32,
                                               "seed_resize_from_h": 32})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (9, [9, 10], 0.4)
        assert not {"subseed_strength", "seed_resize_from_w", "seed_resize_from_h"} & set(info["ignored"])
        assert (info["seed_resize_from_w"], info["seed_resize_from_h"]) == (32, 32)
        assert "Variation seed: 10, Variation seed strength: 0.4, Seed resize from: 32x32" in info["infotexts"][1]
    finally:
        app.state.queue.stop()
