"""A1111 parity of the API (issue 12): the full options table and what POST options does with it,
cmd-flags in A1111's shape, the routes real clients call (extra-batch-images, prompt-styles, the empty
lists, refresh/unload/reload, interrogate, server-kill/stop/restart), one log line per request, and
replays of the exact requests Open WebUI, SillyTavern and A1111's own tests send.

In-process clients (Starlette's TestClient) on one app per module; each test that changes options
does it under an ``X-Client-Id`` of its own. Images are 64x64, 2 steps."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import subprocess
import sys
import time

import pytest
from PIL import Image

from sdui.api.a1111_flags import A1111_FLAG_DEFAULTS
from sdui.api.a1111_options import A1111_DEFAULTS, A1111_RESTRICTED
from sdui.config import Settings
from sdui.server import create_app
from tests.server_util import png_b64, app_client, free_port, in_process, shutdown_app

TXT = {"prompt": "a lantern", "negative_prompt": "dark", "steps": 2, "width": 64, "height": 64, "seed": 21,
       "sampler_name": "Euler a", "override_settings": {"sd_model_checkpoint": "tiny"}}


@pytest.fixture(scope="module")
def api_app(models_root, tmp_path_factory):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("parity-outputs")),
                        api=True, queue_size=4, styles_file=str(tmp_path_factory.mktemp("styles") / "styles.csv"))
    app = create_app(settings, with_ui=False)
    yield app
    shutdown_app(app)


@pytest.fixture()
def client(api_app):
    """``client("alice")``: an in-process client of the module's app under ``X-Client-Id: alice``."""
    made = []

    def make(name: str = "anon", **kw):
        c = app_client(api_app, headers={"X-Client-Id": name}, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- options: the full table ----------------------------------------------------------------------
def test_get_options_has_every_a1111_key_with_sdui_values(client, api_app):
    opts = client("reader").get("/sdapi/v1/options").json()
    assert set(A1111_DEFAULTS) <= set(opts) and len(opts) > 240
    titles = [m["title"] for m in client("reader").get("/sdapi/v1/sd-models").json()]
    assert opts["sd_model_checkpoint"] in titles
    assert opts["sd_vae"] == "Automatic" and opts["samples_format"] == "png" and opts["samples_save"] is True
    assert opts["randn_source"] == "CPU"  # each image's noise comes from its own CPU generator
    assert opts["show_progress_every_n_steps"] == api_app.state.engine.preview_period()
    assert opts["outdir_txt2img_samples"].endswith("txt2img-images")
    assert opts["CLIP_stop_at_last_layers"] == 1 and opts["eta_noise_seed_delta"] == 0
    assert opts["send_seed"] is True and opts["quicksettings_list"] == ["sd_model_checkpoint"]
    json.dumps(opts)  # plain JSON all the way down


def test_a1111s_own_test_options_write_passes(client):
    """A1111's test/test_utils.py::test_options_write, replayed as is: it toggles send_seed."""
    c = client("a1111-test")
    url_options = "/sdapi/v1/options"
    response = c.get(url_options)
    assert response.status_code == 200
    pre_value = response.json()["send_seed"]
    assert c.post(url_options, json={"send_seed": (not pre_value)}).status_code == 200
    response = c.get(url_options)
    assert response.status_code == 200
    assert response.json()["send_seed"] == (not pre_value)
    c.post(url_options, json={"send_seed": pre_value})
    assert c.get(url_options).json()["send_seed"] == pre_value


def test_post_answers_what_it_applied_and_what_it_ignored(client):
    c = client("reporter")
    r = c.post("/sdapi/v1/options", json={"samples_save": False, "send_seed": False, "CLIP_stop_at_last_layers": 2,
                                          "eta_noise_seed_delta": 31337, "forge_preset": "sd", "made_up": [1]})
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": ["CLIP_stop_at_last_layers", "samples_save"],
                        "ignored": ["eta_noise_seed_delta", "forge_preset", "made_up", "send_seed"],
                        "unknown": ["forge_preset", "made_up"]}
    opts = c.get("/sdapi/v1/options").json()
    assert opts["CLIP_stop_at_last_layers"] == 2 and opts["eta_noise_seed_delta"] == 31337
    assert "forge_preset" not in opts and "made_up" not in opts  # unknown keys are not stored
    assert client("someone-else").get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1


