"""LoRA: A1111's ``<lora:name:weight>`` tags, checked the way samplers are.

The pixels of a job with a LoRA equal a plain diffusers call (``load_lora_weights`` +
``set_adapters``) with the tag-free prompt; a job without tags after LoRA jobs is byte-identical to
one before any; switching LoRA sets never reloads the checkpoint; unloading leaves every base
weight byte-identical; an SDXL LoRA on an SD-style model is refused naming both architectures;
kohya, diffusers and pickle files load; the infotext carries A1111's ``Lora hashes``.

The LoRAs are made here for the tiny test pipeline (rank 4, random non-zero A and B on the
attention projections of the UNet and of the text encoder).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sdui import prompts
from sdui.images import infotext
from sdui.types import GenerationRequest, InvalidRequest
from tests import tiny
from tests.conftest import copy_model

RANK = 4
PROMPT, NEGATIVE = "a watercolor fox", "blurry"
COMMON = dict(negative_prompt=NEGATIVE, sampler="Euler", steps=3, cfg_scale=6.5, width=64, height=64, seed=1234,
              model="tiny", save=False, watermark=False)
_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


# ---- LoRA files for the tiny pipeline --------------------------------------------------------------
def _lora_layers(module, targets, seed: int, scale: float = 0.3) -> dict:
    """{module name: (A, B)} for every Linear whose name ends with one of ``targets``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear) and name.endswith(targets):
            a = torch.randn(RANK, m.in_features, generator=g) * scale
            b = torch.randn(m.out_features, RANK, generator=g) * scale
            out[name] = (a, b)
    return out


def _peft_dict(layers: dict) -> dict:
    return {f"{n}.lora_{ab}.weight": t for n, (a, b) in layers.items() for ab, t in (("A", a), ("B", b))}


def _kohya_dict(layers: dict, prefix: str, alpha: float) -> dict:
    """kohya-ss names (``lora_unet_…``/``lora_te_text_model_…``); ``up`` is scaled so that
    alpha/rank x up equals the diffusers file's B (the same LoRA in two layouts)."""
    out = {}
    for name, (a, b) in layers.items():
        key = prefix + name.replace(".", "_")
        out[f"{key}.lora_down.weight"] = a.contiguous()
        out[f"{key}.lora_up.weight"] = (b * (RANK / alpha)).contiguous()
        out[f"{key}.alpha"] = torch.tensor(alpha)
    return out


@pytest.fixture(scope="module")
def lora_layers():
    src = tiny.tiny_pipeline(seed=0)
    return {"unet": _lora_layers(src.unet, _UNET_TARGETS, seed=11),
            "te": _lora_layers(src.text_encoder, _TE_TARGETS, seed=12, scale=0.5),
            "unet2": _lora_layers(src.unet, _UNET_TARGETS, seed=13)}


