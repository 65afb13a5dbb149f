"""inpaint: regenerate the white part of a mask, keep the rest pixel for pixel.

Works with inpainting checkpoints (9-channel UNet) and ordinary ones (diffusers blends the known
latents back in at every step). "Masked content" as in A1111: original (start from the image),
fill (start from the surrounding colours), latent noise (start from pure noise: strength 1),
latent nothing (start from a flat grey, which encodes to latents near zero).
"""

from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps

from ..fields import MASK_MODES

from ..images.uploads import resize_for_request
from .common import Job, StepTracker, generators



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


def run(pipe, job: Job):
    req = job.request
    # 1. image and mask at the requested size; blurred mask for a soft seam
    image = resize_for_request(req.init_image.convert("RGB"), req.width, req.height, req.resize_mode)
    invert = req.inpainting_mask_invert == MASK_MODES[1]
    hard_mask = prepare_mask(req.mask, req.width, req.height, 0, req.resize_mode, invert)
    soft_mask = prepare_mask(req.mask, req.width, req.height, req.mask_blur, req.resize_mode, invert)
    # 2. masked content
    start = fill_masked(image, hard_mask, req.inpainting_fill)
    strength = 1.0 if req.inpainting_fill == "latent noise" else req.denoising_strength
    # 3. denoise and decode
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
        generator=gens if (gens := generators(job.seeds)) else None,
        callback_on_step_end=StepTracker(job),
        output_type="pil",
    )
    # 4. keep the unmasked pixels exactly (the VAE round trip would blur them), as A1111 does
    return [Image.composite(img, image, soft_mask) for img in out.images]
