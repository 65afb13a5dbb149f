"""Which architecture a single-file checkpoint is, from its keys and tensor shapes alone.

Architecture ids equal the config folder names in ``assets/configs``. Key names are those of the
original (LDM / "CompVis") layout that A1111 and most model sites use.
"""

from __future__ import annotations

from pathlib import Path

from ..types import Architecture, ModelLoadError

# The architecture vocabulary is types.Architecture; these short names read well in detection rules.
SD1, SD1_INPAINT, SD2, SD2_V = Architecture.SD1, Architecture.SD1_INPAINT, Architecture.SD2, Architecture.SD2_V
SD2_INPAINT, SDXL, X4_UPSCALER = Architecture.SD2_INPAINT, Architecture.SDXL, Architecture.X4_UPSCALER
SD2_DEPTH = Architecture.SD2_DEPTH
VAE, LORA, CUSTOM, HUB, UNKNOWN = Architecture.VAE, Architecture.LORA, Architecture.CUSTOM, Architecture.HUB, Architecture.UNKNOWN
CHECKPOINT_ARCHS = (SD1, SD1_INPAINT, SD2, SD2_V, SD2_INPAINT, SD2_DEPTH, SDXL, X4_UPSCALER)

ARCH_LABELS = {
    SD1: "SD 1.x", SD1_INPAINT: "SD 1.x inpainting", SD2: "SD 2.x (512, epsilon)", SD2_V: "SD 2.x (768, v-prediction)",
    SD2_INPAINT: "SD 2.x inpainting", SD2_DEPTH: "SD 2.x depth-to-image", SDXL: "SDXL base", X4_UPSCALER: "SD x4 upscaler",
    VAE: "VAE", LORA: "LoRA",
    UNKNOWN: "unknown",
}

_UNET = "model.diffusion_model."
_CONV_IN = _UNET + "input_blocks.0.0.weight"
_SD2_ATTN_K = _UNET + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_SDXL_OPENCLIP = "conditioner.embedders.1.model.positional_embedding"
_SDXL_CLIP = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
_OPENCLIP = "cond_stage_model.model.token_embedding.weight"
_CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.embeddings.")
_DEPTH_MODEL = "depth_model."  # 512-depth-ema: the MiDaS (DPT-Hybrid) weights it was trained with


def vae_layout(keys) -> str | None:
    """How a VAE file names its weights: "diffusers" (``encoder.down_blocks.…``), "ldm" (A1111's
    ``encoder.down.…``, bare or under ``first_stage_model.``/``vae.``), or None when it has no VAE
    encoder at all."""
    keys = list(keys)
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return "diffusers"
    if any(".encoder.down." in f".{k}" for k in keys):
        return "ldm"
    return None


# The tensors whose sizes detection reads, and how many dimensions each has in every real checkpoint.
_RANKS = {_CONV_IN: 4, _SD2_ATTN_K: 2}


def shape_problem(shapes: dict[str, tuple]) -> str | None:
    """Why the tensors detection reads cannot be what their names say (wrong number of
    dimensions), or None. A header can claim any shape; this keeps detection from indexing past it."""
    for key, rank in _RANKS.items():
        if key in shapes and len(shapes[key]) != rank:
            return f"tensor {key!r} has shape {list(shapes[key])}, but a real checkpoint's has {rank} dimensions"
    return None


def detect_architecture(shapes: dict[str, tuple]) -> str:
    """One of CHECKPOINT_ARCHS, VAE, LORA or UNKNOWN (also for shapes ``shape_problem`` objects to).

    SD 2.x files are reported as SD2; epsilon vs v-prediction cannot be told from shapes, so the
    loader settles it (a .yaml beside the file, else A1111's test of the UNet's output).
    """
    keys = shapes.keys()
    if shape_problem(shapes):
        return UNKNOWN
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        return LORA
    if _CONV_IN not in shapes:
        if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.encoder.")) for k in keys) and not any(
                k.startswith(_UNET) for k in keys):
            return VAE
        return UNKNOWN
    in_channels = shapes[_CONV_IN][1]
    if _SDXL_OPENCLIP in shapes or _SDXL_CLIP in shapes:
        return SDXL
    if in_channels == 7:
        return X4_UPSCALER
    if in_channels == 5 and (_OPENCLIP in shapes or any(k.startswith(_DEPTH_MODEL) for k in keys)):
        return SD2_DEPTH  # the latents plus one depth channel
    openclip = _OPENCLIP in shapes or (_SD2_ATTN_K in shapes and shapes[_SD2_ATTN_K][-1] == 1024)
    if openclip:
        return SD2_INPAINT if in_channels == 9 else SD2
    if any(k.startswith(_CLIP_PREFIXES) for k in keys) or (_SD2_ATTN_K in shapes and shapes[_SD2_ATTN_K][-1] == 768):
        return SD1_INPAINT if in_channels == 9 else SD1
    return UNKNOWN


def yaml_hints(yaml_path: Path) -> dict:
    """What an A1111-style ``<stem>.yaml`` beside a checkpoint tells us that diffusers can use.

    Returns ``{"prediction_type": ..., "in_channels": ..., "context_dim": ...}`` for what is present.
    """
    import yaml

    from .formats import open_regular

    try:
        with open_regular(yaml_path) as f:
            cfg = yaml.safe_load(f.read(_MAX_YAML).decode("utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError, ModelLoadError):  # unreadable or hostile
        return {}
    params = _mapping(_mapping(_mapping(cfg).get("model")).get("params"))
    unet = _mapping(_mapping(params.get("unet_config")).get("params"))
    hints = {}
    if params.get("parameterization") == "v":
        hints["prediction_type"] = "v_prediction"
    elif "parameterization" in params or params:
        hints["prediction_type"] = "epsilon"
    for key in ("in_channels", "context_dim"):
        try:
            if key in unet:
                hints[key] = int(unet[key])
        except (TypeError, ValueError, OverflowError):  # not a number: no hint
            pass
    return hints


_MAX_YAML = 1024 * 1024  # an A1111 config is a few KB


def _mapping(value) -> dict:
    """``value`` when it is a mapping, else empty: a YAML file can hold any shape of data."""
    return value if isinstance(value, dict) else {}


def architecture_from_yaml(base: str, hints: dict) -> str:
    """Refine a detected architecture with yaml hints (v-prediction, inpainting)."""
    if base in (SD2, SD2_V):
        if hints.get("in_channels") == 9:
            return SD2_INPAINT
        if hints.get("prediction_type") == "v_prediction":
            return SD2_V
        if hints.get("prediction_type") == "epsilon":
            return SD2
    if base == SD1 and hints.get("in_channels") == 9:
        return SD1_INPAINT
    return base
