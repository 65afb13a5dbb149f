"""A1111's VAE precision rescue: a half-precision VAE decode that overflows (SDXL's VAE in fp16 does on
many checkpoints) gives NaN, a black image. As A1111 (``modules/processing.py`` decode with
``auto_vae_precision``), the decode is checked for NaN and, where it has any, done again in fp32;
the job's info says so. ``--no-half-vae`` (A1111's flag) decodes in fp32 every time.

It wraps ``pipe.vae.decode`` for one job, so every pipeline (txt2img, img2img, inpaint, the Hires. fix
pass, tiled decoding) is covered without changing how diffusers calls it. fp32 here means what
diffusers' own ``upcast_vae`` does: the VAE is moved to fp32 for that decode and back after.
"""

from __future__ import annotations

from contextlib import contextmanager

UPCAST_NOTE = ("upcast VAE: the half-precision VAE decode produced NaNs, so the image was decoded again in fp32 "
               "(as A1111 does; --no-half-vae always decodes in fp32)")


def _sample(out):
    return out[0] if isinstance(out, tuple) else out.sample


@contextmanager
def guarded_decode(pipe, warnings: list, force_fp32: bool = False):
    """While the block runs, ``pipe.vae.decode`` redoes a NaN half decode in fp32 (noting it once in
    ``warnings``), or, with ``force_fp32``, decodes in fp32 every time."""
    import torch

    vae = getattr(pipe, "vae", None)
    if vae is None:
        yield
        return
    original = vae.decode

    def in_fp32(z, *args, **kwargs):
        dtype = vae.dtype
        vae.to(torch.float32)
        try:
            out = original(z.to(torch.float32), *args, **kwargs)
        finally:
            vae.to(dtype)
        sample = _sample(out).to(dtype)
        if isinstance(out, tuple):
            return (sample, *out[1:])
        out.sample = sample
        return out

    def decode(z, *args, **kwargs):
        half = vae.dtype in (torch.float16, torch.bfloat16)
        if half and force_fp32:
            return in_fp32(z, *args, **kwargs)
        out = original(z.to(vae.dtype), *args, **kwargs)
        if half and torch.isnan(_sample(out)).any():
            if UPCAST_NOTE not in warnings:
                warnings.append(UPCAST_NOTE)
            return in_fp32(z, *args, **kwargs)
        return out

    vae.decode = decode
    try:
        yield
    finally:
        del vae.decode
