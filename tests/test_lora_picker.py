"""The UI's LoRA picker (sdui/ui/lora_picker.py): it lists the LoRAs that fit the selected checkpoint's
architecture (read from each safetensors header) and writes ``<lora:name:1>`` into the prompt. Tested
at the handler level; the at-the-cursor step runs in the browser."""

from __future__ import annotations

import shutil

import pytest
import torch

from sdui.types import Architecture
from sdui.ui import lora_picker

_SD1 = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)}
_SD2 = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight": (4, 1024)}
_XL = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280),
       "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)}


@pytest.fixture(scope="module")
def picker_root(models_root, tmp_path_factory):
    """models/ with the tiny checkpoint and Lora/: one SD 1.x, one SD 2.x and one SDXL LoRA (headers
    only matter), and a pickle whose architecture is not read for a listing."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("picker-models")
    shutil.copytree(models_root / "Stable-diffusion", root / "Stable-diffusion",
                    ignore=shutil.ignore_patterns("tiny-ckpt*", "tiny-folder", "other*", "tiny-inpaint", "tiny-x4"))
    lora_dir = root / "Lora"
    lora_dir.mkdir()
    for name, shapes in (("sd15-style", _SD1), ("sd2-style", _SD2), ("xl-style", _XL)):
        save_file({k: torch.zeros(s) for k, s in shapes.items()}, lora_dir / f"{name}.safetensors")
    torch.save({"text_encoder.q.lora_A.weight": torch.zeros(4, 32)}, lora_dir / "old-pickle.pt")
    return root


def test_the_listing_follows_the_checkpoints_architecture(picker_root, tmp_path):
    from sdui.config import Settings
    from sdui.engine import Engine

    engine = Engine(Settings(models_dir=str(picker_root), outputs_dir=str(tmp_path)))
    loras = engine.manager.loras
    assert loras.names_for(Architecture.SD1) == ["old-pickle", "sd15-style"]
    assert loras.names_for(Architecture.SD1_INPAINT) == ["old-pickle", "sd15-style"]
    assert loras.names_for(Architecture.SD2_V) == ["old-pickle", "sd2-style"]
    assert loras.names_for(Architecture.SDXL) == ["old-pickle", "xl-style"]
    # the tiny checkpoint is a custom architecture: nothing can be ruled out, everything is offered
    assert engine.lora_names("tiny") == ["old-pickle", "sd15-style", "sd2-style", "xl-style"]
    assert engine.lora_names("no-such-model") == engine.lora_names(None)  # the server's default


def test_picking_appends_the_tag_and_resets_the_picker():
    assert lora_picker.insert_tag("a castle", "inkstyle") == ("a castle <lora:inkstyle:1>", None)
    assert lora_picker.insert_tag("a castle, ", "ink") == ("a castle, <lora:ink:1>", None)
    assert lora_picker.insert_tag("", "ink") == ("<lora:ink:1>", None)
    # the browser step already put the tag at the cursor and cleared the name: the text stays as it is
    assert lora_picker.insert_tag("a <lora:ink:1> castle", None) == ("a <lora:ink:1> castle", None)


def test_both_generation_tabs_have_a_picker_wired_to_their_prompt(picker_root, tmp_path):
    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.jobs import JobQueue
    from sdui.ui.app import build_ui

    engine = Engine(Settings(models_dir=str(picker_root), outputs_dir=str(tmp_path)))
    demo = build_ui(engine, JobQueue(engine), engine.settings)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for prefix in ("txt2img", "img2img"):
        picker = by_id[f"{prefix}_lora_picker"]
        assert [c[1] if isinstance(c, tuple) else c for c in picker.choices] == engine.lora_names("tiny")
        prompt = by_id[f"{prefix}_prompt"]
        wired = [d for d in demo.fns.values() if any(t[0] == picker._id and t[1] == "input" for t in d.targets)]
        assert len(wired) == 1 and wired[0].js and f"#{prefix}_prompt textarea" in wired[0].js
        assert [c._id for c in wired[0].outputs] == [prompt._id, picker._id]


@pytest.mark.browser
def test_in_the_browser_the_tag_goes_in_at_the_cursor(picker_root, tmp_path):
    """The js= step: with the caret after "a castle" in "a castle, at night", picking sd15-style
    gives "a castle <lora:sd15-style:1>, at night"; the picker is empty again afterwards."""
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is missing: tests/run.sh installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import running_server
    from tests.test_ui_browser import ARGS, CHROMIUM, open_page

    app = create_app(Settings(models_dir=str(picker_root), outputs_dir=str(tmp_path), no_watermark=True))
    with running_server(app) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context, page = open_page(browser, base)
            area = page.locator("#txt2img_prompt textarea")
            area.fill("a castle, at night")
            area.evaluate("a => { a.focus(); a.setSelectionRange(8, 8); }")
            box = page.locator("#txt2img_lora_picker input")
            box.click()  # the textarea keeps its caret while the list is open
            page.locator("#txt2img_lora_picker li[role=option][aria-label='sd15-style']").click()
            page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.includes('<lora:')")
            assert area.input_value() == "a castle <lora:sd15-style:1>, at night"
            assert page.locator("#txt2img_lora_picker input").input_value() == ""
            context.close()
        finally:
            browser.close()
