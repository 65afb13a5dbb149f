"""Upscaling: the Stable Diffusion x4 upscaler, ESRGAN-family models (through spandrel), Lanczos.

Large inputs are processed in overlapping tiles blended with linear feathering, so a 512x512
input never needs attention over a 2048x2048 latent, and memory stays flat with image size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..fields import UPSCALE_MODES
from ..types import Cancelled, GenerationRequest
from .common import Job, StepTracker, generators, is_cancelled

LANCZOS = "Lanczos"
NEAREST = "Nearest"
SD_X4 = "SD x4 upscaler"
X4_TILE = 128  # input pixels; 512 out
ESRGAN_TILE = 256
OVERLAP = 16


def _ramp(n: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    k = min(overlap, n // 2)
    if k and not first:
        w[:k] = np.linspace(1.0 / (k + 1), 1.0, k, dtype=np.float32)
    if k and not last:
        w[-k:] = np.minimum(w[-k:], np.linspace(1.0, 1.0 / (k + 1), k, dtype=np.float32))
    return w


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def tiled(img: Image.Image, scale: int, tile: int, overlap: int, fn, cancel=None) -> Image.Image:
    """Apply ``fn`` (tile -> tile upscaled ``scale`` times) over overlapping tiles and blend."""
    w, h = img.size
    xs, ys = _starts(w, tile, overlap), _starts(h, tile, overlap)
    acc = np.zeros((h * scale, w * scale, 3), dtype=np.float32)
    weight = np.zeros((h * scale, w * scale, 1), dtype=np.float32)
    index = 0
    for yi, y in enumerate(ys):
        for xi, x in enumerate(xs):
            if is_cancelled(cancel):
                raise Cancelled("interrupted")
            box = (x, y, min(x + tile, w), min(y + tile, h))
            out = fn(img.crop(box), index, len(xs) * len(ys))
            index += 1
            tw, th = (box[2] - box[0]) * scale, (box[3] - box[1]) * scale
            if out.size != (tw, th):
                out = out.resize((tw, th), Image.LANCZOS)
            arr = np.asarray(out.convert("RGB"), dtype=np.float32)
            wy = _ramp(th, overlap * scale, yi == 0, yi == len(ys) - 1)
            wx = _ramp(tw, overlap * scale, xi == 0, xi == len(xs) - 1)
            wgt = (wy[:, None] * wx[None, :])[:, :, None]
            oy, ox = y * scale, x * scale
            acc[oy:oy + th, ox:ox + tw] += arr * wgt
            weight[oy:oy + th, ox:ox + tw] += wgt
    return Image.fromarray(np.clip(acc / np.maximum(weight, 1e-8) + 0.5, 0, 255).astype(np.uint8))


def _pad_to_multiple(img: Image.Image, multiple: int) -> Image.Image:
    w, h = img.size
    pw, ph = -w % multiple, -h % multiple
    if not pw and not ph:
        return img
    arr = np.pad(np.asarray(img), ((0, ph), (0, pw), (0, 0)), mode="edge")
    return Image.fromarray(arr)


def run_sd_x4(pipe, job: Job) -> list[Image.Image]:
    """The SD x4 upscaler, tile by tile, with prompt, negative prompt and noise level."""
    req = job.request
    # 1. input and tiles
    src = req.init_image.convert("RGB")
    tracker = StepTracker(job, stage="upscaling")
    steps = req.steps
    # 2. one seeded generator per tile so the result does not depend on tile order
    def upscale_tile(tile: Image.Image, index: int, count: int) -> Image.Image:
        w, h = tile.size
        padded = _pad_to_multiple(tile, 8)

        def callback(step, timestep, latents):
            tracker.report(index * steps + step + 1, count * steps, latents)

        out = pipe(prompt=req.prompt, negative_prompt=req.negative_prompt or None, image=padded,
                   num_inference_steps=steps, guidance_scale=req.cfg_scale, noise_level=req.noise_level,
                   generator=generators([job.seeds[0] + index])[0], callback=callback, callback_steps=1,
                   output_type="pil").images[0]
        return out.crop((0, 0, w * 4, h * 4))

    # 3. tiles -> one image
    result = tiled(src, 4, X4_TILE, OVERLAP, upscale_tile, job.cancel)
    return [_resize_to_factor(result, src, req.upscale_factor)]


def run_esrgan(model, job: Job, device) -> list[Image.Image]:
    """An ESRGAN-family model (a spandrel descriptor the manager loaded and placed) over tiles."""
    import torch

    req = job.request
    src = req.init_image.convert("RGB")
    scale = int(model.scale)
    net = model.model
    tracker = StepTracker(job, stage="upscaling")

    def upscale_tile(tile: Image.Image, index: int, count: int) -> Image.Image:
        x = torch.from_numpy(np.asarray(tile, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
        with torch.no_grad():
            y = net(x)[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        tracker.report(index + 1, count)
        return Image.fromarray((y * 255 + 0.5).astype(np.uint8))

    result = tiled(src, scale, ESRGAN_TILE, OVERLAP, upscale_tile, job.cancel)
    return [_resize_to_factor(result, src, req.upscale_factor)]


def run_simple(job: Job, method: str) -> list[Image.Image]:
    req = job.request
    src = req.init_image.convert("RGB")
    size = (round(src.width * req.upscale_factor), round(src.height * req.upscale_factor))
    return [src.resize(size, Image.LANCZOS if method == LANCZOS else Image.NEAREST)]


def _resize_to_factor(result: Image.Image, src: Image.Image, factor: float) -> Image.Image:
    size = (round(src.width * factor), round(src.height * factor))
    return result if result.size == size else result.resize(size, Image.LANCZOS)


# ---- A1111's extras: "Scale to" and "Upscaler 2" (scripts/postprocessing_upscale.py) -------------------
def factor_of(req: GenerationRequest) -> float:
    """The factor the upscalers run at: "Scale by"'s, or for "Scale to" the smallest that covers Width x
    Height (A1111: ``max(w / image.width, h / image.height)``)."""
    if req.upscale_mode != UPSCALE_MODES[1]:
        return req.upscale_factor
    w, h = req.init_image.size
    return max(req.upscale_to_width / w, req.upscale_to_height / h)


def blend(first: Image.Image, second: Image.Image, visibility: float) -> Image.Image:
    """Upscaler 2's image over upscaler 1's at ``visibility`` (A1111 ``Image.blend``)."""
    if second.size != first.size:
        second = second.resize(first.size, Image.LANCZOS)
    return Image.blend(first.convert("RGB"), second.convert("RGB"), visibility)


def crop_to_fit(img: Image.Image, req: GenerationRequest) -> Image.Image:
    """"Scale to" with "Crop to fit": the centre Width x Height of the covering image (A1111 pastes it
    centred on a canvas of that size); otherwise the image as it is."""
    if req.upscale_mode != UPSCALE_MODES[1] or not req.upscale_crop:
        return img
    w, h = req.upscale_to_width, req.upscale_to_height
    left, top = img.width // 2 - w // 2, img.height // 2 - h // 2
    return img.crop((left, top, left + w, top + h))
