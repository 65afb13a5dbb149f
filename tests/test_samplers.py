"""A1111 sampler names map to the right schedulers, and every sampler is reference-exact:
the engine's pixels equal a plain diffusers call with the mapped scheduler (watermark off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdui import samplers
from sdui.types import GenerationRequest, InvalidRequest

EXPECTED = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_name_maps_to_its_scheduler(tiny_pipe, name):
    cls_name, options = EXPECTED[name]
    sched = samplers.make_scheduler(tiny_pipe.scheduler.config, name)
    assert type(sched).__name__ == cls_name
    for k, v in options.items():
        assert sched.config[k] == v
    # only the options the name implies: the model's betas are kept
    assert sched.config.beta_schedule == tiny_pipe.scheduler.config.beta_schedule


def test_schedule_types_and_old_combined_names(tiny_pipe):
    base = tiny_pipe.scheduler.config
    assert samplers.make_scheduler(base, "DPM++ 2M", "Karras").config.use_karras_sigmas is True
    assert samplers.make_scheduler(base, "Euler", "Exponential").config.use_exponential_sigmas is True
    assert samplers.make_scheduler(base, "Euler", "Automatic").config.use_karras_sigmas is False
    assert samplers.resolve("DPM++ 2M Karras") == (samplers.resolve("DPM++ 2M")[0], "Karras")
    assert samplers.resolve("k_euler_a")[0].name == "Euler a"
    assert samplers.resolve("dpm++ sde", "karras")[1] == "Karras"


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(InvalidRequest) as err:
        samplers.resolve("Euler b")
    msg = str(err.value)
    assert "sampler='Euler b'" in msg and all(n in msg for n in samplers.sampler_names())
    with pytest.raises(InvalidRequest, match="scheduler='Linear'"):
        samplers.resolve("Euler", "Linear")


def _plain(pipe, scheduler, prompt, negative, seeds, steps, cfg, size):
    """The reference: a stock diffusers call, nothing of sdui's in the loop."""
    pipe.scheduler = scheduler
    out = pipe([prompt] * len(seeds), negative_prompt=[negative] * len(seeds),
               generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], num_inference_steps=steps,
               guidance_scale=cfg, height=size, width=size, output_type="pil")
    return [np.asarray(im, dtype=np.int16) for im in out.images]


@pytest.mark.parametrize("name", samplers.sampler_names())
def test_engine_pixels_equal_a_plain_diffusers_call(make_engine, name):
    engine = make_engine(no_watermark=True)
    req = GenerationRequest(prompt="a watercolor fox", negative_prompt="blurry", sampler=name, steps=3, cfg_scale=6.5,
                            width=64, height=64, seed=1234, batch_size=2, model="tiny", save=False)
    ours = engine.generate(req)
    pipe = engine.manager.current.pipe
    noise_seed = [1234, 1235]  # DPM++ SDE: the same Brownian-noise seeds the engine passes
    sched = samplers.make_scheduler(engine.manager.current.base_scheduler_config, name, seed=noise_seed)
    ref = _plain(pipe, sched, "a watercolor fox", "blurry", [1234, 1235], 3, 6.5, 64)
    for got, want in zip(ours.images, ref, strict=False):
        assert np.abs(np.asarray(got.image, dtype=np.int16) - want).max() <= 1, name


def test_karras_schedule_is_reference_exact_too(make_engine):
    engine = make_engine(no_watermark=True)
    req = GenerationRequest(prompt="a boat", sampler="DPM++ 2M", scheduler="Karras", steps=4, width=64, height=64,
                            seed=5, model="tiny", save=False)
    ours = engine.generate(req)
    sched = samplers.make_scheduler(engine.manager.current.base_scheduler_config, "DPM++ 2M", "Karras")
    ref = _plain(engine.manager.current.pipe, sched, "a boat", "", [5], 4, 7.0, 64)
    assert np.abs(np.asarray(ours.images[0].image, dtype=np.int16) - ref[0]).max() <= 1
