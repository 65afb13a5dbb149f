"""Making images, and following and stopping them: txt2img, img2img (and inpaint), extras
upscaling (one image or a batch), PNG info, interrogate (not available), progress, interrupt and
skip. Each client sees and stops only its own jobs."""

from __future__ import annotations

import json
import time
from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..fields import UPSCALE_MODES
from ..images import infotext, uploads
from ..styles import apply_styles, read_styles
from ..jobs import Job
from ..types import PREPARING_STAGE, GenerationRequest, InvalidRequest, JobState
from . import client_options, schemas, scripts
from .convert import result_info, to_generation_request
from .errors import error_response, status_for
from .request_log import LoggedRoute, note
from .state import ApiState, api_state, owner_of

router = APIRouter(route_class=LoggedRoute)


def _run(state: ApiState, owner: str, request: GenerationRequest, plan=None) -> Job:
    """Queue the job under its owner and wait for it (a client that goes away does not stop it).
    With ``plan`` (an X/Y/Z plot, ``sdui.xyz``) the one job makes every cell, then the grid."""
    job = state.queue.submit(request, owner, plan=plan)
    job.wait()
    return job


def _failed(job: Job) -> Optional[JSONResponse]:
    """A failed job becomes an A1111-shaped error; an interrupted one answers with what it has
    (possibly no images), as A1111 does."""
    if job.state == JobState.FAILED:
        return error_response(status_for(job.error_kind or ""), job.error or "failed", job.error_kind)
    return None


def _generate(body: schemas.Txt2ImgRequest, mode: str, state: ApiState, owner: str, http: Request):
    note(http, f"{mode} {body.width}x{body.height}, {body.steps} steps, {body.batch_size * body.n_iter} image(s)")
    call = None
    try:
        if scripts.find_script(body.script_name) is not None:  # the X/Y/Z plot: A1111's positional script_args
            call = scripts.parse_xyz_args(body.script_args, mode)
    except scripts.ScriptProblem as e:
        return error_response(422, e, "InvalidRequest")
    options = client_options.for_request(state, owner, body.override_settings)
    ignored = sorted(set(schemas.ignored_fields(body)) | set(options.ignored) | set(call.ignored if call else [])
                     | ({"script_args"} if call is None and body.script_args else set()))
    request = to_generation_request(body, mode, options.model_by_hash or state.model_for(owner), state.vae_for(owner))
    if body.styles:  # A1111: the named styles of the styles file applied to the prompts (unknown names: none)
        known = read_styles(state.settings.styles_file)
        names = [n for n in body.styles if n in {st["name"] for st in known}]
        request.prompt, request.negative_prompt = apply_styles(request.prompt, request.negative_prompt, names, known)
        if len(names) < len(body.styles):
            ignored = sorted(set(ignored) | {"styles"})
    request.save = request.save and options.values["samples_save"]
    request.output_format = options.values["samples_format"]
    # clip skip: the client's option / override_settings, or SillyTavern's top-level clip_skip
    request.clip_skip = body.clip_skip or options.values["CLIP_stop_at_last_layers"]
    note(http, f"{request.mode} {request.width}x{request.height}, {request.steps} steps, "
               f"{request.batch_size * request.batch_count} image(s), model {request.model or 'default'}")
    if call is not None:
        note(http, f"X/Y/Z plot of {call.plan.cell_count} cells")
    job = _run(state, owner, request, call.plan if call else None)
    failed = _failed(job)
    if failed is not None:
        return failed
    imgs = job.result.images if job.result else []
    info = result_info(state.engine, job, job.request, ignored)
    if call is not None:
        imgs = scripts.plot_answer(call, job, info)
    encoded = [uploads.encode_png_base64(im.image, im.infotext) for im in imgs] if body.send_images else []
    params = body.model_dump(exclude={"init_images", "mask"} if mode != "txt2img" else set())
    if mode != "txt2img":
        params["init_images"] = None
        params["mask"] = None
    return {"images": encoded, "parameters": params,
            "info": json.dumps(info)}