@pytest.fixture(scope="module")
def lora_root(models_root, lora_layers, tmp_path_factory) -> Path:
    """models/ with the tiny checkpoint and Lora/: tiny-lora (UNet + text encoder, written by
    diffusers' save_lora_weights), unet-only, second (another UNet LoRA), kohya-lora (tiny-lora in
    kohya layout, alpha 2, with metadata), te-only.pt (a pickle), xl-lora (SDXL-shaped)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("lora-models")
    (root / "Stable-diffusion").mkdir()
    copy_model(models_root / "Stable-diffusion" / "tiny.safetensors", root / "Stable-diffusion" / "tiny.safetensors")
    folder = root / "Lora"
    folder.mkdir()
    unet, te, unet2 = lora_layers["unet"], lora_layers["te"], lora_layers["unet2"]
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=_peft_dict(unet), text_encoder_lora_layers=_peft_dict(te),
                                              weight_name="tiny-lora.safetensors")
    save_file({f"unet.{k}": v.contiguous() for k, v in _peft_dict(unet).items()}, folder / "unet-only.safetensors")
    save_file({f"unet.{k}": v.contiguous() for k, v in _peft_dict(unet2).items()}, folder / "second.safetensors")
    kohya = {**_kohya_dict(unet, "lora_unet_", 2.0), **_kohya_dict(te, "lora_te_text_model_", 2.0)}
    meta = {"ss_output_name": "inkstyle", "ss_tag_frequency": json.dumps({"img": {"fox": 3}}), "ss_network_dim": "4",
            "ssmd_cover_images": "[\"...\"]"}
    save_file(kohya, folder / "kohya-lora.safetensors", metadata=meta)
    save_file({f"unet.{k}": v.contiguous() for k, v in _peft_dict(unet).items()}, folder / "claims-hash.safetensors",
              metadata={"sshs_model_hash": "feedfacecafe0123456789abcdef"})
    torch.save({f"text_encoder.{k}": v.contiguous() for k, v in _peft_dict(te).items()}, folder / "te-only.pt")
    xl = {}
    for part, width in (("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768),
                        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280),
                        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048)):
        xl[f"{part}.lora_down.weight"] = torch.zeros(RANK, width)
        xl[f"{part}.lora_up.weight"] = torch.zeros(8, RANK)
        xl[f"{part}.alpha"] = torch.tensor(4.0)
    save_file(xl, folder / "xl-lora.safetensors", metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    save_file({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 4)}, folder / "loha.safetensors")
    return root


@pytest.fixture()
def lora_engine(lora_root, tmp_path):
    from sdui.config import Settings
    from sdui.engine import Engine

    made = []

    def make(**overrides):
        engine = Engine(Settings(models_dir=str(lora_root), outputs_dir=str(tmp_path / "outputs"), **overrides))
        made.append(engine)
        return engine

    yield make
    for e in made:
        e.manager.release_all()


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im.image, dtype=np.int16) for im in result.images]


def _reference(lora_root, loras: dict, prompt=PROMPT, negative=NEGATIVE) -> np.ndarray:
    """A plain diffusers call: a fresh pipeline, ``load_lora_weights(file)`` and ``set_adapters``,
    the prompt as text (diffusers encodes it), Euler, the same seed. The scheduler config is the
    checkpoint's as saved (a freshly built PNDMScheduler marks timestep_spacing as a default, which
    from_config would then replace by Euler's own default)."""
    from diffusers import EulerDiscreteScheduler

    config = json.loads((lora_root / "Stable-diffusion" / "tiny.config" / "scheduler" / "scheduler_config.json").read_text())
    pipe = tiny.tiny_pipeline(seed=0)
    names, weights = [], []
    for file, weight in loras.items():
        name = Path(file).stem.replace("-", "_")
        pipe.load_lora_weights(str(lora_root / "Lora" / file), adapter_name=name)
        names.append(name)
        weights.append(weight)
    if names:
        pipe.set_adapters(names, weights)
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    out = pipe(prompt, negative_prompt=negative, generator=[torch.Generator("cpu").manual_seed(COMMON["seed"])],
               num_inference_steps=COMMON["steps"], guidance_scale=COMMON["cfg_scale"], height=64, width=64,
               output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


def _params(module) -> dict[str, str]:
    return {n: hashlib.sha256(p.detach().cpu().numpy().tobytes()).hexdigest() for n, p in module.named_parameters()}


# ---- the tag grammar (A1111's extra_networks.parse_prompt + extra_networks_lora) --------------------
@pytest.mark.parametrize("text,stripped,expected", [
    ("a cat, <lora:ink:0.8>", "a cat, ", [("ink", 0.8, 0.8)]),
    ("<lora:ink>", "", [("ink", 1.0, 1.0)]),  # weight omitted: 1.0
    ("a <lora:ink:-1.5> cat", "a  cat", [("ink", -1.5, -1.5)]),  # negative weights; whitespace left as it was
    ("<lora:ink:0.3:1.2>", "", [("ink", 0.3, 1.2)]),  # text-encoder weight, UNet weight
    ("<lora:ink:unet=0.4>", "", [("ink", 1.0, 0.4)]),
    ("<lora:ink:te=0.2>", "", [("ink", 0.2, 0.2)]),  # UNet weight defaults to the text-encoder weight
    ("<lora:ink:0.5:te=0.1>", "", [("ink", 0.1, 0.1)]),  # named te= overrides, and unet follows it (A1111)
    ("(fox:1.2) <lora:a:0.5>, <lyco:b:1>", "(fox:1.2) , ", [("a", 0.5, 0.5), ("b", 1.0, 1.0)]),  # lyco = lora
    ("no tags at all", "no tags at all", []),
])
def test_tags_follow_a1111_grammar(text, stripped, expected):
    got = prompts.extract_lora_tags(text)
    assert got.text == stripped
    assert [(t.name, t.te_weight, t.unet_weight) for t in got.loras] == expected
    assert got.warnings == []


def test_other_extra_networks_are_removed_with_a_warning_and_bad_weights_refused():
    got = prompts.extract_lora_tags("a <hypernet:old:1> fox")
    assert got.text == "a  fox" and got.loras == [] and "only <lora:...> tags are supported" in got.warnings[0]
    for bad in ("<lora:ink:strong>", "<lora:ink:inf>", "<lora::1>", "<lora:ink:0.5:x>"):
        with pytest.raises(InvalidRequest, match="a LoRA tag"):
            prompts.extract_lora_tags(f"fox {bad}")


# ---- pixels: the same as a plain diffusers call --------------------------------------------------------
def test_without_lora_the_engine_equals_the_plain_call(lora_engine, lora_root):
    ours = lora_engine().generate(GenerationRequest(prompt=PROMPT, **COMMON))
    assert np.abs(_pixels(ours)[0] - _reference(lora_root, {})).max() <= 1


@pytest.mark.parametrize("tag,files", [
    ("<lora:unet-only:0.7>", {"unet-only.safetensors": 0.7}),  # the brief's case: UNet only, 0.7
    ("<lora:tiny-lora:0.7>", {"tiny-lora.safetensors": 0.7}),  # UNet and text encoder
    ("<lora:tiny-lora:-0.6>", {"tiny-lora.safetensors": -0.6}),  # a negative weight
    ("<lora:tiny-lora:0.3:1.2>", {"tiny-lora.safetensors": {"text_encoder": 0.3, "unet": 1.2}}),  # te/unet form
    ("<lora:unet-only:0.5> <lora:second:0.8>", {"unet-only.safetensors": 0.5, "second.safetensors": 0.8}),  # two
    ("<lora:kohya-lora:0.7>", {"tiny-lora.safetensors": 0.7}),  # kohya layout, alpha 2: the same LoRA
    ("<lora:inkstyle:0.7>", {"tiny-lora.safetensors": 0.7}),  # by its ss_output_name alias, as A1111 allows
])
def test_lora_pixels_equal_a_plain_diffusers_call(lora_engine, lora_root, tag, files):
    engine = lora_engine()
    plain = _pixels(engine.generate(GenerationRequest(prompt=PROMPT, **COMMON)))[0]
    ours = engine.generate(GenerationRequest(prompt=f"{PROMPT} {tag}", **COMMON))
    assert ours.warnings == []
    got = _pixels(ours)[0]
    assert np.abs(got - _reference(lora_root, files)).max() <= 1, tag
    assert np.abs(got - plain).max() > 8, "the LoRA must visibly change the image"


def test_the_text_encoder_lora_reaches_the_prompts_sdui_encodes(lora_engine):
    """prompts.encode calls pipe.text_encoder itself: peft wrapped its layers in place, so the LoRA
    applies there too, exactly as in diffusers' own encode_prompt."""
    engine = lora_engine()
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:te-only:0.9>", **COMMON))
    pipe, cpu = engine.manager.current.pipe, torch.device("cpu")
    with_lora = prompts.encode(pipe, PROMPT, NEGATIVE, cpu)
    ref_c, ref_uc = pipe.encode_prompt(PROMPT, cpu, 1, True, NEGATIVE)
    assert torch.equal(with_lora.prompt_embeds, ref_c) and torch.equal(with_lora.negative_prompt_embeds, ref_uc)
    engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))  # no tag: LoRA layers off
    without = prompts.encode(pipe, PROMPT, NEGATIVE, cpu)
    assert (with_lora.prompt_embeds - without.prompt_embeds).abs().max() > 1e-3
    fresh = tiny.tiny_pipeline(seed=0)
    assert torch.equal(without.prompt_embeds, prompts.encode(fresh, PROMPT, NEGATIVE, cpu).prompt_embeds)


