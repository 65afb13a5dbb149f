"""Upscale: SD x4 upscaler (prompt + noise level), ESRGAN-family models, Lanczos; before/after."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
from PIL import Image

from ... import fields
from ...types import GenerationRequest
from .. import session
from ..controls import UIContext, coerce, radio, slider
from . import settings as settings_tab  # uifeat


def render(ctx: UIContext) -> SimpleNamespace:
    names = ctx.engine.upscaler_names()
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Image", type="pil", format="png", elem_id="upscale_image")
            upscaler = gr.Dropdown(names, value=names[0], label="Upscaler", elem_id="upscale_upscaler")
            factor = slider("upscale_factor", ctx.engine.limits, "upscale_factor")
            # A1111's "Scale by" / "Scale to" tabs and "Upscaler 2" (scripts/postprocessing_upscale.py)
            mode = radio("upscale_mode", "upscale_mode")
            with gr.Row():
                to_width = slider("upscale_to_width", ctx.engine.limits, "upscale_to_width")
                to_height = slider("upscale_to_height", ctx.engine.limits, "upscale_to_height")
                crop = gr.Checkbox(value=fields.default("upscale_crop"), label=fields.BY_NAME["upscale_crop"].label,
                                   elem_id="upscale_crop")
            with gr.Row():
                upscaler_2 = gr.Dropdown(["None", *names], value=fields.default("upscaler_2"),
                                         label=fields.BY_NAME["upscaler_2"].label, elem_id="upscale_upscaler_2")
                visibility = slider("upscaler_2_visibility", ctx.engine.limits, "upscale_upscaler_2_visibility")
            with gr.Accordion("SD x4 upscaler", open=True):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="upscale_prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="upscale_neg_prompt")
                with gr.Row():
                    noise = slider("noise_level", ctx.engine.limits, "upscale_noise_level")
                    steps = slider("steps", ctx.engine.limits, "upscale_steps")
            with gr.Row():
                run = gr.Button("Upscale", variant="primary", elem_id="upscale_run")
                interrupt = gr.Button("Interrupt", elem_id="upscale_interrupt")
        with gr.Column(scale=1):
            status = gr.HTML(elem_id="upscale_status")
            compare = gr.ImageSlider(label="Before / after", format="png", elem_id="upscale_compare", interactive=False)
            result = gr.File(label="Saved PNG", elem_id="upscale_result", interactive=False)
            infotext = gr.Textbox(label="Info", lines=2, interactive=False, elem_id="upscale_infotext")
    return SimpleNamespace(image=image, upscaler=upscaler, factor=factor, prompt=prompt, negative=negative, noise=noise,
                           steps=steps, run=run, interrupt=interrupt, status=status, compare=compare, result=result,
                           infotext=infotext, mode=mode, to_width=to_width, to_height=to_height, crop=crop,
                           upscaler_2=upscaler_2, visibility=visibility)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    def upscale(data: dict):
        img = data[tab.image]
        if img is None:
            yield {tab.status: session.message_html("Choose an image to upscale first.")}
            return
        request = GenerationRequest(mode="upscale", init_image=img.convert("RGB"), upscaler=data[tab.upscaler],
                                    upscale_factor=coerce("upscale_factor", data[tab.factor]), prompt=data[tab.prompt],
                                    negative_prompt=data[tab.negative], noise_level=coerce("noise_level", data[tab.noise]),
                                    steps=coerce("steps", data[tab.steps]), upscale_mode=data[tab.mode],
                                    upscale_to_width=coerce("upscale_to_width", data[tab.to_width]),
                                    upscale_to_height=coerce("upscale_to_height", data[tab.to_height]),
                                    upscale_crop=bool(data[tab.crop]), upscaler_2=data[tab.upscaler_2],
                                    upscaler_2_visibility=coerce("upscaler_2_visibility", data[tab.visibility]))
        request = request.replace(**settings_tab.output_fields(ctx))  # uifeat: the owner's format and saving
        for update in session.run_job(ctx.queue, request, session.owner_for(data[ctx.token])):
            out = {tab.status: update["status"]}
            job = update.get("result")
            if job is not None and job.result and job.result.images:
                im = job.result.images[0]
                before = img.convert("RGB").resize(im.image.size, Image.LANCZOS)
                out[tab.compare] = (before, im.image)
                out[tab.result] = ctx.publisher.publish(im.path) if im.path else None
                out[tab.infotext] = im.infotext
            yield out

    inputs = {ctx.token, tab.image, tab.upscaler, tab.factor, tab.prompt, tab.negative, tab.noise, tab.steps, tab.mode,
              tab.to_width, tab.to_height, tab.crop, tab.upscaler_2, tab.visibility}
    tab.run.click(upscale, inputs=inputs, outputs=[tab.status, tab.compare, tab.result, tab.infotext],
                  concurrency_limit=None, show_progress="hidden")
    tab.interrupt.click(lambda token: session.interrupt(ctx.queue, token), inputs=[ctx.token], outputs=[tab.status],
                        concurrency_limit=None)