@pytest.mark.parametrize("key,value,allowed", [
    ("send_seed", "yes", "true or false"),
    ("jpeg_quality", "80", "an integer"),
    ("jpeg_quality", True, "an integer"),
    ("CLIP_stop_at_last_layers", 1.5, "an integer"),
    ("img_downscale_threshold", "4", "a number"),
    ("quicksettings_list", "sd_model_checkpoint", "a list"),
    ("quicksettings_list", [1, 2], "a list"),
    ("sd_vae", 3, "a string"),
    ("sd_model_checkpoint", ["tiny"], "a string"),
    ("face_restoration_model", "x" * 5000, "a string"),
    ("CLIP_stop_at_last_layers", 13, "1 to 12"),
    ("show_progress_every_n_steps", -2, "-1"),
])
def test_every_value_is_type_checked(client, key, value, allowed):
    c = client("typist")
    r = c.post("/sdapi/v1/options", json={"send_size": False, key: value})
    assert r.status_code == 422, r.text
    assert f"options.{key}" in r.json()["detail"] and allowed in r.json()["detail"]
    assert c.get("/sdapi/v1/options").json()["send_size"] is True  # nothing was applied


def test_whole_floats_pass_for_integers_and_null_leaves_a_key_alone(client):
    c = client("lenient")
    assert c.post("/sdapi/v1/options", json={"jpeg_quality": 90.0, "img_downscale_threshold": 3,
                                             "sd_vae": None, "upscaler_for_img2img": None}).status_code == 200
    opts = c.get("/sdapi/v1/options").json()
    assert opts["jpeg_quality"] == 90 and opts["img_downscale_threshold"] == 3 and opts["sd_vae"] == "Automatic"


def test_samples_format_saves_png_jpg_and_webp_with_the_infotext_in_each(client):
    from sdui.images.infotext import read_infotext

    c = client("formats")
    for fmt, suffix in (("jpg", ".jpg"), ("jpeg", ".jpg"), ("webp", ".webp"), ("png", ".png")):
        assert c.post("/sdapi/v1/options", json={"samples_format": fmt}).status_code == 200
        info = json.loads(c.post("/sdapi/v1/txt2img", json={**TXT, "save_images": True}).json()["info"])
        (saved,) = info["saved"]
        assert saved.endswith(suffix)
        assert read_infotext(Image.open(saved)) == info["infotexts"][0]  # A1111: EXIF UserComment for jpg/webp
        if suffix != ".png":
            assert Image.open(saved).format == {".jpg": "JPEG", ".webp": "WEBP"}[suffix]
    for bad in ("gif", "bmp"):
        r = c.post("/sdapi/v1/options", json={"samples_format": bad})
        assert r.status_code == 422 and "options.samples_format" in r.json()["detail"] and "webp" in r.json()["detail"]
    r = c.post("/sdapi/v1/txt2img", json={**TXT, "override_settings": {"samples_format": "tiff"}})
    assert r.status_code == 422 and "override_settings.samples_format" in r.json()["detail"]


def test_owner_keys_may_come_back_unchanged_but_not_changed(client):
    c = client("folders")
    opts = c.get("/sdapi/v1/options").json()
    same = {k: opts[k] for k in A1111_RESTRICTED | {"invisible_watermark", "api_useragent", "temp_dir"}}
    r = c.post("/sdapi/v1/options", json={**same, "send_size": False})
    assert r.status_code == 200 and r.json()["ignored"] == ["send_size"], r.text
    for key, value in (("outdir_txt2img_samples", "/tmp/elsewhere"), ("samples_filename_pattern", "[prompt]"),
                       ("directories_filename_pattern", "[model_name]"), ("invisible_watermark", False),
                       ("api_enable_requests", False)):
        r = c.post("/sdapi/v1/options", json={**same, "send_seed": False, key: value})
        assert r.status_code == 403, (key, r.text)
        assert f"options.{key}" in r.json()["detail"] and "unchanged" in r.json()["detail"]
    assert c.get("/sdapi/v1/options").json()["send_seed"] is True  # a refused POST applies nothing
    r = c.post("/sdapi/v1/txt2img", json={**TXT, "override_settings": {"outdir_txt2img_samples": "/tmp/x"}})
    assert r.status_code == 403 and "override_settings.outdir_txt2img_samples" in r.json()["detail"]