@router.post("/txt2img", response_model=schemas.ImageResponse)
def txt2img(body: schemas.Txt2ImgRequest, http: Request, state: ApiState = Depends(api_state),
            owner: str = Depends(owner_of)):
    """Make images from a prompt (A1111's body; fields and ``override_settings`` sdui does not
    implement are listed in ``info.ignored``). Images come back as base64 PNGs with their infotext."""
    return _generate(body, "txt2img", state, owner, http)


@router.post("/img2img", response_model=schemas.ImageResponse)
def img2img(body: schemas.Img2ImgRequest, http: Request, state: ApiState = Depends(api_state),
            owner: str = Depends(owner_of)):
    """Redraw ``init_images[0]`` guided by the prompt; with ``mask`` (white = redraw) it inpaints."""
    return _generate(body, "img2img", state, owner, http)


def _upscale_request(body: schemas.ExtrasBaseRequest, img, save: bool) -> GenerationRequest:
    """One image of ``extra-single-image`` / ``extra-batch-images`` as an upscale job."""
    name = body.upscaler_1 if body.upscaler_1 and body.upscaler_1 != "None" else "Lanczos"
    if body.resize_mode not in (0, 1):
        raise InvalidRequest("resize_mode", body.resize_mode, "0 (scale by upscaling_resize) or 1 (scale to "
                                                              "upscaling_resize_w x upscaling_resize_h)")
    return GenerationRequest(mode="upscale", init_image=img, upscaler=name, upscale_factor=float(body.upscaling_resize),
                             upscale_mode=UPSCALE_MODES[body.resize_mode], upscale_to_width=body.upscaling_resize_w,
                             upscale_to_height=body.upscaling_resize_h, upscale_crop=body.upscaling_crop,
                             upscaler_2=body.upscaler_2 or "None", upscaler_2_visibility=body.extras_upscaler_2_visibility,
                             steps=20, save=save)


def _extras_info(body: schemas.ExtrasBaseRequest) -> str:
    """The extras answer's ``info`` (sdui's addition to A1111's shape): the fields it was asked for and
    does not do (face restoration, ``upscale_first``, names A1111 does not have), as txt2img's ``ignored``."""
    return json.dumps({"ignored": schemas.ignored_fields(body)})


def _upscale(state: ApiState, owner: str, request: GenerationRequest):
    """(the finished image or None when interrupted, None) or (None, an error answer)."""
    job = _run(state, owner, request)
    failed = _failed(job)
    if failed is not None:
        return None, failed
    return (job.result.images[0] if job.result and job.result.images else None), None


@router.post("/extra-single-image", response_model=schemas.ExtraSingleImageResponse)
def extra_single_image(body: schemas.ExtraSingleImageRequest, http: Request, state: ApiState = Depends(api_state),
                       owner: str = Depends(owner_of)):
    """Upscale one image with ``upscaler_1`` (Lanczos, Nearest, SD x4 upscaler or an ESRGAN model)
    by ``upscaling_resize``, or with ``resize_mode`` 1 to cover ``upscaling_resize_w`` x
    ``upscaling_resize_h`` (cropped to exactly that with ``upscaling_crop``), blended with ``upscaler_2``
    at ``extras_upscaler_2_visibility``, as A1111. The result is saved unless this client set
    ``samples_save`` off. ``info`` (sdui's addition) lists under ``ignored`` what was asked for and
    not done: face restoration (``gfpgan_visibility``, ``codeformer_visibility``, ``codeformer_weight``
    other than 0), ``upscale_first`` and fields A1111 does not have."""
    img = uploads.decode_image(body.image, "image")
    note(http, f"extras {img.width}x{img.height}, {body.upscaler_1}")
    save = client_options.saves_images(state, owner)
    out, failed = _upscale(state, owner, _upscale_request(body, img, save))
    if failed is not None:
        return failed
    return {"html_info": out.infotext if out else "interrupted",
            "image": uploads.encode_png_base64(out.image, out.infotext) if out else None, "info": _extras_info(body)}


