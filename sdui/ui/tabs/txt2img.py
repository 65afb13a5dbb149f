"""txt2img: prompt in, gallery of saved PNGs and their infotext out."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..controls import UIContext, render_controls, render_outputs
from .generate import wire_generation


def render(ctx: UIContext) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=1):
            controls = render_controls("txt2img", ctx.engine.limits)
        with gr.Column(scale=1):
            outputs = render_outputs("txt2img")
            with gr.Row():
                to_img2img = gr.Button("Send to img2img", elem_id="txt2img_send_to_img2img")
                to_upscale = gr.Button("Send to Upscale", elem_id="txt2img_send_to_upscale")
            selected = gr.State(0)
    return SimpleNamespace(controls=controls, outputs=outputs, gallery=outputs["gallery"], to_img2img=to_img2img,
                           to_upscale=to_upscale, selected=selected)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    wire_generation(ctx, tab.controls, lambda data: {"mode": "txt2img"}, {}, tab.outputs)
    tab.gallery.select(_selected_index, outputs=[tab.selected])


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else 0
