"""The History, Styles and X/Y/Z plot in headless Chromium against the real server: a history that
survives a restart and follows a login across two browser contexts, styles applied at Generate and
saved from the page, and a 2x2 X/Y/Z grid. Skipped like tests/test_ui_browser.py when Chromium or
Playwright is missing."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from sdui.config import Settings
from sdui.images import infotext
from sdui.server import create_app
from tests.server_util import running_server
from tests.test_ui_browser import (ARGS, CHROMIUM, VIEWPORTS, both_sizes, open_page, open_tab, pick, set_number, set_text,
                                   small_settings, wait_infotext)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: tests/run.sh installs it"),
]
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def history_captions(page, query=None) -> list[str]:
    open_tab(page, "History")
    if query is not None:
        page.locator("#history_search textarea, #history_search input").first.fill(query)
    page.click("#history_refresh")
    page.wait_for_timeout(800)
    return [c for c in page.locator("#history_gallery .caption-label, #history_gallery figcaption").all_inner_texts()]


def test_history_survives_a_restart_and_follows_the_login_across_browsers(models_root, tmp_path, browser):
    out = tmp_path / "outputs"
    settings = Settings(models_dir=str(models_root), outputs_dir=str(out), gradio_auth="ann:pw,bob:pw2",
                        settings_file=str(tmp_path / "s.json"), styles_file=str(tmp_path / "styles.csv"))
    with running_server(create_app(settings)) as base:
        laptop, page = open_page(browser, base, VIEWPORTS["desktop"], login=("ann", "pw"))
        set_text(page, "txt2img_prompt", "a lasting lighthouse")
        small_settings(page, "txt2img")
        set_number(page, "txt2img_seed", 31)
        page.click("#txt2img_generate")
        wait_infotext(page, "txt2img")
        laptop.close()
    saved = list(out.rglob("*.png"))
    assert len(saved) == 1
    with running_server(create_app(settings)) as base:  # a restarted server, another browser of the same login
        phone, page = open_page(browser, base, VIEWPORTS["phone"], login=("ann", "pw"))  # the same login on a phone's screen
        page.wait_for_function("() => true")
        captions = history_captions(page)
        assert len(captions) == 1 and "a lasting lighthouse" in captions[0] and "Seed 31" in captions[0]
        assert history_captions(page, "zebra") == []
        assert len(history_captions(page, "LIGHTHOUSE")) == 1
        page.locator("#history_gallery button img, #history_gallery img").first.click()
        page.wait_for_function("() => document.querySelector('#history_infotext textarea').value.includes('Seed: 31')")
        page.click("#history_send_txt2img")
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a lasting lighthouse'")
        assert page.locator("#txt2img_seed input").input_value() == "31"
        from playwright.sync_api import expect

        open_tab(page, "History")
        page.click("#history_send_inpaint")  # the painted-mask mode, as the galleries' Send to inpaint
        expect(page.get_by_role("radio", name="Inpaint (paint the mask)")).to_be_checked()
        assert page.locator("#img2img_seed input").input_value() == "31"
        other, bobs = open_page(browser, base, login=("bob", "pw2"))
        assert history_captions(bobs) == []  # bob sees none of ann's
        other.close()
        open_tab(page, "History")
        page.click("#history_delete")
        page.click("#history_delete_confirm")
        page.wait_for_selector("#history_status .sdui-message.info")
        assert not saved[0].exists()
        phone.close()


@pytest.fixture(scope="module")
def styles_server(models_root, tmp_path_factory):
    """One server for both page sizes of the styles test."""
    root = tmp_path_factory.mktemp("styles")
    styles = root / "styles.csv"
    styles.write_text('name,prompt,negative_prompt\nCinematic,"cinematic still of {prompt}, film grain",blurry\n',
                      encoding="utf-8")
    settings = Settings(models_dir=str(models_root), outputs_dir=str(root / "o"), styles_file=str(styles),
                        settings_file=str(root / "s.json"))
    with running_server(create_app(settings)) as base:
        yield base, styles


@both_sizes
def test_styles_apply_at_generate_and_a_new_style_is_saved(styles_server, browser, viewport):
    base, styles = styles_server
    name = f"Moonlit {viewport[0]}"
    context, page = open_page(browser, base, viewport)
    set_text(page, "txt2img_prompt", "a fox")
    small_settings(page, "txt2img")
    choose_many(page, "txt2img_styles", "Cinematic")
    page.click("#txt2img_generate")
    text = wait_infotext(page, "txt2img")
    assert text.startswith("cinematic still of a fox, film grain\nNegative prompt: blurry\n")
    assert page.locator("#txt2img_prompt textarea").input_value() == "a fox"  # applied to the job, not the box
    page.get_by_text("Save the prompts as a style").click()
    set_text(page, "txt2img_prompt", "{prompt} under the moon")
    page.locator("#txt2img_style_name input, #txt2img_style_name textarea").first.fill(name)
    page.click("#txt2img_style_save")
    page.wait_for_selector("#txt2img_style_message .sdui-message.info")
    assert f"{name},{{prompt}} under the moon," in styles.read_text(encoding="utf-8-sig")
    context.close()


def test_xyz_plot_makes_a_2x2_grid(models_root, tmp_path, browser):
    out = tmp_path / "o"
    settings = Settings(models_dir=str(models_root), outputs_dir=str(out), settings_file=str(tmp_path / "s.json"),
                        styles_file=str(tmp_path / "styles.csv"))
    with running_server(create_app(settings)) as base:
        context, page = open_page(browser, base)
        set_text(page, "txt2img_prompt", "a grid of foxes")
        small_settings(page, "txt2img")
        page.get_by_text("Script: X/Y/Z plot").click()
        pick(page, "txt2img_xyz_x_type", "Steps")
        page.locator("#txt2img_xyz_x_values textarea, #txt2img_xyz_x_values input").first.fill("1, 2")
        pick(page, "txt2img_xyz_y_type", "CFG Scale")
        page.locator("#txt2img_xyz_y_values textarea, #txt2img_xyz_y_values input").first.fill("3, 7")
        page.click("#txt2img_xyz_generate")
        page.wait_for_selector("#txt2img_status .sdui-message.info:has-text('X/Y/Z plot of 4 cells')", timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('#txt2img_gallery img').length >= 1")
        grids = list(out.rglob("*-grid.png"))
        cells = [p for p in out.rglob("*.png") if p not in grids]
        assert len(grids) == 1 and len(cells) == 4
        grid = Image.open(grids[0])
        assert grid.width > 128 and grid.height > 128
        steps_cfg = sorted((infotext.parse_infotext(infotext.read_infotext(Image.open(p)))["Steps"],
                            infotext.parse_infotext(infotext.read_infotext(Image.open(p)))["CFG scale"]) for p in cells)
        assert steps_cfg == [("1", "3"), ("1", "7"), ("2", "3"), ("2", "7")]
        context.close()


def choose_many(page, elem_id: str, option: str) -> None:
    """Add ``option`` to a multiselect dropdown the way a user does."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.locator(f"#{elem_id} li[role=option][aria-label={option!r}]").click()
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => document.querySelector('#{elem_id}').innerText.includes({option!r})")