@router.post("/extra-batch-images", response_model=schemas.ExtrasBatchImagesResponse)
def extra_batch_images(body: schemas.ExtrasBatchImagesRequest, http: Request, state: ApiState = Depends(api_state),
                       owner: str = Depends(owner_of)):
    """Upscale every image of ``imageList`` (``[{"data": base64, "name": ...}]``) with the options of
    ``extra-single-image``, one job after another; ``images`` come back in the same order. An
    interrupt stops the batch and answers the images finished so far."""
    if not body.imageList:
        raise InvalidRequest("imageList", [], 'one or more {"data": <base64 image>, "name": ...}')
    imgs = [uploads.decode_image(item.data, f"imageList[{i}].data") for i, item in enumerate(body.imageList)]
    note(http, f"extras batch of {len(imgs)}, {body.upscaler_1}")
    save = client_options.saves_images(state, owner)
    done, info = [], ""
    for img in imgs:
        out, failed = _upscale(state, owner, _upscale_request(body, img, save))
        if failed is not None:
            return failed
        if out is None:
            break
        done.append(uploads.encode_png_base64(out.image, out.infotext))
        info = out.infotext
    return {"html_info": info if len(done) == len(imgs) else f"interrupted after {len(done)} of {len(imgs)}",
            "images": done, "info": _extras_info(body)}


@router.post("/png-info", response_model=schemas.PNGInfoResponse)
def png_info(body: schemas.PNGInfoRequest):
    """The generation parameters stored in a PNG (A1111 infotext), raw and parsed field by field."""
    if not body.image:
        raise InvalidRequest("image", "", "a base64 PNG")
    img = uploads.decode_image(body.image, "image", mode=None)  # as sent: its text chunks intact
    text = infotext.read_infotext(img) or ""
    items = {k: v for k, v in img.info.items() if isinstance(v, str)}
    return {"info": text, "items": items, "parameters": infotext.parse_infotext(text) if text else {}}


@router.post("/interrogate")
def interrogate(body: Optional[dict] = None):
    """A1111's image captioning (CLIP, DeepBooru). Not available here: answers 501."""
    return error_response(501, "sdui has no image interrogation model (CLIP or DeepBooru) installed, so "
                               "the interrogate route cannot caption images", "NotImplemented")


def _shows_preview(state: ApiState, owner: str, step: int, total: int) -> bool:
    """This client's ``live_previews_enable`` and ``show_progress_every_n_steps`` (previews are made
    every ``engine.preview_period()`` steps; a period of -1 or 0 shows none while sampling)."""
    enabled, every = client_options.preview_choice(state, owner)
    return enabled and every > 0 and (step % every == 0 or every < state.engine.preview_period() or step == total)


@router.get("/progress")
def progress(skip_current_image: bool = False, state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """This client's job: fraction done, ETA, step, queue position and a preview image (as this
    client's ``live_previews_enable`` and ``show_progress_every_n_steps`` options say)."""
    job = state.queue.current_for(owner)
    active = job is not None and job.state.active
    p = job.progress if job else None
    current_image = None
    made_at = (p.preview_step if p.preview_step is not None else p.step) if p else 0
    if (active and p is not None and p.preview is not None and not skip_current_image
            and _shows_preview(state, owner, made_at, p.total)):
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
        "textinfo": (f"Queued, position {state.queue.position(job)}" if job and job.state == JobState.QUEUED
                     else f"{p.stage}: {p.step}%" if active and p is not None and p.stage == PREPARING_STAGE else None),
        "current_task": f"task({job.id})" if active else None,
    }


@router.post("/interrupt")
def interrupt(state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Stop this client's running job and drop its queued ones (the admin's: anyone's)."""
    return {"interrupted": state.queue.cancel(owner)}


@router.post("/skip")
def skip(state: ApiState = Depends(api_state), owner: str = Depends(owner_of)):
    """Stop this client's running job but keep the images it has finished."""
    return {"skipped": state.queue.skip(owner)}
