"""A1111's Styles under the prompts: a multiselect of the styles in ``--styles-file`` that Generate
applies (A1111's rules: ``{prompt}`` is replaced by the prompt, any other style is appended), a button
that writes them into the prompt boxes instead, and "save the current prompts as a style"."""

from __future__ import annotations

import gradio as gr

from .. import styles as styles_mod
from ..types import InvalidRequest
from . import session


def _names(path: str) -> list[str]:
    return [s["name"] for s in styles_mod.read_styles(path)]


def render(prefix: str, settings) -> dict:
    path = settings.styles_file
    with gr.Row():
        chosen = gr.Dropdown(_names(path), value=[], multiselect=True, label="Styles", scale=6,
                             elem_id=f"{prefix}_styles", allow_custom_value=False)
        apply = gr.Button("Apply to prompt", scale=0, min_width=80, size="sm", elem_id=f"{prefix}_style_apply")
        refresh = gr.Button("Refresh", scale=0, min_width=60, size="sm", elem_id=f"{prefix}_style_refresh")
    with gr.Accordion("Save the prompts as a style", open=False, elem_id=f"{prefix}_style_save_box"):
        with gr.Row():
            name = gr.Textbox(label="Style name", scale=4, elem_id=f"{prefix}_style_name")
            save = gr.Button("Save style", scale=0, min_width=100, elem_id=f"{prefix}_style_save")
        message = gr.HTML(elem_id=f"{prefix}_style_message")
    return {"styles": chosen, "apply": apply, "refresh": refresh, "name": name, "save": save, "message": message,
            "path": path}


def applied(panel: dict, prompt: str, negative: str, names) -> tuple[str, str]:
    """The prompts with the chosen styles applied; InvalidRequest for a style no longer in the file."""
    if not names:
        return prompt or "", negative or ""
    try:
        return styles_mod.apply_styles(prompt or "", negative or "", list(names), styles_mod.read_styles(panel["path"]))
    except KeyError as e:
        raise InvalidRequest("styles", e.args[0], f"one of the styles in the styles file: "
                                                  f"{', '.join(_names(panel['path'])) or 'none'}") from None


def request_fields(panel: dict, controls, data: dict) -> dict:
    """For a tab's ``mode_fn``: the prompt and negative prompt with the chosen styles applied at Generate."""
    names = data.get(panel["styles"]) or []
    if not names:
        return {}
    prompt, negative = applied(panel, data.get(controls.prompt), data.get(controls.negative_prompt), names)
    return {"prompt": prompt, "negative_prompt": negative}


def wire(panel: dict, controls) -> None:
    def apply(prompt, negative, names):
        try:
            p, n = applied(panel, prompt, negative, names)
        except InvalidRequest as e:
            return gr.skip(), gr.skip(), gr.skip(), session.message_html(str(e))
        return p, n, [], ""

    panel["apply"].click(apply, inputs=[controls.prompt, controls.negative_prompt, panel["styles"]],
                         outputs=[controls.prompt, controls.negative_prompt, panel["styles"], panel["message"]])
    panel["refresh"].click(lambda: gr.update(choices=_names(panel["path"])), outputs=[panel["styles"]])

    def save(name, prompt, negative):
        try:
            saved = styles_mod.save_style(panel["path"], name, prompt or "", negative or "")
        except ValueError as e:
            return gr.skip(), session.message_html(str(e))
        except OSError as e:
            return gr.skip(), session.message_html(f"The styles file could not be written: {e.strerror or e}")
        return (gr.update(choices=[s["name"] for s in saved]),
                session.message_html(f"Saved the style “{name.strip()}”.", "info"))

    panel["save"].click(save, inputs=[panel["name"], controls.prompt, controls.negative_prompt],
                        outputs=[panel["styles"], panel["message"]])