def test_variation_seed_from_the_extra_panel_gives_the_engines_pixels(models_root, tmp_path, browser):
    from sdui.types import GenerationRequest

    out = tmp_path / "o"
    settings = Settings(models_dir=str(models_root), outputs_dir=str(out), settings_file=str(tmp_path / "s.json"),
                        styles_file=str(tmp_path / "styles.csv"))
    app = create_app(settings)
    with running_server(app) as base:
        context, page = open_page(browser, base)
        set_text(page, "txt2img_prompt", "a varied fox")
        small_settings(page, "txt2img")
        set_number(page, "txt2img_seed", 8)
        page.locator("#txt2img_subseed_show input").check()
        set_number(page, "txt2img_subseed", 21)
        set_number(page, "txt2img_subseed_strength", 0.5)
        page.click("#txt2img_generate")
        text = wait_infotext(page, "txt2img")
        assert "Seed: 8," in text and "Variation seed: 21, Variation seed strength: 0.5" in text
        (saved,) = list(out.rglob("*.png"))
        want = app.state.engine.generate(GenerationRequest(prompt="a varied fox", steps=2, width=64, height=64, seed=8,
                                                           subseed=21, subseed_strength=0.5, save=False))
        assert Image.open(saved).convert("RGB").tobytes() == want.images[0].image.convert("RGB").tobytes()
        context.close()


