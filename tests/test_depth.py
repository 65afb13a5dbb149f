"""SD 2 depth-to-image: detection of the depth checkpoint, the depth estimator from models/depth/
(a tiny random transformers DPT), pixels equal to a plain ``StableDiffusionDepth2ImgPipeline`` call
(estimated and supplied depth maps), the one-sentence answer without an estimator, and the API's
``depth_map``. Tiny random-weight models (tests/tiny.py)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdui.models import depth as depth_models
from sdui.models import detect
from sdui.types import GenerationRequest, InvalidRequest
from tests import tiny

COMMON = dict(prompt="a stone bridge", negative_prompt="blurry", sampler="Euler", steps=4, cfg_scale=6.0, width=64,
              height=64, seed=77, denoising_strength=0.8, model="tiny-depth", save=False, watermark=False, mode="img2img")


def _init() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _depth() -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1))
    return Image.fromarray(ramp.astype(np.uint8), mode="L")


@pytest.fixture(scope="module")
def depth_root(tmp_path_factory) -> Path:
    """models/ with Stable-diffusion/tiny-depth (a depth diffusers folder without its estimator) and
    depth/tiny-dpt (the tiny DPT: model.safetensors + configs)."""
    root = tmp_path_factory.mktemp("depth-models")
    tiny.tiny_depth_pipeline(seed=0, with_estimator=False).save_pretrained(root / "Stable-diffusion" / "tiny-depth")
    model, processor = tiny.tiny_dpt(seed=3)
    model.save_pretrained(root / "depth" / "tiny-dpt")
    processor.save_pretrained(root / "depth" / "tiny-dpt")
    return root


@pytest.fixture(scope="module")
def engine(depth_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(depth_root), outputs_dir=str(tmp_path_factory.mktemp("out")), no_watermark=True))
    yield e
    e.manager.release_all()


@pytest.fixture(scope="module")
def bare_engine(depth_root, tmp_path_factory):
    """The same depth model with no estimator anywhere (no models/depth/, an empty HF cache)."""
    import shutil

    from sdui.config import Settings
    from sdui.engine import Engine

    root = tmp_path_factory.mktemp("bare-models")
    shutil.copytree(depth_root / "Stable-diffusion", root / "Stable-diffusion")
    e = Engine(Settings(models_dir=str(root), outputs_dir=str(tmp_path_factory.mktemp("out")), no_watermark=True))
    yield e
    e.manager.release_all()


def _reference(depth_root: Path, depth_map=None) -> np.ndarray:
    """A plain StableDiffusionDepth2ImgPipeline call with the same weights, the estimator when no depth
    map is given, the prompt as text, Euler from the folder's scheduler config, the same seed."""
    from diffusers import EulerDiscreteScheduler

    pipe = tiny.tiny_depth_pipeline(seed=0, with_estimator=depth_map is None)
    config = json.loads((depth_root / "Stable-diffusion" / "tiny-depth" / "scheduler" / "scheduler_config.json").read_text())
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    out = pipe(COMMON["prompt"], image=_init(), depth_map=depth_map, strength=COMMON["denoising_strength"],
               negative_prompt=COMMON["negative_prompt"], num_inference_steps=COMMON["steps"],
               guidance_scale=COMMON["cfg_scale"], generator=[torch.Generator("cpu").manual_seed(COMMON["seed"])],
               output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def test_depth_checkpoint_detected_from_its_keys():
    unet = "model.diffusion_model."
    shapes = {unet + "input_blocks.0.0.weight": (320, 5, 3, 3), "cond_stage_model.model.token_embedding.weight": (49408, 1024),
              unet + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
              "depth_model.model.pretrained.model.cls_token": (1, 1, 768)}
    assert detect.detect_architecture(shapes) == detect.SD2_DEPTH
    assert detect.detect_architecture({**shapes, unet + "input_blocks.0.0.weight": (320, 4, 3, 3)}) == detect.SD2


def test_depth_folder_is_listed_as_sd2_depth_and_is_not_the_default(engine):
    entry = next(e for e in engine.models() if e.name == "tiny-depth")
    assert entry.architecture == detect.SD2_DEPTH and detect.ARCH_LABELS[entry.architecture] == "SD 2.x depth-to-image"


def test_estimated_depth_pixels_equal_a_plain_depth2img_call(engine, depth_root):
    ours = engine.generate(GenerationRequest(init_image=_init(), **COMMON))
    assert np.abs(_pixels(ours) - _reference(depth_root)).max() <= 1


def test_supplied_depth_map_without_an_estimator_equals_a_plain_call(bare_engine, depth_root):
    ours = bare_engine.generate(GenerationRequest(init_image=_init(), depth_map=_depth(), **COMMON))
    ref = _reference(depth_root, depth_map=depth_models.depth_tensor(_depth()))
    assert np.abs(_pixels(ours) - ref).max() <= 1
    other = bare_engine.generate(GenerationRequest(init_image=_init(), depth_map=_depth().transpose(Image.Transpose.ROTATE_90),
                                                   **COMMON))
    assert np.abs(_pixels(other) - _pixels(ours)).max() > 1  # the depth map reaches the UNet


def test_no_estimator_and_no_depth_map_is_one_sentence(bare_engine):
    assert not bare_engine.depth_available()
    with pytest.raises(InvalidRequest) as err:
        bare_engine.generate(GenerationRequest(init_image=_init(), **COMMON))
    assert err.value.field == "depth_map" and "no depth estimator is installed" in str(err.value)


def test_txt2img_on_the_depth_model_is_refused(engine):
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(**{**COMMON, "mode": "txt2img"}))
    assert "depth model" in str(err.value) and "img2img" in str(err.value)


