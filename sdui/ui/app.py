"""The studio page: the checkpoint picker on top, then the tabs. Layout first, wiring last."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr

from ..images.infotext import infotext_to_request_fields
from ..types import ModelKind, SduiError
from . import session
from .controls import UIContext
from .owner import browser_secret
from .page_script import PageScript
from .tabs import history, img2img, models, pnginfo, txt2img, upscale
from .tabs import settings as settings_tab  # uifeat: the Settings tab

STATIC = Path(__file__).resolve().parent / "static"
CSS = (STATIC / "studio.css").read_text(encoding="utf-8")  # layout, whole images, the phone layout, contrast
JS = (STATIC / "studio.js").read_text(encoding="utf-8")  # keys (Ctrl+Enter, Ctrl+Up/Down, Esc), focus, aria-live


def _is_disconnect(exc) -> bool:
    """A page that went away mid-request (closed tab, reload): not a server error."""
    from starlette.requests import ClientDisconnect

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (ClientDisconnect, GeneratorExit, ConnectionResetError)):
            return True
        group = getattr(exc, "exceptions", None)  # an ExceptionGroup from anyio
        if group and all(_is_disconnect(e) for e in group):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class QuietDisconnects(logging.Filter):
    """Drops the tracebacks a closed page leaves (ClientDisconnect in an upload, GeneratorExit in a
    streaming job): the job goes on and saves its images; nothing is wrong with the server."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_disconnect(record.exc_info[1]))


