"""The request field table: every generation option declared once.

Each row gives a ``GenerationRequest`` field its type, default, range, A1111's UI label, its
infotext key, its A1111 API field and its CLI flags. Validation (``types.GenerationRequest``),
the UI's slider bounds, the CLI's flags, the API's field mapping and the infotext mapping are all
derived from this table, and a test fails when one of them disagrees with it.

Ranges may name a ``Limits`` attribute (``"max_size"``) where the owner sets the bound by flag.
Nothing here imports anything of sdui's: every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

MASKED_CONTENT = ("original", "fill", "latent noise", "latent nothing")
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")  # A1111's "Mask mode"; API inpainting_mask_invert 0/1
UPSCALE_MODES = ("Scale by", "Scale to")  # A1111's extras tabs; API resize_mode 0/1
INPAINT_AREAS = ("Whole picture", "Only masked")  # A1111's "Inpaint area"; API inpaint_full_res false/true
# Hires. fix: A1111's shared.latent_upscale_modes (name -> torch interpolate mode, antialias), in its order;
# "Latent" is its latent_upscale_default_mode. The pixel upscalers (None, Lanczos, Nearest, ESRGAN) follow.
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
HR_SAME_SAMPLER = "Use same sampler"  # A1111's hires sampler / schedule type choices meaning "as the first pass"
HR_SAME_SCHEDULER = "Use same scheduler"
MAX_SEED = 2**32 - 1
_SAME = object()
Bound = Union[int, float, str, None]


@dataclass(frozen=True)
class Field:
    name: str  # GenerationRequest attribute
    kind: type  # int, float, str or bool
    default: Any
    minimum: Bound = None  # a number, or the name of a Limits attribute
    maximum: Bound = None
    step: Optional[float] = None  # UI slider step
    choices: Optional[tuple] = None
    label: str = ""  # A1111's UI label
    infotext: Optional[str] = None  # A1111 infotext key ("Steps"); None = not written as one key
    api: Optional[str] = None  # A1111 API field ("n_iter")
    api_default: Any = _SAME  # A1111's API default where it differs from ours
    cli: tuple[str, ...] = ()  # CLI flags, the first one shown in help
    modes: tuple[str, ...] = ("txt2img", "img2img", "inpaint")
    help: str = ""

    @property
    def api_value_default(self) -> Any:
        return self.default if self.api_default is _SAME else self.api_default

    def bounds(self, limits) -> tuple[Optional[float], Optional[float]]:
        """(minimum, maximum) with Limits attributes resolved."""
        return _resolve(self.minimum, limits), _resolve(self.maximum, limits)

    def range_text(self, limits) -> str:
        lo, hi = self.bounds(limits)
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a number"
        return f"{what} from {self.kind(lo)} to {self.kind(hi)}"


def _resolve(bound: Bound, limits):
    return getattr(limits, bound) if isinstance(bound, str) else bound


_GEN = ("txt2img", "img2img", "inpaint")
_I2I = ("img2img", "inpaint")
_T2I = ("txt2img",)
VARIATION_MODES = _GEN  # A1111's variation seed and seed resize: txt2img, img2img, inpaint
FIELDS: tuple[Field, ...] = (
    Field("prompt", str, "", label="Prompt", api="prompt", cli=("--prompt",), modes=_GEN + ("upscale",),
          help="What to draw (A1111 syntax: (word:1.2), [word], BREAK)."),
    Field("negative_prompt", str, "", label="Negative prompt", infotext="Negative prompt", api="negative_prompt",
          cli=("--negative-prompt", "--negative_prompt"), modes=_GEN + ("upscale",), help="What to avoid."),
    Field("sampler", str, "Euler a", label="Sampling method", infotext="Sampler", api="sampler_name", api_default=None,
          cli=("--sampler",), modes=_GEN + ("upscale",), help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M', 'DDIM'."),
    Field("scheduler", str, "Automatic", label="Schedule type", infotext="Schedule type", api="scheduler",
          api_default=None, cli=("--scheduler",), modes=_GEN + ("upscale",),
          help="Schedule type: Automatic, Karras, Exponential, ..."),
    Field("steps", int, 20, 1, "max_steps", step=1, label="Sampling steps", infotext="Steps", api="steps",
          api_default=50, cli=("--steps", "--ddim_steps"), modes=_GEN + ("upscale",), help="Sampling steps."),
    Field("cfg_scale", float, 7.0, 0.0, 30.0, step=0.5, label="CFG Scale", infotext="CFG scale", api="cfg_scale",
          cli=("--cfg-scale", "--scale"), modes=_GEN + ("upscale",), help="How strongly the prompt is followed."),
    Field("width", int, 512, "min_size", "max_size", step=8, label="Width", api="width", cli=("--width", "--W"),
          help="Width in pixels (rounded down to a multiple of 8)."),
    Field("height", int, 512, "min_size", "max_size", step=8, label="Height", api="height", cli=("--height", "--H"),
          help="Height in pixels (rounded down to a multiple of 8)."),
    Field("seed", int, -1, -1, MAX_SEED, label="Seed", infotext="Seed", api="seed", cli=("--seed",),
          modes=_GEN + ("upscale",), help="Seed; -1 picks one at random."),
    # A1111's "Extra" seed options (txt2img, img2img, inpaint): the noise of seed i slerped toward that of
    # subseed + i; noise drawn at another size and pasted centred ("Resize seed from"); 0 = off, as A1111's UI
    # (its API's -1 also means off)
    Field("subseed", int, -1, -1, MAX_SEED, label="Variation seed", infotext="Variation seed", api="subseed",
          cli=("--subseed",), modes=VARIATION_MODES, help="Variation seed; -1 picks one at random."),
    Field("subseed_strength", float, 0.0, 0.0, 1.0, step=0.01, label="Variation strength",
          infotext="Variation seed strength", api="subseed_strength", cli=("--subseed-strength",), modes=VARIATION_MODES,
          help="How far the noise moves from the seed's toward the variation seed's (0: the seed's, 1: the "
               "variation seed's)."),
    Field("seed_resize_from_w", int, 0, 0, "max_size", step=8, label="Resize seed from width",
          infotext="Seed resize from-1", api="seed_resize_from_w", api_default=-1, cli=("--seed-resize-from-w",),
          modes=VARIATION_MODES, help="Make the noise as for this width and paste it centred (with the height); 0: off."),
    Field("seed_resize_from_h", int, 0, 0, "max_size", step=8, label="Resize seed from height",
          infotext="Seed resize from-2", api="seed_resize_from_h", api_default=-1, cli=("--seed-resize-from-h",),
          modes=VARIATION_MODES, help="Make the noise as for this height and paste it centred (with the width); 0: off."),
    Field("batch_size", int, 1, 1, "max_batch_size", step=1, label="Batch size", api="batch_size",
          cli=("--n-samples", "--n_samples"), help="Images per batch."),
    Field("batch_count", int, 1, 1, "max_batch_count", step=1, label="Batch count", api="n_iter",
          cli=("--n-iter", "--n_iter"), help="Batches to run one after another."),
    Field("clip_skip", int, 1, 1, 12, step=1, label="Clip skip", infotext="Clip skip", api="clip_skip", api_default=None,
          cli=("--clip-skip",),
          help="Stop the CLIP text encoder this many layers from the end (A1111's clip skip; 2 for many anime "
               "models). Not for SD 2.x, as in A1111."),
    Field("denoising_strength", float, 0.75, 0.0, 1.0, step=0.01, label="Denoising strength",
          infotext="Denoising strength", api="denoising_strength", cli=("--strength", "--denoising-strength"), modes=_GEN,
          help="How much of the image is redrawn (0-1); in txt2img, by the Hires. fix second pass."),
    Field("resize_mode", str, "Just resize", choices=RESIZE_MODES, label="Resize mode", api="resize_mode",
          api_default=0, cli=("--resize-mode",), modes=_I2I, help="How the image is fitted to the size."),
    Field("mask_blur", int, 4, 0, 64, step=1, label="Mask blur", infotext="Mask blur", api="mask_blur",
          api_default=None, cli=("--mask-blur",), modes=("inpaint",), help="Mask blur in pixels."),
    Field("inpainting_fill", str, "original", choices=MASKED_CONTENT, label="Masked content",
          infotext="Masked content", api="inpainting_fill", api_default=0, cli=("--masked-content",),
          modes=("inpaint",), help="What the masked area starts from."),
    Field("inpainting_mask_invert", str, MASK_MODES[0], choices=MASK_MODES, label="Mask mode", infotext="Mask mode",
          api="inpainting_mask_invert", api_default=0, cli=("--mask-mode",), modes=("inpaint",),
          help="Which part is redrawn: the painted (white) part, or everything else."),
    # A1111's UI starts at "Whole picture" with 32 px padding; its API (StableDiffusionProcessingImg2Img) defaults
    # to inpaint_full_res=True with 0 px padding. Each front end gets A1111's own default (README, "Inpaint area").
    Field("inpaint_full_res", str, INPAINT_AREAS[0], choices=INPAINT_AREAS, label="Inpaint area", infotext="Inpaint area",
          api="inpaint_full_res", api_default=True, cli=("--inpaint-area",), modes=("inpaint",),
          help="Whole picture: inpaint the image at width x height. Only masked: inpaint the masked part plus the "
               "padding at width x height, then paste it back into the image at its own size."),
    Field("inpaint_full_res_padding", int, 32, 0, 256, step=4, label="Only masked padding, pixels",
          infotext="Masked area padding", api="inpaint_full_res_padding", api_default=0,
          cli=("--masked-area-padding",), modes=("inpaint",),
          help="Only masked: pixels of context around the masked part that are inpainted with it."),
    # Hires. fix (txt2img): A1111's StableDiffusionProcessingTxt2Img fields, its UI's labels and ranges
    Field("enable_hr", bool, False, label="Hires. fix", api="enable_hr", cli=("--enable-hr",), modes=_T2I,
          help="Make the image at width x height, upscale it, then redraw it at the larger size (img2img) with "
               "the same seed (A1111's Hires. fix)."),
    Field("hr_upscaler", str, "Latent", label="Upscaler", infotext="Hires upscaler", api="hr_upscaler",
          api_default=None, cli=("--hr-upscaler",), modes=_T2I,
          help="A latent mode (Latent, Latent (bicubic), ...) or a pixel upscaler (None, Lanczos, Nearest, an "
               "ESRGAN model)."),
    Field("hr_second_pass_steps", int, 0, 0, "max_steps", step=1, label="Hires steps", infotext="Hires steps",
          api="hr_second_pass_steps", cli=("--hr-second-pass-steps",), modes=_T2I,
          help="Steps of the second pass; 0: the same as Sampling steps."),
    Field("hr_scale", float, 2.0, 1.0, 4.0, step=0.05, label="Upscale by", infotext="Hires upscale", api="hr_scale",
          cli=("--hr-scale",), modes=_T2I,
          help="Hires. fix size: width and height times this (when no Resize width/height to is given)."),
    Field("hr_resize_x", int, 0, 0, "max_size", step=8, label="Resize width to", infotext="Hires resize-1",
          api="hr_resize_x", cli=("--hr-resize-x",), modes=_T2I,
          help="Hires. fix width; 0: from Upscale by (or from the height, keeping the aspect ratio)."),
    Field("hr_resize_y", int, 0, 0, "max_size", step=8, label="Resize height to", infotext="Hires resize-2",
          api="hr_resize_y", cli=("--hr-resize-y",), modes=_T2I,
          help="Hires. fix height; 0: from Upscale by (or from the width, keeping the aspect ratio)."),
    Field("hr_sampler", str, "", label="Hires sampling method", infotext="Hires sampler", api="hr_sampler_name",
          api_default=None, cli=("--hr-sampler",), modes=_T2I, help="Sampler of the second pass; empty: the same as the first."),
    Field("hr_scheduler", str, "", label="Hires schedule type", infotext="Hires schedule type", api="hr_scheduler",
          api_default=None, cli=("--hr-scheduler",), modes=_T2I,
          help="Schedule type of the second pass; empty: the same as the first."),
    Field("hr_prompt", str, "", label="Hires prompt", infotext="Hires prompt", api="hr_prompt", cli=("--hr-prompt",),
          modes=_T2I,
          help="Prompt of the second pass; empty: the same as the first."),
    Field("hr_negative_prompt", str, "", label="Hires negative prompt", infotext="Hires negative prompt",
          api="hr_negative_prompt", cli=("--hr-negative-prompt",), modes=_T2I,
          help="Negative prompt of the second pass; empty: the same as the first."),
    # Refiner (txt2img): A1111's refiner_checkpoint / refiner_switch_at, its "Refiner" accordion's labels
    Field("refiner_checkpoint", str, "", label="Checkpoint", infotext="Refiner", api="refiner_checkpoint",
          api_default=None, cli=("--refiner-checkpoint",), modes=_T2I,
          help="A checkpoint that takes over the sampling at 'Switch at' (SDXL models); empty: no refiner."),
    Field("refiner_switch_at", float, 0.8, 0.01, 1.0, step=0.01, label="Switch at", infotext="Refiner switch at",
          api="refiner_switch_at", api_default=None, cli=("--refiner-switch-at",), modes=_T2I,
          help="Fraction of the sampling steps after which the refiner takes over."),
    Field("output_format", str, "png", choices=("png", "jpg", "webp"), label="File format for images",
          modes=("txt2img", "img2img", "inpaint", "upscale"),
          help="How saved images are written (A1111's samples_format); the infotext goes into each."),
    Field("upscaler", str, "Lanczos", label="Upscaler", infotext="Postprocess upscaler", api="upscaler_1",
          api_default="None", cli=("--upscaler",), modes=("upscale",),
          help="Lanczos, Nearest, 'SD x4 upscaler' or an ESRGAN model name."),
    Field("upscale_factor", float, 4.0, 1.0, 8.0, step=0.5, label="Scale by", infotext="Postprocess upscale by",
          api="upscaling_resize", api_default=2, cli=("--scale-factor",), modes=("upscale",), help="Enlargement factor."),
    # Extras: A1111's "Scale to" tab (API resize_mode 1) and "Upscaler 2" (scripts/postprocessing_upscale.py)
    Field("upscale_mode", str, UPSCALE_MODES[0], choices=UPSCALE_MODES, label="Resize mode", api="resize_mode",
          api_default=0, cli=("--upscale-mode",), modes=("upscale",),
          help="Scale by: times Scale by. Scale to: to Width x Height (cover the box, then crop it with Crop to fit)."),
    Field("upscale_to_width", int, 512, 8, 8192, step=8, label="Width", api="upscaling_resize_w",
          cli=("--upscale-to-width",), modes=("upscale",), help="Scale to: the width."),
    Field("upscale_to_height", int, 512, 8, 8192, step=8, label="Height", api="upscaling_resize_h",
          cli=("--upscale-to-height",), modes=("upscale",), help="Scale to: the height."),
    Field("upscale_crop", bool, True, label="Crop to fit", api="upscaling_crop", cli=("--crop-to-fit",),
          modes=("upscale",), help="Scale to: crop the centre to exactly Width x Height; off, the image keeps its "
                                   "aspect ratio and covers the box (as A1111)."),
    Field("upscaler_2", str, "None", label="Upscaler 2", infotext="Postprocess upscaler 2", api="upscaler_2",
          cli=("--upscaler-2",), modes=("upscale",), help="A second upscaler blended over the first; None: off."),
    Field("upscaler_2_visibility", float, 0.0, 0.0, 1.0, step=0.001, label="Upscaler 2 visibility",
          api="extras_upscaler_2_visibility", cli=("--upscaler-2-visibility",), modes=("upscale",),
          help="How much of Upscaler 2's image is blended in: 0 = only Upscaler 1, 1 = only Upscaler 2."),
    Field("noise_level", int, 20, 0, 350, step=1, label="Noise level", infotext="Noise level", cli=("--noise-level",),
          modes=("upscale",), help="SD x4 upscaler noise level."),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
BY_INFOTEXT: dict[str, Field] = {f.infotext: f for f in FIELDS if f.infotext}


def default(name: str) -> Any:
    return BY_NAME[name].default


def for_mode(mode: str) -> list[Field]:
    return [f for f in FIELDS if mode in f.modes]


def slider(name: str, limits) -> dict:
    """Keyword arguments for a UI slider of ``name``: bounds, default, step, label."""
    f = BY_NAME[name]
    lo, hi = f.bounds(limits)
    return {"minimum": lo, "maximum": hi, "value": f.default, "step": f.step, "label": f.label}


def hires_in_infotext(params: dict) -> bool:
    """Whether a parsed infotext is of a Hires. fix image: A1111's paste rule (``ui.py``, the
    ``enable_hr`` paste field): a denoising strength and one of its Hires upscale/upscaler/resize keys."""
    return "Denoising strength" in params and any(k in params for k in ("Hires upscale", "Hires upscaler",
                                                                          "Hires resize-1"))