# ---- switching and unloading ---------------------------------------------------------------------------
def test_a_job_without_tags_after_lora_jobs_is_byte_identical(lora_engine):
    engine = lora_engine()
    before = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:tiny-lora:1>", **COMMON))
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:second:0.5> <lora:te-only:1>", **COMMON))
    after = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    assert after.images[0].image.tobytes() == before.images[0].image.tobytes()
    assert "Lora hashes" not in after.images[0].infotext


def test_switching_lora_sets_loads_each_file_once_and_never_the_checkpoint(lora_engine, monkeypatch):
    from sdui.models import formats, loader

    calls = {"checkpoint": 0, "lora": 0}
    real_load, real_read = loader.load, formats.load_state_dict

    def counting_load(*a, **kw):
        calls["checkpoint"] += 1
        return real_load(*a, **kw)

    def counting_read(path, *a, **kw):
        key = "lora" if Path(path).parent.name == "Lora" else "other"
        calls[key] = calls.get(key, 0) + 1
        return real_read(path, *a, **kw)

    monkeypatch.setattr(loader, "load", counting_load)
    monkeypatch.setattr(formats, "load_state_dict", counting_read)
    engine = lora_engine()
    timings = {}
    sets = [("first load: tiny-lora", "<lora:tiny-lora:0.7>"), ("first load: second", "<lora:second:0.8>"),
            ("switch: both", "<lora:tiny-lora:0.4> <lora:second:0.4>"), ("switch: none", ""),
            ("switch: tiny-lora 0.3", "<lora:tiny-lora:0.3>"), ("switch: second", "<lora:second:1>")]
    engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))  # the checkpoint, before any LoRA
    for label, tag in sets:
        t0 = time.perf_counter()
        prompt, _ = engine.manager.loras.use(engine.manager.current, engine.manager.current.pipe, f"{PROMPT} {tag}")
        timings[label] = time.perf_counter() - t0
        assert prompt.strip() == PROMPT
        engine.generate(GenerationRequest(prompt=f"{PROMPT} {tag}", **COMMON))
    assert calls["checkpoint"] == 1
    assert calls["lora"] == 2, calls  # tiny-lora and second, once each
    print("\nLoRA timings (tiny pipeline, CPU): " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items()))


