"""The generation controls shared by txt2img and img2img, with A1111's labels, and the mapping
from those components to GenerationRequest fields (by keyword, never by position)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import samplers


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
                "seed": self.seed}


def render_prompts(prefix: str) -> tuple[gr.Textbox, gr.Textbox]:
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (A1111 syntax: (word:1.2), [word], BREAK)",
                        elem_id=f"{prefix}_prompt")
    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt")
    return prompt, negative


def render_controls(prefix: str, max_size: int) -> GenerationControls:
    prompt, negative = render_prompts(prefix)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}_generate")
        interrupt = gr.Button("Interrupt", elem_id=f"{prefix}_interrupt")
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value="Euler a", label="Sampling method",
                              elem_id=f"{prefix}_sampler")
        scheduler = gr.Dropdown(samplers.schedule_names(), value="Automatic", label="Schedule type",
                                elem_id=f"{prefix}_scheduler")
        steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{prefix}_steps")
    with gr.Row():
        width = gr.Slider(64, max_size, value=512, step=8, label="Width", elem_id=f"{prefix}_width")
        height = gr.Slider(64, max_size, value=512, step=8, label="Height", elem_id=f"{prefix}_height")
    with gr.Row():
        batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{prefix}_batch_count")
        batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{prefix}_batch_size")
        cfg_scale = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{prefix}_cfg_scale")
    with gr.Row():
        seed = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{prefix}_seed", scale=4)
        dice = gr.Button("Random", elem_id=f"{prefix}_random_seed", scale=0, min_width=80)
        recycle = gr.Button("Reuse last", elem_id=f"{prefix}_reuse_seed", scale=0, min_width=80)
    return GenerationControls(prompt, negative, sampler, scheduler, steps, width, height, batch_count, batch_size,
                              cfg_scale, seed, dice, recycle, generate, interrupt)


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
    """Gradio sliders give floats; the request wants ints where A1111 has ints."""
    if field_name in ("steps", "width", "height", "batch_count", "batch_size", "seed", "mask_blur", "noise_level"):
        return int(value) if value is not None else value
    if field_name in ("cfg_scale", "denoising_strength", "upscale_factor"):
        return float(value)
    return value
