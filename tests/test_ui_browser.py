"""The web UI in headless Chromium (Debian's, driven by Playwright) against the real server.

Skipped, with the reason, when ``/usr/bin/chromium`` or the ``playwright`` package is missing
(``tests/run.sh`` installs both).

Screenshots: the tests take the pictures the README shows. By default they go to a temporary
folder, or to ``$SDUI_SCREENSHOTS_DIR`` when that is set (e.g. ``test-artifacts/screenshots``,
which git ignores, for CI artifacts), so a test run never changes the checkout. To refresh the
tracked ``docs/*.png`` on purpose::

    SDUI_UPDATE_DOCS_SCREENSHOTS=1 venv/bin/python -m pytest tests/test_ui_browser.py
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdui.images import infotext
from sdui.config import Settings
from sdui.server import create_app
from tests.server_util import client, running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-quic", "--no-first-run", "--disable-sync"]
DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT = 60_000
# The two sizes: the cheap behaviour tests run at both (one server per module either way).
# Tests of the server's work (saving, interrupt, isolation, logins, inpaint pixels) stay at the desktop size:
# the page size does not change them. Painting a mask is a mouse drag on the canvas; a phone's touch
# strokes are not exercised here.
VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}
both_sizes = pytest.mark.parametrize("viewport", list(VIEWPORTS.values()), ids=list(VIEWPORTS))
# the tab row's buttons and, on a phone, the wrapped row of the rest (not Gradio's hidden measuring copies)
TAB_BUTTONS = ".tab-wrapper [role=tablist] button, .tab-wrapper .overflow-dropdown button"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: tests/run.sh installs Debian's chromium"),
]
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    """``screenshot(page, "name.png")``: into docs/ only with SDUI_UPDATE_DOCS_SCREENSHOTS=1, else
    into $SDUI_SCREENSHOTS_DIR or a temporary folder (see the module docstring)."""
    if os.environ.get("SDUI_UPDATE_DOCS_SCREENSHOTS") == "1":
        folder = DOCS
    elif os.environ.get("SDUI_SCREENSHOTS_DIR"):
        folder = Path(os.environ["SDUI_SCREENSHOTS_DIR"])
    else:
        folder = tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = folder / name
        page.screenshot(path=str(path))
        return path

    return take


@pytest.fixture(scope="module")
def ui_server(models_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ui-outputs")
    settings = Settings(models_dir=str(models_root), outputs_dir=str(out), api=True, no_watermark=False)
    app = create_app(settings)
    with running_server(app) as base:
        yield base, app, out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def submit_login(page, user: str, password: str) -> None:
    """Fill the --gradio-auth login form and send it."""
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def open_page(browser, base, viewport=(1400, 1100), login=None, init_script=None):
    """A fresh browser context on the studio, ready to use (``login``: (user, password) for the form;
    ``init_script``: JavaScript run in the page before any of its own scripts)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(base)
    if login is not None:
        submit_login(page, *login)
    page.wait_for_selector("#txt2img_prompt textarea")
    page.wait_for_selector("#txt2img_interrupt:enabled")  # the page has its session token
    return context, page


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def set_text(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea").fill(text)


def pick(page, elem_id: str, option: str) -> None:
    """Choose a dropdown option the way a user does: open the list, click the option. Gradio opens
    the list on focus, so the box is blurred first (a box that still has focus does not reopen on a
    click). Checked after blurring again: the box shows the chosen label only once it is selected.
    Retried, since a busy page can re-render the list while it opens."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator(f"#{elem_id} input")
    item = page.locator(f"#{elem_id} li[role=option][aria-label={option!r}]")
    for _ in range(3):
        box.blur()
        box.click()
        try:
            item.wait_for(state="visible", timeout=15_000)
            item.click(timeout=15_000)
            box.blur()
            page.wait_for_function(f"() => document.querySelector('#{elem_id} input').value === {option!r}",
                                   timeout=15_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    raise AssertionError(f"could not choose {option!r} in #{elem_id}")


TAB_SELECTED = """name => [...document.querySelectorAll('.tab-wrapper button')].some(b =>
    !b.closest('.visually-hidden') && b.innerText.trim() === name && /selected/.test(b.className))"""


def open_tab(page, name: str) -> None:
    """A tab by its name, whether in the tab row or (on a phone) in the wrapped row of the rest, and wait until
    it is the selected one. Gradio moves the selected tab into the first row, so right after a Send to (which
    switches tabs from the server) the rows are still being rearranged and a click can land on the tab that
    just moved under the pointer: then click again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        page.locator(TAB_BUTTONS, has_text=re.compile(f"^{re.escape(name)}$")).locator("visible=true").first.click()
        try:
            page.wait_for_function(TAB_SELECTED, arg=name, timeout=5_000)
            return
        except PlaywrightTimeout:
            page.wait_for_timeout(300)
    raise AssertionError(f"the {name} tab did not open after three clicks")


def small_settings(page, prefix: str, steps: int = 2, size: int = 64) -> None:
    set_number(page, f"{prefix}_steps", steps)
    set_number(page, f"{prefix}_width", size)
    set_number(page, f"{prefix}_height", size)


def wait_infotext(page, prefix: str) -> str:
    page.wait_for_function(
        f"() => {{ const t = document.querySelector('#{prefix}_infotext textarea'); return t && t.value.length > 0; }}")
    return page.locator(f"#{prefix}_infotext textarea").input_value()


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"), key=lambda p: p.stat().st_mtime)


def test_txt2img_generates_shows_and_saves(ui_server, browser, screenshot):
    base, _, out = ui_server
    context, page = open_page(browser, base)
    pick(page, "sd_model_checkpoint", next(t for t in _titles(page) if t.startswith("tiny.safetensors")))
    set_text(page, "txt2img_prompt", "a browser-made lighthouse")
    set_text(page, "txt2img_neg_prompt", "fog")
    small_settings(page, "txt2img")
    set_number(page, "txt2img_seed", 4242)
    before = set(pngs(out))
    page.click("#txt2img_generate")
    text = wait_infotext(page, "txt2img")
    assert text.startswith("a browser-made lighthouse\nNegative prompt: fog\nSteps: 2,") and "Seed: 4242" in text
    page.wait_for_selector("#txt2img_gallery img")
    new = [p for p in pngs(out) if p not in before]
    assert len(new) == 1 and infotext.read_infotext(Image.open(new[0])) == text
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    with client(base) as c:
        served = c.get(src if src.startswith("http") else base + src)
    assert served.status_code == 200 and served.content == new[0].read_bytes(), "the gallery must show the saved PNG"
    screenshot(page, "txt2img.png")
    context.close()


def _titles(page) -> list[str]:
    box = page.locator("#sd_model_checkpoint input")
    box.blur()
    box.click()
    page.wait_for_selector("#sd_model_checkpoint li[role=option]")
    names = page.locator("#sd_model_checkpoint li[role=option]").evaluate_all(
        "els => els.map(e => e.getAttribute('aria-label'))")
    page.keyboard.press("Escape")
    box.blur()
    return names


def upload_to_editor(page, elem_id: str, path) -> None:
    """Upload into the image editor; a file set before the freshly opened tab's editor has wired its
    input is dropped, so wait for the canvas and try again while the placeholder stays."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator(f"#{elem_id} canvas").first.wait_for()
    for _ in range(3):
        page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        try:
            page.locator(f"#{elem_id}").get_by_text("Upload an image").wait_for(state="hidden", timeout=15_000)
            page.wait_for_timeout(500)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the upload never reached #{elem_id}")


def _draw(page, elem_id: str, color_first: bool = False) -> None:
    """Select the brush and drag across the editor's canvas."""
    editor = page.locator(f"#{elem_id}")
    editor.get_by_role("button", name=re.compile("^(Draw|Brush)", re.I)).first.click()
    canvas = editor.locator("canvas").first
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + box["width"] * 0.04 * i, y0 + box["height"] * 0.04 * i, steps=2)
    page.mouse.up()


