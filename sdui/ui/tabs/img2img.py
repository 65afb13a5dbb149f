"""img2img and inpaint: upload an image or draw on a blank canvas; paint a mask to inpaint.

The editor's background is the uploaded image (or a blank canvas); what is drawn on its layer is
the sketch (img2img uses the composite) or the mask (inpaint uses the background as the image and
the painted strokes as the mask). A1111's inpaint modes: "Inpaint sketch" keeps the colour strokes
in the image and uses them as the mask too; "Inpaint upload" takes the mask from a file.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image

from ...fields import BY_NAME, INPAINT_AREAS, MASK_MODES
from ...images.infotext import infotext_to_request_fields
from ...types import InvalidRequest
from ..controls import (UIContext, readable, coerce, radio, render_controls, render_outputs,
                        render_prompt_row, slider)
from .. import depth, lora_picker
from .generate import wire_generation

from .. import styles_panel, variation_panel, xyz_panel  # uifeat: Styles, variation seed, X/Y/Z plot

MODES = ("img2img (sketch or photo)", "Inpaint (paint the mask)", "Inpaint sketch (colour strokes, also the mask)",
         "Inpaint upload (a mask file)")
INPAINT_MODES = MODES[1:]
RESIZE_TO, RESIZE_BY = "Resize to", "Resize by"
BLANK_CANVAS = (800, 800)  # gr.ImageEditor's canvas_size: the blank canvas one can draw on
BRUSH_COLORS = ["#000000", "#ffffff", "#ff0000", "#00a000", "#0050ff", "#ffd000"]


def render(ctx: UIContext) -> SimpleNamespace:
    """A1111's order: prompts and Generate on top, the canvas and its options below on the left, the
    output beside them; the mask options show only in an inpaint mode."""
    limits = ctx.engine.limits
    with gr.Column(elem_classes=["sdui-tab"]):
        top = render_prompt_row("img2img")
        with gr.Row(elem_classes=["sdui-main"]):
            with gr.Column(scale=1, elem_classes=["sdui-settings"]):
                mode = gr.Radio(list(MODES), value=MODES[0], label="Mode", elem_id="img2img_mode")
                editor = readable(gr.ImageEditor(label="Image (upload, or draw on the blank canvas)", type="pil",
                                        image_mode="RGBA", format="png", elem_id="img2img_editor", height=420,
                                        canvas_size=BLANK_CANVAS,
                                        brush=gr.Brush(default_size=12, colors=BRUSH_COLORS, default_color="#000000",
                                                       color_mode="defaults")))
                mask_file = readable(gr.Image(label="Mask (white: the part to change)", type="pil", image_mode="L", format="png",
                                     sources=["upload", "clipboard"], visible=False, elem_id="img2img_mask_upload",
                                     height=200))
                with gr.Group(visible=False, elem_id="img2img_mask_options") as mask_options:
                    with gr.Row():
                        mask_blur = slider("mask_blur", limits, "img2img_mask_blur")
                        fill = radio("inpainting_fill", "img2img_inpainting_fill")
                        mask_mode = radio("inpainting_mask_invert", "img2img_mask_mode")
                    with gr.Row():
                        inpaint_area = radio("inpaint_full_res", "img2img_inpaint_full_res")
                        padding = slider("inpaint_full_res_padding", limits, "img2img_inpaint_full_res_padding")
                with gr.Row():
                    strength = slider("denoising_strength", limits, "img2img_denoising_strength")
                    resize_mode = radio("resize_mode", "img2img_resize_mode")
                with gr.Row():
                    size_mode = gr.Radio([RESIZE_TO, RESIZE_BY], value=RESIZE_TO, label="Size",
                                         elem_id="img2img_size_mode",
                                         info="Resize to: the width and height below. Resize by: the image's size × the scale.")
                    scale_by = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale",
                                         visible=False)
                    scaled_size = gr.HTML("", elem_id="img2img_scale_by_size", visible=False)
                depth_part = depth.render(ctx)  # an SD 2 depth model's depth map (shown only for such a model)
                controls = render_controls("img2img", limits, top)
                lora_picker.add(ctx, "img2img", controls.prompt)
                styles = styles_panel.render("img2img", ctx.settings)  # uifeat hook
                variation = variation_panel.render("img2img", limits)  # uifeat hook
                xyz = xyz_panel.render("img2img", "img2img")  # uifeat hook
            with gr.Column(scale=1, elem_classes=["sdui-outputs"]):
                outputs = render_outputs("img2img")
    return SimpleNamespace(mode=mode, editor=editor, mask_file=mask_file, mask_options=mask_options, strength=strength,
                           resize_mode=resize_mode, mask_blur=mask_blur, fill=fill, mask_mode=mask_mode,
                           inpaint_area=inpaint_area, padding=padding, depth=depth_part, styles=styles, xyz=xyz,
                           variation=variation,
                           size_mode=size_mode, scale_by=scale_by, scaled_size=scaled_size, controls=controls,
                           outputs=outputs, gallery=outputs["gallery"], images=outputs["images"],
                           selected=outputs["selected"], to_img2img=outputs["to_img2img"],
                           to_inpaint=outputs["to_inpaint"], to_upscale=outputs["to_upscale"])


def inpaint_from_infotext(tab: SimpleNamespace, parsed: dict) -> dict:
    """Infotext -> the inpaint options (Mask blur, Masked content, Mask mode, Inpaint area, Masked area
    padding), for Send to img2img / inpaint. Only for an inpainted image's infotext (it has "Mask blur"):
    a Mask mode or Inpaint area it leaves out is A1111's default, which A1111 does not write."""
    got = infotext_to_request_fields(parsed) if parsed else {}
    if "mask_blur" not in got:
        return {}
    got = {"inpainting_mask_invert": MASK_MODES[0], "inpaint_full_res": INPAINT_AREAS[0], **got}
    out = {}
    for name, comp in (("mask_blur", tab.mask_blur), ("inpainting_fill", tab.fill), ("inpainting_mask_invert", tab.mask_mode),
                       ("inpaint_full_res", tab.inpaint_area), ("inpaint_full_res_padding", tab.padding)):
        field, value = BY_NAME[name], got.get(name)
        if value is not None and (not field.choices or value in field.choices):
            out[comp] = value
    return out


