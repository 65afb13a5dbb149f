"""Turn a registry entry into a ready diffusers pipeline. The only module that calls
``from_pretrained`` / ``from_single_file``.

Single files: read safely (``formats.CheckpointSource``, one component's tensors at a time), the
architecture detected from the header, and each component built with diffusers' single-file
loaders against a config folder: ``<stem>.config/`` beside the file when present (custom and tiny
architectures), else the shipped ``assets/configs/<arch>``. Nothing is fetched. We assemble the
pipeline from components instead of
calling the pipeline-level ``from_single_file(path)`` because that one re-reads the file choosing
the reader by extension: it would reject a safetensors file named ``.ckpt`` and lose the reason a
pickle was refused.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import detect, formats
from .registry import ModelEntry, hub_offline
from .tokenizer import OPENCLIP_PAD, load_clip_tokenizer
from ..assets_path import CONFIGS_DIR
from ..types import Architecture, ModelLoadError

log = logging.getLogger(__name__)
_OPENCLIP_PREFIXES = ("cond_stage_model.model.", "conditioner.embedders.1.model.")


def config_dir_for(entry: ModelEntry, architecture: str) -> Path:
    if entry.config_dir:
        return Path(entry.config_dir)
    folder = CONFIGS_DIR / architecture
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{entry.path}: unsupported architecture '{architecture}'. Supported: "
            f"{', '.join(detect.ARCH_LABELS[a] for a in detect.CHECKPOINT_ARCHS)}. For a custom architecture put a "
            f"diffusers config folder named '{Path(entry.path).stem}.config' beside the file.")
    return folder


@dataclass
class LoadResult:
    """A loaded pipeline and what loading learned about it (kept by the manager, not on the pipeline)."""

    pipe: Any
    architecture: str
    needs_v_check: bool = False  # SD 2.x 512/768 from a bare file: settle_v_prediction decides


def load_pipeline(entry: ModelEntry, dtype, allow_download: bool = False):
    """A pipeline on the CPU in ``dtype``; raises ModelLoadError with the file and the reason."""
    return load(entry, dtype, allow_download).pipe


def load(entry: ModelEntry, dtype, allow_download: bool = False) -> LoadResult:
    """``load_pipeline`` with the architecture it found; raises ModelLoadError with the file and the reason."""
    if entry.error:
        raise ModelLoadError(entry.error)
    try:
        if entry.format == formats.DIFFUSERS:
            result = LoadResult(_from_pretrained(entry.path, dtype, local_files_only=True), entry.architecture)
        elif entry.format == formats.HUB:
            result = LoadResult(_from_hub(entry.path, dtype, allow_download), entry.architecture)
        else:
            result = _from_single_file(entry, dtype)
    except ModelLoadError:
        raise
    except MemoryError:
        raise ModelLoadError(f"{entry.path}: not enough memory to load this model") from None
    except Exception as e:  # diffusers/transformers raise many types; the user needs the reason, not a trace
        log.debug("load failed", exc_info=True)
        raise ModelLoadError(f"{entry.path}: cannot load ({type(e).__name__}: {str(e)[:400]})") from None
    validate_pipeline(result.pipe, entry.path)
    return result


def _from_pretrained(path: str, dtype, local_files_only: bool):
    from diffusers import DiffusionPipeline

    if os.path.isdir(path):
        index = _read_index(Path(path))
    else:
        index = DiffusionPipeline.load_config(path, local_files_only=local_files_only)
    kwargs = {}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    # components the folder lists as absent (the depth model's estimator, kept in models/depth/; an SDXL refiner's
    # first text encoder): None, which diffusers does not pass on its own
    kwargs.update({k: None for k, v in index.items() if not k.startswith("_") and v in (None, [None, None])
                   and k not in kwargs})
    return DiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=local_files_only, **kwargs)


def _from_hub(repo_id: str, dtype, allow_download: bool):
    try:
        return _from_pretrained(repo_id, dtype, local_files_only=True)
    except Exception as first:
        if not allow_download or hub_offline():
            raise ModelLoadError(
                f"{repo_id}: not in the local Hugging Face cache and the hub is not reachable "
                f"({type(first).__name__}). Download it once while online, or put a checkpoint in models/Stable-diffusion/."
            ) from None
        return _from_pretrained(repo_id, dtype, local_files_only=False)


def _read_index(folder: Path) -> dict:
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder}: unreadable model_index.json ({e})") from None


# Which original-layout keys each component is built from (components not listed get every key).
COMPONENT_PREFIXES = {
    "unet": ("model.diffusion_model.",),
    "vae": ("first_stage_model.",),
    "text_encoder": ("cond_stage_model.", "conditioner.embedders.0."),
    "text_encoder_2": ("conditioner.embedders.1.",),
}


def _from_single_file(entry: ModelEntry, dtype) -> LoadResult:
    source = formats.CheckpointSource(entry.path, entry.format)
    try:
        arch = detect.detect_architecture(source.shapes())
        if not entry.config_dir and arch not in detect.CHECKPOINT_ARCHS:
            what = {detect.VAE: "a VAE (put it in models/VAE/)", detect.LORA: "a LoRA (put it in models/Lora/)"}.get(
                arch, "not a Stable Diffusion checkpoint (no UNet/text encoder keys recognised)")
            raise ModelLoadError(f"{entry.path}: {what}")
        hints = detect.yaml_hints(Path(entry.yaml)) if entry.yaml else {}
        arch = detect.architecture_from_yaml(arch, hints)
        folder = config_dir_for(entry, arch)
        try:
            pipe = assemble_from_source(source, folder, dtype)
        except ModelLoadError as e:
            raise ModelLoadError(f"{entry.path}: {e}") from None
        if "prediction_type" in hints:
            pipe.scheduler.register_to_config(prediction_type=hints["prediction_type"])
        return LoadResult(pipe, Architecture.CUSTOM if entry.config_dir else arch,
                          needs_v_check=arch == detect.SD2 and not hints and not entry.config_dir)
    finally:
        source.close()  # drops the only reference to a pickle's tensors


def assemble_from_source(source: "formats.CheckpointSource", folder: Path, dtype):
    """Build every component named in ``folder/model_index.json`` from an original-layout checkpoint,
    reading each component's tensors only while that component is built."""
    import diffusers
    import transformers

    index = _read_index(folder)
    pipeline_cls = getattr(diffusers, index["_class_name"])
    keys = list(source.keys())
    components = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        library, class_name = spec
        if name.startswith("tokenizer"):
            components[name] = _tokenizer_for(name, folder, keys)
            continue
        cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
        if issubclass(cls, diffusers.SchedulerMixin):
            components[name] = cls.from_pretrained(str(folder), subfolder=name, local_files_only=True)
            continue
        state_dict = source.take(COMPONENT_PREFIXES.get(name), dtype)
        try:
            components[name] = _build_component(cls, library, name, state_dict, folder, dtype)
        except NotImplementedError as e:
            if "meta tensor" not in str(e):
                raise
            raise ModelLoadError(f"incomplete checkpoint: the {name} is missing weights (a truncated file, or "
                                 f"one made for another architecture than {folder.name})") from None
        finally:
            del state_dict
    params = inspect.signature(pipeline_cls.__init__).parameters
    for name, p in params.items():
        if name not in components and name != "self" and p.default is inspect.Parameter.empty:
            components[name] = None
    if "requires_safety_checker" in params:
        components["requires_safety_checker"] = False
    for key in ("max_noise_level", "force_zeros_for_empty_prompt"):
        if key in params and key in index:
            components[key] = index[key]
    return pipeline_cls(**components)


