"""History: this browser session's saved images, newest first; survives a page reload."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import session
from ..controls import UIContext


def render(ctx: UIContext) -> SimpleNamespace:
    refresh = gr.Button("Refresh", elem_id="history_refresh")
    gallery = gr.Gallery(label="Your images, newest first", format="png", columns=4, height=520,
                         elem_id="history_gallery", interactive=False)
    return SimpleNamespace(refresh=refresh, gallery=gallery)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    def load(token):
        return session.history_items(ctx.queue, session.owner_for(token), ctx.publisher)

    tab.refresh.click(load, inputs=[ctx.token], outputs=[tab.gallery])
