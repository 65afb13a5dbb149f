"""img2img: an init image, partly noised by ``denoising_strength``, then denoised."""

from __future__ import annotations

from ..images.uploads import resize_for_request
from .common import Job, StepTracker, generators


def run(pipe, job: Job):
    req = job.request
    # 1. init image at the requested size (A1111 resize modes)
    image = resize_for_request(req.init_image.convert("RGB"), req.width, req.height, req.resize_mode)
    # 2. seeded generators (they also draw the VAE-encoding noise of each image)
    gens = generators(job.seeds)
    # 3. noise to strength, denoise, decode
    out = pipe(
        **job.prompt_kwargs(),
        image=image,
        strength=req.denoising_strength,
        num_images_per_prompt=len(job.seeds),
        num_inference_steps=req.steps,
        sigmas=job.sigmas,
        guidance_scale=req.cfg_scale,
        generator=gens,
        callback_on_step_end=StepTracker(job),
        output_type="pil",
    )
    return list(out.images)
