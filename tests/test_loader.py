"""Loading every format on tiny pipelines; the loaded model draws exactly what the original does."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from sdui.models import formats, loader, registry
from sdui.types import ModelLoadError
from tests import tiny


def _draw(pipe, seed=3):
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator("cpu").manual_seed(seed)
    return pipe("a red cube", num_inference_steps=2, height=64, width=64, generator=g, output_type="np").images[0]


def _entry(path, **kw):
    from pathlib import Path

    p = Path(path)
    return registry.describe_file(p, p.stem, registry.CHECKPOINT) if p.is_file() else registry.ModelEntry(
        name=p.name, path=str(p), format=formats.sniff_format(p), **kw)


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny-ckpt.ckpt", "tiny-folder"])
def test_each_format_loads_to_the_same_model(models_root, tiny_pipe, name):
    pipe = loader.load_pipeline(_entry(models_root / "Stable-diffusion" / name), torch.float32)
    np.testing.assert_array_equal(_draw(pipe), _draw(tiny_pipe))


def test_safetensors_named_ckpt_and_uppercase_extension_load(models_root, tiny_pipe, tmp_path):
    for name in ("renamed.ckpt", "LOUD.SAFETENSORS"):
        dst = tmp_path / name
        shutil.copy(models_root / "Stable-diffusion" / "tiny.safetensors", dst)
        shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", tmp_path / (dst.stem + ".config"))
        entry = _entry(dst)
        assert entry.format == formats.SAFETENSORS
        np.testing.assert_array_equal(_draw(loader.load_pipeline(entry, torch.float32)), _draw(tiny_pipe))


def test_hub_id_loads_from_local_cache_offline(tiny_pipe, hub_cache):
    entry = registry.ModelEntry(name=hub_cache, path=hub_cache, format=formats.HUB)
    np.testing.assert_array_equal(_draw(loader.load_pipeline(entry, torch.float32)), _draw(tiny_pipe))
    missing = registry.ModelEntry(name="nobody/nothing", path="nobody/nothing", format=formats.HUB)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        loader.load_pipeline(missing, torch.float32)


def test_yaml_beside_checkpoint_sets_v_prediction(models_root, tmp_path):
    dst = tmp_path / "vmodel.safetensors"
    shutil.copy(models_root / "Stable-diffusion" / "tiny.safetensors", dst)
    shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", tmp_path / "vmodel.config")
    (tmp_path / "vmodel.yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    pipe = loader.load_pipeline(_entry(dst), torch.float32)
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_checkpoint_without_config_and_unknown_architecture_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "weird.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, p)
    with pytest.raises(ModelLoadError, match="weird.safetensors"):
        loader.load_pipeline(_entry(p), torch.float32)


def test_lora_in_checkpoint_folder_is_named_as_such(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, p)
    with pytest.raises(ModelLoadError, match="LoRA"):
        loader.load_pipeline(_entry(p), torch.float32)


def test_incomplete_checkpoint_names_the_missing_weight(models_root, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(models_root / "Stable-diffusion" / "tiny.safetensors")
    dropped = next(k for k in sd if k.startswith("model.diffusion_model.out."))
    del sd[dropped]
    p = tmp_path / "partial.safetensors"
    save_file(sd, p)
    shutil.copytree(models_root / "Stable-diffusion" / "tiny.config", tmp_path / "partial.config")
    with pytest.raises(ModelLoadError, match=r"partial.safetensors: incomplete checkpoint: the unet is missing weights"):
        loader.load_pipeline(_entry(p), torch.float32)


def test_original_layout_export_round_trips_every_weight(tiny_pipe, tmp_path):
    p = tiny.save_single_file(tiny_pipe, tmp_path / "rt.safetensors")
    pipe = loader.load_pipeline(_entry(p), torch.float32)
    for comp in ("unet", "vae", "text_encoder"):
        a, b = getattr(tiny_pipe, comp).state_dict(), getattr(pipe, comp).state_dict()
        assert set(a) == set(b), comp
        for k in a:
            assert torch.equal(a[k], b[k]), f"{comp}.{k}"


@pytest.mark.slow
def test_full_size_sd15_fp16_single_file_loads_through_bundled_config(tmp_path):
    """Full SD 1.5 architecture, random weights, original layout, fp16, no config beside it."""
    import time

    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdui.models import detect
    from sdui.models.export import save_single_file
    from sdui.models.tokenizer import load_clip_tokenizer

    cfg = loader.CONFIGS_DIR / "sd15"
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        tokenizer=load_clip_tokenizer(), scheduler=PNDMScheduler.from_pretrained(cfg, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = save_single_file(pipe, tmp_path / "sd15-random.safetensors", dtype=torch.float16)
    del pipe
    entry = _entry(path)
    assert entry.architecture == detect.SD1 and entry.config_dir is None
    t0 = time.perf_counter()
    loaded = loader.load_pipeline(entry, torch.float32)
    print(f"full-size load: {time.perf_counter() - t0:.1f}s")
    assert loaded.unet.config.cross_attention_dim == 768 and loaded.unet.dtype == torch.float32
    assert sum(p.numel() for p in loaded.unet.parameters()) > 800_000_000