def test_sketch_on_blank_canvas_then_img2img(ui_server, browser, screenshot):
    base, _, out = ui_server
    context, page = open_page(browser, base)
    open_tab(page, "img2img")
    _draw(page, "img2img_editor")
    set_text(page, "img2img_prompt", "a sketch turned painting")
    small_settings(page, "img2img", steps=4)
    before = set(pngs(out))
    page.click("#img2img_generate")
    text = wait_infotext(page, "img2img")
    assert "Denoising strength: 0.75" in text and "Size: 64x64" in text  # drawing on the blank canvas keeps the size
    new = [p for p in pngs(out) if p not in before]
    assert len(new) == 1 and "img2img-images" in str(new[0])
    screenshot(page, "img2img.png")
    context.close()


def test_paint_a_mask_and_inpaint(ui_server, browser, tmp_path):
    base, _, out = ui_server
    context, page = open_page(browser, base)
    open_tab(page, "img2img")
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src)
    upload_to_editor(page, "img2img_editor", src)
    page.get_by_label("Inpaint (paint the mask)").check()
    _draw(page, "img2img_editor")
    set_text(page, "img2img_prompt", "a patch")
    small_settings(page, "img2img", steps=4)
    set_number(page, "img2img_mask_blur", 0)
    before = set(pngs(out))
    page.click("#img2img_generate")
    text = wait_infotext(page, "img2img")
    assert "Mask blur: 0" in text and "Masked content: original" in text
    (new,) = [p for p in pngs(out) if p not in before]
    result = np.asarray(Image.open(new).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(src).convert("RGB"), dtype=np.int16)
    # the stroke runs diagonally through the middle: the far corners are unmasked and must be kept
    # exactly, the middle was painted and must change
    assert np.array_equal(result[:6, -6:], original[:6, -6:]) and np.array_equal(result[-6:, :6], original[-6:, :6])
    assert not np.array_equal(result[28:36, 28:36], original[28:36, 28:36])
    context.close()


