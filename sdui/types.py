"""The shared vocabulary: requests, results, progress and errors.

Nothing here imports torch, diffusers or gradio, so every layer (UI, API, CLI) can use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

MODES = ("txt2img", "img2img", "inpaint", "upscale")
MASKED_CONTENT = ("original", "fill", "latent noise", "latent nothing")
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
MAX_PROMPT_CHARS = 20_000
MAX_SEED = 2**32 - 1


class SduiError(Exception):
    """Base class for errors whose message is meant for the user as is."""


class ModelLoadError(SduiError):
    """A model file could not be found, read, trusted or understood."""


class UnknownModelError(SduiError, LookupError):
    """No model by that name."""


class Cancelled(SduiError):
    """The job was interrupted by its owner; nothing was saved."""


class QueueFull(SduiError):
    """The job queue is at its limit."""


class DiskFull(SduiError, OSError):
    """The outputs folder's disk is full; the image was not saved (no partial file is left)."""


class InvalidRequest(SduiError, ValueError):
    """A request field is out of range; the message names the field, the value and the allowed range."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field_name}={shown} is not allowed: {allowed}")
        self.field = field_name
        self.value = value
        self.allowed = allowed


_ABS_PATH = re.compile(r"""(?<![\w.:/\\])(?:~?/|[A-Za-z]:\\)(?:[^\s/\\'"(),:]+[/\\])+([^\s/\\'"(),:]+)""")


def redact_paths(text: str) -> str:
    """A message for a remote client: every absolute server path shortened to its last part
    (``/home/me/models/Stable-diffusion/x.safetensors`` -> ``x.safetensors``). Local callers (the
    CLI) keep the full message."""
    return _ABS_PATH.sub(lambda m: m.group(1), text)


@dataclass
class Limits:
    """Ranges a request is checked against (settable: --max-size etc.)."""

    min_size: int = 64
    max_size: int = 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100
    max_upscale_input: int = 2048


@dataclass
class GenerationRequest:
    """One job. Passed by keyword everywhere; ``validate()`` runs before any model work.

    Images (``init_image``, ``mask``) are PIL images, already decoded by ``sdui.images.decode_image``.
    """

    mode: str = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    model: Optional[str] = None  # checkpoint name; None = the current one
    vae: Optional[str] = None  # A1111 "SD VAE": Automatic, None, a file in models/VAE/; None = server default
    sampler: str = "Euler a"
    scheduler: str = "Automatic"  # A1111 "Schedule type"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    batch_size: int = 1
    batch_count: int = 1
    # img2img / inpaint
    init_image: Any = None
    denoising_strength: float = 0.75
    resize_mode: str = "Just resize"
    mask: Any = None
    mask_blur: int = 4
    inpainting_fill: str = "original"  # A1111 "Masked content"
    # upscale
    upscaler: str = "Lanczos"
    upscale_factor: float = 4.0
    noise_level: int = 20
    # output
    save: bool = True
    watermark: Optional[bool] = None  # None = the server's setting

    def replace(self, **changes) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)

    def validate(self, limits: Limits | None = None) -> "GenerationRequest":
        """Raise InvalidRequest naming the first bad field; returns self for chaining."""
        lim = limits or Limits()
        if self.mode not in MODES:
            raise InvalidRequest("mode", self.mode, f"one of {', '.join(MODES)}")
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidRequest(name, value, "a string")
            if len(value) > MAX_PROMPT_CHARS:
                raise InvalidRequest(name, f"<{len(value)} characters>", f"at most {MAX_PROMPT_CHARS} characters")
        _int_in(self, "steps", 1, lim.max_steps)
        _num_in(self, "cfg_scale", 0.0, 30.0)
        if self.mode != "upscale" or self.init_image is None:
            for name in ("width", "height"):
                _int_in(self, name, lim.min_size, lim.max_size)
                if getattr(self, name) % 8:
                    raise InvalidRequest(name, getattr(self, name), f"a multiple of 8 from {lim.min_size} to {lim.max_size}")
        _int_in(self, "seed", -1, MAX_SEED)
        _int_in(self, "batch_size", 1, lim.max_batch_size)
        _int_in(self, "batch_count", 1, lim.max_batch_count)
        if self.mode in ("img2img", "inpaint", "upscale") and self.init_image is None:
            raise InvalidRequest("init_image", None, f"an image is required for {self.mode}")
        if self.mode in ("img2img", "inpaint"):
            _num_in(self, "denoising_strength", 0.0, 1.0)
            if int(self.steps * self.denoising_strength) < 1 and not (self.mode == "inpaint" and self.inpainting_fill == "latent noise"):
                # diffusers runs steps x strength steps; zero steps would crash, so say what works
                raise InvalidRequest("denoising_strength", self.denoising_strength,
                                     f"at least {1 / self.steps:.3g} with {self.steps} steps (one step must run)")
            if self.resize_mode not in RESIZE_MODES:
                raise InvalidRequest("resize_mode", self.resize_mode, f"one of {', '.join(RESIZE_MODES)}")
        if self.mode == "inpaint":
            if self.mask is None:
                raise InvalidRequest("mask", None, "a mask image is required for inpaint")
            _int_in(self, "mask_blur", 0, 64)
            if self.inpainting_fill not in MASKED_CONTENT:
                raise InvalidRequest("inpainting_fill", self.inpainting_fill, f"one of {', '.join(MASKED_CONTENT)}")
        if self.mode == "upscale":
            _int_in(self, "noise_level", 0, 350)
            _num_in(self, "upscale_factor", 1.0, 8.0)
            w, h = self.init_image.size
            if max(w, h) > lim.max_upscale_input:
                raise InvalidRequest("init_image", f"{w}x{h}", f"at most {lim.max_upscale_input} px per side")
        return self


def _int_in(req, name, lo, hi):
    value = getattr(req, name)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            setattr(req, name, int(value))
            value = int(value)
        else:
            raise InvalidRequest(name, value, f"an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, value, f"an integer from {lo} to {hi}")


def _num_in(req, name, lo, hi):
    value = getattr(req, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(name, value, f"a number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, value, f"a number from {lo} to {hi}")


@dataclass
class Progress:
    """What a progress callback receives."""

    step: int
    total: int
    elapsed: float
    eta: float
    image_index: int = 0
    image_total: int = 1
    preview: Any = None  # a small PIL image every N steps, else None
    stage: str = "sampling"


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image
    seed: int
    infotext: str
    path: Optional[str] = None
    watermarked: bool = False


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    request: GenerationRequest
    model_name: str = ""
    model_hash: str = ""
    vae_name: Optional[str] = None  # the VAE file used (A1111 "sd_vae_name"); None = the checkpoint's own
    vae_hash: Optional[str] = None
    memory_level: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [im.seed for im in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [im.infotext for im in self.images]
