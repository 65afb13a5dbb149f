"""A1111's "SD VAE": a file from models/VAE/ replaces the checkpoint's VAE (A1111 layout, with or
without the ``first_stage_model.`` prefix, or diffusers layout), "None" restores the built-in one,
"Automatic" picks VAE/<checkpoint stem>.*; the infotext names the VAE and its hash as A1111 does.
Tiny random-weight VAEs stand in for real ones."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdui.images import infotext
from sdui.models.export import vae_to_ldm
from sdui.types import GenerationRequest, InvalidRequest, ModelLoadError
from tests import tiny

BASE = dict(prompt="a red door", negative_prompt="fog", steps=2, width=64, height=64, seed=31, model="tiny",
            save=False)


@pytest.fixture(scope="module")
def other_vae():
    return tiny.tiny_pipeline(seed=100).vae


@pytest.fixture()
def vae_root(models_root, other_vae, tmp_path):
    """models/ whose Stable-diffusion/ is the shared tiny one, and VAE/ with: other-vae.safetensors
    (A1111 layout, no prefix), other-vae-prefixed.pt (a pickle, with first_stage_model.),
    other-vae-diffusers.safetensors (diffusers layout), tiny-ckpt.safetensors (Automatic for the
    tiny-ckpt checkpoint), misfit.safetensors (wrong shapes) and notavae.safetensors."""
    root = tmp_path / "models"
    root.mkdir()
    (root / "Stable-diffusion").symlink_to(models_root / "Stable-diffusion")
    vae_dir = root / "VAE"
    vae_dir.mkdir()
    ldm = {k: v.contiguous() for k, v in vae_to_ldm(other_vae).items()}
    bare = {k[len("first_stage_model."):]: v for k, v in ldm.items()}
    save_file(bare, vae_dir / "other-vae.safetensors")
    torch.save({"state_dict": ldm}, vae_dir / "other-vae-prefixed.pt")
    save_file({k: v.contiguous() for k, v in other_vae.state_dict().items()}, vae_dir / "other-vae-diffusers.safetensors")
    save_file(bare, vae_dir / "tiny-ckpt.safetensors")
    misfit = dict(bare)
    key = next(k for k in misfit if k.endswith("conv_in.weight"))
    misfit[key] = torch.zeros(misfit[key].shape[0] + 1, *misfit[key].shape[1:])
    save_file(misfit, vae_dir / "misfit.safetensors")
    save_file({"some.weight": torch.zeros(3)}, vae_dir / "notavae.safetensors")
    return root


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def _reference(engine, vae) -> np.ndarray:
    """A stock diffusers call on the checkpoint's pipeline with ``vae`` registered in place of its VAE."""
    from tests.test_samplers import _plain

    from sdui import samplers

    loaded = engine.manager.current
    pipe, kept = loaded.pipe, loaded.pipe.vae
    pipe.register_modules(vae=vae)
    try:
        sched = samplers.make_scheduler(loaded.base_scheduler_config, "Euler a", seed=[31])
        return _plain(pipe, sched, "a red door", "fog", [31], 2, 7.0, 64)[0]
    finally:
        pipe.register_modules(vae=kept)


@pytest.mark.parametrize("name", ["other-vae", "other-vae-prefixed", "other-vae-diffusers"])
def test_vae_file_replaces_the_builtin_vae_exactly(make_engine, vae_root, other_vae, name):
    engine = make_engine(models_dir=str(vae_root), no_watermark=True)
    builtin = engine.generate(GenerationRequest(**BASE))
    swapped = engine.generate(GenerationRequest(**BASE, vae=name))
    assert np.abs(_pixels(swapped) - _reference(engine, copy.deepcopy(other_vae))).max() <= 1
    assert np.abs(_pixels(swapped) - _pixels(builtin)).max() > 10, "the VAE file changed nothing"
    restored = engine.generate(GenerationRequest(**BASE, vae="None"))
    assert np.array_equal(_pixels(restored), _pixels(builtin)), "None must bring back the checkpoint's own VAE"


def test_infotext_names_the_vae_like_a1111(make_engine, vae_root):
    engine = make_engine(models_dir=str(vae_root), no_watermark=True)
    res = engine.generate(GenerationRequest(**BASE, vae="other-vae"))
    params = infotext.parse_infotext(res.images[0].infotext)
    entry = engine.manager.find("other-vae", "vae")
    assert params["VAE"] == "other-vae.safetensors" and params["VAE hash"] == entry.short_hash
    assert len(params["VAE hash"]) == 10
    plain = engine.generate(GenerationRequest(**BASE, vae="None"))
    assert "VAE" not in infotext.parse_infotext(plain.images[0].infotext)


