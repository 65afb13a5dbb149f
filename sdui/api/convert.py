"""A1111 request bodies -> sdui's GenerationRequest, and a finished job -> A1111's ``info``.

The field names come from the field table (``sdui.fields``: each field's ``api`` name); what needs
converting (sampler aliases, resize/fill indices, mask blur, ``infotext``) is done here."""

from __future__ import annotations

import time
from typing import Any, Optional

from .. import __version__, fields, samplers
from ..fields import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES, VARIATION_MODES
from ..images import infotext, uploads
from ..jobs import Job
from ..types import GenerationRequest, InvalidRequest, SduiError
from . import schemas


def _sampler_and_schedule(req: schemas.Txt2ImgRequest) -> tuple[str, str]:
    name = req.sampler_name or req.sampler_index or fields.default("sampler")  # A1111: None = the default
    sampler, schedule = samplers.resolve(name, req.scheduler or fields.default("scheduler"))
    return sampler.name, schedule


def _apply_infotext(req: schemas.Txt2ImgRequest) -> None:
    """A1111 1.7+: ``infotext`` fills every field the request did not set itself."""
    if not req.infotext:
        return
    parsed = infotext.parse_infotext(req.infotext)
    found = infotext.infotext_to_request_fields(parsed)
    for f in fields.FIELDS:
        if f.name in found and f.api in req.model_fields and f.api not in req.model_fields_set:
            setattr(req, f.api, found[f.name])
    if "enable_hr" not in req.model_fields_set and not isinstance(req, schemas.Img2ImgRequest):
        req.enable_hr = fields.hires_in_infotext(parsed)  # A1111's paste rule for its Hires. fix checkbox


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
    kw: dict[str, Any] = {f.name: getattr(req, f.api) for f in fields.for_mode("txt2img")
                          if f.api and getattr(req, f.api) is not None}
    for name in ("seed_resize_from_w", "seed_resize_from_h"):  # A1111's API: -1 (its default) or 0 means off
        kw[name] = max(0, kw.get(name, 0))
    kw.update(mode=mode, model=model, vae=vae, sampler=sampler, scheduler=schedule,
              save=bool(req.save_images and not req.do_not_save_samples))
    if isinstance(req, schemas.Img2ImgRequest):
        if not req.init_images:
            raise InvalidRequest("init_images", None, "a list with one base64 image")
        kw["init_image"] = uploads.decode_image(req.init_images[0], "init_images")
        kw["enable_hr"] = False  # txt2img's (listed in info.ignored when asked for)
        kw["refiner_checkpoint"] = ""  # likewise
        if req.denoising_strength is not None:
            kw["denoising_strength"] = req.denoising_strength
        if not 0 <= req.resize_mode < len(RESIZE_MODES):
            raise InvalidRequest("resize_mode", req.resize_mode, f"0 to {len(RESIZE_MODES) - 1}")
        kw["resize_mode"] = RESIZE_MODES[req.resize_mode]
        if req.depth_map:  # an SD 2 depth model's depth image (else its estimator makes one)
            kw["depth_map"] = uploads.decode_image(req.depth_map, "depth_map", mode="L")
        if req.mask:
            kw["mode"] = "inpaint"
            kw["mask"] = uploads.decode_image(req.mask, "mask", mode="L")
            kw["mask_blur"] = req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y)
            if not 0 <= req.inpainting_fill < len(MASKED_CONTENT):
                raise InvalidRequest("inpainting_fill", req.inpainting_fill, f"0 to {len(MASKED_CONTENT) - 1}")
            kw["inpainting_fill"] = MASKED_CONTENT[req.inpainting_fill]
            kw["inpainting_mask_invert"] = _choice(req.inpainting_mask_invert, MASK_MODES, "inpainting_mask_invert",
                                                   "0 (inpaint masked) or 1 (not masked)")
            kw["inpaint_full_res"] = _choice(req.inpaint_full_res, INPAINT_AREAS, "inpaint_full_res",
                                             "true (only masked) or false (whole picture)")  # A1111's default: true
            kw["inpaint_full_res_padding"] = req.inpaint_full_res_padding
    return GenerationRequest(**kw)


def _choice(value, names: tuple, field: str, allowed: str) -> str:
    """An A1111 index or flag (0/1, false/true) as the field table's name; the name itself is taken too
    (an ``infotext`` gives "Inpaint not masked", "Only masked")."""
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, (bool, int)) and value in (0, 1):
        return names[int(value)]
    raise InvalidRequest(field, value, allowed)


def result_info(engine, job: Job, req: GenerationRequest, ignored: list[str]) -> dict:
    res = job.result
    imgs = res.images if res else []
    seeds = [im.seed for im in imgs] or [req.seed]
    done = res.request if res else req  # as prepared: the random variation seed fixed
    subseeds = ([done.subseed + s - done.seed for s in seeds] if done.mode in VARIATION_MODES and done.subseed >= 0
                else [-1] * len(seeds))
    entry = None
    if res and res.model_name:
        try:
            entry = engine.find_model(res.model_name)
        except SduiError:
            entry = None
    return {
        "prompt": req.prompt, "all_prompts": [req.prompt] * len(seeds),
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * len(seeds),
        "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0], "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength if req.mode in VARIATION_MODES else 0,
        "width": req.width, "height": req.height, "sampler_name": req.sampler, "scheduler": req.scheduler,
        "cfg_scale": req.cfg_scale, "steps": req.steps, "batch_size": req.batch_size, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": res.model_name if res else None,
        "sd_model_hash": res.model_hash if res else None, "sd_vae_name": res.vae_name if res else None,
        "sd_vae_hash": res.vae_hash if res else None,
        "seed_resize_from_w": req.seed_resize_from_w if req.mode in VARIATION_MODES and req.seed_resize_from_w > 0 else -1,
        "seed_resize_from_h": req.seed_resize_from_h if req.mode in VARIATION_MODES and req.seed_resize_from_h > 0 else -1,
        "denoising_strength": req.denoising_strength if req.mode in ("img2img", "inpaint") or req.enable_hr else None,
        "extra_generation_params": {"Memory level": res.memory_level} if res and res.memory_level else {},
        "index_of_first_image": 0, "infotexts": [im.infotext for im in imgs], "styles": [],
        # an interrupted job answers with its finished images and, as A1111, the current partial one
        # (never saved): these are the indices of such partial images
        "partial_images": [i for i, im in enumerate(imgs) if im.partial],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), "clip_skip": req.clip_skip,
        "is_using_inpainting_conditioning": req.mode == "inpaint", "version": f"sdui {__version__}",
        "ignored": ignored, "warnings": res.warnings if res else [], "memory_level": res.memory_level if res else 0,
        "saved": [im.path for im in imgs if im.path], "sd_model_sha256": entry.sha256 if entry else None,
    }
