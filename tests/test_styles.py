"""A1111 styles (``sdui.styles``): its apply rules ({prompt} placeholder, else appended), saving a style
atomically into the same file the API lists, and the API's ``styles`` field."""

from __future__ import annotations

import json
import os

import pytest

from sdui import styles

CSV = ('name,prompt,negative_prompt\n'
       'Cinematic,"cinematic still of {prompt}, film grain",blurry\n'
       'Sharp,"sharp focus, 8k","lowres, {prompt}"\n'
       '#comment,x,y\n')


def test_merge_prompts_as_a1111():
    assert styles.merge_prompts("cinematic still of {prompt}, grain", "a fox") == "cinematic still of a fox, grain"
    assert styles.merge_prompts("sharp focus", "a fox") == "a fox, sharp focus"
    assert styles.merge_prompts("sharp focus", "  ") == "sharp focus"
    assert styles.merge_prompts("", "a fox") == "a fox"


def test_apply_styles_in_order_to_both_prompts(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    known = styles.read_styles(str(path))
    assert [s["name"] for s in known] == ["Cinematic", "Sharp"]
    p, n = styles.apply_styles("a fox", "ugly", ["Cinematic", "Sharp"], known)
    assert p == "cinematic still of a fox, film grain, sharp focus, 8k"
    assert n == "lowres, ugly, blurry"
    with pytest.raises(KeyError):
        styles.apply_styles("a fox", "", ["Nope"], known)


def test_save_style_adds_and_replaces_atomically_in_a1111s_format(tmp_path):
    path = tmp_path / "sub" / "styles.csv"
    styles.save_style(str(path), "Mine", "a {prompt}, with, commas", "bad")
    styles.save_style(str(path), "Other", "x", "")
    styles.save_style(str(path), "Mine", "new {prompt}", "worse")  # replaced in place
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")  # utf-8-sig, as A1111 writes it
    assert styles.read_styles(str(path)) == [
        {"name": "Mine", "prompt": "new {prompt}", "negative_prompt": "worse"},
        {"name": "Other", "prompt": "x", "negative_prompt": ""}]
    assert [f for f in os.listdir(path.parent)] == ["styles.csv"]  # no temporary left behind
    with pytest.raises(ValueError, match="name"):
        styles.save_style(str(path), "  ", "x", "")


def test_the_api_lists_saved_styles_and_applies_the_styles_field(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    styles.save_style(str(path), "Saved", "{prompt} in the rain", "")
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "out"), api=True,
                              styles_file=str(path)), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        listed = c.get("/sdapi/v1/prompt-styles").json()
        assert {"name": "Saved", "prompt": "{prompt} in the rain", "negative_prompt": ""} in listed
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "negative_prompt": "ugly", "steps": 1, "width": 64,
                                               "height": 64, "styles": ["Saved", "Sharp"]})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["prompt"] == "a fox in the rain, sharp focus, 8k"
        assert info["negative_prompt"] == "lowres, ugly"
        assert "styles" not in info["ignored"]
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "steps": 1, "width": 64, "height": 64,
                                               "styles": ["No such style"]})
        assert json.loads(r.json()["info"])["ignored"] == ["styles"]
    finally:
        app.state.queue.stop()
