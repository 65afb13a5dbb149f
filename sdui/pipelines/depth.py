"""Depth-to-image (SD 2 depth model): img2img whose UNet also sees the input's depth map, so the
result keeps the scene's structure. The depth map is the user's (``depth_map``) or the estimator's
(set on the pipeline by the engine)."""

from __future__ import annotations

from ..images.uploads import resize_for_request
from ..models.depth import depth_tensor
from .common import Job, StepTracker, generators, variation_start


def run(pipe, job: Job):
    req = job.request
    image = resize_for_request(req.init_image.convert("RGB"), req.width, req.height, req.resize_mode)
    depth_map = None
    if req.depth_map is not None:
        depth_map = depth_tensor(resize_for_request(req.depth_map.convert("L"), req.width, req.height, req.resize_mode))
    if job.sigmas is not None:  # diffusers' depth pipeline takes no sigmas: its scheduler's own schedule is used
        job.warnings.append(f"Schedule type '{req.scheduler}' is not applied on the depth model; the sampler's own "
                            f"schedule was used")
    gens = generators(job.seeds)
    with variation_start(pipe, job, gens):  # A1111's variation seed, as img2img
        out = pipe(
            **job.prompt_kwargs(),
            image=image,
            depth_map=depth_map,
            strength=req.denoising_strength,
            num_images_per_prompt=len(job.seeds),
            num_inference_steps=req.steps,
            guidance_scale=req.cfg_scale,
            generator=gens,
            callback_on_step_end=StepTracker(job),
            output_type="pil",
        )
    return list(out.images)
