"""A1111's "Extra" seed options beside Seed (txt2img, img2img): Variation seed, Variation strength, Resize
seed from width/height. Kept out of the shared controls so a tab adds it with one line."""

from __future__ import annotations

import gradio as gr

from .. import fields
from ..images.infotext import infotext_to_request_fields
from .controls import coerce, slider

NAMES = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


def render(prefix: str, limits) -> dict:
    """The "Extra" checkbox and its (hidden until ticked) controls; returns {request field: component},
    with the checkbox under "seed_extra"."""
    extra = gr.Checkbox(False, label="Extra", elem_id=f"{prefix}_subseed_show")
    with gr.Group(visible=False, elem_id=f"{prefix}_seed_extras") as group:
        with gr.Row():
            subseed = gr.Number(value=fields.default("subseed"), precision=0, label=fields.BY_NAME["subseed"].label,
                                elem_id=f"{prefix}_subseed", scale=4)
            strength = slider("subseed_strength", limits, f"{prefix}_subseed_strength")
        with gr.Row():
            resize_w = slider("seed_resize_from_w", limits, f"{prefix}_seed_resize_from_w")
            resize_h = slider("seed_resize_from_h", limits, f"{prefix}_seed_resize_from_h")
    extra.change(lambda on: gr.update(visible=bool(on)), inputs=[extra], outputs=[group], queue=False,
                 show_progress="hidden")
    return {"seed_extra": extra, "subseed": subseed, "subseed_strength": strength, "seed_resize_from_w": resize_w,
            "seed_resize_from_h": resize_h}


def request_fields(panel: dict, data: dict) -> dict:
    """The request fields of the panel: its values when "Extra" is ticked, else the defaults (off)."""
    if not data.get(panel["seed_extra"]):
        return {}
    out = {}
    for name in NAMES:
        value = data.get(panel[name])
        if value is None or value == "":
            continue
        out[name] = coerce(name, value)
    return out


def from_infotext(panel: dict, parsed: dict) -> dict:
    """Infotext -> the panel (Send to txt2img): "Extra" ticked with the image's values when its infotext
    has a variation seed or a seed resize (a value it leaves out goes back to off), else unticked."""
    if not panel or not parsed:
        return {}
    got = infotext_to_request_fields(parsed)
    if not any(n in got for n in NAMES):
        return {panel["seed_extra"]: False}
    return {panel["seed_extra"]: True, **{panel[n]: got.get(n, fields.default(n)) for n in NAMES}}
