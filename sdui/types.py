"""The shared vocabulary: requests, results, progress and errors.

Nothing here imports torch, diffusers or gradio, so every layer (UI, API, CLI) can use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Optional

from . import fields as _fields

MAX_PROMPT_CHARS = 20_000


class _Name(str, Enum):
    """An enum whose members are also their string values (JSON, f-strings, comparisons with text)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Mode(_Name):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    UPSCALE = "upscale"


MODES = tuple(m.value for m in Mode)


class JobState(_Name):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


class ModelKind(_Name):
    CHECKPOINT = "checkpoint"
    VAE = "vae"
    LORA = "lora"
    UPSCALER = "upscaler"
    EMBEDDING = "embedding"  # textual inversion (A1111 embeddings/)


class Architecture(_Name):
    """What a model is. Checkpoint ids equal the config folder names in ``assets/configs``."""

    SD1 = "sd15"
    SD1_INPAINT = "sd15-inpaint"
    SD2 = "sd2"
    SD2_V = "sd2-v"
    SD2_INPAINT = "sd2-inpaint"
    SD2_DEPTH = "sd2-depth"  # depth-conditioned img2img (512-depth-ema)
    SDXL = "sdxl"
    X4_UPSCALER = "x4-upscaler"
    VAE = "vae"
    LORA = "lora"
    CUSTOM = "custom"  # a <stem>.config/ folder beside the file says what it is
    HUB = "hub"  # a Hub id, known once loaded
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, value) -> "Architecture":
        """The member for a stored id; UNKNOWN for anything else."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_sd2(self) -> bool:
        return self in (Architecture.SD2, Architecture.SD2_V, Architecture.SD2_INPAINT, Architecture.SD2_DEPTH,
                        Architecture.X4_UPSCALER)


class MemoryLevel(IntEnum):
    """The memory ladder, cheapest first; a job that runs out of memory is retried one level down."""

    AS_LOADED = 0
    ATTENTION_SLICING = 1
    VAE_TILING = 2
    MODEL_OFFLOAD = 3
    SEQUENTIAL_OFFLOAD = 4
    CPU = 5

    @property
    def label(self) -> str:
        return _LEVEL_LABELS[self]

    @property
    def offloads(self) -> bool:
        """Levels 3 and 4 move weights with accelerate hooks (they need an accelerator)."""
        return self in (MemoryLevel.MODEL_OFFLOAD, MemoryLevel.SEQUENTIAL_OFFLOAD)


_LEVEL_LABELS = {
    MemoryLevel.AS_LOADED: "as loaded",
    MemoryLevel.ATTENTION_SLICING: "attention slicing",
    MemoryLevel.VAE_TILING: "attention slicing + VAE slicing and tiling",
    MemoryLevel.MODEL_OFFLOAD: "model CPU offload",
    MemoryLevel.SEQUENTIAL_OFFLOAD: "sequential CPU offload",
    MemoryLevel.CPU: "run on CPU",
}


class SduiError(Exception):
    """Base class for errors whose message is meant for the user as is."""


class ModelLoadError(SduiError):
    """A model file could not be found, read, trusted or understood."""


class UnknownModelError(SduiError, LookupError):
    """No model by that name."""


class Cancelled(SduiError):
    """The job was interrupted by its owner; ``partial`` holds the images finished before (if any)."""

    partial: "Optional[GenerationResult]" = None
    partial_images: list = []  # set on the instance: the interrupted batch's images as they were (PIL)


class Skipped(Cancelled):
    """A1111's Skip: the current image (batch) was ended by its owner; the job goes on with the next."""


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


def _d(name: str):
    return _fields.default(name)


