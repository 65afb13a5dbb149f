"""The Generate/Interrupt/Skip/seed wiring shared by txt2img and img2img."""

from __future__ import annotations

import gradio as gr

from ...types import GenerationRequest, InvalidRequest
from .. import session
from ..controls import GenerationControls, UIContext, token_counter_html
from . import settings as settings_tab  # uifeat


def model_fallback(ctx: UIContext, model, seen):
    """After a failed job: if the chosen checkpoint has left the list (its file removed, or refused
    when the folders were read again), the dropdown's update back to the newest model this session
    used that is still listed (else the first one); None when the choice still stands."""
    choices = ctx.engine.model_choices()
    names = [name for _, name in choices]
    if model in names:
        return None
    back = next((m for m in (seen or []) if m in names), names[0] if names else None)
    return gr.update(choices=choices, value=back)


def wire_generation(ctx: UIContext, c: GenerationControls, mode_fn, extra_fields: dict, outputs: dict) -> None:
    """Generate streams progress, the live preview (in the gallery, at the output's size) and then
    the results; the last result stays until a new image arrives. Interrupt and Skip act on this
    session's job only.

    ``mode_fn(data) -> dict`` returns the request fields that are not in ``c`` (mode, images);
    ``outputs`` is ``render_outputs``'s dict.
    """
    inputs = {ctx.token, ctx.model, ctx.chosen, ctx.vae, *c.request_fields().values(), *extra_fields.values()}
    gallery, status, images, selected = outputs["gallery"], outputs["status"], outputs["images"], outputs["selected"]

    def generate(data: dict):
        try:
            fields = session.request_fields({name: data[comp] for name, comp in c.request_fields().items()})
            fields.update(mode_fn(data))
        except InvalidRequest as e:
            yield {status: session.message_html(session.sentence(e))}
            return
        fields["model"] = data[ctx.model] or None
        fields["vae"] = data[ctx.vae] or None
        fields.update(settings_tab.output_fields(ctx))  # uifeat: the owner's image format and saving (Settings)
        request = GenerationRequest(**fields)
        owner = session.owner_for(data[ctx.token])
        shown_preview = None
        for update in session.run_job(ctx.queue, request, owner):
            out = {status: update["status"]}
            preview = update.get("preview")
            if preview is not None and preview is not shown_preview and update.get("result") is None:
                shown_preview = preview
                size = (request.width - request.width % 8, request.height - request.height % 8)
                out[gallery] = gr.Gallery(value=[(preview.resize(size), f"Preview · {update.get('step_text', '')}")],
                                          selected_index=0)
            if update.get("error"):
                back = model_fallback(ctx, data[ctx.model], data[ctx.chosen])
                if back is not None:
                    out[ctx.model] = back
            job = update.get("result")
            if job is not None and job.result and job.result.images:
                items, meta = session.result_items(job, ctx.publisher)
                out[gallery] = gr.Gallery(value=items, selected_index=0)
                out[images] = meta
                out[selected] = 0
                out[outputs["infotext"]] = meta[0]["infotext"]
            yield out

    # show_progress_on: one component carries this event's (hidden) loading status instead of all six:
    # Gradio's page walks every component that carries one on each status message of every event.
    c.generate.click(generate, inputs=inputs, outputs=[gallery, outputs["infotext"], status, images, selected, ctx.model],
                     concurrency_limit=None, show_progress="hidden", show_progress_on=[status])

    c.interrupt.click(lambda token: session.interrupt(ctx.queue, token) or gr.skip(), inputs=[ctx.token], outputs=[status],
                      concurrency_limit=None, show_progress="hidden")
    if c.skip is not None:
        c.skip.click(lambda token: session.skip(ctx.queue, token) or gr.skip(), inputs=[ctx.token], outputs=[status],
                     concurrency_limit=None, show_progress="hidden")

    def select(meta, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if not meta or index >= len(meta):
            return index, gr.update()
        return index, meta[index]["infotext"]

    gallery.select(select, inputs=[images], outputs=[selected, outputs["infotext"]], show_progress="hidden")
    c.dice.click(lambda: -1, outputs=[c.seed], show_progress="hidden")

    def reuse(meta, index):
        if not meta:
            return -1
        return meta[index if isinstance(index, int) and 0 <= index < len(meta) else 0]["seed"]

    c.recycle.click(reuse, inputs=[images, selected], outputs=[c.seed], show_progress="hidden")
    c.swap.click(lambda w, h: (h, w), inputs=[c.width, c.height], outputs=[c.width, c.height], show_progress="hidden")
    wire_token_counters(ctx, c)


def wire_token_counters(ctx: UIContext, c: GenerationControls) -> None:
    """A1111's "23/75" per prompt box, as you type: the newest text only (``always_last``), counted
    with the shipped tokenizer (no model is loaded); the page never waits for it."""

    def count(text):
        tokens, capacity = ctx.engine.prompt_tokens(text or "")
        return token_counter_html(tokens, capacity)

    for box, counter in ((c.prompt, c.prompt_tokens), (c.negative_prompt, c.negative_tokens)):
        if counter is not None:
            box.change(count, inputs=[box], outputs=[counter], trigger_mode="always_last", show_progress="hidden",
                       concurrency_limit=None)

