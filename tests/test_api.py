"""The A1111-compatible API on tiny models.

HTTP requests go to the app in process (Starlette's TestClient: the same ASGI app, middlewares and
routes, no socket), one app per module where tests need no fresh state. One test, the published
A1111 client library, runs against the real server over a socket (``running_server``)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from sdui.config import Settings
from sdui.server import create_app
from tests.server_util import png_b64, app_client, in_process, running_server, shutdown_app


@pytest.fixture(scope="module")
def api_app(models_root, tmp_path_factory):
    """One app for the module's tests. They share its engine, queue and per-client options: a test
    that sets options or interrupts does it under ``X-Client-Id`` names of its own, and every other
    request names its model (``override_settings``)."""
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("api-outputs")),
                        api=True, queue_size=4)
    app = create_app(settings, with_ui=False)
    yield app
    shutdown_app(app)


@pytest.fixture()
def client(api_app):
    """``client(headers=...)``: an in-process client of the module's app."""
    made = []

    def make(**kw):
        c = app_client(api_app, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


TXT = {"prompt": "a lantern", "negative_prompt": "dark", "steps": 2, "width": 64, "height": 64, "seed": 21,
       "sampler_name": "Euler a", "override_settings": {"sd_model_checkpoint": "tiny"}}


def test_txt2img_answers_like_a1111(client):
    with client() as c:
        r = c.post("/sdapi/v1/txt2img", json={**TXT, "batch_size": 2, "restore_faces": True, "made_up_field": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 2
    img = _png(body["images"][0])
    assert img.size == (64, 64) and img.info["parameters"].startswith("a lantern\nNegative prompt: dark\nSteps: 2")
    info = json.loads(body["info"])
    assert info["all_seeds"] == [21, 22] and info["seed"] == 21 and info["sd_model_name"] == "tiny"
    assert len(info["sd_model_hash"]) == 10 and len(info["infotexts"]) == 2
    assert info["ignored"] == ["made_up_field", "restore_faces"]
    assert body["parameters"]["prompt"] == "a lantern" and body["parameters"]["steps"] == 2


def test_api_and_cli_give_byte_identical_images(client, models_root, tmp_path, capsys):
    from sdui import cli

    with client() as c:
        r = c.post("/sdapi/v1/txt2img", json={**TXT, "save_images": True})
    api_png = base64.b64decode(r.json()["images"][0])
    code = cli.main(["txt2img", "--prompt", "a lantern", "--negative-prompt", "dark", "--steps", "2", "--W", "64",
                     "--H", "64", "--seed", "21", "--ckpt", "tiny", "--models-dir", str(models_root), "--outdir",
                     str(tmp_path / "cli"), "--quiet"])
    assert code == 0
    cli_png = open(capsys.readouterr().out.split()[0], "rb").read()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(api_png))), np.asarray(Image.open(io.BytesIO(cli_png))))
    assert Image.open(io.BytesIO(api_png)).info["parameters"] == Image.open(io.BytesIO(cli_png)).info["parameters"]
    saved = json.loads(r.json()["info"])["saved"]
    assert open(saved[0], "rb").read() == cli_png


def test_img2img_and_inpaint_with_base64_and_data_urls(client):
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    with client() as c:
        r = c.post("/sdapi/v1/img2img", json={**TXT, "steps": 4, "init_images": ["data:image/png;base64," + png_b64(init)],
                                             "denoising_strength": 0.5, "resize_mode": 1})
        assert r.status_code == 200, r.text
        assert "Denoising strength: 0.5" in _png(r.json()["images"][0]).info["parameters"]
        r = c.post("/sdapi/v1/img2img", json={**TXT, "steps": 4, "init_images": [png_b64(init)], "mask": png_b64(mask),
                                             "inpainting_fill": 1, "mask_blur": 0})
    assert r.status_code == 200, r.text
    out = np.asarray(_png(r.json()["images"][0]).convert("RGB"))
    assert np.array_equal(out[:8], np.asarray(init)[:8])
    assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True