def test_upscale_tab(ui_server, browser, tmp_path, screenshot):
    base, _, out = ui_server
    context, page = open_page(browser, base)
    open_tab(page, "Upscale")
    src = tmp_path / "small.png"
    Image.new("RGB", (32, 24), (10, 200, 60)).save(src)
    page.locator("#upscale_image input[type=file]").set_input_files(str(src))
    page.wait_for_timeout(800)
    pick(page, "upscale_upscaler", "tiny-esrgan")
    set_number(page, "upscale_factor", 2)
    page.click("#upscale_run")
    page.wait_for_function("() => { const t = document.querySelector('#upscale_infotext textarea');"
                           " return t && t.value.includes('Postprocess upscaler: tiny-esrgan'); }")
    saved = [p for p in pngs(out) if "extras-images" in str(p)]
    assert saved and Image.open(saved[-1]).size == (64, 48)
    screenshot(page, "upscale.png")
    context.close()


def test_png_info_send_to_txt2img_reproduces_the_image(ui_server, browser, screenshot):
    base, _, out = ui_server
    context, page = open_page(browser, base)
    pick(page, "sd_model_checkpoint", next(t for t in _titles(page) if t.startswith("other")))
    set_text(page, "txt2img_prompt", "(a red kite:1.2) over hills")
    set_text(page, "txt2img_neg_prompt", "rain")
    small_settings(page, "txt2img", steps=3)
    pick(page, "txt2img_sampler", "DPM++ 2M")
    pick(page, "txt2img_scheduler", "Karras")
    set_number(page, "txt2img_seed", 777)
    before = set(pngs(out))
    page.click("#txt2img_generate")
    wait_infotext(page, "txt2img")
    (first,) = [p for p in pngs(out) if p not in before]
    context.close()

    context, page = open_page(browser, base)  # a fresh page: every field back to its default
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_file input[type=file]").set_input_files(str(first))
    page.wait_for_function("() => { const t = document.querySelector('#pnginfo_infotext textarea');"
                           " return t && t.value.includes('Seed: 777'); }")
    screenshot(page, "pnginfo.png")
    page.click("#pnginfo_send_to_txt2img")
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.includes('kite')")
    assert page.locator("#sd_model_checkpoint input").input_value().startswith("other")
    before = set(pngs(out))
    page.click("#txt2img_generate")
    wait_infotext(page, "txt2img")
    (second,) = [p for p in pngs(out) if p not in before]
    assert second.read_bytes() == first.read_bytes(), "PNG Info -> txt2img must reproduce the image exactly"
    context.close()


def test_interrupt_stops_within_a_step_and_saves_nothing(ui_server, browser, screenshot):
    base, app, out = ui_server
    context, page = open_page(browser, base)
    set_text(page, "txt2img_prompt", "a very long job")
    small_settings(page, "txt2img", steps=150)
    before = set(pngs(out))
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_status .sdui-progress.running")
    screenshot(page, "progress.png")
    page.click("#txt2img_interrupt")
    page.wait_for_selector("#txt2img_status :text('Interrupted')")
    time.sleep(0.5)
    assert [p for p in pngs(out) if p not in before] == []
    assert app.state.queue.running is None
    context.close()


def test_two_users_with_different_models_are_isolated(ui_server, browser, screenshot):
    base, _, out = ui_server
    ctx_a, a = open_page(browser, base)
    ctx_b, b = open_page(browser, base)
    titles = _titles(a)
    pick(a, "sd_model_checkpoint", next(t for t in titles if t.startswith("tiny.safetensors")))
    pick(b, "sd_model_checkpoint", next(t for t in titles if t.startswith("other")))
    for page, prompt in ((a, "alice's apple"), (b, "bob's boat")):
        set_text(page, "txt2img_prompt", prompt)
        small_settings(page, "txt2img", steps=6)
    a.click("#txt2img_generate")
    b.click("#txt2img_generate")
    text_a, text_b = wait_infotext(a, "txt2img"), wait_infotext(b, "txt2img")
    assert text_a.startswith("alice's apple") and "Model: tiny," in text_a
    assert text_b.startswith("bob's boat") and "Model: other," in text_b
    for page, mine, theirs in ((a, "alice", "bob"), (b, "bob", "alice")):
        open_tab(page, "History")
        page.click("#history_refresh")
        page.wait_for_selector("#history_gallery img")
        captions = " ".join(page.locator("#history_gallery").all_inner_texts())
        assert "txt2img" in captions
        srcs = page.locator("#history_gallery img").evaluate_all("els => els.map(e => e.src)")
        with client(base) as c:
            texts = [infotext.read_infotext(Image.open(__import__("io").BytesIO(c.get(s).content))) for s in srcs]
        assert any(t.startswith(f"{mine}'s") for t in texts) and not any(t.startswith(f"{theirs}'s") for t in texts)
    # the outputs folder itself is never served: its names are predictable
    alice_file = next(p for p in pngs(out) if infotext.read_infotext(Image.open(p)).startswith("alice's"))
    with client(base) as c:
        assert c.get(f"{base}/gradio_api/file={alice_file}").status_code in (403, 404)
    b.reload()
    b.wait_for_selector("#txt2img_prompt textarea")
    open_tab(b, "History")
    b.wait_for_selector("#history_gallery img")  # history survives a reload (the session token is kept)
    screenshot(b, "history.png")
    open_tab(b, "Models")
    screenshot(b, "models.png")
    ctx_a.close()
    ctx_b.close()