@dataclass
class GenerationRequest:
    """One job. Passed by keyword everywhere; ``validate()`` runs before any model work. Defaults
    and ranges come from the field table (``sdui.fields``).

    Images (``init_image``, ``mask``) are PIL images, already decoded by ``sdui.images.uploads``.
    """

    mode: str = Mode.TXT2IMG.value
    prompt: str = _d("prompt")
    negative_prompt: str = _d("negative_prompt")
    model: Optional[str] = None  # a checkpoint name the server lists; None = the server's default
    vae: Optional[str] = None  # A1111 "SD VAE": Automatic, None, a file in models/VAE/; None = server default
    sampler: str = _d("sampler")
    scheduler: str = _d("scheduler")  # A1111 "Schedule type"
    steps: int = _d("steps")
    cfg_scale: float = _d("cfg_scale")
    width: int = _d("width")
    height: int = _d("height")
    seed: int = _d("seed")
    subseed: int = _d("subseed")  # A1111's variation seed ("Extra"); txt2img
    subseed_strength: float = _d("subseed_strength")
    seed_resize_from_w: int = _d("seed_resize_from_w")  # 0 = off
    seed_resize_from_h: int = _d("seed_resize_from_h")
    batch_size: int = _d("batch_size")
    batch_count: int = _d("batch_count")
    clip_skip: int = _d("clip_skip")  # A1111 "Clip skip" (CLIP_stop_at_last_layers)
    # img2img / inpaint
    init_image: Any = None
    denoising_strength: float = _d("denoising_strength")
    resize_mode: str = _d("resize_mode")
    mask: Any = None
    mask_blur: int = _d("mask_blur")
    inpainting_fill: str = _d("inpainting_fill")  # A1111 "Masked content"
    inpainting_mask_invert: str = _d("inpainting_mask_invert")  # A1111 "Mask mode"
    inpaint_full_res: str = _d("inpaint_full_res")  # A1111 "Inpaint area": Whole picture / Only masked
    inpaint_full_res_padding: int = _d("inpaint_full_res_padding")  # A1111 "Only masked padding, pixels"
    depth_map: Any = None  # img2img on an SD 2 depth model: the user's depth image (None: the estimator's)
    # upscale
    upscaler: str = _d("upscaler")
    upscale_factor: float = _d("upscale_factor")
    noise_level: int = _d("noise_level")
    upscale_mode: str = _d("upscale_mode")  # A1111 extras: "Scale by" / "Scale to"
    upscale_to_width: int = _d("upscale_to_width")
    upscale_to_height: int = _d("upscale_to_height")
    upscale_crop: bool = _d("upscale_crop")  # A1111 "Crop to fit"
    upscaler_2: str = _d("upscaler_2")  # "None" = off
    upscaler_2_visibility: float = _d("upscaler_2_visibility")
    # txt2img: Hires. fix (A1111's enable_hr and hr_* fields)
    enable_hr: bool = _d("enable_hr")
    hr_upscaler: str = _d("hr_upscaler")
    hr_second_pass_steps: int = _d("hr_second_pass_steps")  # 0 = the same as steps
    hr_scale: float = _d("hr_scale")
    hr_resize_x: int = _d("hr_resize_x")  # 0 = from hr_scale (or from hr_resize_y, keeping the aspect ratio)
    hr_resize_y: int = _d("hr_resize_y")
    hr_sampler: str = _d("hr_sampler")  # "" = the first pass's sampler
    hr_scheduler: str = _d("hr_scheduler")  # "" = the first pass's schedule type
    hr_prompt: str = _d("hr_prompt")  # "" = the first pass's prompt
    hr_negative_prompt: str = _d("hr_negative_prompt")
    # txt2img: A1111's refiner (another checkpoint finishes the sampling)
    refiner_checkpoint: str = _d("refiner_checkpoint")  # "" = none
    refiner_switch_at: float = _d("refiner_switch_at")
    # output
    save: bool = True
    output_format: str = _d("output_format")  # png, jpg or webp (A1111 samples_format)
    watermark: Optional[bool] = None  # None = the server's setting
    notes: list = field(default_factory=list)  # what prepare() changed (a size rounded down), told with the result

    def replace(self, **changes) -> "GenerationRequest":
        changes.setdefault("notes", list(self.notes))
        return dataclasses.replace(self, **changes)

    def round_size(self) -> "GenerationRequest":
        """A1111 accepts any size and generates at the size rounded down to a multiple of 8 (the
        latent grid); the change is noted for the result's warnings and the API's info."""
        w, h = self.width - self.width % 8, self.height - self.height % 8
        if (w, h) != (self.width, self.height):
            self.notes.append(f"Size {self.width}x{self.height} was rounded down to {w}x{h} (a multiple of 8)")
            self.width, self.height = w, h
        return self

    def validate(self, limits: "Limits | None" = None) -> "GenerationRequest":
        """Raise InvalidRequest naming the first bad field; returns self for chaining."""
        lim = limits or Limits()
        if self.mode not in MODES:
            raise InvalidRequest("mode", self.mode, f"one of {', '.join(MODES)}")
        sized = self.mode != Mode.UPSCALE or self.init_image is None
        for f in _fields.for_mode(self.mode):
            if f.name in ("width", "height") and not sized:
                continue
            _check_field(self, f, lim)
        if self.mode in (Mode.IMG2IMG, Mode.INPAINT, Mode.UPSCALE) and self.init_image is None:
            raise InvalidRequest("init_image", None, f"an image is required for {self.mode}")
        if self.mode in (Mode.IMG2IMG, Mode.INPAINT):
            if int(self.steps * self.denoising_strength) < 1 and not (
                    self.mode == Mode.INPAINT and self.inpainting_fill == "latent noise"):
                # diffusers runs steps x strength steps; zero steps would crash, so say what works
                raise InvalidRequest("denoising_strength", self.denoising_strength,
                                     f"at least {1 / self.steps:.3g} with {self.steps} steps (one step must run)")
        if self.mode == Mode.INPAINT and self.mask is None:
            raise InvalidRequest("mask", None, "a mask image is required for inpaint")
        if self.mode == Mode.TXT2IMG and self.enable_hr:
            self._check_hires(lim)
        if self.mode == Mode.UPSCALE:
            w, h = self.init_image.size
            if max(w, h) > lim.max_upscale_input:
                raise InvalidRequest("init_image", f"{w}x{h}", f"at most {lim.max_upscale_input} px per side")
        return self

    def hires_target(self) -> "HiresTarget":
        """The Hires. fix size of this request (A1111's calculate_target_resolution)."""
        return hires_target(self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y)

    def _check_hires(self, lim: "Limits") -> None:
        t = self.hires_target()
        if not (lim.min_size <= t.width <= lim.max_size and lim.min_size <= t.height <= lim.max_size):
            by_scale = not (self.hr_resize_x or self.hr_resize_y)
            raise InvalidRequest("hr_scale" if by_scale else "hr_resize_x",
                                 self.hr_scale if by_scale else f"{self.hr_resize_x}x{self.hr_resize_y}",
                                 f"a Hires. fix size from {lim.min_size} to {lim.max_size} px per side (this gives "
                                 f"{t.width}x{t.height} from {self.width}x{self.height})")
        steps = self.hr_second_pass_steps or self.steps
        if int(steps * self.denoising_strength) < 1:  # the second pass runs steps x strength steps, as img2img
            raise InvalidRequest("denoising_strength", self.denoising_strength,
                                 f"at least {1 / steps:.3g} with {steps} hires steps (one step must run)")


