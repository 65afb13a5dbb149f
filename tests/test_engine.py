"""The engine end to end on tiny models: requests, seeds, img2img, inpaint, upscale, progress,
cancel, outputs and the watermark."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from sdui.images import infotext, watermark
from sdui.types import Cancelled, GenerationRequest, InvalidRequest

BASE = dict(prompt="a small house", steps=2, width=64, height=64, seed=77, model="tiny")


# ---- request checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("change,field,allowed", [
    ({"width": 2049}, "width", "an integer from 64 to 2048"),
    ({"height": 4096}, "height", "from 64 to 2048"),
    ({"steps": 0}, "steps", "from 1 to 150"),
    ({"steps": 151}, "steps", "from 1 to 150"),
    ({"cfg_scale": float("nan")}, "cfg_scale", "from 0.0 to 30.0"),
    ({"seed": -2}, "seed", "from -1"),
    ({"batch_size": 0}, "batch_size", "from 1"),
    ({"prompt": "x" * 1_000_000}, "prompt", "at most 20000 characters"),
    ({"sampler": "Euler b"}, "sampler", "Euler a"),
    ({"mode": "img2img"}, "init_image", "an image is required"),
    ({"mode": "dream"}, "mode", "txt2img"),
])
def test_bad_requests_fail_before_any_model_work_naming_field_and_range(make_engine, change, field, allowed):
    engine = make_engine()
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(**{**BASE, **change}))
    assert err.value.field == field and allowed in str(err.value)
    assert engine.manager.current is None, "a model was loaded for a request that was invalid"


def test_unknown_model_is_a_clear_error_and_previous_model_stays(make_engine):
    from sdui.types import UnknownModelError

    engine = make_engine()
    engine.generate(GenerationRequest(**BASE))
    with pytest.raises(UnknownModelError, match="nope"):
        engine.generate(GenerationRequest(**{**BASE, "model": "nope"}))
    assert engine.manager.current.name == "tiny"


# ---- seeds ---------------------------------------------------------------------------------------
def test_every_image_of_a_batch_is_reproducible_alone(make_engine):
    engine = make_engine(no_watermark=True)
    batch = engine.generate(GenerationRequest(**{**BASE, "batch_size": 2, "batch_count": 2, "save": False}))
    assert batch.seeds == [77, 78, 79, 80]
    for img in batch.images:
        fields = infotext.infotext_to_request_fields(infotext.parse_infotext(img.infotext))
        alone = engine.generate(GenerationRequest(**{**BASE, "seed": fields["seed"], "save": False}))
        # batched matmuls round differently from single ones: equal within 1/255, not bit for bit
        diff = np.abs(np.asarray(alone.images[0].image, dtype=np.int16) - np.asarray(img.image, dtype=np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.05


def test_same_request_twice_gives_byte_identical_pngs(make_engine):
    engine = make_engine()
    a = engine.generate(GenerationRequest(**BASE)).images[0]
    b = engine.generate(GenerationRequest(**BASE)).images[0]
    assert a.path != b.path
    assert open(a.path, "rb").read() == open(b.path, "rb").read()


def test_random_seed_is_recorded(make_engine):
    r = make_engine().generate(GenerationRequest(**{**BASE, "seed": -1, "save": False}))
    assert 0 <= r.seeds[0] < 2**32 and f"Seed: {r.seeds[0]}," in r.images[0].infotext


# ---- outputs -------------------------------------------------------------------------------------
def test_saved_png_has_a1111_metadata_in_a1111_layout(make_engine, tmp_path):
    engine = make_engine()
    r = engine.generate(GenerationRequest(**{**BASE, "negative_prompt": "fog", "sampler": "DPM++ 2M Karras"}))
    path = r.images[0].path
    assert "/txt2img-images/" in path and path.endswith("-77.png")
    text = Image.open(path).info["parameters"]
    assert text == r.images[0].infotext
    assert text.startswith("a small house\nNegative prompt: fog\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras, "
                           "CFG scale: 7, Seed: 77, Size: 64x64, Model hash: ")
    p = infotext.parse_infotext(text)
    assert p["Model"] == "tiny" and len(p["Model hash"]) == 10
    assert p["Watermark"].startswith("none")  # 64 px is under the watermark's minimum


def test_outputs_of_256px_are_watermarked_and_verify(make_engine):
    engine = make_engine()
    r = engine.generate(GenerationRequest(**{**BASE, "width": 256, "height": 256}))
    assert r.images[0].watermarked
    assert watermark.verify_watermark(Image.open(r.images[0].path).convert("RGB"))["score"] >= 0.9
    off = make_engine(no_watermark=True).generate(GenerationRequest(**{**BASE, "width": 256, "height": 256}))
    assert not off.images[0].watermarked
    assert watermark.verify_watermark(Image.open(off.images[0].path).convert("RGB"))["score"] < 0.9


# ---- img2img and inpaint ---------------------------------------------------------------------------
def test_img2img_accepts_any_init_size_and_hands_the_pipeline_the_resized_image(make_engine, monkeypatch):
    """A 200x100 init image at 64x64 in each resize mode: the image the diffusers pipeline receives
    is the mode's resize (pixels checked in test_images), told apart here by two pixels each."""
    import diffusers

    from sdui.images import uploads
    from tests.test_images import GREEN, RED, YELLOW, colour_at, regions_image

    received = []
    original = diffusers.StableDiffusionImg2ImgPipeline.__call__

    def spy(self, *args, **kwargs):
        received.append(kwargs["image"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionImg2ImgPipeline, "__call__", spy)
    engine = make_engine(no_watermark=True)
    init = regions_image()
    # (x=1, y=40) is the yellow left edge unless cropped away; (x=20, y=20) is green only where the
    # image was fitted inside the frame (its top band lands lower)
    expected = {"Just resize": (YELLOW, RED), "Crop and resize": (RED, RED), "Resize and fill": (YELLOW, GREEN)}
    for mode, (edge, middle) in expected.items():
        r = engine.generate(GenerationRequest(**{**BASE, "mode": "img2img", "init_image": init, "resize_mode": mode,
                                                 "denoising_strength": 0.5, "steps": 2, "save": False}))
        assert r.images[0].image.size == (64, 64)
        assert "Denoising strength: 0.5" in r.images[0].infotext
        given = received.pop()
        assert given.size == (64, 64)
        assert given.tobytes() == uploads.resize_for_request(init, 64, 64, mode).tobytes(), mode
        assert (colour_at(given, 1, 40), colour_at(given, 20, 20)) == (edge, middle), mode


def test_img2img_strength_controls_how_much_the_init_image_matters(make_engine):
    """Random weights cannot reconstruct an image, so compare two init images under the same seed:
    at low strength their outputs differ a lot, at strength 1 they nearly coincide."""
    engine = make_engine(no_watermark=True)
    a, b = Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (20, 30, 220))
    init = a

    def out(img, strength):
        r = engine.generate(GenerationRequest(**{**BASE, "mode": "img2img", "init_image": img,
                                                 "denoising_strength": strength, "steps": 8, "save": False}))
        return np.asarray(r.images[0].image, dtype=np.float32)

    low = np.abs(out(a, 0.25) - out(b, 0.25)).mean()
    high = np.abs(out(a, 1.0) - out(b, 1.0)).mean()
    assert low > 3 * high
    with pytest.raises(InvalidRequest, match="denoising_strength=0.0 .*at least 0.125 with 8 steps"):
        engine.generate(GenerationRequest(**{**BASE, "mode": "img2img", "init_image": init, "denoising_strength": 0.0,
                                             "steps": 8}))


