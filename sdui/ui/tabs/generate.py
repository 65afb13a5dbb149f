"""The Generate/Interrupt/seed wiring shared by txt2img and img2img."""

from __future__ import annotations

import gradio as gr

from ...types import GenerationRequest, InvalidRequest
from .. import session
from ..controls import GenerationControls, UIContext, coerce
from . import settings as settings_tab  # uifeat


def wire_generation(ctx: UIContext, c: GenerationControls, mode_fn, extra_fields: dict, outputs: dict) -> None:
    """Generate streams progress and then the gallery; Interrupt stops this session's job only.

    ``mode_fn(data) -> dict`` returns the request fields that are not in ``c`` (mode, images);
    ``outputs`` holds gallery, infotext, status, preview and last_seed components.
    """
    inputs = {ctx.token, ctx.model, ctx.vae, *c.request_fields().values(), *extra_fields.values()}

    def generate(data: dict):
        fields = {name: coerce(name, data[comp]) for name, comp in c.request_fields().items()}
        try:
            fields.update(mode_fn(data))
        except InvalidRequest as e:
            yield {outputs["status"]: session.message_html(str(e))}
            return
        fields["model"] = data[ctx.model] or None
        fields["vae"] = data[ctx.vae] or None
        fields.update(settings_tab.output_fields(ctx))  # uifeat: the owner's image format and saving (Settings)
        request = GenerationRequest(**fields)
        owner = session.owner_for(data[ctx.token])
        yield {outputs["gallery"]: None, outputs["infotext"]: "", outputs["preview"]: gr.update(value=None, visible=True)}
        for update in session.run_job(ctx.queue, request, owner):
            out = {outputs["status"]: update["status"]}
            if update.get("preview") is not None:
                out[outputs["preview"]] = update["preview"]
            job = update.get("result")
            if job is not None and job.result and job.result.images:
                out[outputs["gallery"]] = session.gallery_items(job, ctx.publisher)
                out[outputs["infotext"]] = job.result.images[0].infotext
                out[outputs["last_seed"]] = job.result.images[0].seed
                out[outputs["preview"]] = gr.update(visible=False)
            yield out

    c.generate.click(generate, inputs=inputs,
                     outputs=[outputs[k] for k in ("gallery", "infotext", "status", "preview", "last_seed")],
                     concurrency_limit=None, show_progress="hidden")

    c.interrupt.click(lambda token: session.interrupt(ctx.queue, token), inputs=[ctx.token], outputs=[outputs["status"]],
                      concurrency_limit=None)
    c.dice.click(lambda: -1, outputs=[c.seed])
    c.recycle.click(lambda last: last if last is not None else -1, inputs=[outputs["last_seed"]], outputs=[c.seed])