def test_automatic_uses_the_vae_named_like_the_checkpoint(make_engine, vae_root):
    engine = make_engine(models_dir=str(vae_root), no_watermark=True)
    auto = engine.generate(GenerationRequest(**{**BASE, "model": "tiny-ckpt"}))  # vae defaults to Automatic
    assert infotext.parse_infotext(auto.images[0].infotext)["VAE"] == "tiny-ckpt.safetensors"
    none = engine.generate(GenerationRequest(**{**BASE, "model": "tiny-ckpt"}, vae="None"))
    assert not np.array_equal(_pixels(auto), _pixels(none))
    other = engine.generate(GenerationRequest(**BASE))  # "tiny" has no VAE/tiny.*: its own VAE
    assert "VAE" not in infotext.parse_infotext(other.images[0].infotext)


def test_unknown_vae_is_refused_before_model_work_listing_the_choices(make_engine, vae_root):
    engine = make_engine(models_dir=str(vae_root))
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(**BASE, vae="nope"))
    assert err.value.field == "vae" and "Automatic, None" in str(err.value) and "other-vae" in str(err.value)
    assert engine.manager.current is None


@pytest.mark.parametrize("name,reason", [("misfit", "does not fit"), ("notavae", "not a VAE")])
def test_a_bad_vae_file_is_a_clear_error_and_the_model_keeps_working(make_engine, vae_root, name, reason):
    engine = make_engine(models_dir=str(vae_root), no_watermark=True)
    before = engine.generate(GenerationRequest(**BASE, vae="None"))
    with pytest.raises(ModelLoadError, match=reason) as err:
        engine.generate(GenerationRequest(**BASE, vae=name))
    assert f"{name}.safetensors" in str(err.value)
    after = engine.generate(GenerationRequest(**BASE, vae="None"))
    assert np.array_equal(_pixels(after), _pixels(before))
    assert engine.manager.current.vae_entry is None


def test_api_sd_vae_per_client_and_per_request(vae_root, tmp_path):
    import json

    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import client, running_server

    settings = Settings(models_dir=str(vae_root), outputs_dir=str(tmp_path / "out"), api=True, no_watermark=True)
    body = {"prompt": "a lantern", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "override_settings": {"sd_model_checkpoint": "tiny"}}
    with running_server(create_app(settings, with_ui=False)) as base, client(base) as c:
        listed = {v["model_name"] for v in c.get("/sdapi/v1/sd-vae").json()}
        assert {"other-vae.safetensors", "other-vae-diffusers.safetensors"} <= listed and "notavae.safetensors" not in listed
        a, b = {"X-Client-Id": "alice"}, {"X-Client-Id": "bob"}
        assert c.post("/sdapi/v1/options", json={"sd_vae": "other-vae.safetensors"}, headers=a).status_code == 200
        assert c.get("/sdapi/v1/options", headers=a).json()["sd_vae"] == "other-vae.safetensors"
        assert c.get("/sdapi/v1/options", headers=b).json()["sd_vae"] == "Automatic"
        info_a = json.loads(c.post("/sdapi/v1/txt2img", json=body, headers=a).json()["info"])
        info_b = json.loads(c.post("/sdapi/v1/txt2img", json=body, headers=b).json()["info"])
        assert info_a["sd_vae_name"] == "other-vae.safetensors" and len(info_a["sd_vae_hash"]) == 10
        assert "VAE: other-vae.safetensors" in info_a["infotexts"][0]
        assert info_b["sd_vae_name"] is None and "VAE:" not in info_b["infotexts"][0]
        per_request = {**body, "override_settings": {"sd_model_checkpoint": "tiny", "sd_vae": "None"}}
        info = json.loads(c.post("/sdapi/v1/txt2img", json=per_request, headers=a).json()["info"])
        assert info["sd_vae_name"] is None
        bad = c.post("/sdapi/v1/options", json={"sd_vae": "nope"}, headers=a)
        assert bad.status_code == 404 and "other-vae" in bad.text
        bad = c.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"sd_vae": "nope"}}, headers=a)
        assert bad.status_code == 422 and "vae" in bad.json()["detail"]
