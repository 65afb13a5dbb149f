"""The generation controls shared by txt2img and img2img, with A1111's labels, and the mapping
from those components to GenerationRequest fields (by keyword, never by position)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import fields, samplers


@dataclass
class UIContext:
    """What every tab needs: the engine, the queue, the settings and the page-wide components."""

    engine: object
    queue: object
    settings: object
    token: object = None  # gr.BrowserState with this browser's session token
    model: object = None  # the checkpoint dropdown at the top of the page
    vae: object = None  # the "SD VAE" dropdown beside it
    chosen: object = None  # gr.State: this session's models, newest first (where a refused checkpoint falls back to)
    tabs: object = None
    publisher: object = None  # session.Publisher: the gallery copies of saved PNGs


@dataclass
class GenerationControls:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider
    clip_skip: gr.Slider
    seed: gr.Number
    dice: gr.Button
    recycle: gr.Button
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button = None
    swap: gr.Button = None  # ⇅: swap width and height
    prompt_tokens: gr.HTML = None  # A1111's token counters ("23/75") of the two prompt boxes
    negative_tokens: gr.HTML = None

    def request_fields(self) -> dict:
        """GenerationRequest field name -> component, for the fields these controls set."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "sampler": self.sampler,
                "scheduler": self.scheduler, "steps": self.steps, "width": self.width, "height": self.height,
                "batch_count": self.batch_count, "batch_size": self.batch_size, "cfg_scale": self.cfg_scale,
                "clip_skip": self.clip_skip, "seed": self.seed}


NOT_AN_IMAGE = "That file is not an image we can read (PNG, JPEG, WebP)."


def readable(component):
    """``component`` (an image upload) answering a file PIL cannot read with one sentence (a
    gr.Error, shown as the page's message) instead of Gradio's "Could not preprocess input
    component" trace. Wraps the instance's preprocess: a subclass would need its own frontend."""
    preprocess = component.preprocess

    def checked(payload):
        from PIL import UnidentifiedImageError

        try:
            return preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise gr.Error(NOT_AN_IMAGE, print_exception=False) from e

    component.preprocess = checked
    return component


def render_prompts(prefix: str) -> tuple[gr.Textbox, gr.Textbox]:
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (A1111 syntax: (word:1.2), [word], BREAK)",
                        elem_id=f"{prefix}_prompt", elem_classes=["sdui-prompt"])
    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt",
                          placeholder="What to leave out", elem_classes=["sdui-prompt"])
    return prompt, negative


def token_counter(elem_id: str) -> gr.HTML:
    return gr.HTML(token_counter_html(0, 75), elem_id=elem_id, elem_classes=["sdui-token-counter"])


def token_counter_html(tokens: int, capacity: int) -> str:
    over = " over" if tokens > capacity else ""
    return f'<span class="sdui-tokens{over}" title="tokens / capacity (75 per chunk)">{tokens}/{capacity}</span>'


def render_prompt_row(prefix: str) -> dict:
    """A1111's top row: the prompt boxes (each with its token counter) and, beside them, Generate,
    Interrupt and Skip. On a phone the row sits right under the progress and the result."""
    with gr.Row(elem_id=f"{prefix}_toprow", elem_classes=["sdui-toprow"]):
        with gr.Column(scale=5, min_width=240):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (A1111 syntax: (word:1.2), [word], BREAK)",
                                elem_id=f"{prefix}_prompt", elem_classes=["sdui-prompt"], autofocus=prefix == "txt2img")
            prompt_tokens = token_counter(f"{prefix}_token_counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt",
                                  placeholder="What to leave out", elem_classes=["sdui-prompt"])
            negative_tokens = token_counter(f"{prefix}_negative_token_counter")
        with gr.Column(scale=1, min_width=150, elem_classes=["sdui-actions"]):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}_generate", size="lg")
            with gr.Row(elem_classes=["sdui-nowrap"]):
                interrupt = gr.Button("Interrupt", elem_id=f"{prefix}_interrupt", min_width=60, size="sm")
                skip = gr.Button("Skip", elem_id=f"{prefix}_skip", min_width=60, size="sm")
    return {"prompt": prompt, "negative_prompt": negative, "prompt_tokens": prompt_tokens,
            "negative_tokens": negative_tokens, "generate": generate, "interrupt": interrupt, "skip": skip}


