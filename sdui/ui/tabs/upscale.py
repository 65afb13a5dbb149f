"""Upscale: SD x4 upscaler (prompt + noise level), ESRGAN-family models, Lanczos; before/after."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from ... import fields
from ...types import GenerationRequest
from .. import session
from ..controls import NOT_AN_IMAGE, UIContext, coerce, radio, readable, slider
from . import settings as settings_tab  # uifeat

SD_X4 = "SD x4 upscaler"  # the engine's name for its SD x4 upscaler in upscaler_names(), listed only when installed


def render(ctx: UIContext) -> SimpleNamespace:
    names = ctx.engine.upscaler_names()
    with gr.Row():
        with gr.Column(scale=1):
            image = readable(gr.Image(label="Image", type="pil", format="png", elem_id="upscale_image"))
            upscaler = gr.Dropdown(names, value=names[0], label="Upscaler", elem_id="upscale_upscaler")
            factor = slider("upscale_factor", ctx.engine.limits, "upscale_factor")
            # A1111's "Scale by" / "Scale to" tabs and "Upscaler 2" (scripts/postprocessing_upscale.py)
            mode = radio("upscale_mode", "upscale_mode")
            with gr.Row():
                to_width = slider("upscale_to_width", ctx.engine.limits, "upscale_to_width")
                to_height = slider("upscale_to_height", ctx.engine.limits, "upscale_to_height")
                crop = gr.Checkbox(value=fields.default("upscale_crop"), label=fields.BY_NAME["upscale_crop"].label,
                                   elem_id="upscale_crop")
            with gr.Row():
                upscaler_2 = gr.Dropdown(["None", *names], value=fields.default("upscaler_2"),
                                         label=fields.BY_NAME["upscaler_2"].label, elem_id="upscale_upscaler_2")
                visibility = slider("upscaler_2_visibility", ctx.engine.limits, "upscale_upscaler_2_visibility")
            models = Path(ctx.engine.settings.models_dir)
            gr.Markdown(f"More upscalers: ESRGAN-family models (.pth, .safetensors) go in `{models / 'ESRGAN'}`; "
                        f"the SD x4 upscaler (a diffusers folder) in `{ctx.engine.checkpoint_folder()}`. Then Refresh.",
                        elem_id="upscale_where", elem_classes=["sdui-note"])
            # the SD x4 options only while the SD x4 upscaler is chosen (and only when one is installed)
            with gr.Accordion("SD x4 upscaler", open=True, visible=names[0] == SD_X4) as x4_options:
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="upscale_prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="upscale_neg_prompt")
                with gr.Row():
                    noise = slider("noise_level", ctx.engine.limits, "upscale_noise_level")
                    steps = slider("steps", ctx.engine.limits, "upscale_steps")
            with gr.Row():
                run = gr.Button("Upscale", variant="primary", elem_id="upscale_run")
                interrupt = gr.Button("Interrupt", elem_id="upscale_interrupt")
            with gr.Accordion("Batch: several files", open=False, elem_id="upscale_batch"):
                batch_files = gr.File(label="Images to upscale", file_count="multiple", file_types=["image"],
                                      type="filepath", elem_id="upscale_batch_files")
                batch_run = gr.Button("Upscale all", elem_id="upscale_batch_run")
        with gr.Column(scale=1):
            status = gr.HTML(elem_id="upscale_status")
            compare = gr.ImageSlider(label="Before / after", format="png", elem_id="upscale_compare", interactive=False)
            result = gr.File(label="Saved PNG", elem_id="upscale_result", interactive=False)
            infotext = gr.Textbox(label="Info", lines=2, interactive=False, elem_id="upscale_infotext")
            batch_gallery = gr.Gallery(label="Upscaled (batch)", format="png", columns=4, height=300, object_fit="contain",
                                       buttons=["download", "fullscreen"], elem_id="upscale_batch_gallery",
                                       interactive=False, elem_classes=["sdui-gallery"])
    return SimpleNamespace(batch_files=batch_files, batch_run=batch_run, batch_gallery=batch_gallery, x4_options=x4_options,
                           image=image, upscaler=upscaler, factor=factor, prompt=prompt, negative=negative, noise=noise,
                           steps=steps, run=run, interrupt=interrupt, status=status, compare=compare, result=result,
                           infotext=infotext, mode=mode, to_width=to_width, to_height=to_height, crop=crop,
                           upscaler_2=upscaler_2, visibility=visibility)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    tab.upscaler.change(lambda name: gr.update(visible=name == SD_X4), inputs=[tab.upscaler], outputs=[tab.x4_options],
                        show_progress="hidden")

    def request_for(data: dict, img) -> GenerationRequest:
        # the SD x4 controls are hidden unless it is chosen, and a hidden control that was never shown
        # sends None: that means the field's default
        x4 = {name: fields.default(name) if data[comp] is None else coerce(name, data[comp])
              for name, comp in (("prompt", tab.prompt), ("negative_prompt", tab.negative), ("noise_level", tab.noise),
                                 ("steps", tab.steps))}
        request = GenerationRequest(mode="upscale", init_image=img.convert("RGB"), upscaler=data[tab.upscaler],
                                    upscale_factor=coerce("upscale_factor", data[tab.factor]), **x4,
                                    upscale_mode=data[tab.mode],
                                    upscale_to_width=coerce("upscale_to_width", data[tab.to_width]),
                                    upscale_to_height=coerce("upscale_to_height", data[tab.to_height]),
                                    upscale_crop=bool(data[tab.crop]), upscaler_2=data[tab.upscaler_2],
                                    upscaler_2_visibility=coerce("upscaler_2_visibility", data[tab.visibility]))
        return request.replace(**settings_tab.output_fields(ctx))  # uifeat: the owner's format and saving

    def upscale(data: dict):
        img = data[tab.image]
        if img is None:
            yield {tab.status: session.message_html("Choose an image to upscale first.")}
            return
        for update in session.run_job(ctx.queue, request_for(data, img), session.owner_for(data[ctx.token])):
            out = {tab.status: update["status"]}
            job = update.get("result")
            if job is not None and job.result and job.result.images:
                im = job.result.images[0]
                before = img.convert("RGB").resize(im.image.size, Image.LANCZOS)
                out[tab.compare] = (before, im.image)
                out[tab.result] = ctx.publisher.publish(im.path) if im.path else None
                out[tab.infotext] = im.infotext
            yield out

    def upscale_batch(data: dict):
        """Each chosen file in turn, through the queue; a file that is not an image is named and skipped."""
        paths = data[tab.batch_files] or []
        if not paths:
            yield {tab.status: session.message_html("Choose the images to upscale first.")}
            return
        done, problems = [], []
        for i, path in enumerate(paths, 1):
            name = Path(path).name
            try:
                img = Image.open(path)
                img.load()
            except (OSError, ValueError, SyntaxError):
                problems.append(session.message_html(f"{name}: {NOT_AN_IMAGE}"))
                continue
            for update in session.run_job(ctx.queue, request_for(data, img), session.owner_for(data[ctx.token])):
                out = {tab.status: session.message_html(f"File {i} of {len(paths)}: {name}", "info") + update["status"]
                       + "".join(problems)}
                job = update.get("result")
                if job is not None and job.result and job.result.images and job.result.images[0].path:
                    done.append((ctx.publisher.publish(job.result.images[0].path), name))
                    out[tab.batch_gallery] = list(done)
                yield out
                if update.get("error") or (job is not None and job.state == "cancelled"):
                    return
        yield {tab.status: session.message_html(f"Upscaled {len(done)} of {len(paths)} file(s).", "info")
               + "".join(problems), tab.batch_gallery: list(done)}

    scale_to = {tab.mode, tab.to_width, tab.to_height, tab.crop, tab.upscaler_2, tab.visibility}
    batch_inputs = {ctx.token, tab.batch_files, tab.upscaler, tab.factor, tab.prompt, tab.negative, tab.noise, tab.steps,
                    *scale_to}
    tab.batch_run.click(upscale_batch, inputs=batch_inputs, outputs=[tab.status, tab.batch_gallery],
                        concurrency_limit=None, show_progress="hidden")

    inputs = {ctx.token, tab.image, tab.upscaler, tab.factor, tab.prompt, tab.negative, tab.noise, tab.steps, *scale_to}
    tab.run.click(upscale, inputs=inputs, outputs=[tab.status, tab.compare, tab.result, tab.infotext],
                  concurrency_limit=None, show_progress="hidden")
    tab.interrupt.click(lambda token: session.interrupt(ctx.queue, token) or gr.skip(), inputs=[ctx.token], outputs=[tab.status],
                        concurrency_limit=None)