def test_depth_preview_is_the_estimators_map_at_the_image_size(engine):
    assert engine.depth_available()
    preview = engine.depth_preview(_init())
    assert preview.mode == "L" and preview.size == (64, 64)
    values = np.asarray(preview)
    assert values.min() == 0 and values.max() == 255  # normalised, as the pipeline normalises it


def test_api_img2img_takes_a_base64_depth_map(depth_root, tmp_path):
    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import in_process, png_b64

    settings = Settings(models_dir=str(depth_root), outputs_dir=str(tmp_path / "out"), api=True, no_watermark=True)
    body = {"prompt": COMMON["prompt"], "negative_prompt": COMMON["negative_prompt"], "steps": 4, "cfg_scale": 6.0,
            "width": 64, "height": 64, "seed": 77, "denoising_strength": 0.8, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-depth"}, "init_images": [png_b64(_init())]}
    with in_process(create_app(settings, with_ui=False)) as c:
        with_map = c.post("/sdapi/v1/img2img", json={**body, "depth_map": png_b64(_depth())})
        estimated = c.post("/sdapi/v1/img2img", json=body)
    assert with_map.status_code == 200 and estimated.status_code == 200, (with_map.text, estimated.text)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(with_map.json()["images"][0]))).convert("RGB"), dtype=np.int16)
    ref = _reference(depth_root, depth_map=depth_models.depth_tensor(_depth()))
    assert np.abs(got - ref).max() <= 1
    assert "depth_map" not in json.loads(with_map.json()["info"]).get("ignored", [])


def test_models_json_names_the_depth_architecture(depth_root, capsys):
    from sdui import cli

    assert cli.main(["models", "--json", "--models-dir", str(depth_root)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny-depth"]["architecture"] == "sd2-depth"
    assert rows["tiny-depth"]["architecture_label"] == "SD 2.x depth-to-image"


def test_ui_has_the_depth_part_shown_only_for_a_depth_model(engine, depth_root, tmp_path):
    from types import SimpleNamespace

    from sdui.jobs import JobQueue
    from sdui.ui import depth as depth_ui
    from sdui.ui.app import build_ui

    demo = build_ui(engine, JobQueue(engine), engine.settings)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["img2img_depth_map"].label == "Depth map (computed, or upload your own)"
    assert "img2img_depth_compute" in by_id and by_id["img2img_depth"].visible is False  # the default is not a depth model
    ctx = SimpleNamespace(engine=engine)
    assert depth_ui.is_depth_model(ctx, "tiny-depth") and "bright = near" in depth_ui.note(ctx)
    assert "no depth estimator is installed" not in depth_ui.note(ctx)


def test_cli_img2img_takes_a_depth_map(depth_root, tmp_path, capsys):
    from sdui import cli

    _init().save(tmp_path / "in.png")
    _depth().save(tmp_path / "depth.png")
    code = cli.main(["img2img", "--init-img", str(tmp_path / "in.png"), "--depth-map", str(tmp_path / "depth.png"),
                     "--prompt", COMMON["prompt"], "--negative-prompt", COMMON["negative_prompt"], "--sampler", "Euler",
                     "--steps", "4", "--cfg-scale", "6", "--W", "64", "--H", "64", "--seed", "77", "--strength", "0.8",
                     "--ckpt", "tiny-depth", "--models-dir", str(depth_root), "--outdir", str(tmp_path / "cli"),
                     "--quiet", "--no-watermark"])
    assert code == 0
    got = np.asarray(Image.open(capsys.readouterr().out.split()[0]).convert("RGB"), dtype=np.int16)
    assert np.abs(got - _reference(depth_root, depth_map=depth_models.depth_tensor(_depth()))).max() <= 1