def _build_component(cls, library: str, name: str, state_dict: dict, folder: Path, dtype):
    import diffusers
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    if library == "transformers":
        return create_diffusers_clip_model_from_ldm(cls, checkpoint=state_dict, config=str(folder), subfolder=name,
                                                    torch_dtype=dtype, local_files_only=True)
    if issubclass(cls, diffusers.SchedulerMixin):
        return cls.from_pretrained(str(folder), subfolder=name, local_files_only=True)
    return cls.from_single_file(state_dict, config=str(folder), subfolder=name, dtype=dtype, local_files_only=True)


def _tokenizer_for(name: str, folder: Path, keys: list[str]):
    own = folder / name
    if (own / "vocab.json").is_file():
        return load_clip_tokenizer(folder=str(own))
    # tokenizer pairs with text_encoder, tokenizer_2 with text_encoder_2; OpenCLIP encoders pad with "!"
    if name == "tokenizer_2":
        openclip = any(k.startswith("conditioner.embedders.1.model.") for k in keys)
    else:
        openclip = any(k.startswith("cond_stage_model.model.") for k in keys)
    return load_clip_tokenizer(OPENCLIP_PAD if openclip else None)


def validate_pipeline(pipe, path: str) -> None:
    """Every weight materialised and the pieces fit together, before we let go of the old model."""
    import torch

    for comp_name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, comp_name, None)
        if module is None:
            if comp_name in ("unet", "vae"):
                raise ModelLoadError(f"{path}: the model has no {comp_name}")
            continue
        for pname, param in list(module.named_parameters()) + list(module.named_buffers()):
            if param.device.type == "meta":
                raise ModelLoadError(f"{path}: incomplete checkpoint: {comp_name} weight '{pname}' is missing")
            if param.is_floating_point() and param.numel() and not torch.isfinite(param.flatten()[:1024]).all():
                raise ModelLoadError(f"{path}: corrupt checkpoint: {comp_name} weight '{pname}' holds NaN/inf")
    unet_in = pipe.unet.config.in_channels
    latent = pipe.vae.config.latent_channels
    if unet_in not in (latent, latent + 1, 2 * latent + 1, latent + 3):  # txt2img, depth, inpaint, x4 upscaler
        raise ModelLoadError(f"{path}: UNet takes {unet_in} channels but the VAE makes {latent}")