def test_error_is_a_readable_message_not_a_trace(ui_server, browser):
    base, _, _ = ui_server
    context, page = open_page(browser, base)
    open_tab(page, "img2img")
    set_text(page, "img2img_prompt", "nothing to start from")
    page.click("#img2img_generate")
    page.wait_for_selector("#img2img_status .sdui-message.error")
    text = page.locator("#img2img_status").inner_text()
    assert text.strip() == "Upload an image or draw on the blank canvas first, then Generate." and "Traceback" not in text
    context.close()


def test_auth_refuses_page_upload_and_file_without_login(models_root, tmp_path, browser):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), gradio_auth="ann:pw", api=True)
    app = create_app(settings)
    with running_server(app) as base:
        with client(base) as c:
            page = c.get("/")
            assert "txt2img_prompt" not in page.text
            assert c.get("/config").status_code in (401, 403)
            up = c.post("/gradio_api/upload", files={"files": ("x.png", b"\x89PNG fake", "image/png")})
            assert up.status_code in (401, 403)
            # log in, make an image, then fetch its file URL without the cookie
            assert c.post("/login", data={"username": "ann", "password": "pw"}).status_code in (200, 302, 303)
            assert "txt2img_prompt" in c.get("/config").text
        context, pg = open_page(browser, base, login=("ann", "pw"))
        set_text(pg, "txt2img_prompt", "secret picture")
        small_settings(pg, "txt2img")
        pg.click("#txt2img_generate")
        wait_infotext(pg, "txt2img")
        src = pg.locator("#txt2img_gallery img").first.get_attribute("src")
        url = src if src.startswith("http") else base + src
        assert pg.request.get(url).status == 200
        context.close()
        with client(base) as anonymous:
            assert anonymous.get(url).status_code in (401, 403)


def test_a_wrong_password_keeps_the_user_name_and_the_form_logs_in_with_it(models_root, tmp_path, browser):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), gradio_auth="ann:pw")
    app = create_app(settings)
    with running_server(app) as base:
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT)
        pg.goto(base)
        submit_login(pg, "ann", "wrong")
        pg.wait_for_selector("text=Incorrect Credentials")
        pg.wait_for_function("document.querySelector('input:not([type=password])').value === 'ann'")
        assert pg.get_by_label("password").input_value() == ""
        # only the password typed again: the form's own state has the name back, so this logs in
        pg.get_by_label("password").fill("pw")
        pg.get_by_role("button", name="Login").click()
        pg.wait_for_selector("#txt2img_prompt textarea")
        context.close()


def test_first_start_without_models_explains_and_disables_generate(tmp_path, browser, screenshot):
    empty = tmp_path / "models"
    (empty / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=str(empty), outputs_dir=str(tmp_path / "o"))
    app = create_app(settings)
    with running_server(app) as base:
        context, page = open_page(browser, base)
        notice = page.locator("#no_model_notice").inner_text()
        assert "No model found" in notice and str((empty / "Stable-diffusion").resolve()) in notice
        assert ".safetensors" in notice
        assert page.locator("#txt2img_generate").is_disabled()
        screenshot(page, "no-model.png")
        open_tab(page, "img2img")
        assert page.locator("#img2img_generate").is_disabled()
        open_tab(page, "txt2img")
        # a checkpoint arrives; Refresh finds it and enables Generate
        from tests import tiny

        tiny.save_single_file(tiny.tiny_pipeline(), empty / "Stable-diffusion" / "fresh.safetensors")
        page.click("#refresh_checkpoints")
        page.wait_for_function("() => !document.querySelector('#txt2img_generate').disabled")
        assert page.locator("#sd_model_checkpoint input").input_value().startswith("fresh")
        assert not page.locator("#download_default_model").is_visible(), "offline: no download offered"
        context.close()