def test_unloading_leaves_every_base_weight_byte_identical(lora_engine):
    engine = lora_engine()
    first = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    pipe = engine.manager.current.pipe
    before = {c: _params(getattr(pipe, c)) for c in ("unet", "text_encoder")}
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:tiny-lora:1> <lora:second:-0.5>", **COMMON))
    assert any("lora_A" in n for n in _params(pipe.unet))
    engine.manager.loras.unload()
    after = {c: _params(getattr(pipe, c)) for c in ("unet", "text_encoder")}
    assert after == before  # the same names (no peft wrapper left) and the same bytes
    again = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    assert again.images[0].image.tobytes() == first.images[0].image.tobytes()
    reloaded = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:tiny-lora:0.7>", **COMMON))
    assert reloaded.warnings == [] and reloaded.images[0].image.tobytes() != first.images[0].image.tobytes()


# ---- refusals and warnings -------------------------------------------------------------------------------
def test_an_sdxl_lora_is_refused_naming_both_architectures(lora_engine, monkeypatch):
    from sdui.models import formats

    engine = lora_engine()
    engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    read = []
    real_read = formats.load_state_dict
    monkeypatch.setattr(formats, "load_state_dict", lambda path, *a, **kw: read.append(path) or real_read(path, *a, **kw))
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:tiny-lora:1> <lora:xl-lora:0.8>", **COMMON))
    msg = str(err.value)
    assert "LoRA 'xl-lora' was made for SDXL" in msg and "the model 'tiny' is a custom model with 32-wide" in msg, msg
    assert err.value.field == "prompt" and err.value.value == "<lora:xl-lora:0.8>"
    assert read == []  # refused from the header: no LoRA weight read, not even tiny-lora's
    ok = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    assert len(ok.images) == 1