@pytest.mark.parametrize("model", ["tiny", "tiny-inpaint"])
@pytest.mark.parametrize("fill", ["original", "fill", "latent noise", "latent nothing"])
def test_inpaint_keeps_unmasked_pixels_exactly(make_engine, model, fill):
    engine = make_engine(no_watermark=True)
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    r = engine.generate(GenerationRequest(**{**BASE, "model": model, "mode": "inpaint", "init_image": init, "mask": mask,
                                             "mask_blur": 2, "inpainting_fill": fill, "steps": 3, "save": False}))
    out = np.asarray(r.images[0].image)
    src = np.asarray(init)
    assert np.array_equal(out[:8], src[:8]) and np.array_equal(out[:, :8], src[:, :8])
    assert not np.array_equal(out[24:40, 24:40], src[24:40, 24:40])


def test_inpainting_model_refuses_txt2img_with_a_clear_message(make_engine):
    with pytest.raises(InvalidRequest, match="inpainting model"):
        make_engine().generate(GenerationRequest(**{**BASE, "model": "tiny-inpaint"}))


# ---- progress and cancel -------------------------------------------------------------------------
def test_progress_reports_steps_eta_and_previews(make_engine):
    engine = make_engine()
    seen = []
    engine.generate(GenerationRequest(**{**BASE, "steps": 8, "batch_count": 2}), on_progress=seen.append)
    assert [(p.step, p.total, p.image_index) for p in seen] == [(s, 8, i) for i in (0, 1) for s in range(1, 9)]
    assert all(p.elapsed >= 0 and p.eta >= 0 for p in seen)
    previews = [p for p in seen if p.preview is not None]
    assert [p.step for p in previews] == [4, 8, 4, 8]
    assert previews[0].preview.size == (8, 8)