def test_first_start_with_fake_hub_offers_the_default_model_and_downloads_it(tmp_path, browser, tiny_pipe, monkeypatch):
    """The hub is played by a local server (tests/test_download.py's FakeHub); the real default
    model is 4 GB and out of reach here."""
    from sdui.models import download
    from tests import tiny
    from tests.test_download import FILE, FakeHub

    src = tmp_path / "src.safetensors"
    tiny.save_single_file(tiny_pipe, src, with_config=False)
    hub = FakeHub(src.read_bytes())
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(download, "DEFAULT_MODEL", FILE)
    models = tmp_path / "models"
    sd = models / "Stable-diffusion"
    sd.mkdir(parents=True)
    tiny.write_config_folder(tiny_pipe, sd / "tiny-sd.config")  # the tiny architecture needs its config beside it
    app = create_app(Settings(models_dir=str(models), outputs_dir=str(tmp_path / "o")))
    try:
        with running_server(app) as base:
            context, page = open_page(browser, base)
            assert page.locator("#txt2img_generate").is_disabled()
            page.click("#download_default_model")
            page.wait_for_selector("#download_status :text('Downloaded and verified')")
            page.wait_for_function("() => !document.querySelector('#txt2img_generate').disabled")
            assert page.locator("#sd_model_checkpoint input").input_value().startswith("tiny-sd")
            assert not page.locator("#download_default_model").is_visible()
            assert (sd / FILE.filename).read_bytes() == src.read_bytes()
            assert not (sd / (FILE.filename + ".part")).exists()
            context.close()
    finally:
        hub.close()


# ---- the studio as people use it (issue 14) ---------------------------------------------------------------

def _shown_vs_natural(page, elem_id: str) -> list[tuple[float, float]]:
    """(natural aspect ratio, shown aspect ratio) of every image the gallery shows: the element's box,
    or, where the image is fitted into its box with object-fit contain, the fitted picture (never cropped)."""
    return page.locator(f"#{elem_id} img").evaluate_all(
        "els => els.filter(e => e.offsetParent !== null && e.naturalWidth > 0).map(e => {"
        "  const n = e.naturalWidth / e.naturalHeight, box = e.clientWidth / e.clientHeight;"
        "  const fit = getComputedStyle(e).objectFit;"
        "  if (fit !== 'contain' && fit !== 'scale-down') return [n, box];"
        "  const s = Math.min(e.clientWidth / e.naturalWidth, e.clientHeight / e.naturalHeight);"
        "  return [n, (e.naturalWidth * s) / (e.naturalHeight * s)]; })")


def _seed_of(text: str) -> int:
    return int(re.search(r"Seed: (\d+)", text).group(1))


@both_sizes
def test_whole_images_info_follows_selection_ctrl_enter_and_token_counter(ui_server, browser, viewport):
    """Keyboard only from a fresh page: the prompt has focus, typing updates the token counter,
    Ctrl+Enter generates; a 64x192 batch of 2 shows whole (uncropped) images; choosing the second
    image shows its infotext and "Reuse seed" takes its seed. On a phone the result sits above the
    prompt and every tab's name is on screen."""
    base, _, _ = ui_server
    context, page = open_page(browser, base, viewport)
    page.wait_for_function("() => document.activeElement && document.activeElement.closest('#txt2img_prompt')")
    page.keyboard.type("a tall lighthouse")
    page.wait_for_function("() => document.querySelector('#txt2img_token_counter').innerText.trim() === '3/75'")
    small_settings(page, "txt2img")
    set_number(page, "txt2img_height", 192)
    set_number(page, "txt2img_batch_size", 2)
    page.locator("#txt2img_prompt textarea").focus()
    if viewport[0] < 500:  # scrolled down so far that the result above the prompt is off the screen
        page.evaluate("() => window.scrollTo(0, document.querySelector('#txt2img_generate').getBoundingClientRect().top"
                      " + window.scrollY)")
        assert page.locator("#txt2img_status").bounding_box()["y"] < 0
    page.keyboard.press("Control+Enter")
    if viewport[0] < 500:  # Generate brings the progress line (and the result below it) on screen
        page.wait_for_function("() => { const t = document.querySelector('#txt2img_status').getBoundingClientRect().top;"
                               " return t >= 0 && t < window.innerHeight / 2; }")
    first = wait_infotext(page, "txt2img")
    page.wait_for_function("() => document.querySelectorAll('#txt2img_gallery img').length >= 2")
    page.wait_for_timeout(500)
    ratios = _shown_vs_natural(page, "txt2img_gallery")
    assert ratios and all(abs(n - 1 / 3) < 1e-6 and abs(s - n) < 0.05 for n, s in ratios), ratios
    page.locator("#txt2img_gallery button[aria-label='Thumbnail 2 of 2']:visible").first.click()
    page.wait_for_function("() => !document.querySelector('#txt2img_infotext textarea').value"
                           f".includes('Seed: {_seed_of(first)},')")
    second = page.locator("#txt2img_infotext textarea").input_value()
    assert _seed_of(second) == _seed_of(first) + 1
    page.click("#txt2img_reuse_seed")
    page.wait_for_function(f"() => document.querySelector('#txt2img_seed input').value === '{_seed_of(second)}'")
    if viewport[0] < 500:
        out_top = page.locator("#txt2img_gallery").bounding_box()["y"]
        assert out_top < page.locator("#txt2img_prompt").bounding_box()["y"], "the result sits above the prompt"
        shown = page.locator(".tab-wrapper [role=tablist] button, .tab-wrapper .overflow-dropdown button").evaluate_all(
            "els => els.filter(e => { const r = e.getBoundingClientRect();"
            " return r.width > 20 && r.height > 10 && r.left >= 0 && r.right <= window.innerWidth; })"
            ".map(e => e.innerText.trim())")
        assert set(shown) >= {"txt2img", "img2img", "Upscale", "PNG Info", "History", "Models"}, shown
    context.close()


