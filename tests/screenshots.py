"""Refresh the README's screenshots in docs/ on purpose (never run by pytest): the studio on the
tiny random-weight test models, in headless Chromium, at a desktop's 1440x900 and a phone's 390x844.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 venv/bin/python -m tests.screenshots [--out docs] [--serve]

``--serve`` only starts the server on the tiny models and prints its address (for trying the UI by
hand); Ctrl+C stops it. The pictures show random-weight models: noise, at 64x64 and 2 steps.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# the tab row's buttons and, on a phone, the wrapped row of the rest (not Gradio's hidden measuring copies)
TAB_BUTTONS = ".tab-wrapper [role=tablist] button, .tab-wrapper .overflow-dropdown button"
SIZES = {"desktop": (1440, 900), "phone": (390, 844)}



def set_numbers(page, **values) -> None:
    """Type each value into txt2img's number box of that name (Enter commits it, as a user does)."""
    for name, value in values.items():
        box = page.locator(f"#txt2img_{name} input[type=number]")
        box.fill(str(value))
        box.press("Enter")

def tiny_models(root: Path) -> Path:
    """A models tree with one tiny checkpoint and the tiny ESRGAN model (as the test fixtures make)."""
    import torch

    from tests import tiny

    sd = root / "Stable-diffusion"
    sd.mkdir(parents=True, exist_ok=True)
    tiny.save_single_file(tiny.tiny_pipeline(seed=0), sd / "tiny.safetensors")
    (root / "ESRGAN").mkdir(exist_ok=True)
    torch.save(tiny.tiny_esrgan_state_dict(), root / "ESRGAN" / "tiny-esrgan.pth")
    return root


def open_tab(page, name: str) -> None:
    """A tab by its name, whether in the tab row or (on a phone) in the wrapped overflow row."""
    page.locator(TAB_BUTTONS, has_text=re.compile(f"^{re.escape(name)}$")).first.click()


def shoot(base: str, out: Path, sample: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    made = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for kind, (w, h) in SIZES.items():
            suffix = "" if kind == "desktop" else "-phone"
            page = browser.new_context(viewport={"width": w, "height": h}).new_page()
            page.set_default_timeout(120_000)
            page.goto(base)
            page.wait_for_selector("#txt2img_interrupt:enabled")
            page.locator("#txt2img_prompt textarea").fill("a lighthouse on a cliff at dusk, (oil painting:1.2)")
            set_numbers(page, steps=2, width=64, height=96, batch_size=2)
            page.click("#txt2img_generate")
            page.wait_for_function("() => document.querySelector('#txt2img_infotext textarea').value.length > 0")
            page.wait_for_timeout(800)
            made.append(out / f"txt2img{suffix}.png")
            page.screenshot(path=str(made[-1]))
            page.click("#txt2img_send_to_img2img")
            page.wait_for_selector("#img2img_editor canvas")
            page.wait_for_timeout(1500)
            made.append(out / f"img2img{suffix}.png")
            page.screenshot(path=str(made[-1]))
            for tab, name in (("Upscale", "upscale"), ("Models", "models")):
                open_tab(page, tab)
                page.wait_for_timeout(800)
                made.append(out / f"{name}{suffix}.png")
                page.screenshot(path=str(made[-1]))
            open_tab(page, "PNG Info")
            page.locator("#pnginfo_file input[type=file]").set_input_files(str(sample))
            page.wait_for_function("() => document.querySelector('#pnginfo_infotext textarea').value.length > 0")
            made.append(out / f"pnginfo{suffix}.png")
            page.screenshot(path=str(made[-1]))
            open_tab(page, "History")
            page.click("#history_refresh")
            page.wait_for_selector("#history_gallery img")
            page.wait_for_timeout(800)
            made.append(out / f"history{suffix}.png")
            page.screenshot(path=str(made[-1]))
            # a long job under way: the progress bar and the live preview in the output's place
            open_tab(page, "txt2img")
            set_numbers(page, steps=150, batch_size=1, width=128, height=192)
            page.click("#txt2img_generate")
            page.wait_for_selector("#txt2img_status .sdui-progress.running")
            page.wait_for_function("() => /step [1-9]/.test(document.querySelector('#txt2img_status').innerText)")
            page.wait_for_timeout(1500)  # a live preview or two
            made.append(out / f"progress{suffix}.png")
            page.screenshot(path=str(made[-1]))
            page.click("#txt2img_interrupt")
            page.wait_for_selector("#txt2img_status .sdui-progress.running", state="detached")
        browser.close()
    return made


def shoot_no_model(base: str, out: Path) -> Path:
    """The first start without a checkpoint (desktop size): the notice, Generate disabled."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": SIZES["desktop"][0], "height": SIZES["desktop"][1]}).new_page()
        page.goto(base)
        page.wait_for_selector("#no_model_notice")
        page.wait_for_timeout(800)
        page.screenshot(path=str(out / "no-model.png"))
        browser.close()
    return out / "no-model.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    ap.add_argument("--serve", action="store_true", help="only serve the studio on the tiny models")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import running_server

    work = Path(tempfile.mkdtemp(prefix="sdui-shots-"))
    settings = Settings(models_dir=str(tiny_models(work / "models")), outputs_dir=str(work / "outputs"), api=True)
    app = create_app(settings)
    with running_server(app, port=args.port or None) as base:
        if args.serve:
            print(base, flush=True)
            while True:
                time.sleep(3600)
        sample = work / "sample.png"
        engine = app.state.engine
        from sdui.types import GenerationRequest

        img = engine.generate(GenerationRequest(prompt="a kite over hills", steps=2, width=64, height=64, seed=7,
                                                save=True)).images[0]
        Path(img.path).replace(sample)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for path in shoot(base, out, sample):
            print(path)
    (work / "empty" / "Stable-diffusion").mkdir(parents=True)
    empty = Settings(models_dir=str(work / "empty"), outputs_dir=str(work / "outputs-empty"))
    with running_server(create_app(empty)) as base:
        print(shoot_no_model(base, Path(args.out)))


if __name__ == "__main__":
    main()
