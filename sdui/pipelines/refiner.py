"""A1111's refiner (txt2img): the model samples the first ``refiner_switch_at`` of the schedule, then
the refiner checkpoint samples the rest from those latents (diffusers' SDXL ``denoising_end`` /
``denoising_start``, its "ensemble of expert denoisers").

Where the switch falls is A1111's: its ``apply_refiner`` (switching by timestep, the default) moves to
the refiner at the first model call whose timestep ``t`` has ``(999 - t) / 1000 >= switch_at``;
diffusers keeps on the base the timesteps ``t >= 1000 - 1000 * switch_at``, which for integer
timesteps is the same set.
"""

from __future__ import annotations

from . import txt2img
from .common import Job, StepTracker, generators


def run(pipe, job: Job):
    """The first model's part (txt2img's call, variation seed included): its latents at the switch (not decoded)."""
    req = job.request
    return txt2img.sample(pipe, job, StepTracker(job, stage="sampling"), denoising_end=req.refiner_switch_at,
                          output_type="latent").images


class SecondPass:
    """The refiner's part: ``job.request.init_image`` holds the first part's latents."""

    @staticmethod
    def run(pipe, job: Job):
        req = job.request
        out = pipe(
            **job.prompt_kwargs(),
            image=req.init_image,
            num_images_per_prompt=len(job.seeds),
            num_inference_steps=req.steps,
            sigmas=job.sigmas,
            guidance_scale=req.cfg_scale,
            generator=generators(job.seeds),
            callback_on_step_end=StepTracker(job, stage="refiner"),
            denoising_start=req.refiner_switch_at,
            output_type="pil",
        )
        return list(out.images)
