"""inpaint: regenerate the white part of a mask, keep the rest pixel for pixel.

Works with inpainting checkpoints (9-channel UNet) and ordinary ones (diffusers blends the known
latents back in at every step). "Masked content" as in A1111: original (start from the image),
fill (start from the surrounding colours), latent noise (start from pure noise: strength 1),
latent nothing (start from a flat grey, which encodes to latents near zero).

"Inpaint area" as in A1111 (``processing.py`` ``StableDiffusionProcessingImg2Img.init`` and
``apply_overlay``; ``masking.py``): "Whole picture" inpaints the image resized to width x height;
"Only masked" crops the masked part plus the padding, widened to the aspect ratio of width x height,
inpaints that crop at width x height and pastes it back through the blurred mask, so the result has
the input image's size and every pixel outside the (blurred) mask is the input's.
"""

from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps

from typing import Optional

import numpy as np

from ..fields import INPAINT_AREAS, MASK_MODES
from ..images.uploads import resize_for_request
from .common import Job, StepTracker, generators, variation_start

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2 and y2 exclusive



def prepare_mask(mask: Image.Image, width: int, height: int, blur: int, resize_mode: str,
                 invert: bool = False) -> Image.Image:
    m = mask.convert("L")
    if invert:  # A1111 inverts first ("Inpaint not masked"), then resizes and blurs
        m = ImageOps.invert(m)
    m = resize_for_request(m, width, height, resize_mode)
    m = m.point(lambda v: 255 if v >= 128 else 0)
    if blur:
        m = m.filter(ImageFilter.GaussianBlur(blur))
    return m


def fill_masked(image: Image.Image, mask: Image.Image, mode: str) -> Image.Image:
    if mode == "fill":
        # the unmasked colours, blurred hard, stand in for the hole (A1111 uses an inpainting fill)
        blurred = image
        for radius in (64, 32, 16, 8, 4, 2, 1):
            blurred = Image.composite(blurred, image, mask).filter(ImageFilter.GaussianBlur(radius))
        return Image.composite(blurred, image, mask)
    if mode == "latent nothing":
        return Image.composite(Image.new("RGB", image.size, (127, 127, 127)), image, mask)
    return image


def get_crop_region(mask, pad: int = 0) -> Optional[Box]:
    """The box around every non-zero pixel of ``mask`` (an "L" image or a 2-D array), grown by ``pad``
    pixels on each side and clamped to the image; None for an empty mask (A1111 ``masking.get_crop_region``)."""
    m = np.asarray(mask)
    ys, xs = np.nonzero(m)
    if not len(xs):
        return None
    h, w = m.shape[:2]
    return (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0), min(int(xs.max()) + 1 + pad, w),
            min(int(ys.max()) + 1 + pad, h))


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """``box`` grown on its short side to the aspect ratio of ``width`` x ``height`` (the size it will be
    inpainted at), centred, shifted back inside the image where it sticks out and cut at the image's
    edge where it cannot fit (A1111 ``masking.expand_crop_region``, rounding as it does)."""
    x1, y1, x2, y2 = box
    ratio = width / height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _grow(y1, y2, (x2 - x1) / ratio, image_height)
    else:
        x1, x2 = _grow(x1, x2, (y2 - y1) * ratio, image_width)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, wanted: float, limit: int) -> tuple[int, int]:
    """One side of ``expand_crop_region``: [lo, hi) grown to ``wanted``, kept within [0, limit)."""
    diff = int(wanted - (hi - lo))
    lo, hi = lo - diff // 2, hi + diff - diff // 2
    if hi >= limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, limit)


def run(pipe, job: Job):
    req = job.request
    invert = req.inpainting_mask_invert == MASK_MODES[1]
    if req.inpaint_full_res == INPAINT_AREAS[1]:
        only_masked = _run_only_masked(pipe, job, invert)
        if only_masked is not None:
            return only_masked
    # 1. image and mask at the requested size; blurred mask for a soft seam
    image = resize_for_request(req.init_image.convert("RGB"), req.width, req.height, req.resize_mode)
    hard_mask = prepare_mask(req.mask, req.width, req.height, 0, req.resize_mode, invert)
    soft_mask = prepare_mask(req.mask, req.width, req.height, req.mask_blur, req.resize_mode, invert)
    out = _inpaint(pipe, job, image, hard_mask, soft_mask)
    # 4. keep the unmasked pixels exactly (the VAE round trip would blur them), as A1111 does
    return [Image.composite(img, image, soft_mask) for img in out]


def _run_only_masked(pipe, job: Job, invert: bool) -> Optional[list]:
    """"Only masked": the crop around the mask, inpainted at width x height and pasted back into the
    image at its own size; None when the mask is empty (A1111 then inpaints the whole picture)."""
    req = job.request
    # 1. the mask at the image's own size, inverted and blurred there (A1111 blurs before it crops)
    image = req.init_image.convert("RGB")
    size = image.size
    hard_full = prepare_mask(req.mask, *size, 0, "Just resize", invert)
    soft_full = prepare_mask(req.mask, *size, req.mask_blur, "Just resize", invert)
    # 2. the crop: the blurred mask's box plus the padding, widened to width:height, clamped to the image
    box = get_crop_region(soft_full, req.inpaint_full_res_padding)
    if box is None:
        job.warnings.append("Inpaint area \"Only masked\": the mask is empty, so the whole picture was inpainted "
                            "(as A1111 does)")
        return None
    box = expand_crop_region(box, req.width, req.height, *size)
    # 3. the crop at the working size (A1111 "Resize and fill"), inpainted there
    crop = resize_for_request(image.crop(box), req.width, req.height, "Resize and fill")
    hard = resize_for_request(hard_full.crop(box), req.width, req.height, "Resize and fill").convert("L")
    hard = hard.point(lambda v: 255 if v >= 128 else 0)
    soft = resize_for_request(soft_full.crop(box), req.width, req.height, "Resize and fill").convert("L")
    out = _inpaint(pipe, job, crop, hard, soft)
    # 4. each result back to the crop's size, pasted into the image, kept only where the blurred mask is
    results = []
    for img in out:
        pasted = image.copy()
        pasted.paste(resize_for_request(img, box[2] - box[0], box[3] - box[1], "Crop and resize"), box[:2])
        results.append(Image.composite(pasted, image, soft_full))
    return results


def _inpaint(pipe, job: Job, image: Image.Image, hard_mask: Image.Image, soft_mask: Image.Image) -> list:
    """The pipeline call: ``image`` (width x height) with its masked content filled in, denoised where
    ``soft_mask`` is white; the decoded images, as they come."""
    req = job.request
    # 2. masked content
    start = fill_masked(image, hard_mask, req.inpainting_fill)
    strength = 1.0 if req.inpainting_fill == "latent noise" else req.denoising_strength
    # 3. denoise and decode (the start slerped toward the variation seed's, A1111's "Extra")
    gens = generators(job.seeds)
    with variation_start(pipe, job, gens):
        out = pipe(
            **job.prompt_kwargs(),
            image=start,
            mask_image=soft_mask,
            height=req.height,
            width=req.width,
            strength=strength,
            num_images_per_prompt=len(job.seeds),
            num_inference_steps=req.steps,
            sigmas=job.sigmas,
            guidance_scale=req.cfg_scale,
            generator=gens or None,
            callback_on_step_end=StepTracker(job),
            output_type="pil",
        )
    return list(out.images)
