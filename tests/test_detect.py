"""Architecture detection from keys and shapes, on full-size layouts built on the meta device."""

from __future__ import annotations

import pytest
import torch

from sdui.models import detect
from sdui.models.export import unet_to_ldm, vae_to_ldm
from sdui.models.loader import CONFIGS_DIR


def _meta_unet_shapes(arch: str) -> dict:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS_DIR / arch / "unet"))
    return {k: tuple(v.shape) for k, v in unet_to_ldm(unet).items()}


def _meta_vae_shapes(arch: str) -> dict:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS_DIR / arch / "vae"))
    return {k: tuple(v.shape) for k, v in vae_to_ldm(vae).items()}


CLIP_KEY = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768)}
OPENCLIP_KEY = {"cond_stage_model.model.token_embedding.weight": (49408, 1024)}


@pytest.mark.parametrize("arch,text,expected", [
    ("sd15", CLIP_KEY, detect.SD1),
    ("sd15-inpaint", CLIP_KEY, detect.SD1_INPAINT),
    ("sd2", OPENCLIP_KEY, detect.SD2),
    ("sd2-v", OPENCLIP_KEY, detect.SD2),  # v vs epsilon is settled at load time
    ("sd2-inpaint", OPENCLIP_KEY, detect.SD2_INPAINT),
    ("x4-upscaler", OPENCLIP_KEY, detect.X4_UPSCALER),
])
def test_full_size_layouts_are_detected(arch, text, expected):
    shapes = {**_meta_unet_shapes(arch), **_meta_vae_shapes(arch), **text}
    assert detect.detect_architecture(shapes) == expected


def test_sd2_is_detected_from_unet_alone_by_its_1024_context():
    assert detect.detect_architecture(_meta_unet_shapes("sd2")) == detect.SD2
    assert detect.detect_architecture(_meta_unet_shapes("sd15")) == detect.SD1


def test_sdxl_detected_by_its_second_text_encoder():
    shapes = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
              "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
              "conditioner.embedders.1.model.positional_embedding": (77, 1280)}
    assert detect.detect_architecture(shapes) == detect.SDXL


def test_vae_and_lora_files_are_told_apart():
    assert detect.detect_architecture(_meta_vae_shapes("sd15")) == detect.VAE
    assert detect.detect_architecture({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}) == detect.LORA
    assert detect.detect_architecture({"foo": (1,)}) == detect.UNKNOWN


def test_yaml_hints_refine_sd2(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("model:\n  params:\n    parameterization: \"v\"\n    unet_config:\n      params:\n"
                 "        in_channels: 4\n        context_dim: 1024\n")
    hints = detect.yaml_hints(y)
    assert hints == {"prediction_type": "v_prediction", "in_channels": 4, "context_dim": 1024}
    assert detect.architecture_from_yaml(detect.SD2, hints) == detect.SD2_V
    y.write_text("model:\n  params:\n    unet_config:\n      params:\n        in_channels: 9\n")
    assert detect.architecture_from_yaml(detect.SD1, detect.yaml_hints(y)) == detect.SD1_INPAINT


@pytest.mark.parametrize("arch", detect.CHECKPOINT_ARCHS)
def test_every_shipped_config_folder_builds_its_pipeline_on_meta(arch):
    """The JSON in assets/configs describes classes diffusers can build (no weights involved)."""
    import json

    import diffusers
    import transformers

    folder = CONFIGS_DIR / arch
    index = json.loads((folder / "model_index.json").read_text())
    assert hasattr(diffusers, index["_class_name"])
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None or name.startswith("tokenizer"):
            continue
        lib = diffusers if spec[0] == "diffusers" else transformers
        cls = getattr(lib, spec[1])
        if issubclass(cls, diffusers.SchedulerMixin):
            cls.from_pretrained(folder, subfolder=name)
        elif spec[0] == "transformers":
            cfg = cls.config_class.from_pretrained(folder / name)
            assert cfg.vocab_size == 49408
        else:
            with torch.device("meta"):
                cls.from_config(cls.load_config(folder / name))
