"""History: your images from the outputs folder (``sdui.history``), newest first, across restarts.

Whose images: with ``--gradio-auth`` the login's (the same history on a laptop and a phone), else this
browser's (its session token). Images the index did not see being made (older files, the CLI's) belong
to the server's owner: the first login with ``--gradio-auth``, anyone on a local (not ``--listen``)
server. Each image shows its prompt and key parameters; search by prompt; open one to see it full size
and its infotext, send it to txt2img / img2img / inpaint / Upscale, or delete it (yours only, after a
confirmation)."""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Optional

import gradio as gr

from ...history import NotYours
from ...images.infotext import infotext_to_request_fields, parse_infotext
from .. import session
from ..controls import UIContext
from ..owner import is_server_owner, login_of

LIMIT = 200


# ---- who is asking ------------------------------------------------------------------------------
def viewer(ctx: UIContext, token: Optional[str], request: Optional[gr.Request]) -> Optional[str]:
    """The history owner of this page: ``login:<user>`` with --gradio-auth, else this browser's session."""
    user = login_of(request)
    return f"login:{user}" if user else session.owner_for(token)


def sees_unowned(ctx: UIContext, request: Optional[gr.Request]) -> bool:
    """Images of no known owner are the server owner's: the first login, or anyone on a local server."""
    return is_server_owner(ctx.settings, request)


def sees_everyone(ctx: UIContext) -> bool:
    """--shared-outputs: every user sees every user's images (deleting stays the owner's)."""
    return bool(getattr(ctx.settings, "shared_outputs", False))


def claim(ctx: UIContext, token: Optional[str], request: Optional[gr.Request]) -> None:
    """With a login, this browser's jobs (owned by its session in the queue) join the login's history."""
    user, owner = login_of(request), session.owner_for(token)
    if user and owner:
        ctx.engine.history.alias(owner, f"login:{user}")


# ---- listing ------------------------------------------------------------------------------------
def gallery_items(ctx: UIContext, token, request, query: str = "") -> tuple[list, list[str]]:
    """(gallery value, the relative paths in its order) for this page's viewer."""
    who = viewer(ctx, token, request)
    if not who:
        return [], []
    claim(ctx, token, request)
    entries = ctx.engine.history.items(who, query or "", include_unowned=sees_unowned(ctx, request), limit=LIMIT,
                                       everyone=sees_everyone(ctx))
    out, paths = [], []
    for e in entries:
        try:
            out.append((ctx.publisher.publish(str(ctx.engine.history.full_path(e))), e.caption()))
        except OSError:
            continue  # deleted meanwhile
        paths.append(e.path)
    return out, paths


