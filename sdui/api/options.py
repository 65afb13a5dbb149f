"""A1111's options: each client's own model and VAE choice, and the server's flags (secrets hidden)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends

from ..images import outputs
from ..types import SduiError
from .convert import setting_text
from .state import ApiState, api_state, owner_of

router = APIRouter()


@router.get("/options")
def get_options(state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """This client's options: its checkpoint and VAE (the server's default when it chose none,
    never another client's), and the fixed ones sdui reports as A1111 does."""
    engine = state.engine
    name = state.model_for(owner)
    entry = None
    if name:
        try:
            entry = engine.find_model(name)
        except SduiError:
            entry = None
    if entry is None:
        entry = engine.default_checkpoint()
    folder = state.settings.outputs_dir
    return {"sd_model_checkpoint": entry.title if entry else None,
            "sd_checkpoint_hash": entry.sha256 if entry else None,
            "samples_format": "png", "samples_save": True, "outdir_samples": "",
            "outdir_txt2img_samples": str(outputs.output_folder(folder, "txt2img").parent),
            "outdir_img2img_samples": str(outputs.output_folder(folder, "img2img").parent),
            "outdir_extras_samples": str(outputs.output_folder(folder, "upscale").parent),
            "enable_pnginfo": True, "add_model_hash_to_info": True, "add_model_name_to_info": True,
            "sd_vae": state.vae_for(owner) or engine.default_vae_choice(), "CLIP_stop_at_last_layers": 1,
            "eta_noise_seed_delta": 0, "invisible_watermark": not state.settings.no_watermark}


@router.post("/options")
def set_options(body: dict, state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Choose this client's ``sd_model_checkpoint`` and ``sd_vae`` (names the server lists). Other
    keys are not applied and are listed back as ``ignored``."""
    model, vae = setting_text(body, "sd_model_checkpoint", "options"), setting_text(body, "sd_vae", "options")
    if model:
        state.set_model(owner, model)
    if vae:
        state.set_vae(owner, vae)
    ignored = sorted(k for k in body if k not in ("sd_model_checkpoint", "sd_vae"))
    return {"ignored": ignored} if ignored else None


@router.get("/cmd-flags")
def cmd_flags(state: ApiState = Depends(api_state)):
    """The server's settings (its command-line flags); credentials are shown as ``***``."""
    flags = {f.name: getattr(state.settings, f.name) for f in dataclasses.fields(state.settings) if f.name != "extra"}
    for secret in ("gradio_auth", "api_auth"):
        if flags.get(secret):
            flags[secret] = "***"
    return flags
