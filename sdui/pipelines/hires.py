"""Hires. fix, as A1111's txt2img does it (``processing.py``, ``StableDiffusionProcessingTxt2Img``):
a first pass at width x height, an upscale, then an img2img pass at the target size with the same
seeds (``sample_hr_pass``).

A latent upscaler ("Latent", "Latent (bicubic)", ...) interpolates the first pass's latents, which
the second pass starts from as they are; a pixel upscaler (None, Lanczos, Nearest, an ESRGAN model)
enlarges the decoded image, which the second pass encodes again. The engine runs both passes on the
memory ladder; this module holds the steps in between and the second pass itself.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from PIL import Image

from ..fields import HR_SAME_SAMPLER, HR_SAME_SCHEDULER, LATENT_UPSCALE_MODES
from ..types import GenerationRequest, HiresTarget, Progress
from . import img2img, txt2img
from .common import Job

NONE = "None"  # A1111's "None" upscaler: a plain Lanczos resize
STAGE = "hires"  # Progress.stage of the second pass (the first reports "sampling")
Upscale = Callable[[Image.Image, float], Image.Image]  # one pass of a pixel upscaler: (image, scale) -> image


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES


def run(pipe, job: Job) -> list:
    """The task of both passes (``run(pipe, job)``): the first pass's request has ``enable_hr``, the
    second pass's (``second_pass_request``) does not."""
    return first_pass(pipe, job) if job.request.enable_hr else second_pass(pipe, job)


# ---- 1. the first pass: txt2img, keeping the latents its images were decoded from ----------------------
class FirstPassImages(list):
    """The first pass's PIL images, with ``latents``: the last step's latents (float32, on the CPU)."""

    latents = None


def first_pass(pipe, job: Job) -> FirstPassImages:
    """The txt2img task that also keeps the final latents, for a latent upscaler."""
    import torch

    images = FirstPassImages(txt2img.run(pipe, job))
    if job.last_latents is not None:  # set by the StepTracker after every step: the last one's are the result
        images.latents = job.last_latents.detach().to("cpu", torch.float32)
    return images


