"""A1111's refiner on SDXL: ``refiner_checkpoint`` takes over the sampling after ``refiner_switch_at``
of the steps (the model switch step, counted in UNet calls of each model), pixels equal to diffusers'
own base(denoising_end) + refiner(denoising_start) calls, A1111's infotext keys, the API and CLI fields,
the UI accordion. Tiny random-weight SDXL base and refiner (tests/tiny.py)."""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdui.images import infotext
from sdui.types import GenerationRequest, InvalidRequest
from tests import tiny

COMMON = dict(prompt="a lighthouse at dusk", negative_prompt="blurry", sampler="Euler", steps=4, cfg_scale=6.0, width=64,
              height=64, seed=9, model="tiny-xl", save=False, watermark=False, refiner_checkpoint="tiny-xl-refiner")


@pytest.fixture(scope="module")
def refiner_root(xl_models_root, tiny_pipe, tmp_path_factory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("refiner-models")
    shutil.copytree(xl_models_root / "Stable-diffusion", root / "Stable-diffusion")
    tiny.tiny_sdxl_refiner(seed=50).save_pretrained(root / "Stable-diffusion" / "tiny-xl-refiner")
    tiny_pipe.save_pretrained(root / "Stable-diffusion" / "tiny-sd1")
    return root


@pytest.fixture(scope="module")
def engine(refiner_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(refiner_root), outputs_dir=str(tmp_path_factory.mktemp("out")), no_watermark=True))
    yield e
    e.manager.release_all()


@contextmanager
def unet_calls(engine):
    """{"base": n, "refiner": n}: UNet calls of each model while the block runs."""
    counts = {"base": 0, "refiner": 0}
    patched = []
    for key, name in (("base", "tiny-xl"), ("refiner", "tiny-xl-refiner")):
        unet = engine.manager.select(name).pipe.unet
        original = unet.forward

        def forward(*args, _key=key, _original=original, **kwargs):
            counts[_key] += 1
            return _original(*args, **kwargs)

        unet.forward = forward
        patched.append(unet)
    try:
        yield counts
    finally:
        for unet in patched:
            del unet.forward


@pytest.mark.parametrize("switch_at,base_calls", [(0.5, 2), (0.75, 3), (0.25, 1)])
def test_the_refiner_takes_over_at_a1111s_switch_step(engine, switch_at, base_calls):
    """4 steps (timesteps 751, 501, 251, 1): A1111 moves to the refiner at the first call whose
    (999 - t) / 1000 reaches the switch; 0.5 -> base 751, 501 and refiner 251, 1."""
    with unet_calls(engine) as calls:
        engine.generate(GenerationRequest(**{**COMMON, "refiner_switch_at": switch_at}))
    assert calls == {"base": base_calls, "refiner": 4 - base_calls}


def test_refiner_pixels_equal_diffusers_ensemble_of_experts(engine, refiner_root):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    ours = engine.generate(GenerationRequest(**{**COMMON, "refiner_switch_at": 0.5}))
    sd = refiner_root / "Stable-diffusion"
    base = StableDiffusionXLPipeline.from_pretrained(sd / "tiny-xl")
    ref = StableDiffusionXLImg2ImgPipeline.from_pretrained(sd / "tiny-xl-refiner")
    for pipe, folder in ((base, "tiny-xl"), (ref, "tiny-xl-refiner")):
        pipe.set_progress_bar_config(disable=True)
        config = json.loads((sd / folder / "scheduler" / "scheduler_config.json").read_text())
        pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    kw = dict(negative_prompt="blurry", num_inference_steps=4, guidance_scale=6.0)
    latents = base(COMMON["prompt"], height=64, width=64, generator=[torch.Generator().manual_seed(9)], denoising_end=0.5,
                   output_type="latent", **kw).images
    want = ref(COMMON["prompt"], image=latents, generator=[torch.Generator().manual_seed(9)], denoising_start=0.5,
               output_type="pil", **kw).images[0]
    got = np.asarray(ours.images[0].image, dtype=np.int16)
    assert np.abs(got - np.asarray(want, dtype=np.int16)).max() <= 1
    plain = engine.generate(GenerationRequest(**{**COMMON, "refiner_checkpoint": ""})).images[0].image
    assert np.abs(got - np.asarray(plain, dtype=np.int16)).max() > 1  # the refiner changed the image


def test_infotext_has_a1111s_refiner_keys_and_reads_back(engine):
    result = engine.generate(GenerationRequest(**{**COMMON, "refiner_switch_at": 0.75, "steps": 2}))
    entry = engine.manager.find("tiny-xl-refiner")
    text = result.images[0].infotext
    shown = f"tiny-xl-refiner [{entry.short_hash}]" if entry.short_hash else "tiny-xl-refiner"  # a folder has no hash
    assert f"Refiner: {shown}," in text and "Refiner switch at: 0.75" in text
    fields = infotext.infotext_to_request_fields(infotext.parse_infotext(text))
    assert fields["refiner_switch_at"] == 0.75
    assert engine.manager.find(fields["refiner_checkpoint"]).name == "tiny-xl-refiner"
    plain = engine.generate(GenerationRequest(**{**COMMON, "refiner_checkpoint": "", "steps": 2}))
    assert "Refiner" not in plain.images[0].infotext


def test_a_refiner_that_is_not_sdxl_is_refused(engine):
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(**{**COMMON, "refiner_checkpoint": "tiny-sd1"}))
    assert err.value.field == "refiner_checkpoint" and "SDXL" in str(err.value)


def test_api_takes_refiner_fields_and_cli_has_the_flags(refiner_root, tmp_path):
    from sdui import cli
    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import in_process

    settings = Settings(models_dir=str(refiner_root), outputs_dir=str(tmp_path / "out"), api=True, no_watermark=True)
    body = {"prompt": COMMON["prompt"], "steps": 2, "width": 64, "height": 64, "seed": 9, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-xl"}, "refiner_checkpoint": "tiny-xl-refiner",
            "refiner_switch_at": 0.5}
    with in_process(create_app(settings, with_ui=False)) as c:
        r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "refiner_checkpoint" not in info.get("ignored", []) and "Refiner switch at: 0.5" in info["infotexts"][0]
    png = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert "Refiner: tiny-xl-refiner" in png.info["parameters"]
    args = cli.build_parser().parse_args(["txt2img", "--prompt", "x", "--refiner-checkpoint", "r", "--refiner-switch-at",
                                          "0.6"])
    assert (args.refiner_checkpoint, args.refiner_switch_at) == ("r", 0.6)


def test_ui_has_a1111s_refiner_accordion(engine):
    from sdui.jobs import JobQueue
    from sdui.ui import refiner as refiner_ui
    from sdui.ui.app import build_ui

    demo = build_ui(engine, JobQueue(engine), engine.settings)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["txt2img_refiner"].label == "Refiner"
    checkpoint, switch = by_id["txt2img_refiner_checkpoint"], by_id["txt2img_refiner_switch_at"]
    assert (checkpoint.label, switch.label, switch.value) == ("Checkpoint", "Switch at", 0.8)
    assert "tiny-xl-refiner" in [c[0] if isinstance(c, tuple) else c for c in checkpoint.choices]
    controls = {"refiner_checkpoint": checkpoint, "refiner_switch_at": switch}
    assert refiner_ui.request_fields(controls, {checkpoint: "None", switch: None}) == {"refiner_checkpoint": "",
                                                                                        "refiner_switch_at": 0.8}
    assert refiner_ui.request_fields(controls, {checkpoint: "tiny-xl-refiner", switch: 0.6})["refiner_switch_at"] == 0.6
