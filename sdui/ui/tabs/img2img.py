"""img2img and inpaint: upload an image or draw on a blank canvas; paint a mask to inpaint.

The editor's background is the uploaded image (or a blank canvas); what is drawn on its layer is
the sketch (img2img uses the composite) or the mask (inpaint uses the background as the image and
the painted strokes as the mask).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image

from ...types import InvalidRequest
from .. import depth
from ..controls import UIContext, coerce, radio, render_controls, render_outputs, slider
from .. import lora_picker
from .generate import wire_generation

from .. import styles_panel, xyz_panel  # uifeat: Styles, X/Y/Z plot

MODES = ("img2img (sketch or photo)", "Inpaint (paint the mask)")


def render(ctx: UIContext) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Radio(list(MODES), value=MODES[0], label="Mode", elem_id="img2img_mode")
            editor = gr.ImageEditor(label="Image (upload, or draw on the blank canvas)", type="pil", image_mode="RGBA",
                                    format="png", elem_id="img2img_editor",
                                    brush=gr.Brush(default_size=24, colors=["#ffffff", "#000000", "#ff0000", "#00a000",
                                                                            "#0050ff"], default_color="#ffffff"))
            with gr.Row():
                strength = slider("denoising_strength", ctx.engine.limits, "img2img_denoising_strength")
                resize_mode = radio("resize_mode", "img2img_resize_mode")
            with gr.Row():
                mask_blur = slider("mask_blur", ctx.engine.limits, "img2img_mask_blur")
                fill = radio("inpainting_fill", "img2img_inpainting_fill")
                mask_mode = radio("inpainting_mask_invert", "img2img_mask_mode")
            with gr.Row():
                inpaint_area = radio("inpaint_full_res", "img2img_inpaint_full_res")
                padding = slider("inpaint_full_res_padding", ctx.engine.limits, "img2img_inpaint_full_res_padding")
            depth_part = depth.render(ctx)  # an SD 2 depth model's depth map (shown only for such a model)
            controls = render_controls("img2img", ctx.engine.limits)
            lora_picker.add(ctx, "img2img", controls.prompt)
            styles = styles_panel.render("img2img", ctx.settings)  # uifeat hook
            xyz = xyz_panel.render("img2img", "img2img")  # uifeat hook
        with gr.Column(scale=1):
            outputs = render_outputs("img2img")
    return SimpleNamespace(mode=mode, editor=editor, strength=strength, resize_mode=resize_mode, mask_blur=mask_blur,
                           fill=fill, mask_mode=mask_mode, inpaint_area=inpaint_area, padding=padding, controls=controls,
                           outputs=outputs, styles=styles, xyz=xyz, depth=depth_part)


def editor_to_images(value, inpaint: bool):
    """(init image, mask or None) from the editor's value."""
    if not value:
        raise InvalidRequest("init_image", None, "an uploaded image or a drawing on the canvas")
    background, layers, composite = value.get("background"), value.get("layers") or [], value.get("composite")
    if inpaint:
        if background is None:
            raise InvalidRequest("init_image", None, "an uploaded image to inpaint")
        alpha = np.zeros((background.height, background.width), dtype=np.uint8)
        for layer in layers:
            if layer is None:
                continue
            a = np.asarray(layer.convert("RGBA").resize(background.size))[:, :, 3]
            alpha = np.maximum(alpha, a)
        if not alpha.any():
            raise InvalidRequest("mask", "empty", "some painted area: paint over what should change")
        return background.convert("RGBA"), Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8))
    image = composite if composite is not None else background
    if image is None:
        raise InvalidRequest("init_image", None, "an uploaded image or a drawing on the canvas")
    return image, None


def _flatten(img: Image.Image) -> Image.Image:
    """Transparent canvas areas become white, as on paper."""
    if img.mode != "RGBA":
        return img.convert("RGB")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img).convert("RGB")


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    extra = {"mode": tab.mode, "editor": tab.editor, "strength": tab.strength, "resize_mode": tab.resize_mode,
             "mask_blur": tab.mask_blur, "fill": tab.fill, "mask_mode": tab.mask_mode,
             "inpaint_area": tab.inpaint_area, "padding": tab.padding, "depth_map": tab.depth.image,
             "styles": tab.styles["styles"]}  # uifeat: Styles

    def mode_fields(data: dict) -> dict:
        inpaint = data[tab.mode] == MODES[1]
        image, mask = editor_to_images(data[tab.editor], inpaint)
        fields = {"mode": "inpaint" if inpaint else "img2img", "init_image": _flatten(image),
                  "denoising_strength": coerce("denoising_strength", data[tab.strength]),
                  "resize_mode": data[tab.resize_mode]}
        if not inpaint and data[tab.depth.image] is not None:  # used by a depth model only
            fields["depth_map"] = data[tab.depth.image]
        if inpaint:
            fields.update(mask=mask, mask_blur=coerce("mask_blur", data[tab.mask_blur]), inpainting_fill=data[tab.fill],
                          inpainting_mask_invert=data[tab.mask_mode], inpaint_full_res=data[tab.inpaint_area],
                          inpaint_full_res_padding=coerce("inpaint_full_res_padding", data[tab.padding]))
        fields.update(styles_panel.request_fields(tab.styles, tab.controls, data))  # uifeat: Styles
        return fields

    wire_generation(ctx, tab.controls, mode_fields, extra, tab.outputs)
    styles_panel.wire(tab.styles, tab.controls)  # uifeat
    xyz_panel.wire(ctx, tab.xyz, tab.controls, mode_fields, extra, tab.outputs)  # uifeat
    tab.depth.editor = tab.editor
    depth.wire(ctx, tab.depth, lambda value: _flatten(editor_to_images(value, False)[0]))
