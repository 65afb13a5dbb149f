"""ESRGAN-family upscalers go through the model manager like every model: loaded once, cached,
placed, and retried lower on out-of-memory (simulated: there is no GPU here)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sdui.types import GenerationRequest, MemoryLevel
import torch

def test_esrgan_is_loaded_once_and_cached_by_the_manager(make_engine, monkeypatch):
    from sdui.models import loader
    engine = make_engine()
    calls = []
    real = loader.load_upscaler
    monkeypatch.setattr(loader, "load_upscaler", lambda e: calls.append(e.name) or real(e))
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    a = engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="tiny-esrgan", save=False))
    b = engine.generate(GenerationRequest(mode="upscale", init_image=src, upscaler="tiny-esrgan", save=False))
    assert calls == ["tiny-esrgan"]
    assert np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))
    assert "tiny-esrgan" in engine.status()["upscalers_cached"]

def test_simulated_oom_in_an_upscaler_retries_on_the_cpu(make_engine, monkeypatch):
    from sdui.models import devices
    engine = make_engine()
    monkeypatch.setattr(devices, "is_accelerator", lambda d: True)  # a pretend GPU: the first place is "it"
    seen = []
    def fn(model, device):
        seen.append(str(device))
        if len(seen) == 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return "ok"
    out, level = engine.manager.run_upscaler("tiny-esrgan", fn)
    assert out == "ok" and level == MemoryLevel.CPU and len(seen) == 2 and seen[1] == "cpu"


# ---- A1111's extras options: "Scale to" with "Crop to fit", "Upscaler 2" and its visibility -----------
def _src(w=24, h=16):
    return Image.fromarray(np.random.default_rng(5).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _up(engine, **kw):
    base = dict(mode="upscale", init_image=_src(), upscaler="tiny-esrgan", save=False)
    return engine.generate(GenerationRequest(**{**base, **kw})).images[0]


def test_scale_to_with_crop_gives_exactly_width_x_height_from_the_centre(make_engine):
    engine = make_engine()
    out = _up(engine, upscaler="Lanczos", upscale_mode="Scale to", upscale_to_width=64, upscale_to_height=64)
    assert out.image.size == (64, 64)
    # A1111: scaled by max(64/24, 64/16) = 4 to cover (96x64), then the centre 64x64
    covering = _src().resize((96, 64), Image.LANCZOS).crop((16, 0, 80, 64))
    assert np.array_equal(np.asarray(out.image), np.asarray(covering))
    assert "Postprocess upscale to: 64x64" in out.infotext and "Postprocess crop to: 64x64" in out.infotext


def test_scale_to_without_crop_keeps_the_aspect_ratio_and_covers_the_box(make_engine):
    engine = make_engine()
    out = _up(engine, upscale_mode="Scale to", upscale_to_width=64, upscale_to_height=64, upscale_crop=False)
    assert out.image.size == (96, 64)  # as A1111: no stretch, no crop
    assert "Postprocess crop to" not in out.infotext


def test_upscaler_2_visibility_0_is_upscaler_1_and_1_is_upscaler_2(make_engine):
    engine = make_engine()
    first = np.asarray(_up(engine, upscaler="tiny-esrgan", upscale_factor=2).image)
    second = np.asarray(_up(engine, upscaler="Nearest", upscale_factor=2).image)
    assert not np.array_equal(first, second)
    for visibility, expected in ((0.0, first), (1.0, second)):
        out = _up(engine, upscaler="tiny-esrgan", upscale_factor=2, upscaler_2="Nearest", upscaler_2_visibility=visibility)
        assert np.array_equal(np.asarray(out.image), expected), visibility
    half = _up(engine, upscaler="tiny-esrgan", upscale_factor=2, upscaler_2="Nearest", upscaler_2_visibility=0.5)
    expected = (first.astype(float) + second) / 2
    assert np.abs(np.asarray(half.image, dtype=float) - expected).max() <= 1  # Image.blend rounds
    assert "Postprocess upscaler 2: Nearest" in half.infotext


def test_an_unknown_upscaler_2_is_refused_naming_the_field_and_the_choices(make_engine):
    from sdui.types import InvalidRequest

    engine = make_engine()
    try:
        _up(engine, upscaler_2="no-such-upscaler", upscaler_2_visibility=0.5)
    except InvalidRequest as e:
        assert e.field == "upscaler_2" and "tiny-esrgan" in str(e) and "None" in str(e)
    else:
        raise AssertionError("an unknown upscaler_2 was accepted")
