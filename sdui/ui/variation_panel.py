"""A1111's "Extra" seed options beside Seed: Variation seed, Variation strength (txt2img, img2img), Resize
seed from width/height (txt2img). Kept out of the shared controls so a tab adds it with one line."""

from __future__ import annotations

import gradio as gr

from .. import fields
from ..images.infotext import infotext_to_request_fields
from .controls import coerce, slider

NAMES = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


def render(prefix: str, limits, seed_resize: bool = True) -> dict:
    """The "Extra" checkbox and its (hidden until ticked) controls; returns {request field: component},
    with the checkbox under "seed_extra"; ``seed_resize``: with "Resize seed from" (txt2img's only here)."""
    extra = gr.Checkbox(False, label="Extra", elem_id=f"{prefix}_subseed_show")
    with gr.Group(visible=False, elem_id=f"{prefix}_seed_extras") as group:
        with gr.Row():
            subseed = gr.Number(value=fields.default("subseed"), precision=0, label=fields.BY_NAME["subseed"].label,
                                elem_id=f"{prefix}_subseed", scale=4)
            strength = slider("subseed_strength", limits, f"{prefix}_subseed_strength")
        resize = {}
        if seed_resize:
            with gr.Row():
                resize = {name: slider(name, limits, f"{prefix}_{name}") for name in NAMES[2:]}
    extra.change(lambda on: gr.update(visible=bool(on)), inputs=[extra], outputs=[group], queue=False,
                 show_progress="hidden")
    return {"seed_extra": extra, "subseed": subseed, "subseed_strength": strength, **resize}


def request_fields(panel: dict, data: dict) -> dict:
    """The request fields of the panel: its values when "Extra" is ticked, else the defaults (off)."""
    if not data.get(panel["seed_extra"]):
        return {}
    out = {}
    for name in _names(panel):
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
    names = _names(panel)
    if not any(n in got for n in names):
        return {panel["seed_extra"]: False}
    return {panel["seed_extra"]: True, **{panel[n]: got.get(n, fields.default(n)) for n in names}}


def _names(panel: dict) -> tuple[str, ...]:
    """The request fields this panel has (img2img's has no seed resize)."""
    return tuple(n for n in NAMES if n in panel)
