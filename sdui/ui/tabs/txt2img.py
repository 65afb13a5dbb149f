"""txt2img: prompt in, gallery of saved PNGs and their infotext out; A1111's "Hires. fix" accordion
(a second, img2img pass at a larger size) below the controls."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ... import fields, samplers
from ...fields import HR_SAME_SAMPLER, HR_SAME_SCHEDULER
from ...images.infotext import infotext_to_request_fields
from ...types import hires_target
from .. import lora_picker, refiner
from ..controls import UIContext, coerce, render_controls, render_outputs, render_prompt_row, slider
from .generate import wire_generation

from .. import styles_panel, variation_panel, xyz_panel  # uifeat: Styles, variation seed, X/Y/Z plot

HIRES_DENOISING = 0.7  # A1111's txt2img "Denoising strength" slider starts here (its API default is 0.75)


def render(ctx: UIContext) -> SimpleNamespace:
    """A1111's order: prompts and Generate on top, settings on the left, the output beside them
    (on a phone: progress and result first, then the prompt; see the stylesheet)."""
    with gr.Column(elem_classes=["sdui-tab"]):
        top = render_prompt_row("txt2img")
        with gr.Row(elem_classes=["sdui-main"]):
            with gr.Column(scale=1, elem_classes=["sdui-settings"]):
                controls = render_controls("txt2img", ctx.engine.limits, top)
                lora_picker.add(ctx, "txt2img", controls.prompt)
                styles = styles_panel.render("txt2img", ctx.settings)  # uifeat hook
                variation = variation_panel.render("txt2img", ctx.engine.limits)  # uifeat hook
                hires, hires_size = render_hires(ctx)
                refiner_controls = refiner.render(ctx)  # A1111's "Refiner" accordion
                xyz = xyz_panel.render("txt2img")  # uifeat hook
            with gr.Column(scale=1, elem_classes=["sdui-outputs"]):
                outputs = render_outputs("txt2img")
    return SimpleNamespace(controls=controls, outputs=outputs, gallery=outputs["gallery"], to_img2img=outputs["to_img2img"],
                           to_inpaint=outputs["to_inpaint"], to_upscale=outputs["to_upscale"],
                           selected=outputs["selected"], images=outputs["images"], hires=hires, hires_size=hires_size,
                           variation=variation, styles=styles, xyz=xyz, refiner=refiner_controls)


def render_hires(ctx: UIContext) -> tuple[dict, gr.HTML]:
    """A1111's Hires. fix controls (labels, ranges and element ids as its txt2img tab), as
    {GenerationRequest field: component}, and the line that shows the resulting size."""
    limits = ctx.engine.limits
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr"):
        with gr.Row():
            enable = gr.Checkbox(value=fields.default("enable_hr"), label=fields.BY_NAME["enable_hr"].label,
                                 elem_id="txt2img_enable_hr")
            size = gr.HTML("", elem_id="txtimg_hr_finalres")  # A1111's "Upscaled resolution": from WxH to WxH
        with gr.Row():
            upscaler = gr.Dropdown(ctx.engine.hires_upscaler_names(), value=fields.default("hr_upscaler"),
                                   label=fields.BY_NAME["hr_upscaler"].label, elem_id="txt2img_hr_upscaler")
            steps = slider("hr_second_pass_steps", limits, "txt2img_hires_steps")
            strength = slider("denoising_strength", limits, "txt2img_denoising_strength", value=HIRES_DENOISING)
        with gr.Row():
            scale = slider("hr_scale", limits, "txt2img_hr_scale")
            resize_x = slider("hr_resize_x", limits, "txt2img_hr_resize_x")
            resize_y = slider("hr_resize_y", limits, "txt2img_hr_resize_y")
        with gr.Row():
            sampler = gr.Dropdown([HR_SAME_SAMPLER, *samplers.sampler_names()], value=HR_SAME_SAMPLER,
                                  label=fields.BY_NAME["hr_sampler"].label, elem_id="hr_sampler")
            scheduler = gr.Dropdown([HR_SAME_SCHEDULER, *samplers.schedule_names()], value=HR_SAME_SCHEDULER,
                                    label=fields.BY_NAME["hr_scheduler"].label, elem_id="hr_scheduler")
        with gr.Row():
            prompt = gr.Textbox(label=fields.BY_NAME["hr_prompt"].label, lines=2, elem_id="hires_prompt",
                                placeholder="Empty: the same as the prompt")
            negative = gr.Textbox(label=fields.BY_NAME["hr_negative_prompt"].label, lines=2, elem_id="hires_neg_prompt",
                                  placeholder="Empty: the same as the negative prompt")
    hires = {"enable_hr": enable, "hr_upscaler": upscaler, "hr_second_pass_steps": steps, "denoising_strength": strength,
             "hr_scale": scale, "hr_resize_x": resize_x, "hr_resize_y": resize_y, "hr_sampler": sampler,
             "hr_scheduler": scheduler, "hr_prompt": prompt, "hr_negative_prompt": negative}
    return hires, size


def hires_size_text(enable, width, height, scale, resize_x, resize_y) -> str:
    """"from 512x512 to 1024x1024": the first pass's size and the Hires. fix result (both on the
    8 px latent grid, as they are made); empty when Hires. fix is off."""
    if not enable:
        return ""
    try:
        w, h = int(width) - int(width) % 8, int(height) - int(height) % 8
        target = hires_target(w, h, float(scale), int(resize_x), int(resize_y))
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return f"from <span class='resolution'>{w}x{h}</span> to <span class='resolution'>{target.width}x{target.height}</span>"


def hires_request_fields(hires: dict, data: dict) -> dict:
    """The request fields of the Hires. fix controls ("Use same ..." means empty: as the first pass)."""
    # controls inside a closed accordion that were never shown send None: that means the default
    out = {name: fields.default(name) if data[comp] is None else coerce(name, data[comp]) for name, comp in hires.items()}
    same = {"hr_sampler": HR_SAME_SAMPLER, "hr_scheduler": HR_SAME_SCHEDULER}
    for name, value in same.items():
        if out.get(name) in (value, None):
            out[name] = ""
    return out


def fill_hires(hires: dict, parsed: dict, upscalers: list[str]) -> dict:
    """PNG Info -> txt2img for the Hires. fix controls: on when the infotext is a Hires. fix one (A1111's
    paste rule), and then its values, or what A1111 means when a key is left out."""
    if not parsed:
        return {}
    on = fields.hires_in_infotext(parsed)
    out = {hires["enable_hr"]: on}
    if not on:
        return out
    got = infotext_to_request_fields(parsed)
    left_out = {"hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "hr_sampler": HR_SAME_SAMPLER,
                "hr_scheduler": HR_SAME_SCHEDULER, "hr_prompt": "", "hr_negative_prompt": ""}
    for name, comp in hires.items():
        value = got.get(name, left_out.get(name))
        if value is None or name == "enable_hr" or (name == "hr_upscaler" and value not in upscalers):
            continue
        out[comp] = value
    return out


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    hires = tab.hires
    # uifeat: + variation seed, styles; the X/Y/Z plot builds its base request the same way
    def mode_fields(data: dict) -> dict:
        return {"mode": "txt2img", **hires_request_fields(hires, data), **variation_panel.request_fields(tab.variation, data),
                **styles_panel.request_fields(tab.styles, tab.controls, data), **refiner.request_fields(tab.refiner, data)}

    extra_fields = {**hires, **tab.variation, **tab.refiner, "styles": tab.styles["styles"]}
    wire_generation(ctx, tab.controls, mode_fields, extra_fields, tab.outputs)
    styles_panel.wire(tab.styles, tab.controls)  # uifeat
    xyz_panel.wire(ctx, tab.xyz, tab.controls, mode_fields, extra_fields, tab.outputs)  # uifeat
    c = tab.controls
    size_inputs = [hires["enable_hr"], c.width, c.height, hires["hr_scale"], hires["hr_resize_x"], hires["hr_resize_y"]]
    for comp in size_inputs:
        comp.change(hires_size_text, inputs=size_inputs, outputs=[tab.hires_size], show_progress="hidden",
                    queue=False)

