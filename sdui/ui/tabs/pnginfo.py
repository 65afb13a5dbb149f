"""PNG Info: read the parameters of any PNG (ours or A1111's), check the watermark, send the
parameters to txt2img / img2img / inpaint (app.wire_sending)."""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from ..controls import NOT_AN_IMAGE, UIContext, readable


def render(ctx: UIContext) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=1):
            # one picture: the dropped file itself (kept as uploaded, so its text chunks can be read)
            file = readable(gr.Image(label="Drop a PNG here", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                              height=320, elem_id="pnginfo_file"))
            shown = gr.State(None)  # the picture, for Send to img2img / inpaint
        with gr.Column(scale=1):
            infotext = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo_infotext")
            table = gr.HTML(elem_id="pnginfo_table")
            watermark = gr.Textbox(label="Invisible watermark", interactive=False, elem_id="pnginfo_watermark")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
                to_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_to_inpaint")
            parsed = gr.State({})
    return SimpleNamespace(file=file, shown=shown, infotext=infotext, table=table, watermark=watermark,
                           to_txt2img=to_txt2img, to_img2img=to_img2img, to_inpaint=to_inpaint, parsed=parsed)


def read(engine, path):
    if not path:
        return None, "", "", "", {}
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError, SyntaxError):
        return None, "", f"<div class='sdui-message error' role='alert'>{html.escape(NOT_AN_IMAGE)}</div>", "", {}
    info = engine.png_info(img)
    text, params, wm = info["infotext"], info["parameters"], info["watermark"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in params.items()
                   if not k.endswith(("-1", "-2")))
    table = f"<table class='sdui-params'>{rows}</table>" if rows else "<p>No generation parameters in this file.</p>"
    if wm.get("reason"):
        wm_text = f"not checked: image {wm['reason']}"
    else:
        wm_text = (f"{'present' if wm['present'] else 'not found'}: best match {wm['payload']!r}, "
                   f"{wm['score']:.0%} of bits")
    return img.convert("RGB"), text, table, wm_text, params


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    tab.file.change(lambda path: read(ctx.engine, path), inputs=[tab.file],
                    outputs=[tab.shown, tab.infotext, tab.table, tab.watermark, tab.parsed])
