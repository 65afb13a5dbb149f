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
