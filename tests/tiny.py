"""Tiny random-weight Stable Diffusion pipelines, built offline (like diffusers' get_dummy_components).

Real classes, real CLIP tokenizer (from open_clip's vocabulary), random weights: the only thing
faked is the training. A 4-level VAE keeps the real 8x latent scale, so sizes behave as in SD.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[32, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True, norm_num_groups=8)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=[8, 8, 16, 16],
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=8,
           sample_size=64)
TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, bos_token_id=0, eos_token_id=2,
            pad_token_id=1)
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
             steps_offset=1, skip_prk_steps=True)


def tiny_pipeline(seed: int = 0, inpaint: bool = False, cross_dim: int = 32):
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdui.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(UNET, in_channels=9 if inpaint else 4, cross_attention_dim=cross_dim))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**dict(TEXT, hidden_size=cross_dim)))
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer(), unet=unet,
               scheduler=PNDMScheduler(**SCHED), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_config_folder(pipe, folder: Path) -> Path:
    """A diffusers-format config folder (JSON only) describing ``pipe``, as ``<stem>.config/``."""
    tmp = folder.with_name(folder.name + ".full")
    pipe.save_pretrained(tmp, safe_serialization=True)
    folder.mkdir(parents=True, exist_ok=True)
    for p in tmp.rglob("*.json"):
        rel = p.relative_to(tmp)
        if rel.parts[0] == "tokenizer":
            continue
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / rel)
    shutil.rmtree(tmp)
    return folder


def save_single_file(pipe, path: Path, with_config: bool = True, dtype=None) -> Path:
    from sdui.models.export import save_single_file as save

    save(pipe, path, dtype=dtype)
    if with_config:
        write_config_folder(pipe, Path(str(path.with_suffix("")) + ".config"))
    return path


def model_index(folder: Path) -> dict:
    return json.loads((folder / "model_index.json").read_text())


def tiny_x4_upscaler(seed: int = 0):
    """A tiny StableDiffusionUpscalePipeline: 7-channel UNet with noise-level class embedding,
    3-level VAE (4x spatial), CLIP text encoder; random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdui.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(UNET, in_channels=7, num_class_embeds=1000, sample_size=16))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**dict(VAE, block_out_channels=[8, 8, 16], down_block_types=["DownEncoderBlock2D"] * 3,
                               up_block_types=["UpDecoderBlock2D"] * 3, scaling_factor=0.08333))
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT))
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer("!"), unet=unet,
        low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
        scheduler=DDIMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.0001,
                                beta_end=0.02, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        max_noise_level=350)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_esrgan_state_dict(scale: int = 4, seed: int = 0) -> dict:
    """An ESRGAN (RRDBNet) state dict with one block and 8 filters, built with spandrel's own class."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).state_dict()


XL_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[32, 64],
               down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
               attention_head_dim=[2, 4], use_linear_projection=True, addition_embed_type="text_time",
               addition_time_embed_dim=8, transformer_layers_per_block=[1, 2], norm_num_groups=8,
               projection_class_embeddings_input_dim=80,  # 6 size numbers x 8 + the 32-wide pooled text embedding
               cross_attention_dim=64)  # clip_l (32) + OpenCLIP-G (32), concatenated


def tiny_sdxl_pipeline(seed: int = 0, cls_name: str = "StableDiffusionXLPipeline"):
    """A tiny SDXL pipeline (as diffusers' own SDXL tests build it): a text-time UNet, CLIP-L-like and
    OpenCLIP-G-like encoders (the second with a projection, padding with "!" as SDXL's tokenizer_2),
    the 4-level VAE; random weights."""
    import diffusers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdui.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**XL_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**dict(TEXT, hidden_act="gelu")))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**dict(TEXT, hidden_act="gelu")))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = getattr(diffusers, cls_name)(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                        tokenizer=load_clip_tokenizer(), tokenizer_2=load_clip_tokenizer("!"),
                                        unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_dpt(seed: int = 0):
    """A tiny transformers DPT depth estimator (ViT backbone, 2 layers, 32x32 input) and its image
    processor; random weights."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    config = DPTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
                       fusion_hidden_size=16, head_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5])
    model = DPTForDepthEstimation(config).eval()
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    return model, processor


def tiny_depth_pipeline(seed: int = 0, with_estimator: bool = True):
    """A tiny StableDiffusionDepth2ImgPipeline: a 5-channel UNet (latents + depth) with the tiny
    text encoder and VAE, and (optionally) the tiny DPT; random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionDepth2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdui.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(UNET, in_channels=5))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT))
    estimator, processor = tiny_dpt(seed + 3) if with_estimator else (None, None)
    pipe = StableDiffusionDepth2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer("!"),
                                            unet=unet, scheduler=PNDMScheduler(**SCHED), depth_estimator=estimator,
                                            feature_extractor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_refiner(seed: int = 50):
    """A tiny SDXL refiner (as stabilityai's): only the OpenCLIP-G-like encoder, a UNet conditioned on
    its 32-wide states and on an aesthetic score (5 size/score numbers x 8 + 32), fp32 VAE; random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from sdui.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(XL_UNET, cross_attention_dim=32, projection_class_embeddings_input_dim=72))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**dict(TEXT, hidden_act="gelu")))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=text_encoder_2,
                                            tokenizer_2=load_clip_tokenizer("!"), unet=unet, scheduler=scheduler,
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