def slider(name: str, limits, elem_id: str, **kw) -> gr.Slider:
    """A slider whose bounds, default, step and label come from the field table."""
    return gr.Slider(**{**fields.slider(name, limits), **kw}, elem_id=elem_id)


def radio(name: str, elem_id: str, **kw) -> gr.Radio:
    """A radio group of a field's choices, with its default and label from the field table."""
    f = fields.BY_NAME[name]
    return gr.Radio(list(f.choices), value=f.default, label=f.label, elem_id=elem_id, **kw)


def render_controls(prefix: str, limits, top: dict | None = None) -> GenerationControls:
    """The generation settings under the canvas/left column; ``top`` is ``render_prompt_row``'s (None:
    the prompt row is drawn here, above the settings)."""
    if top is None:
        top = render_prompt_row(prefix)
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value=fields.default("sampler"),
                              label=fields.BY_NAME["sampler"].label, elem_id=f"{prefix}_sampler")
        scheduler = gr.Dropdown(samplers.schedule_names(), value=fields.default("scheduler"),
                                label=fields.BY_NAME["scheduler"].label, elem_id=f"{prefix}_scheduler")
        steps = slider("steps", limits, f"{prefix}_steps")
    with gr.Row(elem_classes=["sdui-size"]):
        width = slider("width", limits, f"{prefix}_width")
        swap = gr.Button("⇅", elem_id=f"{prefix}_res_switch_btn", scale=0, min_width=40, size="sm",
                         elem_classes=["sdui-swap"])
        height = slider("height", limits, f"{prefix}_height")
    with gr.Row():
        batch_count = slider("batch_count", limits, f"{prefix}_batch_count")
        batch_size = slider("batch_size", limits, f"{prefix}_batch_size")
        cfg_scale = slider("cfg_scale", limits, f"{prefix}_cfg_scale")
        clip_skip = slider("clip_skip", limits, f"{prefix}_clip_skip")
    with gr.Row():
        seed = gr.Number(value=fields.default("seed"), precision=0, label=fields.BY_NAME["seed"].label,
                         elem_id=f"{prefix}_seed", scale=4, info="-1 or empty: a random seed")
        dice = gr.Button("Random", elem_id=f"{prefix}_random_seed", scale=0, min_width=80)
        recycle = gr.Button("Reuse seed", elem_id=f"{prefix}_reuse_seed", scale=0, min_width=80)
    return GenerationControls(top["prompt"], top["negative_prompt"], sampler, scheduler, steps, width, height, batch_count,
                              batch_size, cfg_scale, clip_skip, seed, dice, recycle, top["generate"], top["interrupt"],
                              skip=top["skip"], swap=swap, prompt_tokens=top["prompt_tokens"],
                              negative_tokens=top["negative_tokens"])


def render_outputs(prefix: str) -> dict:
    """Status, the gallery (whole images; the live preview is drawn in it at the output's size),
    the Send-to buttons and the selected image's infotext: the right-hand column of a generation
    tab. Returns the dict ``wire_generation`` takes as ``outputs``."""
    status = gr.HTML(elem_id=f"{prefix}_status", elem_classes=["sdui-status"])
    gallery = gr.Gallery(label="Output", format="png", columns=2, height=460, elem_id=f"{prefix}_gallery",
                         interactive=False, object_fit="contain", buttons=["download", "fullscreen"],
                         elem_classes=["sdui-gallery"], preview=True)
    with gr.Row(elem_classes=["sdui-send", "sdui-nowrap"]):
        to_img2img = gr.Button("Send to img2img", elem_id=f"{prefix}_send_to_img2img", size="sm", min_width=60)
        to_inpaint = gr.Button("Send to inpaint", elem_id=f"{prefix}_send_to_inpaint", size="sm", min_width=60)
        to_upscale = gr.Button("Send to Upscale", elem_id=f"{prefix}_send_to_upscale", size="sm", min_width=60)
    infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"{prefix}_infotext")
    # per session: the shown images' seeds and infotexts (gallery order) and which one is selected
    return {"status": status, "gallery": gallery, "infotext": infotext, "images": gr.State([]), "selected": gr.State(0),
            "to_img2img": to_img2img, "to_inpaint": to_inpaint, "to_upscale": to_upscale}


def coerce(field_name: str, value):
    """Gradio sliders give floats; the request wants the field table's type (ints where A1111 has ints)."""
    f = fields.BY_NAME.get(field_name)
    if f is not None and f.kind in (int, float) and value is not None:
        return f.kind(value)
    return value