def render(ctx: UIContext) -> SimpleNamespace:
    with gr.Row():
        search = gr.Textbox(label="Search prompts", placeholder="words of the prompt", scale=6, elem_id="history_search")
        refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id="history_refresh")
    status = gr.HTML(elem_id="history_status")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Your images, newest first", format="png", columns=5, height=560,
                                 object_fit="contain", elem_id="history_gallery", interactive=False, allow_preview=False)
        with gr.Column(scale=2):
            image = gr.Image(label="Full size", type="filepath", format="png", interactive=False, elem_id="history_image")
            info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="history_infotext")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="history_send_txt2img", size="sm")
                to_img2img = gr.Button("Send to img2img", elem_id="history_send_img2img", size="sm")
                to_inpaint = gr.Button("Send to inpaint", elem_id="history_send_inpaint", size="sm")
                to_upscale = gr.Button("Send to Upscale", elem_id="history_send_upscale", size="sm")
            delete = gr.Button("Delete", variant="stop", size="sm", elem_id="history_delete")
            with gr.Row(visible=False) as confirm_row:
                gr.Markdown("Delete this image from the disk for good?")
                confirm = gr.Button("Yes, delete", variant="stop", size="sm", elem_id="history_delete_confirm")
                keep = gr.Button("Keep it", size="sm", elem_id="history_delete_cancel")
    paths = gr.State([])
    selected = gr.State(None)  # the relative path of the open image
    return SimpleNamespace(search=search, refresh=refresh, status=status, gallery=gallery, image=image, info=info,
                           to_txt2img=to_txt2img, to_img2img=to_img2img, to_inpaint=to_inpaint, to_upscale=to_upscale,
                           delete=delete, confirm_row=confirm_row, confirm=confirm, keep=keep, paths=paths,
                           selected=selected)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    def load(token, query, request: gr.Request):
        items, rels = gallery_items(ctx, token, request, query)
        note = "" if items else session.message_html(
            "No images match." if query else "Nothing here yet: the images you generate are listed here.", "info")
        return items, rels, note

    listing = dict(inputs=[ctx.token, tab.search], outputs=[tab.gallery, tab.paths, tab.status],
                   show_progress="hidden")
    tab.refresh.click(load, **listing)
    tab.search.submit(load, **listing)
    tab.search.change(load, **listing, trigger_mode="always_last")

    def on_tab(token, query, request: gr.Request, evt: gr.SelectData):
        if getattr(evt, "value", None) != "History" and getattr(evt, "id", None) != "history":
            return gr.skip(), gr.skip(), gr.skip()
        return load(token, query, request)

    ctx.tabs.select(on_tab, **listing)

    def open_image(token, rels, request: gr.Request, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(rels or []):
            return None, "", None, gr.update(visible=False)
        try:
            e = ctx.engine.history.get(rels[index], viewer(ctx, token, request), sees_unowned(ctx, request),
                                       everyone=sees_everyone(ctx))
        except NotYours as err:
            return None, str(err), None, gr.update(visible=False)
        return str(ctx.engine.history.full_path(e)), e.infotext, e.path, gr.update(visible=False)

    tab.gallery.select(open_image, inputs=[ctx.token, tab.paths], outputs=[tab.image, tab.info, tab.selected,
                                                                          tab.confirm_row])
    tab.delete.click(lambda rel: gr.update(visible=bool(rel)), inputs=[tab.selected], outputs=[tab.confirm_row])
    tab.keep.click(lambda: gr.update(visible=False), outputs=[tab.confirm_row])

    def remove(token, rel, query, request: gr.Request):
        hidden = gr.update(visible=False)
        try:
            ctx.engine.history.delete(rel or "", viewer(ctx, token, request), sees_unowned(ctx, request))
        except NotYours as err:
            return gr.skip(), gr.skip(), session.message_html(str(err)), hidden, gr.skip(), gr.skip(), gr.skip()
        items, rels = gallery_items(ctx, token, request, query)
        return items, rels, session.message_html(f"Deleted {html.escape(rel.split('/')[-1])}.", "info"), hidden, \
            None, "", None

    tab.confirm.click(remove, inputs=[ctx.token, tab.selected, tab.search],
                      outputs=[tab.gallery, tab.paths, tab.status, tab.confirm_row, tab.image, tab.info, tab.selected])


# ---- Send to ... (hooked up by the app once every tab exists) --------------------------------------
def _fields_for(target, parsed: dict) -> dict:
    """Infotext -> the generation controls of ``target`` (a GenerationControls), as PNG Info sends them."""
    from ...samplers import resolve

    got = infotext_to_request_fields(parsed) if parsed else {}
    out = {}
    for name, comp in target.request_fields().items():
        if name in got and name not in ("batch_count", "batch_size"):
            out[comp] = got[name]
    if "sampler" in got:  # "DPM++ 2M Karras" in old files -> sampler + schedule type
        try:
            sampler, schedule = resolve(got["sampler"], got.get("scheduler", "Automatic"))
            out[target.sampler], out[target.scheduler] = sampler.name, schedule
        except ValueError:
            pass
    return out


def _model_for(ctx: UIContext, parsed: dict) -> dict:
    hint = infotext_to_request_fields(parsed).get("model_hint") or {} if parsed else {}
    for key in (hint.get("hash"), hint.get("name")):
        if not key:
            continue
        try:
            return {ctx.model: ctx.engine.find_model(key).name}
        except Exception:  # noqa: BLE001 - a model we do not have: keep the current choice
            continue
    return {}


def _variation_for(target, parsed: dict) -> dict:
    """The "Extra" seed controls of the txt2img or img2img tab from the infotext (ticked when it has a
    variation seed, or a seed resize where the tab has one)."""
    from .. import variation_panel

    return variation_panel.from_infotext(getattr(target, "variation", None), parsed)


def wire_sending(ctx: UIContext, tab: SimpleNamespace, t2i, i2i, ups) -> None:
    """History's Send to txt2img / img2img / inpaint / Upscale: the open image and its parameters."""
    from PIL import Image

    from .img2img import MODES as I2I_MODES, inpaint_from_infotext

    def opened(token, rel, request):
        e = ctx.engine.history.get(rel or "", viewer(ctx, token, request), sees_unowned(ctx, request),
                                   everyone=sees_everyone(ctx))
        return e, parse_infotext(e.infotext) if e.infotext else {}

    def to_txt2img(token, rel, request: gr.Request):
        try:
            e, parsed = opened(token, rel, request)
        except NotYours as err:
            return {tab.status: session.message_html(str(err))}
        return {**_fields_for(t2i.controls, parsed), **_model_for(ctx, parsed), **_variation_for(t2i, parsed),
                ctx.tabs: gr.Tabs(selected="txt2img"), tab.status: ""}

    def to_i2i(mode_index):
        def send(token, rel, request: gr.Request):
            try:
                e, parsed = opened(token, rel, request)
                img = Image.open(ctx.engine.history.full_path(e)).convert("RGB")
            except (NotYours, OSError) as err:
                return {tab.status: session.message_html(str(err) if isinstance(err, NotYours) else
                                                         "That file is not an image we can read (PNG, JPEG, WebP)")}
            return {**_fields_for(i2i.controls, parsed), **_model_for(ctx, parsed), **inpaint_from_infotext(i2i, parsed),
                    **_variation_for(i2i, parsed), i2i.editor: {"background": img, "layers": [], "composite": img},
                    i2i.mode: I2I_MODES[mode_index], ctx.tabs: gr.Tabs(selected="img2img"), tab.status: ""}
        return send

    def to_upscale(token, rel, request: gr.Request):
        try:
            e, _ = opened(token, rel, request)
            img = Image.open(ctx.engine.history.full_path(e)).convert("RGB")
        except (NotYours, OSError) as err:
            return {tab.status: session.message_html(str(err))}
        return {ups.image: img, ctx.tabs: gr.Tabs(selected="upscale"), tab.status: ""}

    inputs = [ctx.token, tab.selected]
    t2i_out = [*t2i.controls.request_fields().values(), ctx.model, ctx.tabs, tab.status,
               *getattr(t2i, "variation", {}).values()]
    i2i_out = [*i2i.controls.request_fields().values(), ctx.model, ctx.tabs, tab.status, i2i.editor, i2i.mode,
               i2i.mask_blur, i2i.fill, i2i.mask_mode, i2i.inpaint_area, i2i.padding, *getattr(i2i, "variation", {}).values()]
    tab.to_txt2img.click(to_txt2img, inputs=inputs, outputs=t2i_out)
    tab.to_img2img.click(to_i2i(0), inputs=inputs, outputs=i2i_out)
    tab.to_inpaint.click(to_i2i(1), inputs=inputs, outputs=i2i_out)  # "Inpaint (paint the mask)", as the galleries send
    tab.to_upscale.click(to_upscale, inputs=inputs, outputs=[ups.image, ctx.tabs, tab.status])
