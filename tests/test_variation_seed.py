"""A1111's variation seed ("Extra": Variation seed, Variation strength, Resize seed from): the noise of
seed i slerped toward that of subseed + i, pixels against a plain diffusers call given that noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdui import samplers
from sdui.images import infotext
from sdui.pipelines.common import slerp
from sdui.types import GenerationRequest, InvalidRequest

BASE = dict(prompt="a watercolor fox", sampler="Euler", steps=3, width=64, height=64, model="tiny", save=False)


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im.image, dtype=np.int16) for im in result.images]


def _noise(seed: int, shape=(4, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def _plain(engine, latents: torch.Tensor):
    """A stock diffusers call given ``latents`` (one image), with the engine's Euler scheduler."""
    pipe = engine.manager.current.pipe
    pipe.scheduler = samplers.make_scheduler(engine.manager.current.base_scheduler_config, "Euler")
    out = pipe("a watercolor fox", num_inference_steps=3, guidance_scale=7.0, height=64, width=64,
               latents=latents.unsqueeze(0), output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


@pytest.fixture()
def engine(make_engine):
    return make_engine(no_watermark=True)


def test_strength_0_is_the_plain_seeds_pixels_exactly(engine):
    plain = engine.generate(GenerationRequest(**BASE, seed=11))
    varied = engine.generate(GenerationRequest(**BASE, seed=11, subseed=99, subseed_strength=0.0))
    assert plain.images[0].image.tobytes() == varied.images[0].image.tobytes()
    assert "Variation seed" not in varied.images[0].infotext


def test_strength_1_is_the_variation_seeds_noise(engine):
    varied = engine.generate(GenerationRequest(**BASE, seed=11, subseed=99, subseed_strength=1.0))
    other_seed = engine.generate(GenerationRequest(**BASE, seed=99))
    assert np.abs(_pixels(varied)[0] - _pixels(other_seed)[0]).max() <= 1


def test_strength_half_is_a1111s_slerp_of_the_two_noises(engine):
    varied = engine.generate(GenerationRequest(**BASE, seed=11, subseed=99, subseed_strength=0.5))
    want = _plain(engine, slerp(0.5, _noise(11), _noise(99)))
    assert np.abs(_pixels(varied)[0] - want).max() <= 1
    plain = engine.generate(GenerationRequest(**BASE, seed=11))
    assert np.abs(_pixels(varied)[0] - _pixels(plain)[0]).max() > 1  # the noise really moved


def test_a1111s_slerp_formula():
    low, high = _noise(1), _noise(2)
    low_n, high_n = low / low.norm(dim=1, keepdim=True), high / high.norm(dim=1, keepdim=True)
    omega = torch.acos((low_n * high_n).sum(1))
    want = (torch.sin(0.7 * omega) / torch.sin(omega)).unsqueeze(1) * low + \
           (torch.sin(0.3 * omega) / torch.sin(omega)).unsqueeze(1) * high
    assert torch.allclose(slerp(0.3, low, high), want)
    assert torch.equal(slerp(0.5, low, low), low * 0.5 + low * 0.5)  # A1111's near-parallel branch


def test_batch_image_i_uses_subseed_plus_i(engine):
    batch = engine.generate(GenerationRequest(**BASE, seed=11, subseed=40, subseed_strength=0.3, batch_size=2))
    second = engine.generate(GenerationRequest(**BASE, seed=12, subseed=41, subseed_strength=0.3))
    assert np.abs(_pixels(batch)[1] - _pixels(second)[0]).max() <= 1
    keys = [infotext.parse_infotext(im.infotext) for im in batch.images]
    assert [k["Variation seed"] for k in keys] == ["40", "41"]
    assert [k["Seed"] for k in keys] == ["11", "12"]


def test_infotext_keys_as_a1111_writes_them_and_round_trip(engine):
    r = engine.generate(GenerationRequest(**BASE, seed=3, subseed=7, subseed_strength=0.25, seed_resize_from_w=96,
                                          seed_resize_from_h=48))
    text = r.images[0].infotext
    params_line = text.splitlines()[-1]
    assert "Variation seed: 7, Variation seed strength: 0.25, Seed resize from: 96x48" in params_line
    assert params_line.index("Size:") < params_line.index("Variation seed:")
    back = infotext.infotext_to_request_fields(infotext.parse_infotext(text))
    assert (back["subseed"], back["subseed_strength"], back["seed_resize_from_w"], back["seed_resize_from_h"]) == \
        (7, 0.25, 96, 48)
    again = engine.generate(GenerationRequest(**{**BASE, **{k: back[k] for k in (
        "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")}}))
    assert again.images[0].image.tobytes() == r.images[0].image.tobytes()


def test_seed_resize_pastes_the_smaller_noise_centred(engine):
    """Resize seed from 32x32 into 64x64: the 4x4 latent noise of the seed sits in the middle of the 8x8 noise."""
    from sdui.pipelines.common import Job, variation_noise

    req = GenerationRequest(**BASE, seed=5, seed_resize_from_w=32, seed_resize_from_h=32)
    noise = variation_noise(Job(request=req, seeds=[5], device="cpu"), 4, 8, 8)[0]
    assert torch.equal(noise[:, 2:6, 2:6], _noise(5, (4, 4, 4)))
    assert torch.equal(noise[:, 0, :], _noise(5)[:, 0, :])
    r = engine.generate(req)
    assert np.abs(_pixels(r)[0] - _plain(engine, noise)).max() <= 1


def test_random_variation_seed_is_fixed_and_bad_values_are_refused(engine):
    req = engine.prepare(GenerationRequest(**BASE, seed=1, subseed=-1, subseed_strength=0.5))
    assert 0 <= req.subseed < 2**32
    with pytest.raises(InvalidRequest) as err:
        engine.prepare(GenerationRequest(**BASE, subseed_strength=1.5))
    assert err.value.field == "subseed_strength" and "from 0.0 to 1.0" in str(err.value)


def test_api_takes_a1111s_fields_and_answers_them_in_info(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": 2,
                                               "subseed": 9, "subseed_strength": 0.4, "batch_size": 2})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (9, [9, 10], 0.4)
        assert "subseed_strength" not in info["ignored"] and info["seed_resize_from_w"] == -1
        assert "Variation seed: 10, Variation seed strength: 0.4" in info["infotexts"][1]
    finally:
        app.state.queue.stop()