def test_sd_checkpoint_hash_selects_the_model(client, models_root):
    c = client("hasher")
    sha = _sha256(models_root / "Stable-diffusion" / "other.safetensors")
    for wanted in (sha, sha[:10].upper()):
        c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"})
        r = c.post("/sdapi/v1/options", json={"sd_checkpoint_hash": wanted})
        assert r.status_code == 200 and r.json()["applied"] == ["sd_checkpoint_hash"], r.text
        opts = c.get("/sdapi/v1/options").json()
        assert opts["sd_model_checkpoint"].startswith("other.safetensors") and opts["sd_checkpoint_hash"] == sha
    r = c.post("/sdapi/v1/options", json={"sd_checkpoint_hash": "0" * 64})
    assert r.status_code == 404 and "hash" in r.json()["detail"]
    r = c.post("/sdapi/v1/options", json={"sd_checkpoint_hash": "not a hash"})
    assert r.status_code == 422 and "options.sd_checkpoint_hash" in r.json()["detail"]
    c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"})
    r = c.post("/sdapi/v1/options", json={"sd_checkpoint_hash": sha, "sd_model_checkpoint": "tiny.safetensors"})
    assert r.status_code == 422 and "sd_model_checkpoint" in r.json()["detail"]
    body = {k: v for k, v in TXT.items() if k != "override_settings"}
    tiny_sha = _sha256(models_root / "Stable-diffusion" / "tiny.safetensors")
    r = c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"sd_checkpoint_hash": tiny_sha}})
    assert r.status_code == 200 and json.loads(r.json()["info"])["sd_model_name"] == "tiny"


# ---- options that act on generation --------------------------------------------------------------
def test_clip_skip_is_applied_per_client_and_ensd_reported_as_not_applied(client):
    c = client("clipper")
    plain = c.post("/sdapi/v1/txt2img", json=TXT).json()
    assert json.loads(plain["info"])["ignored"] == []
    assert c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).json()["applied"] == [
        "CLIP_stop_at_last_layers"]
    stored = c.post("/sdapi/v1/txt2img", json=TXT).json()
    info = json.loads(stored["info"])
    assert info["ignored"] == [] and info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    assert stored["images"] != plain["images"]  # applied: other pixels
    other = client("someone-else").post("/sdapi/v1/txt2img", json=TXT).json()
    assert other["images"] == plain["images"]  # another client's clip skip is its own
    back = {**TXT, "override_settings": {"sd_model_checkpoint": "tiny", "CLIP_stop_at_last_layers": 1,
                                         "eta_noise_seed_delta": 31337, "forge_additional_modules": []}}
    info = json.loads(c.post("/sdapi/v1/txt2img", json=back).json()["info"])
    assert info["ignored"] == ["override_settings.eta_noise_seed_delta", "override_settings.forge_additional_modules"]
    assert info["clip_skip"] == 1


def test_samples_save_off_saves_nothing(client):
    c = client("no-saver")
    saved = json.loads(c.post("/sdapi/v1/txt2img", json={**TXT, "save_images": True}).json()["info"])["saved"]
    assert len(saved) == 1
    assert c.post("/sdapi/v1/options", json={"samples_save": False}).json()["applied"] == ["samples_save"]
    info = json.loads(c.post("/sdapi/v1/txt2img", json={**TXT, "save_images": True}).json()["info"])
    assert info["saved"] == []
    src = png_b64(Image.new("RGB", (8, 8), (10, 200, 10)))
    r = c.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert r.status_code == 200 and _png(r.json()["image"]).size == (16, 16)
    on = {**TXT, "save_images": True, "override_settings": {"sd_model_checkpoint": "tiny", "samples_save": True}}
    assert len(json.loads(c.post("/sdapi/v1/txt2img", json=on).json()["info"])["saved"]) == 1


def test_live_preview_options_decide_what_progress_shows(client, api_app, monkeypatch):
    from sdui.jobs import Job
    from sdui.types import GenerationRequest, JobState, Progress

    job = Job(request=GenerationRequest(), owner="client:previewer", state=JobState.RUNNING)
    job.progress = Progress(step=8, total=20, elapsed=1.0, eta=1.5, preview=Image.new("RGB", (8, 8)))
    monkeypatch.setattr(api_app.state.queue, "current_for", lambda owner: job)
    c = client("previewer")

    def shown() -> bool:
        return c.get("/sdapi/v1/progress").json()["current_image"] is not None

    assert shown()
    for change, expected in (({"live_previews_enable": False}, False), ({"live_previews_enable": True}, True),
                             ({"show_progress_every_n_steps": -1}, False), ({"show_progress_every_n_steps": 0}, False),
                             ({"show_progress_every_n_steps": 5}, False), ({"show_progress_every_n_steps": 8}, True),
                             ({"show_progress_every_n_steps": 1}, True)):
        assert c.post("/sdapi/v1/options", json=change).status_code == 200
        assert shown() is expected, change