@pytest.mark.parametrize("payload,status,needle", [
    ({"width": 2049}, 422, "width=2049"),
    ({"steps": "many"}, 422, "steps"),
    ({"sampler_name": "Euler b"}, 422, "sampler='Euler b'"),
    ({"override_settings": {"sd_model_checkpoint": "ghost"}}, 404, "ghost"),
])
def test_errors_have_a1111_shape_and_status(client, payload, status, needle):
    with client() as c:
        r = c.post("/sdapi/v1/txt2img", json={**TXT, **payload})
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"} and needle in body["errors"]


def test_broken_init_image_is_422_and_server_keeps_running(client):
    with client() as c:
        r = c.post("/sdapi/v1/img2img", json={**TXT, "init_images": ["aGVsbG8="]})
        assert r.status_code == 422 and "init_images" in r.json()["detail"]
        assert c.post("/sdapi/v1/txt2img", json=TXT).status_code == 200


def test_listing_routes(client):
    with client() as c:
        models = c.get("/sdapi/v1/sd-models").json()
        assert {m["model_name"] for m in models} >= {"tiny", "other", "tiny-folder"}
        tiny = next(m for m in models if m["model_name"] == "tiny")
        assert set(tiny) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert tiny["title"].startswith("tiny.safetensors")
        names = [s["name"] for s in c.get("/sdapi/v1/samplers").json()]
        assert names[:2] == ["Euler a", "Euler"] and "DPM++ 2M SDE" in names
        assert [s["name"] for s in c.get("/sdapi/v1/schedulers").json()][:3] == ["automatic", "uniform", "karras"]
        ups = [u["name"] for u in c.get("/sdapi/v1/upscalers").json()]
        assert ups == ["None", "Lanczos", "Nearest", "SD x4 upscaler", "tiny-esrgan"]
        assert c.get("/sdapi/v1/sd-vae").json() == [] and c.get("/sdapi/v1/loras").json() == []
        mem = c.get("/sdapi/v1/memory").json()
        assert mem["ram"]["total"] > 0 and "cuda" in mem
        flags = c.get("/sdapi/v1/cmd-flags").json()
        assert flags["api"] is True and flags["models_dir"]
        assert c.post("/sdapi/v1/refresh-checkpoints").status_code == 200
        assert "/sdapi/v1/txt2img" in c.get("/openapi.json").json()["paths"]


def test_options_switch_the_model_for_that_client_only(client):
    body = {k: v for k, v in TXT.items() if k != "override_settings"}
    with client(headers={"X-Client-Id": "alice"}) as alice, client(headers={"X-Client-Id": "bob"}) as bob:
        assert alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other"}).status_code == 200
        assert bob.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"}).status_code == 200
        assert alice.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("other")
        assert bob.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny")
        results = {}

        def go(name, c):
            results[name] = c.post("/sdapi/v1/txt2img", json=body).json()

        threads = [threading.Thread(target=go, args=("alice", alice)), threading.Thread(target=go, args=("bob", bob))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert json.loads(results["alice"]["info"])["sd_model_name"] == "other"
    assert json.loads(results["bob"]["info"])["sd_model_name"] == "tiny"
    assert results["alice"]["images"][0] != results["bob"]["images"][0]
    with client() as c:
        r = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "ghost"})
        assert r.status_code == 404


def test_interrupt_only_touches_the_callers_job(client, api_app):
    slow = {**TXT, "steps": 40}
    with client(headers={"X-Client-Id": "alice"}) as alice, client(headers={"X-Client-Id": "mallory"}) as mal:
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", alice.post("/sdapi/v1/txt2img", json=slow)))
        t.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            p = alice.get("/sdapi/v1/progress").json()
            if p["state"]["sampling_step"] >= 2:
                break
            time.sleep(0.05)
        assert p["state"]["sampling_steps"] == 40 and 0 < p["progress"] < 1
        assert mal.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0, "mallory can see alice's job"
        assert mal.post("/sdapi/v1/interrupt").json() == {"interrupted": 0}
        # the interrupt route cancels before it answers: had it touched alice's job, it would show now
        assert api_app.state.queue.running is not None and not api_app.state.queue.running.cancel_event.is_set()
        assert alice.post("/sdapi/v1/interrupt").json() == {"interrupted": 1}
        t.join(60)
    r = out["r"]
    # A1111: an interrupted request answers 200 with the current partial image (never saved)
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    assert json.loads(r.json()["info"])["partial_images"] == [0]


