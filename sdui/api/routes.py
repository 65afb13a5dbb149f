"""A1111-compatible REST API under ``/sdapi/v1``, served from the shared job queue.

Each client is an owner: its HTTP Basic user, else its ``X-Client-Id`` header, else its address.
Its model choice (``POST options`` with ``sd_model_checkpoint``) is its own; interrupt and skip
act on its own jobs only.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .. import __version__, samplers
from ..images import infotext, outputs, uploads
from ..jobs import Job, JobQueue
from .. import fields
from ..fields import MASKED_CONTENT, RESIZE_MODES
from ..types import (DiskFull, GenerationRequest, InvalidRequest, JobState, ModelKind, ModelLoadError, QueueFull, SduiError,
                     UnknownModelError, redact_paths)
from . import schemas

OWNER_HEADER = "x-client-id"


class ApiState:
    """Per-client API options (model choice); everything else lives in the engine and queue."""

    def __init__(self, engine, queue: JobQueue, settings):
        self.engine, self.queue, self.settings = engine, queue, settings
        self.client_model: dict[str, str] = {}
        self.client_vae: dict[str, str] = {}
        self._lock = threading.Lock()

    def model_for(self, owner: str) -> Optional[str]:
        with self._lock:
            return self.client_model.get(owner)

    def set_model(self, owner: str, name: str) -> None:
        entry = self.engine.find_model(name)  # a listed name only; raises UnknownModelError
        with self._lock:
            self.client_model[owner] = entry.name

    def vae_for(self, owner: str) -> Optional[str]:
        """The client's "SD VAE" choice; None = the server's default."""
        with self._lock:
            return self.client_vae.get(owner)

    def set_vae(self, owner: str, name: str) -> None:
        name = self.engine.check_vae_choice(name)  # raises UnknownModelError listing the VAEs
        with self._lock:
            self.client_vae[owner] = name


def owner_of(request: Request) -> str:
    user = getattr(request.state, "user", None)
    if user:
        return f"user:{user}"
    cid = request.headers.get(OWNER_HEADER)
    if cid:
        return f"client:{cid[:64]}"
    return f"client:{request.client.host if request.client else 'unknown'}"


# ---- errors in A1111's shape ------------------------------------------------------------------------
def error_response(status: int, exc: BaseException | str, kind: str | None = None) -> JSONResponse:
    text = redact_paths(str(exc))
    return JSONResponse(status_code=status, content={
        "error": kind or (type(exc).__name__ if isinstance(exc, BaseException) else "Error"),
        "detail": text, "body": "", "errors": text})


def status_for(kind: str) -> int:
    return {"InvalidRequest": 422, "UnknownModelError": 404, "QueueFull": 503, "ModelLoadError": 500,
            "Cancelled": 409, "OutOfMemory": 507, "DiskFull": 507}.get(kind, 500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        if not request.url.path.startswith("/sdapi/"):
            return JSONResponse(status_code=422, content={"detail": exc.errors()})
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        return error_response(422, "; ".join(parts), "ValidationError")

    for cls, status in ((InvalidRequest, 422), (UnknownModelError, 404), (QueueFull, 503), (ModelLoadError, 500),
                        (DiskFull, 507)):
        app.add_exception_handler(cls, lambda request, exc, status=status: error_response(status, exc))


# ---- request conversion ----------------------------------------------------------------------------
def _sampler_and_schedule(req: schemas.Txt2ImgRequest) -> tuple[str, str]:
    name = req.sampler_name or req.sampler_index or fields.default("sampler")  # A1111: None = the default
    sampler, schedule = samplers.resolve(name, req.scheduler or fields.default("scheduler"))
    return sampler.name, schedule


def _apply_infotext(req: schemas.Txt2ImgRequest) -> None:
    """A1111 1.7+: ``infotext`` fills every field the request did not set itself."""
    if not req.infotext:
        return
    found = infotext.infotext_to_request_fields(infotext.parse_infotext(req.infotext))
    for f in fields.FIELDS:
        if f.name in found and f.api in req.model_fields and f.api not in req.model_fields_set:
            setattr(req, f.api, found[f.name])


def setting_text(settings: dict, key: str, where: str) -> Optional[str]:
    """A string-valued A1111 option from a client's dict (``POST options``, ``override_settings``):
    absent or empty -> None, a string -> itself, anything else -> InvalidRequest naming the field."""
    value = settings.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{key}", value, "a name (string) the server lists")
    return value


def to_generation_request(req: schemas.Txt2ImgRequest, mode: str, model: Optional[str],
                          vae: Optional[str] = None) -> GenerationRequest:
    _apply_infotext(req)
    sampler, schedule = _sampler_and_schedule(req)
    override = req.override_settings or {}
    model = setting_text(override, "sd_model_checkpoint", "override_settings") or model
    vae = setting_text(override, "sd_vae", "override_settings") or vae
    # the A1111 names of the field table, then what needs converting
    kw: dict[str, Any] = {f.name: getattr(req, f.api) for f in fields.for_mode("txt2img") if f.api}
    kw.update(mode=mode, model=model, vae=vae, sampler=sampler, scheduler=schedule,
              save=bool(req.save_images and not req.do_not_save_samples))
    if isinstance(req, schemas.Img2ImgRequest):
        if not req.init_images:
            raise InvalidRequest("init_images", None, "a list with one base64 image")
        kw["init_image"] = uploads.decode_image(req.init_images[0], "init_images")
        if req.denoising_strength is not None:
            kw["denoising_strength"] = req.denoising_strength
        if not 0 <= req.resize_mode < len(RESIZE_MODES):
            raise InvalidRequest("resize_mode", req.resize_mode, f"0 to {len(RESIZE_MODES) - 1}")
        kw["resize_mode"] = RESIZE_MODES[req.resize_mode]
        if req.mask:
            kw["mode"] = "inpaint"
            kw["mask"] = uploads.decode_image(req.mask, "mask", mode="L")
            kw["mask_blur"] = req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y)
            if not 0 <= req.inpainting_fill < len(MASKED_CONTENT):
                raise InvalidRequest("inpainting_fill", req.inpainting_fill, f"0 to {len(MASKED_CONTENT) - 1}")
            kw["inpainting_fill"] = MASKED_CONTENT[req.inpainting_fill]
    return GenerationRequest(**kw)


def result_info(engine, job: Job, req: GenerationRequest, ignored: list[str]) -> dict:
    res = job.result
    imgs = res.images if res else []
    seeds = [im.seed for im in imgs] or [req.seed]
    entry = None
    if res and res.model_name:
        try:
            entry = engine.find_model(res.model_name)
        except SduiError:
            entry = None
    return {
        "prompt": req.prompt, "all_prompts": [req.prompt] * len(seeds),
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * len(seeds),
        "seed": seeds[0], "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(seeds), "subseed_strength": 0,
        "width": req.width, "height": req.height, "sampler_name": req.sampler, "scheduler": req.scheduler,
        "cfg_scale": req.cfg_scale, "steps": req.steps, "batch_size": req.batch_size, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": res.model_name if res else None,
        "sd_model_hash": res.model_hash if res else None, "sd_vae_name": res.vae_name if res else None,
        "sd_vae_hash": res.vae_hash if res else None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": req.denoising_strength if req.mode in ("img2img", "inpaint") else None,
        "extra_generation_params": {"Memory level": res.memory_level} if res and res.memory_level else {},
        "index_of_first_image": 0, "infotexts": [im.infotext for im in imgs], "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), "clip_skip": 1,
        "is_using_inpainting_conditioning": req.mode == "inpaint", "version": f"sdui {__version__}",
        "ignored": ignored, "warnings": res.warnings if res else [], "memory_level": res.memory_level if res else 0,
        "saved": [im.path for im in imgs if im.path], "sd_model_sha256": entry.sha256 if entry else None,
    }


def _run_job(state: ApiState, owner: str, greq: GenerationRequest) -> Job:
    job = state.queue.submit(greq, owner)
    job.wait()
    return job


def _finished_or_error(job: Job) -> Optional[JSONResponse]:
    """A failed job becomes an A1111-shaped error; an interrupted one answers with what it has
    (possibly no images), as A1111 does."""
    if job.state == JobState.FAILED:
        return error_response(status_for(job.error_kind or ""), job.error or "failed", job.error_kind)
    return None


def build_router(state: ApiState) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible API"])
    engine = state.engine

    def generate(body: schemas.Txt2ImgRequest, request: Request, mode: str):
        owner = owner_of(request)
        ignored = schemas.ignored_fields(body)
        greq = to_generation_request(body, mode, state.model_for(owner), state.vae_for(owner))
        job = _run_job(state, owner, greq)
        err = _finished_or_error(job)
        if err is not None:
            return err
        imgs = job.result.images if job.result else []
        encoded = [uploads.encode_png_base64(im.image, im.infotext) for im in imgs] if body.send_images else []
        params = body.model_dump(exclude={"init_images", "mask"} if mode != "txt2img" else set())
        if mode != "txt2img":
            params["init_images"] = None
            params["mask"] = None
        return {"images": encoded, "parameters": params, "info": json.dumps(result_info(engine, job, job.request, ignored))}

    @r.post("/txt2img", response_model=schemas.ImageResponse)
    def txt2img(body: schemas.Txt2ImgRequest, request: Request):
        return generate(body, request, "txt2img")

    @r.post("/img2img", response_model=schemas.ImageResponse)
    def img2img(body: schemas.Img2ImgRequest, request: Request):
        return generate(body, request, "img2img")

    @r.post("/extra-single-image", response_model=schemas.ExtraSingleImageResponse)
    def extra_single_image(body: schemas.ExtraSingleImageRequest, request: Request):
        owner = owner_of(request)
        name = body.upscaler_1 if body.upscaler_1 and body.upscaler_1 != "None" else "Lanczos"
        img = uploads.decode_image(body.image, "image")
        factor = body.upscaling_resize if body.resize_mode == 0 else body.upscaling_resize_w / img.width
        greq = GenerationRequest(mode="upscale", init_image=img, upscaler=name, upscale_factor=float(factor),
                                 steps=20, save=True)
        job = _run_job(state, owner, greq)
        err = _finished_or_error(job)
        if err is not None:
            return err
        out = job.result.images[0] if job.result and job.result.images else None
        return {"html_info": out.infotext if out else "interrupted",
                "image": uploads.encode_png_base64(out.image, out.infotext) if out else None}

    @r.post("/png-info", response_model=schemas.PNGInfoResponse)
    def png_info(body: schemas.PNGInfoRequest):
        if not body.image:
            raise InvalidRequest("image", "", "a base64 PNG")
        img = uploads.decode_image(body.image, "image", mode=None)  # as sent: its text chunks intact
        text = infotext.read_infotext(img) or ""
        items = {k: v for k, v in img.info.items() if isinstance(v, str)}
        return {"info": text, "items": items, "parameters": infotext.parse_infotext(text) if text else {}}

    @r.get("/progress")
    def progress(request: Request, skip_current_image: bool = False):
        job = state.queue.current_for(owner_of(request))
        active = job is not None and job.state.active
        p = job.progress if job else None
        current_image = None
        if active and p is not None and p.preview is not None and not skip_current_image:
            current_image = uploads.encode_png_base64(p.preview)
        return {
            "progress": job.fraction if active else 0.0,
            "eta_relative": (p.eta if p else 0.0) if active else 0.0,
            "state": {"skipped": bool(job and job.skipped), "interrupted": bool(job and job.cancel_event.is_set()),
                      "stopping_generation": False, "job": f"task({job.id})" if active else "",
                      "job_count": 1 if active else 0, "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
                      "job_no": p.image_index if active and p else 0,
                      "sampling_step": p.step if active and p else 0,
                      "sampling_steps": p.total if active and p else 0,
                      "queue_position": state.queue.position(job) if active else 0},
            "current_image": current_image,
            "textinfo": (f"Queued, position {state.queue.position(job)}" if job and job.state == JobState.QUEUED else None),
            "current_task": f"task({job.id})" if active else None,
        }

    @r.post("/interrupt")
    def interrupt(request: Request):
        n = state.queue.cancel(owner_of(request))
        return {"interrupted": n}

    @r.post("/skip")
    def skip(request: Request):
        return {"skipped": state.queue.skip(owner_of(request))}

    @r.get("/options")
    def get_options(request: Request):
        owner = owner_of(request)
        name = state.model_for(owner)  # a client without a choice sees the server default, never another's
        entry = None
        if name:
            try:
                entry = engine.find_model(name)
            except SduiError:
                entry = None
        if entry is None:
            entry = engine.default_checkpoint()
        return {"sd_model_checkpoint": entry.title if entry else None,
                "sd_checkpoint_hash": entry.sha256 if entry else None,
                "samples_format": "png", "samples_save": True, "outdir_samples": "",
                "outdir_txt2img_samples": str(outputs.output_folder(state.settings.outputs_dir, "txt2img").parent),
                "outdir_img2img_samples": str(outputs.output_folder(state.settings.outputs_dir, "img2img").parent),
                "outdir_extras_samples": str(outputs.output_folder(state.settings.outputs_dir, "upscale").parent),
                "enable_pnginfo": True, "add_model_hash_to_info": True, "add_model_name_to_info": True,
                "sd_vae": state.vae_for(owner) or engine.default_vae_choice(), "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0,
                "invisible_watermark": not state.settings.no_watermark}

    @r.post("/options")
    def set_options(body: dict, request: Request):
        owner = owner_of(request)
        model, vae = setting_text(body, "sd_model_checkpoint", "options"), setting_text(body, "sd_vae", "options")
        if model:
            state.set_model(owner, model)
        if vae:
            state.set_vae(owner, vae)
        ignored = sorted(k for k in body if k not in ("sd_model_checkpoint", "sd_vae"))
        return {"ignored": ignored} if ignored else None

    @r.get("/sd-models")
    def sd_models():
        out = []
        for e in engine.checkpoints():
            if e.error:
                continue
            out.append({"title": e.title, "model_name": e.name, "hash": e.short_hash, "sha256": e.sha256,
                        "filename": e.path, "config": e.config_dir or e.yaml})
        return out

    @r.post("/refresh-checkpoints")
    def refresh_checkpoints():
        engine.refresh()
        return None

    @r.get("/samplers")
    def list_samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in samplers.SAMPLERS]

    @r.get("/schedulers")
    def list_schedulers():
        return [{"name": samplers.SCHEDULE_API_NAMES[n], "label": n, "aliases": None, "default_rho": -1,
                 "need_inner_model": False} for n in samplers.schedule_names()]

    @r.get("/upscalers")
    def upscalers():
        esr = {e.name: e for e in engine.models(ModelKind.UPSCALER)}
        out = [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]
        for name in engine.upscaler_names():
            e = esr.get(name)
            out.append({"name": name, "model_name": name if e else None, "model_path": e.path if e else None,
                        "model_url": None, "scale": 4})
        return out

    @r.get("/sd-vae")
    def sd_vae():
        return [{"model_name": e.filename, "filename": e.path} for e in engine.models(ModelKind.VAE)
                if not e.error]

    @r.get("/loras")
    def loras():
        return [{"name": e.name, "alias": e.name, "path": e.path, "metadata": {}}
                for e in engine.models(ModelKind.LORA)]

    @r.get("/scripts")
    def scripts():
        return {"txt2img": [], "img2img": []}

    @r.get("/memory")
    def memory():
        rep = engine.memory_report()
        import psutil

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

    @r.get("/cmd-flags")
    def cmd_flags():
        import dataclasses

        flags = {f.name: getattr(state.settings, f.name) for f in dataclasses.fields(state.settings) if f.name != "extra"}
        for secret in ("gradio_auth", "api_auth"):
            if flags.get(secret):
                flags[secret] = "***"
        return flags

    return r