_SD1 = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 768)}
_SD2 = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight": (8, 1024)}
_XL = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 1280),
       "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 2048)}


@pytest.mark.parametrize("shapes,model,expected", [
    (_SD1, "sd15", None), (_SD2, "sd2", None), (_XL, "sdxl", None),
    (_XL, "sd15", ("SDXL", "SD 1.x")), (_SD2, "sd15", ("SD 2.x", "SD 1.x")), (_SD1, "sd2", ("SD 1.x", "SD 2.x (512, epsilon)")),
    (_SD1, "sdxl", ("SD 1.x", "SDXL base")),
])
def test_the_fit_is_read_from_key_names_and_shapes(shapes, model, expected):
    from types import SimpleNamespace as NS

    from sdui.models import lora
    from sdui.types import Architecture

    ctx, te, xl, arch = {"sd15": (768, 768, False, Architecture.SD1), "sd2": (1024, 1024, False, Architecture.SD2),
                         "sdxl": (2048, 768, True, Architecture.SDXL)}[model]
    pipe = NS(unet=NS(config=NS(cross_attention_dim=ctx)), text_encoder=NS(config=NS(hidden_size=te)),
              text_encoder_2=object() if xl else None)
    assert lora.fit_problem(shapes, {}, pipe, lora.model_label(arch)) == expected
    assert lora.fit_problem({}, {"ss_base_model_version": "sdxl_base_v1-0"}, pipe, "m") == (None if xl else ("SDXL", "m"))


def test_an_unknown_lora_is_a_warning_and_the_job_runs(lora_engine):
    engine = lora_engine()
    plain = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    r = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:nope:1>", **COMMON))
    assert r.warnings[0].startswith("LoRA 'nope' not found; available: ") and "tiny-lora" in r.warnings[0]
    assert r.images[0].image.tobytes() == plain.images[0].image.tobytes()  # the tag is not prompt text
    assert "Lora hashes" not in r.images[0].infotext and "<lora:nope:1>" in r.images[0].infotext


def test_tags_in_the_negative_prompt_are_text_as_in_a1111(lora_engine, lora_root):
    engine = lora_engine()
    negative = f"{NEGATIVE} <lora:tiny-lora:1>"
    r = engine.generate(GenerationRequest(prompt=PROMPT, **dict(COMMON, negative_prompt=negative)))
    assert any("negative prompt are read as text" in w for w in r.warnings)
    assert np.abs(_pixels(r)[0] - _reference(lora_root, {}, negative=negative)).max() <= 1


def test_a_lora_diffusers_cannot_take_is_a_warning_as_in_a1111(lora_engine):
    engine = lora_engine()
    plain = engine.generate(GenerationRequest(prompt=PROMPT, **COMMON))
    r = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:loha:1>", **COMMON))
    assert len(r.warnings) == 1 and r.warnings[0].startswith("LoRA 'loha' was not applied: cannot load it"), r.warnings
    assert r.images[0].image.tobytes() == plain.images[0].image.tobytes()
    assert "Lora hashes" not in r.images[0].infotext
    again = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:loha:1> <lora:unet-only:0.7>", **COMMON))
    assert again.warnings == r.warnings and "Lora hashes: \"unet-only: " in again.images[0].infotext  # not retried