def mount_ui(app, engine, queue, settings, credentials: list[tuple[str, str]]):
    """Mount the studio at / of the server's FastAPI app. Gradio 6 takes theme and CSS here, not in
    Blocks(). The outputs folder is deliberately not an allowed path: its file names are predictable
    (NNNNN-seed.png), so serving it would let any user fetch anyone's images; galleries show
    unguessable copies instead (session.Publisher)."""
    for name in ("uvicorn.error", "gradio", "asyncio"):
        if not any(isinstance(f, QuietDisconnects) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(QuietDisconnects())
    # Uploads are capped like every request body (--max-request-mb).
    demo = build_ui(engine, queue, settings, logout=bool(credentials))
    app = gr.mount_gradio_app(app, demo, path="/", auth=credentials or None,
                              auth_message="sdui: please log in", theme=gr.themes.Soft(), css=CSS, js=JS,
                              footer_links=["api"] if settings.api else [], ssr_mode=False,
                              max_file_size=settings.max_request_mb * 2**20)
    app.add_middleware(PageScript)  # before Gradio's modules: its status tracker's frames, 4 a second (page_script)
    if credentials:
        # For the server's login gate: whose session (if anyone's) a request's cookies hold, decided
        # as Gradio's own routes decide it. Kept here because only ui/ knows Gradio's internals.
        gradio_app = app.routes[-1].app  # the Mount just added

        def session_user(cookies: dict) -> str | None:
            cid = gradio_app.cookie_id
            token = cookies.get(f"access-token-{cid}") or cookies.get(f"access-token-unsecure-{cid}")
            return gradio_app.tokens.get(token) if token else None

        app.state.ui_session_user = session_user
    return app


def download_steps(engine):
    """Fetch the default model into models/Stable-diffusion/ on a thread; yields (status HTML, done)
    about twice a second. One download at a time for the whole server."""
    import threading

    state: dict = {"p": None, "error": None, "done": False}

    def work():
        try:
            engine.download_default_model(on_progress=lambda p: state.update(p=p))
        except SduiError as e:
            state["error"] = str(e)
        finally:
            state["done"] = True

    threading.Thread(target=work, daemon=True, name="sdui-download").start()
    while not state["done"]:
        time.sleep(0.5)
        p = state["p"]
        if p is None:
            yield '<div class="sdui-progress">Connecting to the hub…</div>', False
            continue
        pct = int(p.fraction * 100)
        total = f" of {p.total / 1e9:.2f} GB" if p.total else ""
        eta = f" · ETA {p.eta:.0f}s" if p.eta is not None else ""
        yield session.bar_html(pct, f"Downloading {p.done / 1e9:.2f} GB{total} · {pct}%{eta}"), False
    if state["error"]:
        yield session.message_html(state["error"]), False
    else:
        yield session.message_html("Downloaded and verified. The model is ready.", "info"), True


def no_model_notice(engine) -> str:
    folder = engine.checkpoint_folder()
    exts = ", ".join(sorted(set(engine.CHECKPOINT_EXTENSIONS)))
    return (f"**No model found.** Put a checkpoint ({exts}) or a diffusers folder in `{folder}` "
            f"(or start with `--ckpt PATH_OR_HUB_ID`), then press Refresh. Generate stays disabled until then.")


def build_ui(engine, queue, settings, logout: bool = False) -> gr.Blocks:
    ctx = UIContext(engine=engine, queue=queue, settings=settings, publisher=session.Publisher())
    titles = engine.model_choices()
    default_entry = engine.default_checkpoint() if titles else None
    default = default_entry.name if default_entry else (titles[0][1] if titles else None)
    with gr.Blocks(title="sdui", analytics_enabled=False) as demo:
        ctx.token = gr.BrowserState("", storage_key="sdui-session", secret=browser_secret(settings))  # uifeat: lasts
        with gr.Row():
            ctx.model = gr.Dropdown(titles, value=default, label="Stable Diffusion checkpoint", scale=6,
                                    elem_id="sd_model_checkpoint", allow_custom_value=False)
            ctx.chosen = gr.State([])
            vaes = engine.vae_choices()
            ctx.vae = gr.Dropdown(vaes, value=engine.default_vae_choice(), label="SD VAE", scale=3,
                                  elem_id="sd_vae", visible=len(vaes) > 2, allow_custom_value=False)
            refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id="refresh_checkpoints")
            if logout:  # Gradio's /logout ends the login session and returns to the login page
                gr.HTML('<a href="logout" id="sdui_logout" class="sdui-logout">Log out</a>', scale=0, min_width=70,
                        elem_id="logout_link")
        notice = gr.Markdown("" if titles else no_model_notice(engine), visible=not titles, elem_id="no_model_notice")
        offer = not titles and engine.hub_reachable()
        with gr.Row(visible=offer) as download_row:
            wanted = engine.DEFAULT_DOWNLOAD
            fetch = gr.Button(f"Download {wanted.label} ({wanted.approx_bytes / 1e9:.1f} GB) into {engine.checkpoint_folder()}",
                              variant="primary", elem_id="download_default_model")
        download_status = gr.HTML(elem_id="download_status")
        with gr.Tabs() as ctx.tabs:
            with gr.Tab("txt2img", id="txt2img"):
                t2i = txt2img.render(ctx)
            with gr.Tab("img2img", id="img2img"):
                i2i = img2img.render(ctx)
            with gr.Tab("Upscale", id="upscale"):
                ups = upscale.render(ctx)
            with gr.Tab("PNG Info", id="pnginfo"):
                png = pnginfo.render(ctx)
            with gr.Tab("History", id="history"):
                hist = history.render(ctx)
            with gr.Tab("Models", id="models") as models_tab:
                mdl = models.render(ctx)
            with gr.Tab("Settings", id="settings"):  # uifeat
                sett = settings_tab.render(ctx)

        # ---- wiring -------------------------------------------------------------------------
        for module, tab in ((txt2img, t2i), (img2img, i2i), (upscale, ups), (pnginfo, png), (history, hist),
                            (models, mdl)):
            module.wire(ctx, tab)
        generate_buttons = [t2i.controls.generate, i2i.controls.generate]
        # Everything that acts for this session waits until the page has its session token (on_load):
        # a click before that would have no owner to run, cancel or list jobs under.
        session_buttons = [t2i.controls.interrupt, i2i.controls.interrupt, t2i.controls.skip, i2i.controls.skip, ups.run,
                           ups.interrupt, ups.batch_run, hist.refresh]
        for b in generate_buttons + session_buttons:
            b.interactive = False

        def refresh_models():
            engine.refresh()
            found = engine.model_choices()
            buttons = [gr.update(interactive=bool(found)) for _ in generate_buttons]
            vae_names = engine.vae_choices()
            return [gr.update(choices=found, value=found[0][1] if found else None),
                    gr.update(value="" if found else no_model_notice(engine), visible=not found), *buttons,
                    gr.update(choices=vae_names, visible=len(vae_names) > 2)]

        refresh.click(refresh_models, outputs=[ctx.model, notice, *generate_buttons, ctx.vae])

        def fetch_default():
            for html_text, done in download_steps(engine):
                yield {download_status: html_text}
                if done:
                    models, note, *rest = refresh_models()
                    yield {ctx.model: models, notice: note, **dict(zip(generate_buttons, rest, strict=False)),
                           ctx.vae: rest[-1], download_row: gr.update(visible=False)}

        fetch.click(fetch_default, outputs=[download_status, ctx.model, notice, *generate_buttons, ctx.vae, download_row],
                    concurrency_limit=None, show_progress="hidden")
        wire_sending(ctx, t2i, i2i, ups, png)
        history.wire_sending(ctx, hist, t2i, i2i, ups)  # uifeat: History's Send to ... buttons
        settings_tab.wire(ctx, sett, demo, t2i, i2i)  # uifeat: Settings tab, and what a page starts with

        def on_load(token, request: gr.Request):
            token = token or session.new_token()
            ready = bool(engine.model_choices())
            return (token, *history.gallery_items(ctx, token, request),  # uifeat: the lasting history (and its login)
                    *[gr.update(interactive=ready) for _ in generate_buttons],
                    *[gr.update(interactive=True) for _ in session_buttons])

        # one component carries the (hidden) loading status, not all of them (see generate.wire_generation)
        demo.load(on_load, inputs=[ctx.token], outputs=[ctx.token, hist.gallery, hist.paths, *generate_buttons,
                                                        *session_buttons],
                  concurrency_limit=None, show_progress="hidden", show_progress_on=[hist.gallery])
        # the Models tab tells what is loaded as soon as it is opened (no Refresh needed)
        models_tab.select(lambda: models.status_markdown(ctx), outputs=[mdl.status], show_progress="hidden")
        wire_model_fallback(ctx)
    return demo