def test_an_idle_page_gives_the_status_tracker_4_frames_a_second_not_60(ui_server, browser):
    """Gradio's status tracker keeps a requestAnimationFrame loop running on an idle page (the page-load
    tracker's); sdui.ui.page_script spaces its frames to 4 a second. A counter installed before any page
    script sees which frame requests reach the browser straight from the tracker: about 120 in 2 s
    without the spacing, none with it; the tracker still gets its spaced frames."""
    base, _, _ = ui_server
    context, page = open_page(browser, base, init_script="""(() => { window.__tracker = 0;
        const real = window.requestAnimationFrame.bind(window);
        window.requestAnimationFrame = (f) => { if ((new Error().stack || "").includes("/statustracker-")) window.__tracker++;
                                                return real(f); }; })()""")
    page.wait_for_timeout(1000)
    before = page.evaluate("() => [window.__tracker, window.sduiSpacedFrames || 0]")
    page.wait_for_timeout(2000)
    after = page.evaluate("() => [window.__tracker, window.sduiSpacedFrames || 0]")
    straight, spaced = after[0] - before[0], after[1] - before[1]
    assert straight == 0, f"{straight} frame requests straight from the status tracker in 2 s"
    assert 1 <= spaced <= 12, f"{spaced} spaced frames in 2 s (4 a second expected)"
    # any other caller is not delayed: its request reaches the browser at once
    assert page.evaluate("() => requestAnimationFrame(() => {}) > 0")
    context.close()


def test_models_tab_on_a_phone_reads_without_sideways_scrolling(ui_server, browser):
    base, _, _ = ui_server
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(base)
    page.wait_for_selector("#txt2img_interrupt:enabled")
    page.locator(".tab-wrapper .overflow-dropdown button").filter(has_text="Models").first.click()  # the second tab row
    page.wait_for_selector("#models_table table.sdui-models tbody tr")
    sizes = page.evaluate("""() => { const t = document.querySelector('#models_table');
        const rows = [...t.querySelectorAll('tbody tr')].map(r => r.getBoundingClientRect());
        return {scroll: t.scrollWidth, client: t.clientWidth, page: document.documentElement.scrollWidth,
                rows: rows.length, right: Math.max(...rows.map(r => r.right)),
                label: getComputedStyle(t.querySelector('tbody td'), '::before').content}; }""")
    assert sizes["rows"] >= 3 and sizes["scroll"] <= sizes["client"] and sizes["page"] <= 390, sizes
    assert sizes["right"] <= 390, sizes  # each model is a card within the screen
    assert sizes["label"] == '"title: "', sizes  # every line names its column
    context.close()


@both_sizes
def test_send_to_img2img_copies_every_field_and_upload_sets_the_size(ui_server, browser, tmp_path, viewport):
    base, _, _ = ui_server
    context, page = open_page(browser, base, viewport)
    set_text(page, "txt2img_prompt", "a kite, sent on")
    set_text(page, "txt2img_neg_prompt", "rain")
    small_settings(page, "txt2img", steps=3)
    set_number(page, "txt2img_height", 96)
    set_number(page, "txt2img_cfg_scale", 5)
    set_number(page, "txt2img_seed", 99)
    pick(page, "txt2img_sampler", "DPM++ 2M")
    pick(page, "txt2img_scheduler", "Karras")
    page.click("#txt2img_generate")
    wait_infotext(page, "txt2img")
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function("() => document.querySelector('#img2img_prompt textarea')?.value === 'a kite, sent on'")
    page.wait_for_timeout(500)
    got = {name: page.locator(f"#img2img_{name} input").first.input_value()
           for name in ("steps", "cfg_scale", "seed", "width", "height", "sampler", "scheduler")}
    assert got == {"steps": "3", "cfg_scale": "5", "seed": "99", "width": "64", "height": "96", "sampler": "DPM++ 2M",
                   "scheduler": "Karras"}, got
    assert page.locator("#img2img_neg_prompt textarea").input_value() == "rain"
    page.wait_for_timeout(2000)  # the sent picture's own events settle before the next upload
    # an upload of another size sets Width/Height to it (rounded down to the 8 px grid): no stretching
    src = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (132, 200, 3), dtype=np.uint8)).save(src)
    page.locator("#img2img_editor input[type=file]").set_input_files(str(src))
    page.wait_for_function("() => document.querySelector('#img2img_width input').value === '200' && "
                           "document.querySelector('#img2img_height input').value === '128'")
    page.click("#img2img_generate")
    text = wait_infotext(page, "img2img")
    assert "Size: 200x128" in text and "Seed: 99" in text
    context.close()