def test_settings_tab_owner_defaults_and_this_browsers_own(models_root, tmp_path, browser):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), settings_file=str(tmp_path / "s.json"),
                        styles_file=str(tmp_path / "styles.csv"), gradio_auth="boss:pw,guest:pw2")
    with running_server(create_app(settings)) as base:
        owner_ctx, page = open_page(browser, base, login=("boss", "pw"))
        open_tab(page, "Settings")
        set_number(page, "settings_steps", 9)
        page.get_by_label("webp").check()
        page.click("#settings_apply")
        page.wait_for_selector("#settings_status .sdui-message.info")
        written = json.loads((tmp_path / "s.json").read_text())
        assert (written["steps"], written["output_format"]) == (9, "webp")
        guest_ctx, guest = open_page(browser, base, login=("guest", "pw2"))
        guest.wait_for_function("() => document.querySelector('#txt2img_steps input[type=number]').value === '9'")
        open_tab(guest, "Settings")
        assert guest.locator("#settings_apply").is_disabled()  # only the owner may change them
        assert "Only the server's owner (boss)" in guest.locator("#settings_owner_note").inner_text()
        # this browser's own defaults: remembered in localStorage, restored on reload, not in other browsers
        open_tab(guest, "txt2img")
        set_number(guest, "txt2img_steps", 5)
        open_tab(guest, "Settings")
        guest.click("#settings_browser_save")
        guest.wait_for_selector("#settings_browser_status .sdui-message.info")
        guest.reload()
        guest.wait_for_selector("#txt2img_prompt textarea")
        guest.wait_for_function("() => document.querySelector('#txt2img_steps input[type=number]').value === '5'")
        owner_ctx.close()
        other_ctx, other = open_page(browser, base, login=("guest", "pw2"))  # a second browser of the same login
        other.wait_for_function("() => document.querySelector('#txt2img_steps input[type=number]').value === '9'")
        other_ctx.close()
        guest_ctx.close()


def test_without_logins_the_browser_keeps_its_history_across_a_restart(models_root, tmp_path, browser):
    """The browser's session token (kept encrypted in its localStorage) is still readable by the restarted
    server, so the browser's images are still its own; another browser does not see them."""
    from tests.server_util import free_port

    port = free_port()
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), port=port,
                        settings_file=str(tmp_path / "s.json"), styles_file=str(tmp_path / "styles.csv"), listen=False)
    context = None
    with running_server(create_app(settings), port=port) as base:
        context, page = open_page(browser, base)
        set_text(page, "txt2img_prompt", "a remembered harbour")
        small_settings(page, "txt2img")
        page.click("#txt2img_generate")
        wait_infotext(page, "txt2img")
    with running_server(create_app(settings), port=port) as base:  # same address: the same localStorage
        page.reload()
        page.wait_for_selector("#txt2img_interrupt:enabled")
        captions = history_captions(page)
        assert len(captions) == 1 and "a remembered harbour" in captions[0]
        stranger, other = open_page(browser, base)
        assert history_captions(other) == []
        stranger.close()
    context.close()