@dataclass(frozen=True)
class HiresTarget:
    """Where A1111's Hires. fix takes the first pass (processing.py ``calculate_target_resolution``):
    upscaled to ``upscale_width`` x ``upscale_height`` (its hr_upscale_to_x/y), then ``truncate_x`` /
    ``truncate_y`` latent cells (8 px each) cropped away, half on each side, when both a resize
    width and height were asked for (the upscale covers them, keeping the aspect ratio). ``width`` x
    ``height`` is the final size: the latent grid's, a multiple of 8."""

    upscale_width: int
    upscale_height: int
    truncate_x: int = 0
    truncate_y: int = 0

    @property
    def width(self) -> int:
        return 8 * (self.upscale_width // 8 - self.truncate_x)

    @property
    def height(self) -> int:
        return 8 * (self.upscale_height // 8 - self.truncate_y)


def hires_target(width: int, height: int, scale: float, resize_x: int = 0, resize_y: int = 0) -> HiresTarget:
    """A1111's rules: no resize given: the size times ``scale`` (truncated to whole pixels); one of
    them given: that one, and the other from the aspect ratio; both: cover them, then crop."""
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(int(width * scale), int(height * scale))
    if resize_y == 0:
        return HiresTarget(resize_x, resize_x * height // width)
    if resize_x == 0:
        return HiresTarget(resize_y * width // height, resize_y)
    if width / height < resize_x / resize_y:
        up_w, up_h = resize_x, resize_x * height // width
    else:
        up_w, up_h = resize_y * width // height, resize_y
    return HiresTarget(up_w, up_h, (up_w - resize_x) // 8, (up_h - resize_y) // 8)


def _check_field(req: GenerationRequest, f: "_fields.Field", lim: "Limits") -> None:
    if f.kind is bool:
        if not isinstance(getattr(req, f.name), bool):
            raise InvalidRequest(f.name, getattr(req, f.name), f.range_text(lim))
        return
    if f.kind is str:
        value = getattr(req, f.name)
        if not isinstance(value, str):
            raise InvalidRequest(f.name, value, "a string")
        if len(value) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f.name, f"<{len(value)} characters>", f"at most {MAX_PROMPT_CHARS} characters")
        if f.choices and value not in f.choices:
            raise InvalidRequest(f.name, value, f.range_text(lim))
        return
    lo, hi = f.bounds(lim)
    (_int_in if f.kind is int else _num_in)(req, f.name, lo, hi, f.range_text(lim))


def _int_in(req, name, lo, hi, allowed: Optional[str] = None):
    allowed = allowed or f"an integer from {lo} to {hi}"
    value = getattr(req, name)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            setattr(req, name, int(value))
            value = int(value)
        else:
            raise InvalidRequest(name, value, allowed)
    if not lo <= value <= hi:
        raise InvalidRequest(name, value, allowed)


def _num_in(req, name, lo, hi, allowed: Optional[str] = None):
    allowed = allowed or f"a number from {lo} to {hi}"
    value = getattr(req, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(name, value, allowed)
    if not lo <= value <= hi:
        raise InvalidRequest(name, value, allowed)


@dataclass
class Progress:
    """What a progress callback receives."""

    step: int
    total: int
    elapsed: float
    eta: float
    image_index: int = 0
    image_total: int = 1
    preview: Any = None  # a small PIL image every N steps, else None (the queue keeps the last one)
    preview_step: Optional[int] = None  # the step the preview was made at; None = this step
    stage: str = "sampling"


# Progress.stage while a model is converted for the OpenVINO backend (once per model and machine)
PREPARING_STAGE = "Preparing the CPU-optimised model, once"


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image
    seed: int
    infotext: str
    path: Optional[str] = None
    watermarked: bool = False
    partial: bool = False  # the unfinished image of an interrupted job: returned to API clients, never saved


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
