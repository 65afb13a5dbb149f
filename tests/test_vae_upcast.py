"""A1111's VAE precision rescue (sdui/pipelines/vae_guard.py): a half-precision decode that gives NaN
is redone in fp32 and the info says "upcast VAE"; ``--no-half-vae`` decodes in fp32 every time.

There is no GPU here and the tiny VAE does not overflow, so the one thing faked is the overflow: a
hook makes the VAE decoder's last layer return NaN whenever it runs in fp16 (what SDXL's VAE does on
real latents). The rest is the real tiny VAE in fp16 on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdui.pipelines import vae_guard
from sdui.types import GenerationRequest
from tests import tiny


def _nan_in_half(module, args, output):
    return output * float("nan") if output.dtype == torch.float16 else output


@pytest.fixture()
def half_nan_vae():
    """The tiny pipeline's VAE in fp16, whose decoder overflows to NaN in fp16 (faked by a hook)."""
    pipe = tiny.tiny_pipeline(seed=0)
    pipe.vae.to(torch.float16)
    handle = pipe.vae.decoder.conv_out.register_forward_hook(_nan_in_half)
    yield pipe
    handle.remove()


def _latents():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def test_fake_overflow_gives_nan_without_the_guard(half_nan_vae):
    assert torch.isnan(half_nan_vae.vae.decode(_latents().half()).sample).any()


def test_nan_half_decode_is_redone_in_fp32_and_noted(half_nan_vae):
    vae = half_nan_vae.vae
    warnings: list[str] = []
    with vae_guard.guarded_decode(half_nan_vae, warnings):
        out = vae.decode(_latents().half()).sample
    assert not torch.isnan(out).any() and out.dtype == torch.float16
    assert warnings == [vae_guard.UPCAST_NOTE] and "upcast VAE" in warnings[0]
    assert vae.dtype == torch.float16 and "decode" not in vars(vae)  # put back as it was
    ref = tiny.tiny_pipeline(seed=0).vae  # fp32 decoding of the same (fp16-rounded) weights
    ref.load_state_dict({k: v.float() for k, v in vae.state_dict().items()})
    with torch.no_grad():
        want = ref.decode(_latents()).sample
    assert torch.allclose(out.float(), want, atol=2e-3)


def test_a_good_half_decode_is_kept_and_not_noted():
    pipe = tiny.tiny_pipeline(seed=0)
    pipe.vae.to(torch.float16)
    warnings: list[str] = []
    with torch.no_grad():
        plain = pipe.vae.decode(_latents().half()).sample
        with vae_guard.guarded_decode(pipe, warnings):
            guarded = pipe.vae.decode(_latents().half()).sample
    assert warnings == [] and torch.equal(plain, guarded)


def test_no_half_vae_decodes_in_fp32_every_time():
    pipe = tiny.tiny_pipeline(seed=0)
    pipe.vae.to(torch.float16)
    seen = []
    handle = pipe.vae.decoder.conv_out.register_forward_hook(lambda m, a, o: seen.append(o.dtype))
    warnings: list[str] = []
    with torch.no_grad(), vae_guard.guarded_decode(pipe, warnings, force_fp32=True):
        pipe.vae.decode(_latents().half())
    handle.remove()
    assert seen == [torch.float32] and warnings == [] and pipe.vae.dtype == torch.float16


def test_engine_image_is_rescued_and_the_info_says_so(make_engine):
    """Through the engine: the tiny model's VAE in fp16 with the faked overflow gives a real image
    (close to the all-fp32 one: the VAE's weights were rounded to fp16) and the "upcast VAE" note."""
    engine = make_engine(no_watermark=True)
    req = dict(prompt="a red cube", sampler="Euler", steps=2, width=64, height=64, seed=5, model="tiny", save=False)
    fp32 = np.asarray(engine.generate(GenerationRequest(**req)).images[0].image, dtype=np.int16)
    vae = engine.manager.current.pipe.vae
    vae.to(torch.float16)
    handle = vae.decoder.conv_out.register_forward_hook(_nan_in_half)
    try:
        result = engine.generate(GenerationRequest(**req))
    finally:
        handle.remove()
        vae.to(torch.float32)
    got = np.asarray(result.images[0].image, dtype=np.int16)
    assert any("upcast VAE" in w for w in result.warnings), result.warnings
    assert np.abs(got - fp32).max() <= 3
