"""A LoRA picker for a generation tab: a dropdown of the LoRAs that fit the selected checkpoint's
architecture; choosing one writes ``<lora:name:1>`` into the prompt, at the text cursor (a small
``js=`` step reads the textarea's caret), else at the end. A tab adds it with one line:
``lora_picker.add(ctx, "txt2img", controls.prompt)``."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .controls import UIContext

LABEL = "LoRA"
# Runs in the browser before ``insert_tag``: puts the tag at the prompt's caret (the textarea keeps it
# after losing focus to the dropdown) and clears the name, so the Python step leaves the text alone;
# without the textarea it passes both on unchanged and ``insert_tag`` appends the tag.
_AT_CURSOR_JS = """
(prompt, name) => {
    const area = document.querySelector('#%s textarea');
    if (!name || !area) return [prompt, name];
    const text = prompt || '';
    const pos = Math.min(Math.max(area.selectionStart ?? text.length, 0), text.length);
    return [splice(text, pos, name), null];
    function splice(text, pos, name) {
        const before = text.slice(0, pos), after = text.slice(pos);
        const left = before && !/[\\s,(\\[]$/.test(before) ? ' ' : '';
        const right = after && !/^[\\s,)\\]]/.test(after) ? ' ' : '';
        return before + left + '<lora:' + name + ':1>' + right + after;
    }
}
"""


def tag(name: str) -> str:
    return f"<lora:{name}:1>"


def insert_tag(prompt: str, name: str | None):
    """``prompt`` with ``<lora:name:1>`` appended (a space between, where needed), and the picker reset
    so the same LoRA can be picked again; nothing changes when no name is given (the browser step
    already put the tag at the cursor)."""
    if not name:
        return prompt, None
    text = prompt or ""
    space = " " if text and not text.endswith((" ", "\n", ",")) else ""
    return text + space + tag(name), None


def choices(ctx: UIContext, model: str | None) -> list[str]:
    return ctx.engine.lora_names(model)


def render(ctx: UIContext, prefix: str) -> SimpleNamespace:
    default = ctx.model.value if ctx.model is not None else None
    picker = gr.Dropdown(choices(ctx, default), value=None, label=LABEL, elem_id=f"{prefix}_lora_picker",
                         allow_custom_value=False, info="Adds <lora:name:1> to the prompt at the cursor")
    return SimpleNamespace(picker=picker)


def wire(ctx: UIContext, picker: SimpleNamespace, prompt: gr.Textbox) -> None:
    picker.picker.input(insert_tag, inputs=[prompt, picker.picker], outputs=[prompt, picker.picker],
                        js=_AT_CURSOR_JS % prompt.elem_id, show_progress="hidden")
    if ctx.model is not None:  # another checkpoint: the LoRAs of its architecture
        ctx.model.change(lambda model: gr.Dropdown(choices=choices(ctx, model), value=None), inputs=[ctx.model],
                         outputs=[picker.picker], show_progress="hidden")


def add(ctx: UIContext, prefix: str, prompt: gr.Textbox) -> SimpleNamespace:
    """The picker under the current layout position, wired to ``prompt`` (the tab's one-line hook)."""
    picker = render(ctx, prefix)
    wire(ctx, picker, prompt)
    return picker
