"""img2img's "Depth" part, shown when the selected checkpoint is an SD 2 depth model: the depth map the
model will be conditioned on, computed from the input image by the depth estimator (button), or an
uploaded depth image (bright = near) that replaces it. Empty: the estimator's map is computed at
generation. Kept apart from the img2img tab's layout, which only places it and reads its value."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..types import InvalidRequest

DEPTH_ARCH = "sd2-depth"


def is_depth_model(ctx, name) -> bool:
    """Whether the checkpoint ``name`` (None: the server's default) is an SD 2 depth model."""
    entry = None
    if name:
        entry = next((e for e in ctx.engine.checkpoints() if e.name == name or e.title == name), None)
    else:
        entry = ctx.engine.default_checkpoint()
    return entry is not None and entry.architecture == DEPTH_ARCH


def note(ctx) -> str:
    if ctx.engine.depth_available():
        return "Depth model: the depth map below (computed, or your upload; bright = near) keeps the image's structure."
    return ("Depth model: no depth estimator is installed (put a transformers DPT model such as Intel/dpt-hybrid-midas in "
            "models/depth/), so upload a depth map (bright = near).")


def render(ctx) -> SimpleNamespace:
    with gr.Accordion("Depth", open=True, visible=is_depth_model(ctx, None), elem_id="img2img_depth") as box:
        info = gr.Markdown(note(ctx), elem_id="img2img_depth_note")
        image = gr.Image(label="Depth map (computed, or upload your own)", type="pil", image_mode="L", format="png",
                         elem_id="img2img_depth_map", height=256)
        compute = gr.Button("Compute depth map", elem_id="img2img_depth_compute")
    return SimpleNamespace(box=box, info=info, image=image, compute=compute)


def wire(ctx, depth: SimpleNamespace, image_of) -> None:
    """``image_of(editor_value)`` gives the input image the estimator reads."""

    def show(name):
        return gr.update(visible=is_depth_model(ctx, name)), note(ctx)

    def compute(value):
        try:
            return ctx.engine.depth_preview(image_of(value))
        except InvalidRequest as e:
            raise gr.Error(str(e)) from None

    if ctx.model is not None:
        ctx.model.change(show, inputs=[ctx.model], outputs=[depth.box, depth.info])
    depth.compute.click(compute, inputs=[depth.editor], outputs=[depth.image])
