"""txt2img's "Refiner" accordion (A1111's labels): a checkpoint that finishes the sampling, and the
fraction of the steps after which it takes over. Kept apart from the txt2img tab's layout."""

from __future__ import annotations

import gradio as gr

from .. import fields
from .controls import coerce, slider

NONE = "None"


def render(ctx) -> dict:
    """{GenerationRequest field: component} of the Refiner controls."""
    names = [name for _, name in ctx.engine.model_choices()]
    with gr.Accordion("Refiner", open=False, elem_id="txt2img_refiner"):
        with gr.Row():
            checkpoint = gr.Dropdown([NONE, *names], value=NONE, label=fields.BY_NAME["refiner_checkpoint"].label,
                                     elem_id="txt2img_refiner_checkpoint")
            switch_at = slider("refiner_switch_at", ctx.engine.limits, "txt2img_refiner_switch_at")
    return {"refiner_checkpoint": checkpoint, "refiner_switch_at": switch_at}


def request_fields(controls: dict, data: dict) -> dict:
    """The request fields of the Refiner controls ("None", or never shown: no refiner)."""
    checkpoint = data[controls["refiner_checkpoint"]]
    switch_at = data[controls["refiner_switch_at"]]
    return {"refiner_checkpoint": "" if checkpoint in (None, NONE) else checkpoint,
            "refiner_switch_at": fields.default("refiner_switch_at") if switch_at is None
            else coerce("refiner_switch_at", switch_at)}
