"""img2img: an init image, partly noised by ``denoising_strength``, then denoised."""

from __future__ import annotations

from ..images.uploads import resize_for_request
from .common import Job, StepTracker, generators, variation_start


def run(pipe, job: Job):
    req = job.request
    # 1. init image at the requested size (A1111 resize modes)
    image = resize_for_request(req.init_image.convert("RGB"), req.width, req.height, req.resize_mode)
    # 2. noise to strength, denoise, decode
    return denoise(pipe, job, image)


def denoise(pipe, job: Job, image, stage: str = "sampling") -> list:
    """``image`` (PIL images, or 4-channel latents) noised to the request's strength, denoised and
    decoded; each image gets a fresh generator of its own seed (it also draws the VAE-encoding noise),
    its start slerped toward its variation seed's (A1111's "Extra"). Shared by img2img and the Hires. fix
    second pass."""
    req = job.request
    gens = generators(job.seeds)
    with variation_start(pipe, job, gens):
        out = pipe(
            **job.prompt_kwargs(),
            image=image,
            strength=req.denoising_strength,
            num_images_per_prompt=len(job.seeds),
            num_inference_steps=req.steps,
            sigmas=job.sigmas,
            guidance_scale=req.cfg_scale,
            generator=gens,
            callback_on_step_end=StepTracker(job, stage=stage),
            output_type="pil",
        )
    return list(out.images)
