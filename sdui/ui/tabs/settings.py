"""Settings: the server owner's defaults (``sdui.server_defaults``, kept in ``--settings-file``) and this
browser's own defaults (kept in the browser's localStorage).

The owner's defaults: sampler, steps and size a new page starts with, the live preview frequency, the
file format of saved images (png, jpg, webp; the infotext inside each) and whether images are saved at
all. With ``--gradio-auth`` only the owner (the first login) may change them; others see them read-only.
This browser's defaults: "Remember" takes txt2img's current sampler, schedule type, steps, size and CFG
scale; every new page of this browser then starts with them (before the owner's)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ... import fields, samplers
from ...server_defaults import FORMATS, LABELS, PREVIEW_RANGE
from ...types import InvalidRequest
from .. import session
from ..controls import UIContext, coerce, slider
from ..owner import browser_secret, is_server_owner, server_owner_login

BROWSER_KEYS = ("sampler", "scheduler", "steps", "width", "height", "cfg_scale")


def may_change(ctx: UIContext, request) -> bool:
    """Without logins anyone may (as in A1111); with --gradio-auth only the first login."""
    if server_owner_login(ctx.settings) is None:
        return True
    return is_server_owner(ctx.settings, request)


def output_fields(ctx: UIContext) -> dict:
    """For a UI request: the owner's image format and saving choice."""
    d = ctx.engine.server_defaults()
    return {"save": d.save, "output_format": d.output_format}


def render(ctx: UIContext) -> SimpleNamespace:
    limits = ctx.engine.limits
    d = ctx.engine.server_defaults()
    gr.Markdown("### Server defaults\nFor every page and API client of this server; kept in the settings file.")
    note = gr.HTML(elem_id="settings_owner_note")
    with gr.Row():
        sampler = gr.Dropdown(samplers.sampler_names(), value=d.sampler, label=LABELS["sampler"],
                              elem_id="settings_sampler")
        steps = slider("steps", limits, "settings_steps", value=d.steps)
    with gr.Row():
        width = slider("width", limits, "settings_width", value=d.width)
        height = slider("height", limits, "settings_height", value=d.height)
    with gr.Row():
        preview = gr.Slider(*PREVIEW_RANGE, value=d.preview_every, step=1, label=LABELS["preview_every"],
                            elem_id="settings_preview_every")
        fmt = gr.Radio(list(FORMATS), value=d.output_format, label=LABELS["output_format"],
                       elem_id="settings_output_format")
        save = gr.Checkbox(d.save, label=LABELS["save"], elem_id="settings_save")
    apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply")
    status = gr.HTML(elem_id="settings_status")
    gr.Markdown("### This browser's defaults\nKept in this browser only: new pages here start with txt2img's "
                "sampler, schedule type, steps, size and CFG scale as they were when you pressed Remember.")
    with gr.Row():
        remember = gr.Button("Remember txt2img's current settings", elem_id="settings_browser_save")
        forget = gr.Button("Forget this browser's defaults", elem_id="settings_browser_clear")
    browser_status = gr.HTML(elem_id="settings_browser_status")
    server = {"sampler": sampler, "steps": steps, "width": width, "height": height, "preview_every": preview,
              "output_format": fmt, "save": save}
    return SimpleNamespace(note=note, server=server, apply=apply, status=status, remember=remember, forget=forget,
                           browser_status=browser_status, stored=None)


def wire(ctx: UIContext, tab: SimpleNamespace, demo, t2i, i2i) -> None:
    """Apply / Remember / Forget, and what a page starts with (called by the app once every tab exists)."""
    server = tab.server
    names = list(server)
    # made here, outside the tab: a tab's children are rendered (and a BrowserState read from localStorage)
    # only once the tab is opened, and the page must start with this browser's defaults
    tab.stored = gr.BrowserState({}, storage_key="sdui-defaults", secret=browser_secret(ctx.settings))

    def apply(sampler, steps, width, height, preview_every, output_format, save, request: gr.Request):
        values = (sampler, steps, width, height, preview_every, output_format, save)
        if not may_change(ctx, request):
            return session.message_html(f"Only the server's owner ({server_owner_login(ctx.settings)}) can change "
                                        "these settings.")
        changes = {}
        for name, value in zip(names, values, strict=True):
            changes[name] = coerce(name, value) if name in fields.BY_NAME else value
        changes["preview_every"] = int(changes["preview_every"])
        try:
            d = ctx.engine.set_server_defaults(changes)
        except InvalidRequest as e:
            return session.message_html(str(e))
        except OSError as e:
            return session.message_html(f"The settings file could not be written: {e.strerror or e}")
        return session.message_html(f"Saved. Images are now saved as {d.output_format.upper()}"
                                    f"{'' if d.save else ' (saving to disk is off)'}; new pages start with "
                                    f"{d.sampler}, {d.steps} steps, {d.width}x{d.height}.", "info")

    tab.apply.click(apply, inputs=list(server.values()), outputs=[tab.status])

    tc = t2i.controls
    remembered = [getattr(tc, k) for k in BROWSER_KEYS]

    def remember(*values):
        data = {k: coerce(k, v) for k, v in zip(BROWSER_KEYS, values, strict=True)}
        return data, session.message_html("Remembered for this browser: " + ", ".join(
            f"{fields.BY_NAME[k].label} {v}" for k, v in data.items()), "info")

    tab.remember.click(remember, inputs=remembered, outputs=[tab.stored, tab.browser_status])
    tab.forget.click(lambda: ({}, session.message_html("This browser's defaults are forgotten; new pages start with "
                                                       "the server's.", "info")),
                     outputs=[tab.stored, tab.browser_status])

    targets = [(tc, "txt2img"), (i2i.controls, "img2img")]
    start_outputs = [getattr(c, k) for c, _ in targets for k in BROWSER_KEYS]

    def on_load(stored, request: gr.Request):
        d = ctx.engine.server_defaults()
        mine = stored if isinstance(stored, dict) else {}
        start = {"sampler": d.sampler, "scheduler": fields.default("scheduler"), "steps": d.steps, "width": d.width,
                 "height": d.height, "cfg_scale": fields.default("cfg_scale")}
        for key in BROWSER_KEYS:
            if key in mine:
                start[key] = mine[key]
        allowed = may_change(ctx, request)
        note = "" if allowed else session.message_html(
            f"Only the server's owner ({server_owner_login(ctx.settings)}) can change these; they are shown read-only.",
            "info")
        settings_values = [gr.update(value=getattr(d, name), interactive=allowed) for name in names]
        return [note, *settings_values, gr.update(interactive=allowed),
                *[start[k] for _ in targets for k in BROWSER_KEYS]]

    # one component carries the (hidden) loading status, not all of them (see generate.wire_generation)
    demo.load(on_load, inputs=[tab.stored], outputs=[tab.note, *server.values(), tab.apply, *start_outputs],
              show_progress="hidden", show_progress_on=[tab.note])