def _strokes_alpha(background: Image.Image, layers) -> np.ndarray:
    alpha = np.zeros((background.height, background.width), dtype=np.uint8)
    for layer in layers:
        if layer is None:
            continue
        a = np.asarray(layer.convert("RGBA").resize(background.size))[:, :, 3]
        alpha = np.maximum(alpha, a)
    return alpha


def editor_to_images(value, inpaint: bool, sketch: bool = False, mask_file=None):
    """(init image, mask or None) from the editor's value. ``inpaint``: the painted strokes are the
    mask and the background the image; ``sketch`` (Inpaint sketch): the image keeps the strokes;
    ``mask_file`` (Inpaint upload): the mask is that picture (white: change)."""
    if not value:
        raise InvalidRequest("init_image", None, "an uploaded image or a drawing on the canvas")
    background, layers, composite = value.get("background"), value.get("layers") or [], value.get("composite")
    if inpaint:
        if background is None:
            raise InvalidRequest("init_image", None, "an uploaded image to inpaint")
        if mask_file is not None:
            mask = mask_file.convert("L").resize(background.size)
            if not np.asarray(mask).any():
                raise InvalidRequest("mask", "empty", "a mask with some white: the part to change")
            return background.convert("RGBA"), mask.point(lambda v: 255 if v >= 128 else 0)
        alpha = _strokes_alpha(background, layers)
        if not alpha.any():
            raise InvalidRequest("mask", "empty", "some painted area: paint over what should change")
        image = composite if sketch and composite is not None else background
        return image.convert("RGBA"), Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8))
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