def test_cancel_stops_between_steps_and_saves_nothing(make_engine, tmp_path):
    engine = make_engine()
    stop = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p.step)
        if p.step == 2:
            stop.set()

    with pytest.raises(Cancelled):
        engine.generate(GenerationRequest(**{**BASE, "steps": 10}), on_progress=on_progress, cancel=stop)
    assert max(seen) <= 3
    assert not list((tmp_path / "outputs").rglob("*.png"))


def test_cancel_keeps_finished_batches(make_engine, tmp_path):
    engine = make_engine()
    stop = threading.Event()

    def on_progress(p):
        if p.image_index == 1 and p.step == 1:
            stop.set()

    with pytest.raises(Cancelled) as err:
        engine.generate(GenerationRequest(**{**BASE, "batch_count": 3}), on_progress=on_progress, cancel=stop)
    # the finished first image, then the interrupted second one as it was (returned, never saved)
    assert [im.partial for im in err.value.partial.images] == [False, True]
    assert len(list((tmp_path / "outputs").rglob("*.png"))) == 1


# ---- upscaling -----------------------------------------------------------------------------------
def test_lanczos_and_listing(make_engine):
    engine = make_engine()
    assert engine.upscaler_names() == ["Lanczos", "Nearest", "SD x4 upscaler", "tiny-esrgan"]
    src = Image.new("RGB", (40, 30), (0, 128, 255))
    r = engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="Lanczos", upscale_factor=2))
    assert r.images[0].image.size == (80, 60) and "/extras-images/" in r.images[0].path
    assert "Postprocess upscaler: Lanczos" in r.images[0].infotext


def test_esrgan_through_spandrel_in_tiles_matches_untiled(make_engine):
    import torch

    from sdui.models import loader
    from sdui.types import ModelKind

    engine = make_engine(no_watermark=True)
    rng = np.random.default_rng(1)
    src = Image.fromarray(rng.integers(0, 255, (40, 300, 3), dtype=np.uint8))  # wider than one 256 px tile
    r = engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="tiny-esrgan", save=False))
    out = np.asarray(r.images[0].image, dtype=np.int16)
    assert out.shape == (160, 1200, 3)
    model = loader.load_upscaler(next(e for e in engine.models(ModelKind.UPSCALER) if e.name == "tiny-esrgan"))
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(src, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        whole = (model.model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.int16)
    # tiles are blended only in their 16 px overlaps; elsewhere identical to the untiled result
    assert np.abs(out[:, :800] - whole[:, :800]).mean() < 2.0


def test_malicious_esrgan_file_is_refused(make_engine, tmp_path):
    import shutil

    from tests.test_formats import _evil_pickle

    root = tmp_path / "m2"
    shutil.copytree(make_engine().settings.models_dir, root)
    canary = tmp_path / "pwned"
    _evil_pickle(root / "ESRGAN" / "evil.pth", canary, zip_format=True)
    engine = make_engine(models_dir=str(root))
    # flagged when the folder is listed (nothing unpickled), so the request names the field and why
    with pytest.raises(InvalidRequest, match=r"upscaler='evil' .*evil.pth: refused: would run code \(imports io.open\)"):
        engine.generate(GenerationRequest(mode="upscale", init_image=Image.new("RGB", (8, 8)), upscaler="evil"))
    assert not canary.exists()


def test_sd_x4_upscaler_tiles_a_large_input_with_progress(make_engine):
    engine = make_engine(no_watermark=True)
    rng = np.random.default_rng(2)
    src = Image.fromarray(rng.integers(0, 255, (72, 200, 3), dtype=np.uint8))  # 2 tiles across
    seen = []
    r = engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="SD x4 upscaler", prompt="sharp",
                                          noise_level=30, steps=2, seed=3, save=False), on_progress=seen.append)
    assert r.images[0].image.size == (800, 288)
    assert seen[-1].step == seen[-1].total == 4  # 2 tiles x 2 steps
    assert "Noise level: 30" in r.images[0].infotext and r.model_name == "tiny-x4"


def test_sd_x4_upscaler_cancels_through_its_legacy_callback(make_engine, tmp_path):
    engine = make_engine()
    stop = threading.Event()
    src = Image.new("RGB", (64, 64), (90, 90, 90))
    with pytest.raises(Cancelled):
        engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="SD x4 upscaler", steps=5, seed=1),
                        on_progress=lambda p: stop.set(), cancel=stop)
    assert not list((tmp_path / "outputs").rglob("*.png"))


def test_noise_level_is_range_checked(make_engine):
    with pytest.raises(InvalidRequest, match="noise_level=351"):
        make_engine().generate(GenerationRequest(mode="upscale", init_image=Image.new("RGB", (8, 8)),
                                                 upscaler="SD x4 upscaler", noise_level=351))
