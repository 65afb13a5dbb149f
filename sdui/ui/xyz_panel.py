"""A1111's "Script: X/Y/Z plot" under a generation tab's controls: three axes (type + values, A1111's
syntax), "Draw legend", and a button that queues the whole plot as one job with this tab's settings;
progress counts over the whole grid, Interrupt stops it, and the grid then the cells land in the
tab's output gallery."""

from __future__ import annotations

import time

import gradio as gr

from .. import xyz
from ..types import GenerationRequest, InvalidRequest, JobState, SduiError
from . import session
from .controls import coerce
from .tabs import settings as settings_tab
from .tabs.generate import model_fallback

HELP = ("Values: comma lists (1, 2, 3), ranges 1-5, 1-10 (+2), 1-10 [5] (five evenly spaced); Prompt S/R: the first "
        "value is replaced by each value in turn.")


def render(prefix: str, mode: str = "txt2img") -> dict:
    names = xyz.axis_names(mode)
    panel: dict = {}
    with gr.Accordion("Script: X/Y/Z plot", open=False, elem_id=f"{prefix}_xyz"):
        for axis, default in (("x", "Seed"), ("y", xyz.NOTHING), ("z", xyz.NOTHING)):  # A1111's defaults
            with gr.Row():
                panel[f"{axis}_type"] = gr.Dropdown(names, value=default if default in names else xyz.NOTHING,
                                                    label=f"{axis.upper()} type", scale=2,
                                                    elem_id=f"{prefix}_xyz_{axis}_type")
                panel[f"{axis}_values"] = gr.Textbox(label=f"{axis.upper()} values", scale=5,
                                                     elem_id=f"{prefix}_xyz_{axis}_values")
        gr.Markdown(HELP)
        with gr.Row():
            panel["legend"] = gr.Checkbox(True, label="Draw legend", elem_id=f"{prefix}_xyz_legend")
            panel["run"] = gr.Button("Generate X/Y/Z plot", variant="primary", elem_id=f"{prefix}_xyz_generate")
    return panel


def _captions(plan: xyz.Plan, job) -> list[str]:
    cells = plan.cells()
    per_cell = job.request.batch_size * job.request.batch_count
    out = ["X/Y/Z plot"]
    for n, _ in enumerate(job.result.images[1:]):
        ix, iy, iz = cells[min(n // max(per_cell, 1), len(cells) - 1)]
        bits = [lbl[i] for lbl, i in ((plan.labels(0), ix), (plan.labels(1), iy), (plan.labels(2), iz)) if lbl]
        out.append(", ".join(bits))
    return out


def wire(ctx, panel: dict, controls, mode_fn, extra_fields: dict, outputs: dict) -> None:
    """``mode_fn(data)`` and ``extra_fields`` as the tab's Generate uses them (``wire_generation``)."""
    axis_inputs = [panel[k] for k in ("x_type", "x_values", "y_type", "y_values", "z_type", "z_values", "legend")]
    inputs = {ctx.token, ctx.model, ctx.chosen, ctx.vae, *controls.request_fields().values(), *extra_fields.values(),
              *axis_inputs}

    def run(data: dict):
        fields = {name: coerce(name, data[comp]) for name, comp in controls.request_fields().items()}
        try:
            fields.update(mode_fn(data))
            plan = xyz.Plan.parse([(data[panel[f"{a}_type"]], data[panel[f"{a}_values"]] or "") for a in "xyz"],
                                  draw_legend=bool(data[panel["legend"]]), mode=fields.get("mode", "txt2img"))
        except InvalidRequest as e:
            yield {outputs["status"]: session.message_html(str(e))}
            return
        fields["model"] = data[ctx.model] or None
        fields["vae"] = data[ctx.vae] or None
        fields.update(settings_tab.output_fields(ctx))  # the owner's image format and saving
        owner = session.owner_for(data[ctx.token])
        if not owner:
            yield {outputs["status"]: session.message_html(session.NOT_READY)}
            return
        def failed(message: str) -> dict:
            out = {outputs["status"]: session.message_html(message)}
            back = model_fallback(ctx, data[ctx.model], data[ctx.chosen])
            if back is not None:
                out[ctx.model] = back
            return out

        try:
            job = ctx.queue.submit(GenerationRequest(**fields), owner, plan=plan)
        except (SduiError, ValueError) as e:
            yield failed(str(e))
            return
        yield {outputs["status"]: session.message_html(f"X/Y/Z plot: {plan.cell_count} cells queued.", "info")}
        shown, last_preview = None, None
        while not job.wait(session.POLL_SECONDS):
            p = job.progress
            status = session.progress_html(job, ctx.queue.position(job))
            out = {}
            if status != shown:  # only what changed: every update costs the browser, which shares the CPU
                out[outputs["status"]] = shown = status
            if p is not None and p.preview is not None and p.preview is not last_preview:
                last_preview = p.preview  # the live preview in the output area, as Generate shows it
                out[outputs["gallery"]] = gr.Gallery(value=[(p.preview, "Preview")], selected_index=0)
            if out:
                yield out
        out = {}
        if job.state == JobState.FAILED:
            out = failed(job.error or "failed")
        elif job.state == JobState.CANCELLED:
            n = sum(1 for im in job.result.images if not im.partial) if job.result else 0
            out[outputs["status"]] = session.message_html(f"Interrupted: {n} cell image(s) kept, no grid.", "info")
        else:
            images = job.result.images
            items, meta = session.result_items(job, ctx.publisher)
            captions = _captions(plan, job)  # each cell's axis values instead of its seed
            out[outputs["gallery"]] = gr.Gallery(value=[(item, cap) for (item, _), cap in zip(items, captions, strict=False)],
                                                 selected_index=0)
            out[outputs["images"]], out[outputs["selected"]] = meta, 0  # info, Reuse seed, Send follow the selection
            out[outputs["infotext"]] = images[0].infotext
            took = (job.finished or time.time()) - (job.started or job.created)
            w, h = images[0].image.size
            out[outputs["status"]] = session.message_html(
                f"Done: X/Y/Z plot of {plan.cell_count} cells ({w}x{h} grid) in {took:.1f}s.", "info")
        yield out

    result_outputs = [outputs[k] for k in ("gallery", "infotext", "status", "images", "selected")]
    panel["run"].click(run, inputs=inputs, outputs=[*result_outputs, ctx.model],
                       concurrency_limit=None, show_progress="hidden")