def round8(n: float) -> int:
    """A size rounded down to the 8 px latent grid, as the image is made (at least 64)."""
    return max(64, int(n) // 8 * 8)


def scaled(value, scale) -> tuple[int, int] | None:
    background = (value or {}).get("background") if isinstance(value, dict) else None
    if background is None:
        return None
    return round8(background.width * float(scale)), round8(background.height * float(scale))


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    c = tab.controls
    extra = {"mode": tab.mode, "editor": tab.editor, "strength": tab.strength, "resize_mode": tab.resize_mode,
             "mask_blur": tab.mask_blur, "fill": tab.fill, "mask_mode": tab.mask_mode, "mask_file": tab.mask_file,
             "size_mode": tab.size_mode, "scale_by": tab.scale_by, "inpaint_area": tab.inpaint_area,
             "padding": tab.padding, "depth_map": tab.depth.image,
             "styles": tab.styles["styles"], **tab.variation}  # uifeat: Styles, variation seed

    def mode_fields(data: dict) -> dict:
        mode = data[tab.mode]
        inpaint = mode in INPAINT_MODES
        image, mask = editor_to_images(data[tab.editor], inpaint, sketch=mode == MODES[2],
                                       mask_file=data[tab.mask_file] if mode == MODES[3] else None)
        if mode == MODES[3] and data[tab.mask_file] is None:
            raise InvalidRequest("mask", None, "a mask file: upload one (white: the part to change)")
        fields = {"mode": "inpaint" if inpaint else "img2img", "init_image": _flatten(image),
                  "denoising_strength": coerce("denoising_strength", data[tab.strength]),
                  "resize_mode": data[tab.resize_mode]}
        if not inpaint and data[tab.depth.image] is not None:  # used by a depth model only
            fields["depth_map"] = data[tab.depth.image]
        if data[tab.size_mode] == RESIZE_BY:
            fields["width"], fields["height"] = round8(image.width * float(data[tab.scale_by])), \
                round8(image.height * float(data[tab.scale_by]))
        if inpaint:
            fields.update(mask=mask, mask_blur=coerce("mask_blur", data[tab.mask_blur]), inpainting_fill=data[tab.fill],
                          inpainting_mask_invert=data[tab.mask_mode], inpaint_full_res=data[tab.inpaint_area],
                          inpaint_full_res_padding=coerce("inpaint_full_res_padding", data[tab.padding]))
        fields.update(styles_panel.request_fields(tab.styles, tab.controls, data))  # uifeat: Styles
        fields.update(variation_panel.request_fields(tab.variation, data))  # uifeat: variation seed
        return fields

    wire_generation(ctx, c, mode_fields, extra, tab.outputs)
    styles_panel.wire(tab.styles, tab.controls)  # uifeat
    xyz_panel.wire(ctx, tab.xyz, tab.controls, mode_fields, extra, tab.outputs)  # uifeat
    tab.depth.editor = tab.editor
    depth.wire(ctx, tab.depth, lambda value: _flatten(editor_to_images(value, False)[0]))

    def show_mode(mode):
        return gr.update(visible=mode in INPAINT_MODES), gr.update(visible=mode == MODES[3])

    tab.mode.change(show_mode, inputs=[tab.mode], outputs=[tab.mask_options, tab.mask_file], show_progress="hidden")

    seen = gr.State(None)  # the size of the last picture the editor got

    def size_of_upload(value, width, height, last):
        """The image's own size (on the 8 px grid) once a picture arrives (one sent from another tab;
        a file chosen in the editor is measured in the page, studio.js): no stretching to 512x512.
        Strokes, and a blank canvas, change nothing."""
        background = (value or {}).get("background") if isinstance(value, dict) else None
        if background is None or _blank_canvas(background):
            return gr.update(), gr.update(), last
        size = list(background.size)
        if size == last:
            return gr.update(), gr.update(), last
        w, h = scaled(value, 1.0)
        return w, h, size

    tab.editor.change(size_of_upload, inputs=[tab.editor, c.width, c.height, seen], outputs=[c.width, c.height, seen],
                      show_progress="hidden", trigger_mode="always_last")

    def show_size_mode(size_mode, value, scale):
        by = size_mode == RESIZE_BY
        return gr.update(visible=by), gr.update(visible=by, value=_scaled_text(value, scale))

    tab.size_mode.change(show_size_mode, inputs=[tab.size_mode, tab.editor, tab.scale_by],
                         outputs=[tab.scale_by, tab.scaled_size], show_progress="hidden")
    tab.scale_by.change(lambda v, s: _scaled_text(v, s), inputs=[tab.editor, tab.scale_by], outputs=[tab.scaled_size],
                        show_progress="hidden", trigger_mode="always_last")


def _blank_canvas(img: Image.Image) -> bool:
    """The editor's own blank canvas (its canvas size, one colour), drawn on without an upload."""
    return img.size == BLANK_CANVAS and all(lo == hi for lo, hi in img.getextrema())


def _scaled_text(value, scale) -> str:
    size = scaled(value, scale)
    return f"Result: {size[0]}x{size[1]}" if size else "Upload an image to see the result size."