# ---- cmd-flags -----------------------------------------------------------------------------------
def test_cmd_flags_in_a1111_shape_with_sdui_values(client, api_app, models_root):
    flags = client().get("/sdapi/v1/cmd-flags").json()
    assert set(A1111_FLAG_DEFAULTS) <= set(flags)
    settings = api_app.state.settings
    assert flags["api"] is True and flags["listen"] is False and flags["port"] == 7860
    assert flags["models_dir"] == str(models_root) and flags["esrgan_models_path"] == str(models_root / "ESRGAN")
    assert flags["styles_file"] == settings.styles_file and flags["use_cpu"] == [] and flags["precision"] == "autocast"
    assert flags["api_server_stop"] is False and flags["loglevel"] == "INFO" and flags["api_log"] is True
    assert flags["outputs_dir"] == settings.outputs_dir  # sdui's own settings follow A1111's
    assert flags["xformers"] is False and flags["gfpgan_dir"] == "./GFPGAN"  # A1111's defaults otherwise


def test_cmd_flags_hide_credentials(models_root, tmp_path):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True, api_auth="ann:s3cret",
                        gradio_auth="ben:hunter2", use_cpu="all")
    with in_process(create_app(settings, with_ui=False)) as c:
        r = c.get("/sdapi/v1/cmd-flags", auth=("ann", "s3cret"))
    assert r.status_code == 200 and "s3cret" not in r.text and "hunter2" not in r.text
    assert r.json()["api_auth"] == "***" and r.json()["gradio_auth"] == "***" and r.json()["use_cpu"] == ["all"]


# ---- the routes clients call ---------------------------------------------------------------------
A1111_TEST_GET_URLS = ["sdapi/v1/cmd-flags", "sdapi/v1/samplers", "sdapi/v1/upscalers", "sdapi/v1/sd-models",
                       "sdapi/v1/hypernetworks", "sdapi/v1/face-restorers", "sdapi/v1/realesrgan-models",
                       "sdapi/v1/prompt-styles", "sdapi/v1/embeddings"]


@pytest.mark.parametrize("url", A1111_TEST_GET_URLS)
def test_a1111s_own_test_get_api_url_passes(client, url):
    """A1111's test/test_utils.py::test_get_api_url, replayed."""
    assert client().get(f"/{url}").status_code == 200


def test_lists_sdui_does_not_have_are_empty_in_a1111s_shape(client):
    c = client()
    for route in ("hypernetworks", "face-restorers", "realesrgan-models"):
        r = c.get(f"/sdapi/v1/{route}")
        assert r.status_code == 200 and r.json() == [], route
    assert c.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert c.get("/sdapi/v1/sd-modules").json() == c.get("/sdapi/v1/sd-vae").json() == []


def test_realesrgan_models_lists_the_realesrgan_folder(tmp_path, models_root):
    import shutil

    root = tmp_path / "models"
    shutil.copytree(models_root / "ESRGAN", root / "RealESRGAN")
    (root / "Stable-diffusion").mkdir()
    with in_process(create_app(Settings(models_dir=str(root), outputs_dir=str(tmp_path / "o"), api=True),
                               with_ui=False)) as c:
        listed = c.get("/sdapi/v1/realesrgan-models").json()
        assert [(m["name"], m["scale"]) for m in listed] == [("tiny-esrgan", 4)]
        assert "tiny-esrgan" in [u["name"] for u in c.get("/sdapi/v1/upscalers").json()]


def test_prompt_styles_read_an_a1111_styles_csv(client, api_app, tmp_path, monkeypatch, caplog):
    path = tmp_path / "styles.csv"
    monkeypatch.setattr(api_app.state.settings, "styles_file", str(path))
    c = client()
    assert c.get("/sdapi/v1/prompt-styles").json() == []  # no file: no styles
    with open(path, "w", encoding="utf-8-sig", newline="") as f:  # as A1111 writes it: BOM, quoted fields
        w = csv.writer(f)
        w.writerow(["name", "prompt", "negative_prompt"])
        w.writerow(["cinematic", "{prompt}, film grain, 35mm", "cartoon, drawing"])
        w.writerow(["# a comment", "x", "y"])
        w.writerow(["", "nameless", ""])
        w.writerow(["plain", "oil painting, \"thick\" strokes", ""])
        w.writerow(["cinematic", "{prompt}, anamorphic", "blurry"])  # a later row replaces an earlier one
    assert c.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "cinematic", "prompt": "{prompt}, anamorphic", "negative_prompt": "blurry"},
        {"name": "plain", "prompt": 'oil painting, "thick" strokes', "negative_prompt": ""}]
    path.write_text("name,text\nold,an old style\n", encoding="utf-8")  # A1111's old two-column form
    assert c.get("/sdapi/v1/prompt-styles").json() == [{"name": "old", "prompt": "an old style", "negative_prompt": ""}]
    path.write_bytes(b"name,prompt\n\xff\xfe broken,\x00\n")
    caplog.set_level(logging.WARNING, logger="sdui")
    r = c.get("/sdapi/v1/prompt-styles")
    assert r.status_code == 200 and r.json() == []
    assert any("styles file" in rec.getMessage() and "could not be read" in rec.getMessage() for rec in caplog.records)