def test_img2img_takes_the_lora_through_its_pipeline_view(lora_engine):
    from PIL import Image

    engine = lora_engine()
    init = Image.new("RGB", (64, 64), (120, 90, 60))
    i2i = dict(COMMON, mode="img2img", init_image=init, denoising_strength=0.8)
    plain = engine.generate(GenerationRequest(prompt=PROMPT, **i2i))
    with_lora = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:tiny-lora:1>", **i2i))
    assert with_lora.warnings == [] and "Lora hashes" in with_lora.images[0].infotext
    assert np.abs(_pixels(with_lora)[0] - _pixels(plain)[0]).max() > 8
    after = engine.generate(GenerationRequest(prompt=PROMPT, **i2i))
    assert after.images[0].image.tobytes() == plain.images[0].image.tobytes()


# ---- infotext and listing ------------------------------------------------------------------------------
def _addnet_hash(path: Path) -> str:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return hashlib.sha256(raw[8 + n:]).hexdigest()


def test_infotext_has_a1111_lora_hashes_and_png_info_keeps_the_tags(lora_engine, lora_root):
    engine = lora_engine()
    folder = lora_root / "Lora"
    prompt = f"{PROMPT} <lora:tiny-lora:0.7>, <lora:te-only:0.2>, <lora:claims-hash:0.1> <lora:nope:1>"
    r = engine.generate(GenerationRequest(prompt=prompt, **COMMON))
    text = r.images[0].infotext
    expected = (f"tiny-lora: {_addnet_hash(folder / 'tiny-lora.safetensors')[:12]}, "  # kohya's addnet hash
                f"te-only: {hashlib.sha256((folder / 'te-only.pt').read_bytes()).hexdigest()[:12]}, "  # a pickle: whole file
                f"claims-hash: feedfacecafe")  # the header's sshs_model_hash, as A1111 prefers it
    assert f'Lora hashes: "{expected}"' in text  # quoted: the value holds ":" and ","
    parsed = infotext.parse_infotext(text)
    assert parsed["Prompt"] == prompt and parsed["Lora hashes"] == expected
    fields = infotext.infotext_to_request_fields(parsed)
    assert fields["prompt"] == prompt  # "Send to txt2img" keeps the tags


def test_listing_has_a1111_fields_with_the_header_metadata(lora_engine, lora_root):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    listing = {item["name"]: item for item in lora_engine().lora_listing()}
    assert set(listing) >= {"tiny-lora", "kohya-lora", "te-only", "xl-lora", "unet-only", "second"}
    kohya = listing["kohya-lora"]
    assert set(kohya) == {"name", "alias", "path", "metadata"}
    assert kohya["alias"] == "inkstyle" and kohya["path"].endswith("kohya-lora.safetensors")
    assert kohya["metadata"]["ss_tag_frequency"] == {"img": {"fox": 3}}  # JSON-looking values parsed, as A1111 does
    assert "ssmd_cover_images" not in kohya["metadata"] and kohya["metadata"]["ss_network_dim"] == "4"
    assert listing["te-only"]["metadata"] == {} and listing["te-only"]["alias"] == "te-only"
    app = create_app(Settings(models_dir=str(lora_root), outputs_dir=str(lora_root / "out"), api=True), with_ui=False)
    try:
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        api = c.get("/sdapi/v1/loras").json()
        assert {i["name"]: i for i in api}["kohya-lora"] == kohya
        body = {"prompt": f"{PROMPT} <lora:tiny-lora:0.7>", "steps": 2, "width": 64, "height": 64, "seed": 5}
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        assert 'Lora hashes: "tiny-lora: ' in json.loads(r.json()["info"])["infotexts"][0]
        r = c.post("/sdapi/v1/txt2img", json=dict(body, prompt=f"{PROMPT} <lora:xl-lora:1>"))
        assert r.status_code == 422 and "was made for SDXL" in r.text, r.text
    finally:
        app.state.queue.stop()
        app.state.engine.manager.release_all()