def settle_v_prediction(pipe) -> bool:
    """SD 2.x from a bare file: epsilon or v-prediction? A1111's test: feed the UNet a flat input at
    t=999 and look at the sign of what comes out (v-models return roughly -x there). Sets the
    scheduler's prediction type; returns True for a v-prediction model."""
    import torch

    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    with torch.no_grad():
        x = torch.ones((1, unet.config.in_channels, 8, 8), device=device, dtype=dtype) * 0.5
        cond = torch.ones((1, 2, unet.config.cross_attention_dim), device=device, dtype=dtype) * 0.5
        out = unet(x, torch.tensor([999], device=device), encoder_hidden_states=cond).sample
        score = (out.float() - x.float()).mean().item()
    if score < -1:
        pipe.scheduler.register_to_config(prediction_type="v_prediction")
        return True
    return False


def load_vae(entry: ModelEntry, template, dtype):
    """A VAE file (A1111's ``models/VAE/``: original layout with or without ``first_stage_model.``,
    or diffusers layout) built with the architecture of ``template`` (the checkpoint's own VAE), on
    the CPU in ``dtype``. A VAE that does not fit the checkpoint is refused naming what differs."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if entry.error:
        raise ModelLoadError(entry.error)
    source = formats.CheckpointSource(entry.path, entry.format)
    try:
        state = source.take(None, dtype)
    finally:
        source.close()
    layout = detect.vae_layout(state)
    if layout is None:
        raise ModelLoadError(f"{entry.path}: not a VAE (no encoder/decoder weights found)")
    if layout == "ldm":
        state = convert_ldm_vae_checkpoint(state, template.config)
    with init_empty_weights():
        vae = AutoencoderKL.from_config(template.config)
    try:
        vae.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ModelLoadError(f"{entry.path}: this VAE does not fit the checkpoint's architecture ({detail})") from None
    vae.to(dtype=dtype)
    vae.eval()
    for name, t in list(vae.named_parameters()) + list(vae.named_buffers()):
        if t.device.type == "meta":
            raise ModelLoadError(f"{entry.path}: incomplete VAE: weight '{name}' is missing")
        if t.is_floating_point() and t.numel() and not torch.isfinite(t.flatten()[:1024]).all():
            raise ModelLoadError(f"{entry.path}: corrupt VAE: weight '{name}' holds NaN/inf")
    return vae


def load_upscaler(entry: ModelEntry):
    """An ESRGAN-family model (spandrel's descriptor, on the CPU, eval mode) from a state dict read
    safely; refuses what spandrel cannot read, naming the file."""
    from spandrel import ModelLoader

    if entry.error:
        raise ModelLoadError(entry.error)
    state_dict = formats.load_state_dict(entry.path, entry.format if entry.format != formats.UNKNOWN else None)
    try:
        return ModelLoader().load_from_state_dict(state_dict).eval()
    except Exception as e:  # spandrel raises UnsupportedModelError and friends
        raise ModelLoadError(f"{entry.path}: not an ESRGAN-family model spandrel can read ({type(e).__name__}: {e})") from None
