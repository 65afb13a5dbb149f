"""What every task shares: the job context, seeded generators, progress/cancel and the preview."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..types import Cancelled, GenerationRequest, Progress, Skipped

# A fixed linear map from SD's 4 latent channels to RGB (an approximation good enough for a
# live preview; no extra weights, no VAE pass). Rows: latent channels; columns: R, G, B.
LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
PREVIEW_EVERY = 4


def generators(seeds: list[int]):
    """One CPU generator per image: image i is reproducible alone from its own seed."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def slerp(val, low, high):
    """A1111's ``slerp`` (processing.py / rng.py), as it is, near-parallel branch included: spherical
    interpolation of two (C, H, W) noises, normalised along dim 1."""
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def uses_variation(req: GenerationRequest) -> bool:
    """Whether the request asks for A1111's variation seed or seed resize (else the pipeline draws its own noise)."""
    return req.subseed_strength != 0 or (req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0)


def subseeds(job: "Job") -> list[int]:
    """A1111: image i of the whole job uses variation seed subseed + i (as its seed is seed + i)."""
    return [job.request.subseed + job.image_index + i for i in range(len(job.seeds))]


def variation_noise(job: "Job", channels: int, height: int, width: int, dtype=None):
    """The initial noise of A1111's ``ImageRNG.first`` for ``job``'s images, shape (n, channels, height,
    width) in latent cells: each image's noise from ``torch.Generator("cpu").manual_seed(seed)`` (what the
    pipeline would draw), slerped toward its subseed's by ``subseed_strength``; with "Resize seed from",
    both are drawn at that size and pasted centred into the seed's noise at the real size."""
    import torch

    req = job.request
    shape = (channels, height, width)
    resized = req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0
    noise_shape = (channels, req.seed_resize_from_h // 8, req.seed_resize_from_w // 8) if resized else shape

    def randn(seed, size):
        return torch.randn(size, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=dtype)

    out = []
    for seed, subseed in zip(job.seeds, subseeds(job), strict=True):
        noise = randn(seed, noise_shape)
        if req.subseed_strength != 0:
            noise = slerp(req.subseed_strength, noise.float(), randn(subseed, noise_shape).float()).to(noise.dtype)
        if noise_shape != shape:
            noise = paste_centred(randn(seed, shape), noise)
        out.append(noise)
    return torch.stack(out)


def paste_centred(x, noise):
    """``noise`` (C, h, w) pasted into the middle of ``x`` (C, H, W), cut where it is larger (A1111's
    "Resize seed from", ``ImageRNG.first``); returns ``x``."""
    dx = (x.shape[2] - noise.shape[2]) // 2
    dy = (x.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    dx, dy = max(-dx, 0), max(-dy, 0)
    x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
    return x


def _slerped(strength: float, seed_draw, subseed_draw):
    """A1111's slerp of one image's two draws (a batch of one is slerped as its (C, H, W) noise, as A1111 does)."""
    low, high = seed_draw.float(), subseed_draw.float()
    if low.dim() == 4:
        import torch

        return torch.stack([slerp(strength, lo, hi) for lo, hi in zip(low, high, strict=True)]).to(seed_draw.dtype)
    return slerp(strength, low, high).to(seed_draw.dtype)


class _ImageDraws:
    """Image i's draws while the pipeline makes its start, as A1111's ``ImageRNG.first`` makes its noise: each
    draw of the image's own generator is slerped by ``strength`` toward the same draw of a generator of its
    subseed; with "Resize seed from" (``resize``: latent height, width), that slerp is made of draws at the
    resize size from generators of the seed and subseed of their own, and pasted centred into the own draw."""

    def __init__(self, seed: int, subseed: int, strength: float, resize: Optional[tuple[int, int]], device):
        import torch

        def gen(s):
            return torch.Generator(device).manual_seed(int(s))

        self.strength, self.resize = strength, resize
        self.subseed = gen(subseed)
        self.small = (gen(seed), gen(subseed)) if resize else None

    def draw(self, randn, args, kwargs):
        own = randn(*args, **kwargs)
        if self.small is None or own.dim() != 4:
            if self.strength == 0:
                return own
            return _slerped(self.strength, own, randn(*args, **{**kwargs, "generator": self.subseed}))
        shape = (*own.shape[:2], *self.resize)
        rest = {k: v for k, v in kwargs.items() if k not in ("generator", "size")}
        small = randn(shape, generator=self.small[0], **rest)
        if self.strength != 0:
            small = _slerped(self.strength, small, randn(shape, generator=self.small[1], **rest))
        for x, noise in zip(own, small, strict=True):
            paste_centred(x, noise)
        return own


def _image_draws_mode(images: dict):
    """A torch function mode in which each ``torch.randn`` drawn from one of ``images``' generators (keyed by
    ``id``) is that image's ``_ImageDraws.draw``; every other call passes through unchanged."""
    import torch
    from torch.overrides import TorchFunctionMode

    class ImageDraws(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            image = images.get(id(kwargs.get("generator"))) if func is torch.randn else None
            return func(*args, **kwargs) if image is None else image.draw(func, args, kwargs)

    return ImageDraws()


# the pipeline methods that draw an img2img / inpaint start: the VAE's sample of the image (and of the masked
# image) and the noise added to it at the first timestep
START_METHODS = ("prepare_latents", "prepare_mask_latents")


@contextmanager
def variation_start(pipe, job: "Job", gens: list):
    """A1111's variation seed and seed resize for img2img, inpaint and the Hires. fix pass
    (``StableDiffusionProcessingImg2Img.sample`` and ``sample_hr_pass``: ``rng.ImageRNG(...).next()``, the
    slerp of the seed's and the subseed's noise, added to the image's latents): while the pipeline makes its
    start (``START_METHODS``), each random draw of image i's generator ``gens[i]`` becomes ``_ImageDraws``'
    (slerped by ``subseed_strength`` toward the same draw of a generator of subseed + i). So strength 1
    starts exactly as the plain job with that subseed as its seed (A1111's rule; here also for the VAE's
    sample, which sdui seeds and A1111 does not), the image's own generator advances as without a variation
    seed (the sampler's later noise is the seed's, as in A1111), and with neither set nothing changes."""
    if not uses_variation(job.request):
        yield
        return
    req = job.request
    resize = (req.seed_resize_from_h // 8, req.seed_resize_from_w // 8) \
        if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None
    images = {id(g): _ImageDraws(seed, subseed, req.subseed_strength, resize, g.device)
              for g, seed, subseed in zip(gens, job.seeds, subseeds(job), strict=True)}
    mode = _image_draws_mode(images)
    replaced = {}
    for name in START_METHODS:
        method = getattr(pipe, name, None)
        if method is None:
            continue
        replaced[name] = pipe.__dict__.get(name)

        def inside_mode(*args, _method=method, **kwargs):
            with mode:
                return _method(*args, **kwargs)

        setattr(pipe, name, inside_mode)
    try:
        yield
    finally:
        for name, before in replaced.items():
            if before is None:
                delattr(pipe, name)
            else:
                setattr(pipe, name, before)


def latent_preview(latents, index: int = 0):
    """A small RGB image of ``latents[index]`` via the fixed projection."""
    import torch
    from PIL import Image

    lat = latents[index, :4].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", lat, torch.tensor(LATENT_RGB))
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().numpy()
    return Image.fromarray(rgb)


def is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return cancel.is_set()
    return bool(cancel())


@dataclass
class Job:
    """Everything a task needs besides the pipeline."""

    request: GenerationRequest
    seeds: list[int]
    device: Any
    prompt_embeds: Any = None
    negative_prompt_embeds: Any = None
    on_progress: Optional[Callable[[Progress], None]] = None
    cancel: Any = None  # threading.Event or a callable returning True to stop
    skip: Any = None  # threading.Event: end the current image (batch) and go on with the next (A1111's Skip)
    image_index: int = 0  # index of this batch's first image in the whole job
    image_total: int = 1
    preview_every: int = PREVIEW_EVERY
    warnings: list[str] = field(default_factory=list)
    last_latents: Any = None  # the latents after the last finished step (the partial image on interrupt)
    sigmas: Optional[list[float]] = None  # a computed schedule type (samplers.plan_sampling); None: the scheduler's own
    # prompt editing / alternation (prompt_schedule.ConditioningSchedule): the embeddings of each model call;
    # None: prompt_embeds at every step
    cond_schedule: Any = None
    # SDXL's pooled text embeddings (prompts_sdxl); None for SD 1.x/2.x
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None

    def prompt_kwargs(self) -> dict:
        """Embeddings when the engine encoded the prompt (always, in the engine); else the text itself."""
        if self.prompt_embeds is not None:
            kwargs = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
            if self.pooled_prompt_embeds is not None:
                kwargs.update(pooled_prompt_embeds=self.pooled_prompt_embeds,
                              negative_pooled_prompt_embeds=self.negative_pooled_prompt_embeds)
            return kwargs
        return {"prompt": self.request.prompt, "negative_prompt": self.request.negative_prompt or None}


class StepTracker:
    """A ``callback_on_step_end`` that reports progress, makes previews and stops on cancel."""

    def __init__(self, job: Job, total: Optional[int] = None, stage: str = "sampling"):
        self.job = job
        self.total = total
        self.stage = stage
        self.start = time.perf_counter()

    def check_cancel(self) -> None:
        if is_cancelled(self.job.cancel):
            raise Cancelled("interrupted")
        if is_cancelled(self.job.skip):
            raise Skipped("skipped")

    def report(self, step: int, total: int, latents=None) -> None:
        self.check_cancel()
        if self.job.on_progress is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / step * (total - step) if step else 0.0
        preview = None
        if latents is not None and self.job.preview_every and (step % self.job.preview_every == 0 or step == total):
            preview = latent_preview(latents)
        self.job.on_progress(Progress(step=step, total=total, elapsed=elapsed, eta=eta, image_index=self.job.image_index,
                                      image_total=self.job.image_total, preview=preview, stage=self.stage))

    def __call__(self, pipe, step_index, timestep, callback_kwargs):
        self.job.last_latents = callback_kwargs.get("latents")  # an interrupt decodes these (partial image)
        total = self.total or getattr(pipe, "num_timesteps", None) or self.job.request.steps  # diffusers' public property
        self.report(step_index + 1, total, callback_kwargs.get("latents"))
        schedule = self.job.cond_schedule
        if schedule is not None and schedule.indexes(step_index + 1) != schedule.indexes(step_index):
            # this runs after model call step_index: hand the pipeline the next call's embeddings, as it holds
            # them in its loop (with CFG, cat([negative, positive]), each repeated per image)
            latents = callback_kwargs.get("latents")
            images = latents.shape[0] if latents is not None else len(self.job.seeds)
            if hasattr(schedule, "pipeline_tensors"):  # SDXL: the pooled vectors (add_text_embeds) switch too
                callback_kwargs.update(schedule.pipeline_tensors(step_index + 1, images, pipe.do_classifier_free_guidance))
            else:
                callback_kwargs["prompt_embeds"] = schedule.pipeline_embeds(step_index + 1, images,
                                                                            pipe.do_classifier_free_guidance)
        return callback_kwargs


def decode_partial(pipe, job: Job) -> list:
    """The images of ``job``'s latents as they were when it was interrupted (A1111 answers an
    interrupted request with the current partial image); [] when no step had finished."""
    import torch

    latents = job.last_latents
    if latents is None:
        return []
    with torch.no_grad():
        vae = pipe.vae
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return list(pipe.image_processor.postprocess(pixels, output_type="pil"))
