"""What the server has: checkpoints, VAEs, LoRAs, upscalers, samplers, schedule types, memory."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .. import samplers
from ..types import ModelKind
from .state import ApiState, api_state

router = APIRouter()


@router.get("/sd-models")
def sd_models(state: ApiState = Depends(api_state)):
    """Usable checkpoints with A1111's ``title`` (``name.safetensors [hash]``), name and hashes."""
    return [{"title": e.title, "model_name": e.name, "hash": e.short_hash, "sha256": e.sha256, "filename": e.path,
             "config": e.config_dir or e.yaml} for e in state.engine.checkpoints() if not e.error]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(state: ApiState = Depends(api_state)):
    """Look at the models folders again."""
    state.engine.refresh()


@router.get("/samplers")
def list_samplers():
    """Sampler names (A1111's), with aliases and options."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in samplers.SAMPLERS]


@router.get("/schedulers")
def list_schedulers():
    """Schedule types by API name and label."""
    return [{"name": samplers.SCHEDULE_API_NAMES[n], "label": n, "aliases": None, "default_rho": -1,
             "need_inner_model": False} for n in samplers.schedule_names()]


@router.get("/upscalers")
def upscalers(state: ApiState = Depends(api_state)):
    """Upscalers for ``extra-single-image``: None, Lanczos, Nearest, the SD x4 upscaler, ESRGAN models."""
    esrgan = {e.name: e for e in state.engine.models(ModelKind.UPSCALER)}
    out = [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]
    for name in state.engine.upscaler_names():
        e = esrgan.get(name)
        out.append({"name": name, "model_name": name if e else None, "model_path": e.path if e else None,
                    "model_url": None, "scale": 4})
    return out


@router.get("/sd-vae")
def sd_vae(state: ApiState = Depends(api_state)):
    """VAE files a request may choose as ``sd_vae``."""
    return [{"model_name": e.filename, "filename": e.path} for e in state.engine.models(ModelKind.VAE) if not e.error]


@router.get("/loras")
def loras(state: ApiState = Depends(api_state)):
    """LoRA files in ``models/Lora/``."""
    return [{"name": e.name, "alias": e.name, "path": e.path, "metadata": {}} for e in state.engine.models(ModelKind.LORA)]


@router.get("/scripts")
def scripts():
    """Scripts (none: A1111 extensions do not run here)."""
    return {"txt2img": [], "img2img": []}


@router.get("/memory")
def memory(state: ApiState = Depends(api_state)):
    """RAM and (on CUDA) VRAM in A1111's shape, plus sdui's own model and cache report."""
    import psutil

    engine = state.engine
    rep = engine.memory_report()
    vm = psutil.virtual_memory()
    out: dict = {"ram": {"free": vm.available, "used": rep["ram_rss_bytes"], "total": vm.total}}
    if "vram_total_bytes" in rep:
        out["cuda"] = {"system": {"free": rep["vram_free_bytes"], "used": rep["vram_total_bytes"] - rep["vram_free_bytes"],
                                  "total": rep["vram_total_bytes"]},
                       "active": {"current": rep["vram_allocated_bytes"], "peak": rep["vram_peak_bytes"]}}
    else:
        out["cuda"] = {"error": f"no CUDA device (running on {engine.device_name})"}
    out["sdui"] = engine.status()
    return out
