"""txt2img: prompt in, gallery of saved PNGs and their infotext out."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..controls import UIContext, render_controls
from .generate import wire_generation


def render(ctx: UIContext) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=1):
            controls = render_controls("txt2img", ctx.settings.max_size)
        with gr.Column(scale=1):
            status = gr.HTML(elem_id="txt2img_status")
            preview = gr.Image(label="Preview", format="png", interactive=False, visible=False, height=160,
                               elem_id="txt2img_preview")
            gallery = gr.Gallery(label="Output", format="png", columns=2, height=420, elem_id="txt2img_gallery",
                                 interactive=False)
            infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="txt2img_infotext")
            with gr.Row():
                to_img2img = gr.Button("Send to img2img", elem_id="txt2img_send_to_img2img")
                to_upscale = gr.Button("Send to Upscale", elem_id="txt2img_send_to_upscale")
            last_seed = gr.State(None)
            selected = gr.State(0)
    return SimpleNamespace(controls=controls, status=status, preview=preview, gallery=gallery, infotext=infotext,
                           to_img2img=to_img2img, to_upscale=to_upscale, last_seed=last_seed, selected=selected)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    wire_generation(ctx, tab.controls, lambda data: {"mode": "txt2img"}, {},
                    {"gallery": tab.gallery, "infotext": tab.infotext, "status": tab.status, "preview": tab.preview,
                     "last_seed": tab.last_seed})
    tab.gallery.select(_selected_index, outputs=[tab.selected])


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else 0