# ---- 2. the upscale ------------------------------------------------------------------------------------
def upscale_latents(latents, target: HiresTarget, mode_name: str):
    """A1111's latent upscale: ``torch.nn.functional.interpolate`` to the target's latent grid with
    the mode's interpolation and antialias (``shared.latent_upscale_modes``), then the crop."""
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALE_MODES[mode_name]
    size = (target.upscale_height // 8, target.upscale_width // 8)
    return crop_latents(F.interpolate(latents, size=size, mode=mode, antialias=antialias), target)


def crop_latents(latents, target: HiresTarget):
    ty, tx = target.truncate_y, target.truncate_x
    return latents[:, :, ty // 2:latents.shape[2] - (ty + 1) // 2, tx // 2:latents.shape[3] - (tx + 1) // 2]


def simple_upscaler(name: str) -> Optional[Upscale]:
    """A1111's Lanczos and Nearest upscalers (one pass to ``scale`` times the size); None for "None"."""
    if name == NONE:
        return None
    method = Image.LANCZOS if name == "Lanczos" else Image.NEAREST
    return lambda img, scale: img.resize((int(img.width * scale), int(img.height * scale)), resample=method)


def upscale_pixels(img: Image.Image, target: HiresTarget, upscale_once: Optional[Upscale]) -> Image.Image:
    """A1111's ``images.resize_image(0, img, w, h, upscaler)`` with ``Upscaler.upscale``: the upscaler
    (up to 3 passes, for models of a fixed scale) to the size rounded down to a multiple of 8, Lanczos
    to the exact upscale size; then the same crop as the latents (in 8 px cells)."""
    w, h = target.upscale_width, target.upscale_height
    scale = max(w / img.width, h / img.height)
    if upscale_once is not None and scale > 1.0:
        dest = (int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8))
        for i in range(3):
            if img.width >= dest[0] and img.height >= dest[1] and (i > 0 or scale != 1):
                break
            before = img.size
            img = upscale_once(img, scale)
            if img.size == before:
                break
        if img.size != dest:
            img = img.resize(dest, resample=Image.LANCZOS)
    if img.size != (w, h):
        img = img.resize((w, h), resample=Image.LANCZOS)
    left, top = 8 * (target.truncate_x // 2), 8 * (target.truncate_y // 2)
    return img.crop((left, top, left + target.width, top + target.height))


# ---- 3. the second pass: img2img at the target size, the same seeds -----------------------------------
def second_pass_request(req: GenerationRequest, start) -> GenerationRequest:
    """The request of the second pass: the target size, the hires steps, sampler, schedule type and
    prompts (each empty: the first pass's), ``start`` (latents, or one image per seed) as its image."""
    target = req.hires_target()
    return req.replace(mode="img2img", enable_hr=False, init_image=start, width=target.width, height=target.height,
                       steps=req.hr_second_pass_steps or req.steps, prompt=req.hr_prompt or req.prompt,
                       negative_prompt=req.hr_negative_prompt or req.negative_prompt,
                       sampler=req.hr_sampler or req.sampler, scheduler=req.hr_scheduler or req.scheduler)


def second_pass(pipe, job: Job) -> list:
    """The second pass, on an img2img pipeline: ``job.request`` comes from ``second_pass_request``;
    each image gets a fresh generator of its own seed, as A1111 reseeds its noise for the hires pass."""
    req = job.request
    start = req.init_image
    # 1. the start: latents go in as they are (diffusers takes a 4-channel tensor as latents), images are encoded
    image = start.to(job.device) if hasattr(start, "shape") else list(start)
    # 2. noise to strength, denoise, decode, as img2img does
    return img2img.denoise(pipe, job, image, stage=STAGE)


# ---- progress and infotext -----------------------------------------------------------------------------
def second_pass_steps(req: GenerationRequest) -> int:
    """The steps the second pass runs: its steps times the denoising strength (img2img's rule)."""
    steps = req.hr_second_pass_steps or req.steps
    return min(int(steps * req.denoising_strength), steps)


def combined_progress(on_progress: Optional[Callable[[Progress], None]], req: GenerationRequest):
    """``on_progress`` seeing both passes as one count: the first pass's steps, then the second's
    (stage "sampling", then "hires"), so a progress bar never runs twice. The first pass's ETA adds
    the second pass, priced per step by the first, times the larger area."""
    if on_progress is None:
        return None
    first, second = req.steps, second_pass_steps(req)
    target = req.hires_target()
    area = target.width * target.height / max(req.width * req.height, 1)

    def report(p: Progress) -> None:
        done = p.step / p.total if p.total else 0.0
        if p.stage == STAGE:
            step, eta = first + round(done * second), p.eta
        else:
            step = round(done * first)
            eta = p.eta + (p.elapsed / p.step if p.step else 0.0) * second * area
        on_progress(dataclasses.replace(p, step=step, total=first + second, eta=eta))

    return report


def normalize(req: GenerationRequest) -> None:
    """A1111's "Use same sampler" / "Use same scheduler" mean the empty (same as the first pass) value."""
    if req.hr_sampler == HR_SAME_SAMPLER:
        req.hr_sampler = ""
    if req.hr_scheduler == HR_SAME_SCHEDULER:
        req.hr_scheduler = ""


def infotext(req: GenerationRequest) -> dict:
    """A1111's Hires. fix keys, in the order its ``init`` adds them to ``extra_generation_params``
    (``Denoising strength`` has its own place earlier; ``Size`` stays the first pass's)."""
    return {
        "Hires sampler": req.hr_sampler if req.hr_sampler and req.hr_sampler != req.sampler else None,
        "Hires prompt": req.hr_prompt if req.hr_prompt and req.hr_prompt != req.prompt else None,
        "Hires negative prompt": req.hr_negative_prompt if req.hr_negative_prompt and
        req.hr_negative_prompt != req.negative_prompt else None,
        "Hires schedule type": req.hr_scheduler if req.hr_scheduler and req.hr_scheduler != req.scheduler else None,
        "Hires upscale": req.hr_scale if not (req.hr_resize_x or req.hr_resize_y) else None,
        "Hires resize": f"{req.hr_resize_x}x{req.hr_resize_y}" if req.hr_resize_x or req.hr_resize_y else None,
        "Hires steps": req.hr_second_pass_steps or None,
        "Hires upscaler": req.hr_upscaler,
    }
