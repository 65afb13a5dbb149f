"""One field table (``sdui.fields``): validation, the UI, the CLI, the API and the infotext all agree
with it on each field's range and default. Each test fails when one of them restates a bound or a
default differently."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from sdui import cli, fields
from sdui.api import schemas
from sdui.images import infotext
from sdui.types import GenerationRequest, InvalidRequest, Limits

LIMITS = Limits()
NUMERIC = [f for f in fields.FIELDS if f.kind in (int, float)]


def _request_for(f: fields.Field, **values) -> GenerationRequest:
    mode = f.modes[0]
    img = Image.new("RGB", (64, 64))
    extra = {"init_image": img} if mode != "txt2img" else {}
    if mode == "inpaint":
        extra["mask"] = Image.new("L", (64, 64), 255)
    if mode == "upscale":
        extra.pop("init_image")
        extra["init_image"] = img
    return GenerationRequest(mode=mode, **extra, **values)


def test_request_defaults_are_the_tables():
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
    for f in fields.FIELDS:
        assert defaults[f.name] == f.default, f.name


@pytest.mark.parametrize("f", NUMERIC, ids=lambda f: f.name)
def test_validation_accepts_the_tables_bounds_and_refuses_beyond(f):
    lo, hi = f.bounds(LIMITS)
    step = 1 if f.kind is int else 0.01
    for ok in (lo, hi):
        if f.name == "denoising_strength" and ok == 0:
            continue  # 0 is in range but runs no step: refused with its own message (tests/test_engine.py)
        value = f.kind(ok) if f.name not in ("width", "height") else int(ok)
        _request_for(f, **{f.name: value}).validate(LIMITS)
    for bad in (lo - step * (8 if f.name in ("width", "height") else 1), hi + step * (8 if f.name in ("width", "height") else 1)):
        with pytest.raises(InvalidRequest) as err:
            _request_for(f, **{f.name: f.kind(bad)}).validate(LIMITS)
        assert err.value.field == f.name and f.range_text(LIMITS) in str(err.value)


@pytest.mark.parametrize("f", [f for f in fields.FIELDS if f.choices], ids=lambda f: f.name)
def test_validation_refuses_a_choice_outside_the_table(f):
    for choice in f.choices:
        _request_for(f, **{f.name: choice}).validate(LIMITS)
    with pytest.raises(InvalidRequest, match=f.name):
        _request_for(f, **{f.name: "no such choice"}).validate(LIMITS)


# ---- the UI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui_components(models_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.jobs import JobQueue
    from sdui.ui.app import build_ui

    engine = Engine(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("out")), max_size=1024))
    demo = build_ui(engine, JobQueue(engine), engine.settings)
    yield {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}, engine


UI_SLIDERS = [(prefix, name) for prefix in ("txt2img", "img2img")
              for name in ("steps", "width", "height", "batch_count", "batch_size", "cfg_scale", "clip_skip")]
UI_SLIDERS += [("img2img", "denoising_strength"), ("img2img", "mask_blur"), ("img2img", "inpaint_full_res_padding"),
               ("upscale", "noise_level"),
               ("upscale", "steps")]


@pytest.mark.parametrize("prefix,name", UI_SLIDERS)
def test_ui_sliders_take_bounds_default_and_label_from_the_table(ui_components, prefix, name):
    components, engine = ui_components
    s = components[f"{prefix}_{name}"]
    lo, hi = fields.BY_NAME[name].bounds(engine.limits)
    assert (s.minimum, s.maximum, s.value, s.label) == (lo, hi, fields.default(name), fields.BY_NAME[name].label)
    if name == "width":
        assert s.maximum == 1024  # --max-size reaches the UI through Limits


def test_ui_upscale_factor_and_radios_follow_the_table(ui_components):
    components, _ = ui_components
    factor = components["upscale_factor"]
    f = fields.BY_NAME["upscale_factor"]
    assert (factor.minimum, factor.maximum, factor.value) == (f.minimum, f.maximum, f.default)
    for elem, name in (("img2img_resize_mode", "resize_mode"), ("img2img_inpainting_fill", "inpainting_fill"),
                       ("img2img_mask_mode", "inpainting_mask_invert"), ("img2img_inpaint_full_res", "inpaint_full_res"),
                       ("upscale_mode", "upscale_mode")):
        radio = components[elem]
        assert [c[0] if isinstance(c, tuple) else c for c in radio.choices] == list(fields.BY_NAME[name].choices)
        assert radio.value == fields.default(name)


# ---- the CLI ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint", "upscale"])
def test_cli_flags_and_defaults_are_the_tables(mode):
    parser = cli.build_parser()
    argv = [mode, "--prompt", "x"] + {"img2img": ["--init-img", "a.png"], "inpaint": ["--init-img", "a.png", "--mask", "m.png"],
                                      "upscale": ["--image", "a.png"]}.get(mode, [])
    args = parser.parse_args(argv)
    for f in fields.for_mode(mode):
        if f.cli and f.name != "prompt":
            assert getattr(args, f.name) == f.default, f.name
            for flag in f.cli:  # every alias sets the same field
                if f.kind is bool:  # --flag / --no-flag
                    assert getattr(parser.parse_args(argv + [flag]), f.name) is True, flag
                    assert getattr(parser.parse_args(argv + ["--no-" + flag[2:]]), f.name) is False, flag
                    continue
                value = f.choices[-1] if f.choices else ("7" if f.kind is not str else "y")
                assert getattr(parser.parse_args(argv + [flag, value]), f.name) == f.kind(value), flag


def test_cli_refuses_out_of_range_values_with_the_tables_range(models_root, tmp_path, capsys):
    code = cli.main(["txt2img", "--prompt", "x", "--steps", "151", "--models-dir", str(models_root),
                     "--outdir", str(tmp_path)])
    assert code == cli.EXIT_BAD_INPUT
    assert fields.BY_NAME["steps"].range_text(LIMITS) in capsys.readouterr().err


# ---- the API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [f for f in fields.FIELDS if f.api], ids=lambda f: f.name)
def test_api_schema_defaults_are_the_tables_a1111_defaults(f):
    model = schemas.ExtraSingleImageRequest if f.modes == ("upscale",) else (
        schemas.Img2ImgRequest if set(f.modes) <= {"img2img", "inpaint"} else schemas.Txt2ImgRequest)
    info = model.model_fields[f.api]
    default = info.default if info.default_factory is None else info.default_factory()
    if f.name == "denoising_strength":
        assert default == f.default  # A1111's img2img default is ours
    else:
        assert default == f.api_value_default, f.name


def test_api_request_maps_every_a1111_field_through_the_table():
    from sdui.api.convert import to_generation_request

    body = schemas.Txt2ImgRequest(prompt="p", negative_prompt="n", sampler_name="DDIM", scheduler="Karras", steps=9,
                                  cfg_scale=3.5, width=96, height=128, seed=5, batch_size=2, n_iter=3)
    req = to_generation_request(body, "txt2img", None)
    assert (req.prompt, req.negative_prompt, req.sampler, req.steps, req.cfg_scale, req.width, req.height, req.seed,
            req.batch_size, req.batch_count) == ("p", "n", "DDIM", 9, 3.5, 96, 128, 5, 2, 3)


# ---- the infotext ----------------------------------------------------------------------------------
def test_every_infotext_key_of_the_table_round_trips():
    params = {}
    values = {}
    for f in fields.FIELDS:
        if not f.infotext or f.name == "negative_prompt":
            continue
        value = f.choices[-1] if f.choices else {int: 7, float: 2.5, str: "DPM++ 2M"}[f.kind]
        params[f.infotext] = value
        values[f.name] = value
    text = infotext.build_infotext("a prompt", "a negative", params)
    back = infotext.infotext_to_request_fields(infotext.parse_infotext(text))
    for name, value in values.items():
        assert back[name] == value, name
    assert back["negative_prompt"] == "a negative"


def test_the_engine_writes_infotext_keys_the_table_knows(make_engine):
    engine = make_engine()
    req = GenerationRequest(mode="inpaint", steps=9, cfg_scale=4.5, seed=3, denoising_strength=0.5, mask_blur=7,
                            inpainting_fill="fill", inpainting_mask_invert="Inpaint not masked", clip_skip=2,
                            inpaint_full_res="Only masked", inpaint_full_res_padding=48, subseed=21, subseed_strength=0.25,
                            seed_resize_from_w=96, seed_resize_from_h=48,
                            init_image=Image.new("RGB", (64, 64)), mask=Image.new("L", (64, 64)))
    written = engine.infotext_params(req, 3, "m", "", 64, 64)
    split = ("seed_resize_from_w", "seed_resize_from_h")  # one key "Seed resize from: WxH", split when read
    for f in fields.FIELDS:
        if f.infotext and "inpaint" in f.modes and f.name not in ("negative_prompt", "scheduler", *split):
            assert f.infotext in written, f.infotext
            assert written[f.infotext] == getattr(req, f.name), f.name
    assert written["Seed resize from"] == "96x48"


# ---- sizes: any width/height in range, generated at the multiple of 8 below (A1111) ----------------
def test_any_size_in_range_is_accepted_and_rounded_down_with_a_note(make_engine):
    engine = make_engine()
    r = engine.generate(GenerationRequest(prompt="x", steps=2, width=70, height=67, seed=1, save=False))
    assert r.images[0].image.size == (64, 64)
    assert "Size 70x67 was rounded down to 64x64 (a multiple of 8)" in r.warnings
    assert "Size: 64x64" in r.images[0].infotext
    same = engine.generate(GenerationRequest(prompt="x", steps=2, width=64, height=64, seed=1, save=False))
    assert same.warnings == [] and same.images[0].image.tobytes() == r.images[0].image.tobytes()


def test_the_api_accepts_sillytavern_sizes_and_says_so_in_info(models_root, tmp_path):
    import json

    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True, max_size=1024),
                     with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 100, "height": 68, "seed": 2})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert "Size 100x68 was rounded down to 96x64 (a multiple of 8)" in info["warnings"]
        assert (info["width"], info["height"]) == (96, 64)
        assert c.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 63}).status_code == 422  # below the range
    finally:
        app.state.queue.stop()