def test_extra_batch_images_upscales_every_image(client):
    c = client("batcher")
    red, blue = Image.new("RGB", (20, 10), (250, 10, 10)), Image.new("RGB", (8, 12), (10, 10, 250))
    body = {"imageList": [{"data": png_b64(red), "name": "red.png"}, {"data": "data:image/png;base64," + png_b64(blue),
                                                                  "name": "blue.png"}],
            "upscaler_1": "tiny-esrgan", "upscaling_resize": 2, "resize_mode": 0, "show_extras_results": True,
            "gfpgan_visibility": 0, "codeformer_visibility": 0, "codeformer_weight": 0, "upscaler_2": "None",
            "extras_upscaler_2_visibility": 0, "upscale_first": False}
    r = c.post("/sdapi/v1/extra-batch-images", json=body)
    assert r.status_code == 200, r.text
    out = [_png(b) for b in r.json()["images"]]
    assert [im.size for im in out] == [(40, 20), (16, 24)]
    assert "Postprocess upscaler: tiny-esrgan" in r.json()["html_info"]
    assert out[0].convert("RGB").getpixel((20, 10))[0] > out[0].convert("RGB").getpixel((20, 10))[2]
    to = {**body, "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 20}
    r = c.post("/sdapi/v1/extra-batch-images", json=to)  # A1111: cover 40x20, crop the centre (upscaling_crop)
    assert [_png(b).size for b in r.json()["images"]] == [(40, 20), (40, 20)]
    r = c.post("/sdapi/v1/extra-batch-images", json={**to, "upscaling_crop": False})  # no crop: the covering size
    assert [_png(b).size for b in r.json()["images"]] == [(40, 20), (40, 60)]
    r = c.post("/sdapi/v1/extra-batch-images", json={**body, "upscaler_2": "nope", "extras_upscaler_2_visibility": 0.5})
    assert r.status_code == 422 and "upscaler_2" in r.json()["detail"]
    r = c.post("/sdapi/v1/extra-batch-images", json={**body, "imageList": []})
    assert r.status_code == 422 and "imageList" in r.json()["detail"]
    broken = {**body, "imageList": [body["imageList"][0], {"data": "aGVsbG8=", "name": "x.png"}]}
    r = c.post("/sdapi/v1/extra-batch-images", json=broken)
    assert r.status_code == 422 and "imageList[1].data" in r.json()["detail"]


def test_extras_list_face_restoration_and_upscale_first_as_ignored(client):
    c = client("extras-ignored")
    img = png_b64(Image.new("RGB", (8, 8), (250, 10, 10)))
    plain = {"upscaler_1": "Lanczos", "upscaling_resize": 2, "gfpgan_visibility": 0, "codeformer_visibility": 0,
             "codeformer_weight": 0, "upscale_first": False}  # what A1111's clients send: the defaults, nothing ignored
    asked = {**plain, "gfpgan_visibility": 0.5, "codeformer_visibility": 1, "codeformer_weight": 0.3, "upscale_first": True,
             "no_such_option": 1}
    wanted = ["codeformer_visibility", "codeformer_weight", "gfpgan_visibility", "no_such_option", "upscale_first"]
    for route, body in (("extra-single-image", {"image": img}), ("extra-batch-images", {"imageList": [{"data": img}]})):
        r = c.post(f"/sdapi/v1/{route}", json={**body, **plain})
        assert r.status_code == 200 and json.loads(r.json()["info"]) == {"ignored": []}, r.text
        r = c.post(f"/sdapi/v1/{route}", json={**body, **asked})
        assert r.status_code == 200 and json.loads(r.json()["info"]) == {"ignored": wanted}, r.text
        assert "Postprocess upscaler: Lanczos" in r.json()["html_info"]  # the upscale itself still ran


def test_refresh_unload_and_reload(client, api_app):
    c = client("loader")
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings"):
        assert c.post(f"/sdapi/v1/{route}").status_code == 200, route
    manager = api_app.state.engine.manager
    assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other"}).status_code == 200
    assert c.post("/sdapi/v1/reload-checkpoint").json() == {}
    assert manager.current is not None and manager.current.name == "other"
    assert c.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert manager.cached_names() == [] and manager.current is None
    assert c.post("/sdapi/v1/txt2img", json=TXT).status_code == 200  # the next job loads its model again


def test_interrogate_is_a_501_sentence_never_a_crash(client):
    c = client()
    for body in ({"image": png_b64(Image.new("RGB", (8, 8))), "model": "clip"}, {"model": "deepdanbooru"}, None):
        r = c.post("/sdapi/v1/interrogate", json=body)
        assert r.status_code == 501 and "no image interrogation model" in r.json()["detail"]
    assert c.get("/sdapi/v1/sd-models").status_code == 200


def test_every_sdapi_route_is_described_in_the_openapi_document(client):
    doc = client().get("/openapi.json").json()
    ops = [(m.upper(), p, op) for p, ops in doc["paths"].items() if p.startswith("/sdapi/v1/") for m, op in ops.items()]
    assert len(ops) >= 36
    assert [f"{m} {p}" for m, p, op in ops if not op.get("description", "").strip()] == []
    for route in ("extra-batch-images", "latent-upscale-modes", "embeddings", "prompt-styles", "hypernetworks",
                  "face-restorers", "realesrgan-models", "sd-modules", "refresh-vae", "refresh-loras",
                  "unload-checkpoint", "reload-checkpoint", "server-kill", "server-restart", "server-stop",
                  "interrogate"):
        assert f"/sdapi/v1/{route}" in doc["paths"], route


# ---- stopping the server -------------------------------------------------------------------------
STOP_ROUTES = ("server-kill", "server-stop", "server-restart")


def test_server_stop_routes_are_off_without_the_flag(client):
    for route in STOP_ROUTES:
        r = client().post(f"/sdapi/v1/{route}")
        assert r.status_code == 404 and "--api-server-stop" in r.json()["detail"], route


def test_server_stop_routes_are_for_the_admin_only(models_root, tmp_path, monkeypatch):
    from sdui.api import options

    stops = []
    monkeypatch.setattr(options, "stop_process", lambda: stops.append(1))
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True, api_server_stop=True,
                        api_auth="admin:pw,bob:pw2")
    with in_process(create_app(settings, with_ui=False)) as c:
        for route in STOP_ROUTES:
            r = c.post(f"/sdapi/v1/{route}", auth=("bob", "pw2"))
            assert r.status_code == 403 and "admin" in r.json()["detail"], route
        assert stops == []
        r = c.post("/sdapi/v1/server-restart", auth=("admin", "pw"))
        assert r.status_code == 501 and "cannot restart" in r.json()["detail"]
        for route in ("server-kill", "server-stop"):
            r = c.post(f"/sdapi/v1/{route}", auth=("admin", "pw"))
            assert r.status_code == 200 and r.text == "Stopping.", route
        assert stops == [1, 1]
    # without credentials the admin is a client on this machine, never one from the network
    settings = settings.replace(api_auth=None)
    app = create_app(settings, with_ui=False)
    try:
        for host, expected in (("127.0.0.1", 200), ("192.168.1.20", 403)):
            with app_client(app, client=(host, 40000)) as c:
                assert c.post("/sdapi/v1/server-stop").status_code == expected, host
    finally:
        shutdown_app(app)


