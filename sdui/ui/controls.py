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

    def request_fields(self) -> dict:
        """GenerationRequest field name -> component, for the fields these controls set."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "sampler": self.sampler,
                "scheduler": self.scheduler, "steps": self.steps, "width": self.width, "height": self.height,
                "batch_count": self.batch_count, "batch_size": self.batch_size, "cfg_scale": self.cfg_scale,
                "clip_skip": self.clip_skip, "seed": self.seed}


def render_prompts(prefix: str) -> tuple[gr.Textbox, gr.Textbox]:
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (A1111 syntax: (word:1.2), [word], BREAK)",
                        elem_id=f"{prefix}_prompt")
    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt")
    return prompt, negative


def slider(name: str, limits, elem_id: str, **kw) -> gr.Slider:
    """A slider whose bounds, default, step and label come from the field table."""
    return gr.Slider(**{**fields.slider(name, limits), **kw}, elem_id=elem_id)


def radio(name: str, elem_id: str, **kw) -> gr.Radio:
    """A radio group of a field's choices, with its default and label from the field table."""
    f = fields.BY_NAME[name]
    return gr.Radio(list(f.choices), value=f.default, label=f.label, elem_id=elem_id, **kw)


def render_controls(prefix: str, limits) -> GenerationControls:
    prompt, negative = render_prompts(prefix)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}_generate")
        interrupt = gr.Button("Interrupt", elem_id=f"{prefix}_interrupt")
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value=fields.default("sampler"),
                              label=fields.BY_NAME["sampler"].label, elem_id=f"{prefix}_sampler")
        scheduler = gr.Dropdown(samplers.schedule_names(), value=fields.default("scheduler"),
                                label=fields.BY_NAME["scheduler"].label, elem_id=f"{prefix}_scheduler")
        steps = slider("steps", limits, f"{prefix}_steps")
    with gr.Row():
        width = slider("width", limits, f"{prefix}_width")
        height = slider("height", limits, f"{prefix}_height")
    with gr.Row():
        batch_count = slider("batch_count", limits, f"{prefix}_batch_count")
        batch_size = slider("batch_size", limits, f"{prefix}_batch_size")
        cfg_scale = slider("cfg_scale", limits, f"{prefix}_cfg_scale")
        clip_skip = slider("clip_skip", limits, f"{prefix}_clip_skip")
    with gr.Row():
        seed = gr.Number(value=fields.default("seed"), precision=0, label=fields.BY_NAME["seed"].label,
                         elem_id=f"{prefix}_seed", scale=4)
        dice = gr.Button("Random", elem_id=f"{prefix}_random_seed", scale=0, min_width=80)
        recycle = gr.Button("Reuse last", elem_id=f"{prefix}_reuse_seed", scale=0, min_width=80)
    return GenerationControls(prompt, negative, sampler, scheduler, steps, width, height, batch_count, batch_size,
                              cfg_scale, clip_skip, seed, dice, recycle, generate, interrupt)


def render_outputs(prefix: str) -> dict:
    """Status, live preview, gallery of saved PNGs and infotext: the right-hand column of a
    generation tab. Returns the dict ``wire_generation`` takes as ``outputs``."""
    status = gr.HTML(elem_id=f"{prefix}_status")
    preview = gr.Image(label="Preview", format="png", interactive=False, visible=False, height=160,
                       elem_id=f"{prefix}_preview")
    gallery = gr.Gallery(label="Output", format="png", columns=2, height=420, elem_id=f"{prefix}_gallery",
                         interactive=False)
    infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"{prefix}_infotext")
    return {"status": status, "preview": preview, "gallery": gallery, "infotext": infotext, "last_seed": gr.State(None)}


def coerce(field_name: str, value):
    """Gradio sliders give floats; the request wants the field table's type (ints where A1111 has ints)."""
    f = fields.BY_NAME.get(field_name)
    if f is not None and f.kind in (int, float) and value is not None:
        return f.kind(value)
    return value
