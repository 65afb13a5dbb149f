"""txt2img: noise -> image."""

from __future__ import annotations

from .common import Job, StepTracker, generators, uses_variation, variation_noise


def run(pipe, job: Job):
    # 4. post-process: PIL images, in seed order
    return list(sample(pipe, job, StepTracker(job), output_type="pil").images)


def sample(pipe, job: Job, tracker: StepTracker, **extra):
    """The txt2img pipeline call for ``job`` (``extra``: the caller's own arguments, e.g. the refiner's
    ``denoising_end`` and ``output_type="latent"``)."""
    req = job.request
    # 1. check inputs: done by GenerationRequest.validate before any model work
    # 2. seeded generators, one per image
    gens = generators(job.seeds)
    latents = None
    if uses_variation(req):  # A1111's variation seed / seed resize: the noise made here, as A1111 makes it
        scale = getattr(pipe, "vae_scale_factor", 8)
        dtype = job.prompt_embeds.dtype if job.prompt_embeds is not None else pipe.unet.dtype
        latents = variation_noise(job, pipe.unet.config.in_channels, req.height // scale, req.width // scale, dtype)
    # 3. denoise and decode (prompt embeddings were encoded by the engine, A1111-style)
    return pipe(
        **job.prompt_kwargs(),
        num_images_per_prompt=len(job.seeds),
        num_inference_steps=req.steps,
        sigmas=job.sigmas,
        guidance_scale=req.cfg_scale,
        height=req.height,
        width=req.width,
        generator=gens,
        latents=latents,
        callback_on_step_end=tracker,
        **extra,
    )