def test_server_stop_really_stops_a_running_server(tmp_path):
    """The real server (app.py, uvicorn, a socket) exits when its admin posts server-stop."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from sdui.server import main; sys.exit(main(sys.argv[1:]))",
                             "--api", "--api-server-stop", "--api-auth", "admin:pw", "--port", str(port),
                             "--models-dir", str(tmp_path / "models"), "--outputs-dir", str(tmp_path / "out"),
                             "--styles-file", str(tmp_path / "styles.csv"), "--log-level", "info"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.3)
        r = httpx.post(f"http://127.0.0.1:{port}/sdapi/v1/server-stop", auth=("admin", "pw"), timeout=10)
        assert r.status_code == 200 and r.text == "Stopping."
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "user:admin asked to stop the server" in out and "POST /sdapi/v1/server-stop -> 200" in out


# ---- the log --------------------------------------------------------------------------------------
def _lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sdui.api"]


def test_one_log_line_per_request_that_does_work_and_why_one_failed(client, caplog):
    caplog.set_level(logging.INFO, logger="sdui.api")
    c = client("logger")
    assert c.post("/sdapi/v1/txt2img", json=TXT).status_code == 200
    (line,) = _lines(caplog)
    text = line.getMessage()
    assert line.levelno == logging.INFO
    for part in ("client:logger", "POST /sdapi/v1/txt2img", "64x64", "2 steps", "1 image", "model tiny", "-> 200 in "):
        assert part in text, (part, text)
    assert "a lantern" not in text  # prompts stay private
    caplog.clear()
    c.get("/sdapi/v1/options")
    c.get("/sdapi/v1/progress")
    assert _lines(caplog) == []  # look-ups log at DEBUG only
    cases = (({**TXT, "steps": 999}, 422, "steps=999"), ({**TXT, "steps": "many"}, 422, "steps"),
             ({**TXT, "override_settings": {"sd_model_checkpoint": "ghost"}}, 404, "ghost"),
             ({**TXT, "override_settings": {"sd_vae": 5}}, 422, "override_settings.sd_vae"))
    for body, status, reason in cases:
        caplog.clear()
        assert c.post("/sdapi/v1/txt2img", json=body).status_code == status
        (line,) = _lines(caplog)
        assert line.levelno == logging.WARNING and f"-> {status} in " in line.getMessage()
        assert reason in line.getMessage().split(f"-> {status} in ", 1)[1], line.getMessage()
    caplog.clear()
    c.post("/sdapi/v1/options", json={"send_seed": "no"})
    (line,) = _lines(caplog)
    assert "POST /sdapi/v1/options" in line.getMessage() and "options.send_seed" in line.getMessage()


def test_a_failed_job_and_a_refused_login_are_logged_with_the_reason(models_root, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="sdui.api")
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True, api_auth="ann:pw")
    app = create_app(settings, with_ui=False)

    def broken(*a, **kw):
        raise RuntimeError("simulated crash in the pipeline")

    monkeypatch.setattr(app.state.engine, "generate", broken)
    with in_process(app) as c:
        assert c.get("/sdapi/v1/sd-models", auth=("ann", "wrong")).status_code == 401
        r = c.post("/sdapi/v1/txt2img", json=TXT, auth=("ann", "pw"))
    assert r.status_code == 500
    texts = [(rec.levelno, rec.getMessage()) for rec in _lines(caplog)]
    assert any(level == logging.WARNING and "GET /sdapi/v1/sd-models -> 401" in t and "credentials" in t
               for level, t in texts), texts
    assert any(level == logging.ERROR and "user:ann POST /sdapi/v1/txt2img" in t and "-> 500" in t
               and "simulated crash in the pipeline" in t for level, t in texts), texts


def test_log_level_flag_is_applied_by_serve(monkeypatch, tmp_path):
    import uvicorn

    from sdui import server

    class _App:
        pass

    logger = logging.getLogger("sdui")
    before = logger.level
    ran = []
    monkeypatch.setattr(server, "create_app", lambda settings: _App())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    try:
        for level in ("debug", "warning", "error", "info"):
            assert server.serve(Settings(models_dir=str(tmp_path), outputs_dir=str(tmp_path), log_level=level)) == 0
            assert logger.getEffectiveLevel() == getattr(logging, level.upper())
        assert len(ran) == 4
    finally:
        logger.setLevel(before)


# ---- replays of real clients ---------------------------------------------------------------------
def test_open_webui_switches_the_model_and_generates(client):
    """Open WebUI (backend/open_webui/routers/images.py): ``set_image_model`` GETs options, sets
    ``sd_model_checkpoint`` to a title from ``sd-models`` and POSTs the whole dict back; then
    ``image_generations`` POSTs its txt2img body and reads ``images`` and ``info``."""
    c = client("open-webui")
    headers = {"authorization": ""}  # get_automatic1111_api_auth() without credentials
    models = [{"id": m["title"], "name": m["model_name"]} for m in c.get("/sdapi/v1/sd-models", headers=headers).json()]
    model = next(m["id"] for m in models if m["name"] == "other")
    r = c.get("/sdapi/v1/options", headers=headers)
    options = r.json()
    assert model != options["sd_model_checkpoint"]
    options["sd_model_checkpoint"] = model
    r = c.post("/sdapi/v1/options", json=options, headers=headers)
    r.raise_for_status()
    assert r.json()["applied"] == ["sd_model_checkpoint"] and r.json()["ignored"] == []
    assert c.get("/sdapi/v1/options", headers=headers).json()["sd_model_checkpoint"] == model
    assert client("another-user").get("/sdapi/v1/options").json()["sd_model_checkpoint"] != model
    data = {"prompt": "a lighthouse at dusk", "batch_size": 1, "width": 64, "height": 64, "steps": 2,
            "negative_prompt": "blurry"}
    res = c.post("/sdapi/v1/txt2img", json=data, headers=headers).json()
    assert len(res["images"]) == 1 and _png(res["images"][0]).size == (64, 64)
    info = json.loads(res["info"])
    assert info["sd_model_name"] == "other" and info["ignored"] == []


def _sillytavern_ping_and_lists(c) -> str:
    """SillyTavern's server (src/endpoints/stable-diffusion.js) when the user opens the extension:
    /ping, /samplers, /schedulers, /models, /upscalers, /vaes, /get-model. Returns the model title."""
    assert c.get("/sdapi/v1/options").status_code == 200  # /ping: result.ok
    samplers = [x["name"] for x in c.get("/sdapi/v1/samplers").json()]
    schedulers = [x["name"] for x in c.get("/sdapi/v1/schedulers").json()]
    models = [{"value": x["title"], "text": x["title"]} for x in c.get("/sdapi/v1/sd-models").json()]
    upscalers = [x["name"] for x in c.get("/sdapi/v1/upscalers").json()]
    latent = [x["name"] for x in c.get("/sdapi/v1/latent-upscale-modes").json()]
    upscalers[1:1] = latent
    vae_answers = [c.get("/sdapi/v1/sd-vae"), c.get("/sdapi/v1/sd-modules")]
    data = next(r.json() for r in vae_answers if r.status_code == 200)
    assert isinstance(data, list)
    current = c.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    assert "DDIM" in samplers and "karras" in schedulers and upscalers[0] == "None"
    assert current in [m["value"] for m in models]
    return next(m["value"] for m in models if m["value"].startswith("tiny.safetensors"))


def _sillytavern_set_model(c, model: str) -> None:
    """/set-model: POST options {sd_model_checkpoint}, then poll progress until idle."""
    result = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": model})
    assert result.status_code == 200
    for _ in range(10):
        progress_state = c.get("/sdapi/v1/progress").json()
        if progress_state["progress"] == 0.0 and progress_state["state"]["job_count"] == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("progress never went idle")


def _sillytavern_generate(c, **settings):
    """/generate: GET options (Forge check), then POST the extension's body to txt2img as it came,
    ``url`` and ``auth`` included; ``undefined`` values are left out, as JSON.stringify does."""
    sd = {"sampler": "DDIM", "scheduler": "normal", "steps": 20, "scale": 7, "width": 512, "height": 512,
          "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 1.0, "denoising_strength": 0.7,
          "hr_second_pass_steps": 0, "seed": -1, "clip_skip": 1, "vae": "", **settings}
    body = {"url": "http://localhost:7860", "auth": "", "prompt": "best quality, absurdres, aesthetic, a red fox",
            "negative_prompt": "lowres, bad anatomy, bad hands, text, error", "sampler_name": sd["sampler"],
            "scheduler": sd["scheduler"], "steps": sd["steps"], "cfg_scale": sd["scale"], "width": sd["width"],
            "height": sd["height"], "restore_faces": sd["restore_faces"], "enable_hr": sd["enable_hr"],
            "hr_upscaler": sd["hr_upscaler"], "hr_scale": sd["hr_scale"], "hr_additional_modules": [],
            "denoising_strength": sd["denoising_strength"], "hr_second_pass_steps": sd["hr_second_pass_steps"],
            "override_settings": {"CLIP_stop_at_last_layers": sd["clip_skip"]},
            "override_settings_restore_afterwards": True, "clip_skip": sd["clip_skip"], "save_images": True,
            "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False}
    if sd["seed"] >= 0:
        body["seed"] = sd["seed"]
    options = c.get("/sdapi/v1/options").json()
    assert "forge_preset" not in options  # so SillyTavern drops forge_additional_modules
    r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_sillytavern_connects_lists_and_generates(client):
    c = client("sillytavern")
    model = _sillytavern_ping_and_lists(c)
    _sillytavern_set_model(c, model)
    data = _sillytavern_generate(c, sampler="Euler", scheduler="karras", steps=2, width=64, height=64, seed=7)
    img = _png(data["images"][0])  # SillyTavern shows data.images[0] as a PNG
    assert img.size == (64, 64) and "Schedule type: Karras" in img.info["parameters"]
    info = json.loads(data["info"])
    assert info["sd_model_name"] == "tiny" and info["seed"] == 7
    assert set(info["ignored"]) == {"auth", "hr_additional_modules", "url"}  # clip_skip is applied
    assert info["saved"]  # save_images: true


def test_sillytavern_default_body_scheduler_normal(client):
    """SillyTavern's defaults: sampler DDIM, scheduler "normal" (at 64x64, 2 steps)."""
    c = client("sillytavern-defaults")
    _sillytavern_set_model(c, _sillytavern_ping_and_lists(c))
    data = _sillytavern_generate(c, steps=2, width=64, height=64)
    assert _png(data["images"][0]).size == (64, 64)
    assert json.loads(data["info"])["sampler_name"] == "DDIM"


def test_sillytavern_default_body_at_960x540(client):
    """SillyTavern's 16:9 size (960x540: 540 is not a multiple of 8), its default sampler and scheduler."""
    c = client("sillytavern-wide")
    data = _sillytavern_generate(c, steps=2, width=960, height=540, seed=3)
    assert _png(data["images"][0]).size[0] == 960
    assert json.loads(data["info"])["seed"] == 3