def test_a_too_long_seed_is_refused_in_a_sentence_and_the_last_result_stays(ui_server, browser):
    base, _, _ = ui_server
    context, page = open_page(browser, base)
    small_settings(page, "txt2img")
    page.click("#txt2img_generate")
    wait_infotext(page, "txt2img")
    shown = page.locator("#txt2img_gallery img").first.get_attribute("src")
    set_number(page, "txt2img_seed", "12345678901234567890123")
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_status .sdui-message.error")
    assert page.locator("#txt2img_status").inner_text().strip() == "The seed must be at most 4294967295."
    assert page.locator("#txt2img_gallery img").first.get_attribute("src") == shown, "the last result stays"
    context.close()


@both_sizes
def test_a_file_that_is_not_an_image_gets_one_sentence(ui_server, browser, tmp_path, viewport):
    """Upscale and PNG Info answer a file PIL cannot read with our sentence, never Gradio's
    "Could not preprocess input component" trace."""
    from sdui.ui.controls import NOT_AN_IMAGE

    base, _, _ = ui_server
    context, page = open_page(browser, base, viewport)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is a shopping list, not a picture\n" * 20)
    open_tab(page, "Upscale")
    page.locator("#upscale_image input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(800)
    page.click("#upscale_run")
    page.get_by_text(NOT_AN_IMAGE).first.wait_for()
    # batch upscaling: the readable file is upscaled, the other one is named with the same sentence
    good = tmp_path / "small.png"
    Image.new("RGB", (24, 16), (200, 30, 30)).save(good)
    page.locator("#upscale_batch").get_by_text("Batch: several files").click()
    page.locator("#upscale_batch_files input[type=file]").set_input_files([str(good), str(bad)])
    page.wait_for_timeout(800)
    page.click("#upscale_batch_run")
    page.locator("#upscale_status").get_by_text("Upscaled 1 of 2 file(s).").wait_for()
    assert f"notes.png: {NOT_AN_IMAGE}" in page.locator("#upscale_status").inner_text()
    page.wait_for_selector("#upscale_batch_gallery img")
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_file input[type=file]").set_input_files(str(bad))
    page.get_by_text(NOT_AN_IMAGE).locator("visible=true").first.wait_for()
    assert "preprocess" not in page.content()
    context.close()



INPAINTED = ("a patched fox\nSteps: 2, Sampler: Euler a, Seed: 5, Size: 64x48, Denoising strength: 0.6, Mask blur: 8, "
             "Masked content: latent noise, Inpaint area: Only masked, Masked area padding: 48")


@both_sizes
def test_png_info_send_to_inpaint_opens_inpaint_and_send_to_img2img_plain_img2img(ui_server, browser, tmp_path, viewport):
    """An inpainted image's PNG: Send to inpaint opens the inpaint mode with its mask options; Send to
    img2img opens plain img2img (as A1111: the button picks the mode), both with the picture and its size."""
    from playwright.sync_api import expect
    from PIL.PngImagePlugin import PngInfo

    base, _, _ = ui_server
    src = tmp_path / "inpainted.png"
    meta = PngInfo()
    meta.add_text("parameters", INPAINTED)
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(src, pnginfo=meta)
    context, page = open_page(browser, base, viewport)
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_file input[type=file]").set_input_files(str(src))
    page.wait_for_function("() => document.querySelector('#pnginfo_infotext textarea').value.includes('Mask blur: 8')")
    page.click("#pnginfo_send_to_inpaint")
    page.wait_for_function("() => document.querySelector('#img2img_prompt textarea')?.value === 'a patched fox'")
    page.get_by_label("Inpaint (paint the mask)").wait_for()
    page.wait_for_function("() => document.querySelector('#img2img_mask_blur input[type=number]')?.value === '8'")
    assert page.get_by_label("Inpaint (paint the mask)").is_checked()
    assert page.locator("#img2img_mask_options").locator("visible=true").count() > 0  # (Gradio gives a Group's id twice)
    assert page.get_by_role("radio", name="Only masked").is_checked()
    page.locator("#img2img_editor").get_by_text("Upload an image").wait_for(state="hidden")  # the picture is in
    assert (page.locator("#img2img_width input").first.input_value(), page.locator("#img2img_height input").first.input_value()) \
        == ("64", "48")
    open_tab(page, "PNG Info")
    page.click("#pnginfo_send_to_img2img")
    expect(page.get_by_role("radio", name="img2img (sketch or photo)")).to_be_checked()
    page.locator("#img2img_editor").first.wait_for(state="visible")  # the img2img tab is open again
    page.wait_for_function("() => [...document.querySelectorAll('#img2img_mask_options')].every(e => e.offsetParent === null)")
    context.close()


@both_sizes
def test_generation_tabs_order_on_each_screen(ui_server, browser, viewport):
    """Phone (Fooocus's order): progress, result and its Send-to buttons right above the prompt, the
    Generation info right below Generate, then the settings. Desktop (A1111's): the output column
    beside the settings, under the prompt row."""
    base, _, _ = ui_server
    context, page = open_page(browser, base, viewport)
    for tab in ("txt2img", "img2img"):
        open_tab(page, tab)
        page.wait_for_selector(f"#{tab}_steps")

        def box(selector):
            return page.locator(selector).first.bounding_box()

        status, gallery, send = box(f"#{tab}_status"), box(f"#{tab}_gallery"), box(f"#{tab}_send_to_img2img")
        prompt, generate, info = box(f"#{tab}_prompt"), box(f"#{tab}_generate"), box(f"#{tab}_infotext")
        settings = box(f"#{tab}_editor" if tab == "img2img" else f"#{tab}_sampler")
        if viewport[0] < 500:
            assert status["y"] <= gallery["y"] < send["y"] < prompt["y"], (tab, status, gallery, send, prompt)
            assert prompt["y"] - (send["y"] + send["height"]) < 80, "the result sits right above the prompt"
            assert generate["y"] + generate["height"] <= info["y"] < settings["y"], (tab, generate, info, settings)
        else:
            assert gallery["x"] > settings["x"] + settings["width"] - 1, "the output beside the settings"
            assert gallery["y"] > prompt["y"] and info["y"] > gallery["y"]
    context.close()


# WCAG 2 contrast of every visible label-like text and placeholder: the text colour (its alpha and the
# opacity of its ancestors blended in) against the effective background (the ancestors' backgrounds,
# composited up to the first opaque one; white beyond). A progress text is also checked on its bar.
CONTRAST_JS = """() => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) throw new Error('colour ' + c);
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (fg, bg) => { const a = lum(over(fg, bg)), b = lum(bg);
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); };
  const background = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]); };
  const opacity = el => { let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity); return o; };
  const visible = el => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) && el.getClientRects().length > 0;
  const where = el => ((el.closest('[id]') || {}).id || '') + ' ' + el.tagName.toLowerCase() + ' ' + JSON.stringify(
    (el.placeholder || el.textContent).trim().slice(0, 40));
  const out = [];
  const texts = document.querySelectorAll('label, label *, [data-testid=block-info], [data-testid=block-label], .info-text,'
    + ' .label-wrap, .label-wrap *, .sdui-message, .sdui-progress span, .sdui-token-counter *');
  for (const el of texts) {
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()) || !visible(el)) continue;
    const fg = parse(getComputedStyle(el).color); fg[3] *= opacity(el);
    const bg = background(el); let r = ratio(fg, bg);
    const bar = el.closest('.sdui-progress')?.querySelector('.bar');
    if (bar) r = Math.min(r, ratio(fg, over(parse(getComputedStyle(bar).backgroundColor), bg)));
    out.push([where(el), r]); }
  for (const el of document.querySelectorAll('textarea[placeholder], input[placeholder]')) {
    if (!el.placeholder || !visible(el)) continue;
    const s = getComputedStyle(el, '::placeholder'); const fg = parse(s.color); fg[3] *= Number(s.opacity) * opacity(el);
    out.push(['placeholder ' + where(el), ratio(fg, background(el))]); }
  return out; }"""
# what the status line shows (messages of each kind, the progress bar) and a token counter past 75
SAMPLES_JS = """() => {
  document.querySelector('#txt2img_status').insertAdjacentHTML('beforeend',
    "<div class='sdui-message error'>An error</div><div class='sdui-message warning'>A warning</div>"
    + "<div class='sdui-message info'>Saved</div><div class='sdui-progress running'><div class='bar' style='width: 60%'>"
    + "</div><span>Step 3/20 · 60%</span></div>");
  const counter = document.querySelector('#txt2img_token_counter .sdui-tokens');
  counter.classList.add('over'); return counter.innerText; }"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_labels_placeholders_and_messages_meet_wcag_aa_contrast(ui_server, browser, theme):
    """Every visible label, info line, placeholder, status message and the token counter of the txt2img
    tab (and the img2img tab's labels) at 4.5:1 or more (WCAG AA), in Gradio's light and dark theme.
    Colours do not depend on the page size, so the desktop size only."""
    base, _, _ = ui_server
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(base + ("/?__theme=dark" if theme == "dark" else "/"))
    page.wait_for_selector("#txt2img_interrupt:enabled")
    assert page.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
    assert page.evaluate(SAMPLES_JS) == "0/75"  # (now drawn as past the first chunk, in red)
    checked = page.evaluate(CONTRAST_JS)
    kinds = " ".join(name for name, _ in checked)
    for expected in ("txt2img_prompt", "placeholder txt2img_neg_prompt", "An error", "A warning", "Saved", "Step 3/20",
                     "Sampling steps", "-1 or empty", '"0/75"'):
        assert expected in kinds, f"{expected!r} was not checked: {kinds}"
    open_tab(page, "img2img")  # its own labels too (Mode, the canvas, Denoising strength, ...)
    page.wait_for_selector("#img2img_mode")
    checked += [(f"img2img: {name}", r) for name, r in page.evaluate(CONTRAST_JS) if name.startswith("img2img")]
    assert any("img2img_mode" in name for name, _ in checked)
    low = [(name, round(r, 2)) for name, r in checked if r < 4.5]
    assert not low, f"below 4.5:1 in the {theme} theme: {low}"
    context.close()
