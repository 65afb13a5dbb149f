"""What the server has: checkpoints, VAEs, LoRAs, upscalers, samplers, schedule types, styles,
memory; looking at the folders again, and loading or freeing the model.

Lists of things sdui does not have (hypernetworks, face restorers) answer
empty in A1111's shape, never 404, so clients that ask for them go on working."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request

from .. import samplers
from ..fields import LATENT_UPSCALE_MODES
from ..types import ModelKind
from .request_log import LoggedRoute, note
from .state import ApiState, api_state, owner_of
from .styles import read_styles

router = APIRouter(route_class=LoggedRoute)


@router.get("/sd-models")
def sd_models(state: ApiState = Depends(api_state)):
    """Usable checkpoints with A1111's ``title`` (``name.safetensors [hash]``), name and hashes."""
    return [{"title": e.title, "model_name": e.name, "hash": e.short_hash, "sha256": e.sha256, "filename": e.path,
             "config": e.config_dir or e.yaml} for e in state.engine.checkpoints() if not e.error]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(state: ApiState = Depends(api_state)):
    """Look at the models folders again."""
    state.engine.refresh()


@router.post("/refresh-vae")
def refresh_vae(state: ApiState = Depends(api_state)):
    """Look at the models folders again (``VAE/`` among them)."""
    state.engine.refresh()


@router.post("/refresh-loras")
def refresh_loras(state: ApiState = Depends(api_state)):
    """Look at the models folders again (``Lora/`` among them)."""
    state.engine.refresh()


@router.post("/refresh-embeddings")
def refresh_embeddings(state: ApiState = Depends(api_state)):
    """Look at the folders again (the embeddings folder among them; it is also looked at before every
    job when files were added or removed, as A1111 does)."""
    state.engine.refresh()


@router.post("/unload-checkpoint")
def unload_checkpoint(state: ApiState = Depends(api_state)):
    """Free every loaded checkpoint from memory (after the running job, if any); the next job loads
    its model again."""
    state.engine.unload_checkpoints()
    return {}


@router.post("/reload-checkpoint")
def reload_checkpoint(http: Request, state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Load this client's checkpoint now (its ``sd_model_checkpoint``; else the loaded one, else the
    server's default), so its next job does not wait for the load."""
    name = state.model_for(owner)
    note(http, f"model {name or 'default'}")
    state.engine.reload_checkpoint(name)
    return {}


@router.get("/samplers")
def list_samplers():
    """Sampler names (A1111's), with aliases and options."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in samplers.SAMPLERS]


@router.get("/schedulers")
def list_schedulers():
    """Schedule types by API name and label."""
    return samplers.schedule_listing()


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


@router.get("/sd-modules")
def sd_modules(state: ApiState = Depends(api_state)):
    """Forge's list of extra model files (VAEs, text encoders): here the VAE files, as ``sd-vae``."""
    return sd_vae(state)


@router.get("/latent-upscale-modes")
def latent_upscale_modes():
    """The latent upscale modes Hires. fix (``hr_upscaler``) takes, as A1111 lists them: ``[{"name":
    "Latent"}, ...]``; its pixel upscalers are the ``upscalers`` list."""
    return [{"name": name} for name in LATENT_UPSCALE_MODES]


@router.get("/realesrgan-models")
def realesrgan_models(state: ApiState = Depends(api_state)):
    """The upscaler files in ``models/RealESRGAN/`` (``upscaler_1`` names them)."""
    return [{"name": e.name, "path": e.path, "scale": 4} for e in state.engine.models(ModelKind.UPSCALER)
            if not e.error and Path(e.path).parent.name == "RealESRGAN"]


@router.get("/hypernetworks")
def hypernetworks():
    """Hypernetworks: none (sdui does not load them)."""
    return []


@router.get("/face-restorers")
def face_restorers():
    """Face restorers (GFPGAN, CodeFormer): none installed (``restore_faces`` is listed in ``info.ignored``)."""
    return []


@router.get("/embeddings")
def embeddings(state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Textual-inversion embeddings of ``--embeddings-dir`` in A1111's shape, for this client's
    checkpoint (else the loaded one, else the server's default): ``loaded`` (they fit its text encoder;
    the name is the word prompts use) and ``skipped`` (made for another model family),
    each ``{name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}}``. Unreadable or refused
    files are in neither."""
    return state.engine.embedding_listing(state.model_for(owner))


@router.get("/prompt-styles")
def prompt_styles(state: ApiState = Depends(api_state)):
    """The styles of the owner's ``--styles-file`` (A1111's ``styles.csv``): name, prompt and
    negative prompt; none when there is no such file."""
    return read_styles(state.settings.styles_file)


@router.get("/loras")
def loras(state: ApiState = Depends(api_state)):
    """LoRA files in ``models/Lora/``: ``name`` (for ``<lora:name:weight>``), ``alias`` (the training
    name, ``ss_output_name``), ``path`` and ``metadata`` (the safetensors header's), as A1111 lists them."""
    return state.engine.lora_listing()


@router.get("/scripts")
def scripts():
    """The selectable scripts the API's ``script_name`` runs, in A1111's lower-case titles: "x/y/z plot"
    on both tabs (A1111's extensions and its other scripts do not run here)."""
    from .scripts import SCRIPTS

    return {tab: list(names) for tab, names in SCRIPTS.items()}


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
    out["sdui"]["workers"] = state.queue.worker_status()  # each worker: device, model loaded, job running, memory
    return out