def wire_model_fallback(ctx: UIContext) -> None:
    """A checkpoint that has left the list while a page still shows it (its file removed, or refused
    when the folders were read again) fails its job, and the dropdown goes back to the model this
    session used before: the page keeps the session's recent choices here, and Generate
    (``generate.model_fallback``) picks from them when its job fails. (It is done inside Generate, not
    on every change of the status line: that was a server round trip per progress step.)"""

    def remember(model, seen):
        return [model] + [m for m in (seen or []) if m != model][:4]

    ctx.model.change(remember, inputs=[ctx.model, ctx.chosen], outputs=[ctx.chosen], show_progress="hidden")


def _gallery_image(gallery, index):
    """The selected (else first) image of a gallery value, as a PIL image."""
    from PIL import Image

    if not gallery:
        return None
    item = gallery[index if isinstance(index, int) and 0 <= index < len(gallery) else 0]
    path = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(path, dict):
        path = path.get("path") or (path.get("image") or {}).get("path")
    return Image.open(path).convert("RGB") if path else None


def wire_sending(ctx: UIContext, t2i, i2i, ups, png) -> None:
    """"Send to ..." buttons between tabs (each sends the selected image and every parameter its
    infotext holds), and PNG Info -> txt2img / img2img."""
    from ..images.infotext import parse_infotext
    from . import variation_panel
    from .tabs.img2img import MODES, inpaint_from_infotext

    tc, ic = t2i.controls, i2i.controls
    i2i_outputs = [ic.prompt, ic.negative_prompt, ic.steps, ic.sampler, ic.scheduler, ic.cfg_scale, ic.seed, ic.width,
                   ic.height, ic.clip_skip, ctx.model, ctx.vae, ctx.tabs, i2i.editor, i2i.mode, i2i.outputs["status"],
                   i2i.mask_blur, i2i.fill, i2i.mask_mode, i2i.inpaint_area, i2i.padding, *i2i.variation.values()]

    def to_i2i_fields(parsed: dict, img, mode: str) -> dict:
        """Send to img2img / inpaint, from a gallery or from PNG Info: every parameter the infotext holds,
        the image's size, and the mode the button names. As in A1111, where "img2img" and "inpaint" paste
        the same fields (Mask blur, Mask mode, Masked content, Inpaint area, Masked area padding included)
        and only the button picks the sub-tab, the infotext never picks the mode: an inpainted image's
        mask options are filled either way, and Send to img2img still opens plain img2img."""
        out, missing = fill(ic, parsed)
        out.update({**inpaint_from_infotext(i2i, parsed), **variation_panel.from_infotext(i2i.variation, parsed),
                    ctx.tabs: gr.Tabs(selected="img2img"), i2i.mode: mode,
                    i2i.outputs["status"]: session.message_html(missing, "warning") if missing else ""})
        if img is not None:  # the picture itself follows (``picture``), once the tab is open
            out[ic.width], out[ic.height] = img.width - img.width % 8, img.height - img.height % 8
        return out

    def sender(mode: str):
        def send(meta, index, gallery):
            img = _gallery_image(gallery, index)
            index = index if isinstance(index, int) and meta and 0 <= index < len(meta) else 0
            parsed = parse_infotext(meta[index]["infotext"]) if meta and meta[index].get("infotext") else {}
            return to_i2i_fields(parsed, img, mode)
        return send

    def picture(meta, index, gallery):
        img = _gallery_image(gallery, index)
        return {"background": img, "layers": [], "composite": img} if img is not None else gr.update()

    for source in (t2i, i2i):
        gallery_inputs = [source.outputs["images"], source.outputs["selected"], source.gallery]
        # the picture goes in once the img2img tab is open: an editor that was never shown drops a value
        source.to_img2img.click(sender(MODES[0]), inputs=gallery_inputs, outputs=i2i_outputs).then(
            picture, inputs=gallery_inputs, outputs=[i2i.editor], show_progress="hidden")
        source.to_inpaint.click(sender(MODES[1]), inputs=gallery_inputs, outputs=i2i_outputs).then(
            picture, inputs=gallery_inputs, outputs=[i2i.editor], show_progress="hidden")
        source.to_upscale.click(lambda meta, i, g: (_gallery_image(g, i), gr.Tabs(selected="upscale")),
                                inputs=gallery_inputs, outputs=[ups.image, ctx.tabs])

    def fill(target, parsed: dict) -> tuple[dict, str]:
        """The controls an infotext sets, and a sentence when its model is not installed here."""
        fields = infotext_to_request_fields(parsed) if parsed else {}
        out = {}
        names = {"prompt": target.prompt, "negative_prompt": target.negative_prompt, "steps": target.steps,
                 "sampler": target.sampler, "scheduler": target.scheduler, "cfg_scale": target.cfg_scale,
                 "seed": target.seed, "width": target.width, "height": target.height, "clip_skip": target.clip_skip}
        for name, comp in names.items():
            if name in fields:
                out[comp] = fields[name]
        if "sampler" in fields:  # "DPM++ 2M Karras" in old files -> sampler + schedule type
            from ..samplers import resolve

            try:
                sampler, schedule = resolve(fields["sampler"], fields.get("scheduler", "Automatic"))
                out[target.sampler], out[target.scheduler] = sampler.name, schedule
            except ValueError:
                pass
        if parsed and parsed.get("VAE"):  # A1111 writes the VAE file name; select it when we have that file
            try:
                out[ctx.vae] = ctx.engine.find_model(parsed["VAE"], ModelKind.VAE).filename
            except Exception:  # noqa: BLE001 - a VAE we do not have: keep the current choice
                pass
        hint = fields.get("model_hint") or {}
        missing = ""
        for key in (hint.get("hash"), hint.get("name")):
            if not key:
                continue
            try:
                out[ctx.model] = ctx.engine.find_model(key).name
                missing = ""
                break
            except Exception:  # noqa: BLE001 - a model we do not have: keep the current choice
                label = hint.get("name") or hint.get("hash")
                missing = (f"This image was made with the model \"{label}\", which is not installed here; "
                           "the current model is selected instead.")
        return out, missing

    t2i_outputs = [tc.prompt, tc.negative_prompt, tc.steps, tc.sampler, tc.scheduler, tc.cfg_scale, tc.seed, tc.width,
                   tc.height, tc.clip_skip, ctx.model, ctx.vae, ctx.tabs, t2i.outputs["status"], *t2i.variation.values()]
    hires_names = ctx.engine.hires_upscaler_names()  # the Hires. fix accordion's choices, as it was built

    def to_t2i(parsed):
        out, missing = fill(tc, parsed)
        return {**out, **txt2img.fill_hires(t2i.hires, parsed, hires_names),
                **variation_panel.from_infotext(t2i.variation, parsed), ctx.tabs: gr.Tabs(selected="txt2img"),
                t2i.outputs["status"]: session.message_html(missing, "warning") if missing else ""}

    png.to_txt2img.click(to_t2i, inputs=[png.parsed], outputs=t2i_outputs + list(t2i.hires.values()))

    def png_picture(shown):
        return {"background": shown, "layers": [], "composite": shown} if shown is not None else gr.update()

    for button, mode in ((png.to_img2img, MODES[0]), (png.to_inpaint, MODES[1])):
        button.click(lambda parsed, shown, mode=mode: to_i2i_fields(parsed or {}, shown, mode),
                     inputs=[png.parsed, png.shown], outputs=i2i_outputs).then(
            png_picture, inputs=[png.shown], outputs=[i2i.editor], show_progress="hidden")