def test_full_queue_answers_503_at_once(models_root, tmp_path):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), api=True, queue_size=1)
    app = create_app(settings, with_ui=False)
    with in_process(app) as c:
        queue = app.state.queue
        slow = {**TXT, "steps": 60}
        threads = [threading.Thread(target=lambda: c.post("/sdapi/v1/txt2img", json=slow)) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.5)
        deadline = time.time() + 30
        while queue.pending_count < 1 and time.time() < deadline:
            time.sleep(0.05)
        t0 = time.time()
        r = c.post("/sdapi/v1/txt2img", json=TXT)
        assert r.status_code == 503 and "queue is full" in r.json()["detail"]
        assert time.time() - t0 < 5
        queue.cancel("x", None)
        for j in list(queue._jobs.values()):
            j.cancel_event.set()
        queue.cancel(next(iter(queue._jobs.values())).owner)
        for t in threads:
            t.join(120)


def test_extra_single_image_and_png_info(client):
    src = Image.new("RGB", (20, 10), (250, 10, 10))
    with client() as c:
        r = c.post("/sdapi/v1/extra-single-image", json={"image": png_b64(src), "upscaler_1": "tiny-esrgan",
                                                         "upscaling_resize": 2})
        assert r.status_code == 200, r.text
        assert _png(r.json()["image"]).size == (40, 20)
        gen = c.post("/sdapi/v1/txt2img", json=TXT).json()["images"][0]
        info = c.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + gen}).json()
    assert info["info"].startswith("a lantern") and info["parameters"]["Seed"] == "21"
    assert info["items"]["parameters"] == info["info"]


def test_a1111_client_library_works_unchanged_over_a_real_socket(models_root, tmp_path):
    """webuiapi, a Python client written for AUTOMATIC1111, as an outside check that we match; the
    one test here that runs the real server (uvicorn, a socket, ``requests`` as the client)."""
    import webuiapi

    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), api=True)
    with running_server(create_app(settings, with_ui=False)) as base:
        port = int(base.rsplit(":", 1)[1])
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)
        title = next(t for t in api.util_get_model_names() if t.startswith("tiny.safetensors"))
        api.util_set_model(title, find_closest=False)
        assert api.util_get_current_model() == title
        result = api.txt2img(prompt="a lantern", negative_prompt="dark", seed=21, width=64, height=64, cfg_scale=7)
        assert result.image.size == (64, 64) and result.info["all_seeds"] == [21]
        assert result.parameters["prompt"] == "a lantern"
        up = api.img2img(images=[result.image], prompt="a lantern", denoising_strength=0.5, seed=3, width=64, height=64)
        assert up.image.size == (64, 64)
        assert "Euler a" in api.util_get_sampler_names() and "karras" in api.util_get_scheduler_names()
        assert api.png_info(result.image).info.startswith("a lantern")


def test_auth_guards_every_api_route(models_root, tmp_path):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), api=True,
                        api_auth="ann:secret,ben:hunter2")
    with in_process(create_app(settings, with_ui=False)) as c:
        for path in ("/sdapi/v1/sd-models", "/sdapi/v1/options", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), path
        assert c.post("/sdapi/v1/txt2img", json=TXT).status_code == 401
        assert c.get("/sdapi/v1/sd-models", auth=("ann", "wrong")).status_code == 401
        assert c.get("/sdapi/v1/sd-models", auth=("ben", "hunter2")).status_code == 200


def test_gradio_auth_without_api_auth_protects_the_api_with_the_same_users(models_root, tmp_path):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "o"), api=True, gradio_auth="ann:pw")
    with in_process(create_app(settings, with_ui=False)) as c:
        assert c.get("/sdapi/v1/samplers").status_code == 401
        assert c.get("/sdapi/v1/samplers", auth=("ann", "pw")).status_code == 200
