"""LoRA and textual-inversion embeddings on SDXL (a tiny random-weight SDXL pipeline, tests/tiny.py).

LoRA: a kohya-layout file (``lora_unet_…``, ``lora_te1_…``, ``lora_te2_…``) made here for the tiny
SDXL model gives the pixels of a plain diffusers call (``load_lora_weights`` + ``set_adapters``)
within 1/255; an SD 1.x LoRA on it is refused naming both architectures. Embeddings: an SDXL file
(``clip_l`` + ``clip_g``) changes only the positions of its own tokens, on both encoders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sdui import prompts_sdxl
from sdui.types import GenerationRequest, InvalidRequest
from tests import tiny
from tests.test_lora import _TE_TARGETS, _UNET_TARGETS, _kohya_dict, _lora_layers, _peft_dict

PROMPT, NEGATIVE = "a watercolor fox", "blurry"
COMMON = dict(negative_prompt=NEGATIVE, sampler="Euler", steps=3, cfg_scale=6.5, width=64, height=64, seed=1234,
              model="tiny-xl", save=False, watermark=False)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def xl_lora_root(xl_models_root, tmp_path_factory) -> Path:
    """models/ with the tiny SDXL folder and Lora/: xl-kohya (UNet + both text encoders, kohya
    names with te1/te2, alpha 2), sd1-lora (an SD 1.x-shaped file); embeddings/: xl-emb (clip_l + clip_g,
    2 vectors) and sd1-emb (one 32-wide vector, an SD 1.x-style file)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("xl-lora-models")
    shutil.copytree(xl_models_root / "Stable-diffusion", root / "Stable-diffusion")
    folder = root / "Lora"
    folder.mkdir()
    src = tiny.tiny_sdxl_pipeline(seed=0)
    unet = _lora_layers(src.unet, _UNET_TARGETS, seed=21)
    te1 = _lora_layers(src.text_encoder, _TE_TARGETS, seed=22, scale=0.5)
    te2 = _lora_layers(src.text_encoder_2, _TE_TARGETS, seed=23, scale=0.5)
    kohya = {**_kohya_dict(unet, "lora_unet_", 2.0), **_kohya_dict(te1, "lora_te1_text_model_", 2.0),
             **_kohya_dict(te2, "lora_te2_", 2.0)}  # its module names start with text_model.
    save_file(kohya, folder / "xl-kohya.safetensors", metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    sd1 = tiny.tiny_pipeline(seed=0, cross_dim=768)
    save_file({f"unet.{k}": v.contiguous() for k, v in _peft_dict(_lora_layers(sd1.unet, ("attn2.to_k",), seed=3)).items()},
              folder / "sd1-lora.safetensors")
    emb = root / "embeddings"
    emb.mkdir()
    g = torch.Generator().manual_seed(5)
    save_file({"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 32, generator=g)},
              emb / "xl-emb.safetensors")
    save_file({"emb_params": torch.randn(1, 32, generator=g)}, emb / "sd1-emb.safetensors")
    return root


@pytest.fixture(scope="module")
def engine(xl_lora_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(xl_lora_root), outputs_dir=str(tmp_path_factory.mktemp("out")),
                        embeddings_dir=str(xl_lora_root / "embeddings"), no_watermark=True))
    yield e
    e.manager.release_all()


def _reference(root: Path, loras: dict, prompt=PROMPT) -> np.ndarray:
    """A plain diffusers SDXL call: the folder's pipeline, ``load_lora_weights(file)``, ``set_adapters``,
    the prompt as text, Euler from the folder's scheduler config, the same seed."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    folder = root / "Stable-diffusion" / "tiny-xl"
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    names, weights = [], []
    for file, weight in loras.items():
        name = Path(file).stem.replace("-", "_")
        pipe.load_lora_weights(str(root / "Lora" / file), adapter_name=name)
        names.append(name)
        weights.append(weight)
    if names:
        pipe.set_adapters(names, weights)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    out = pipe(prompt, negative_prompt=NEGATIVE, generator=[torch.Generator("cpu").manual_seed(COMMON["seed"])],
               num_inference_steps=COMMON["steps"], guidance_scale=COMMON["cfg_scale"], height=64, width=64,
               output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


@pytest.mark.parametrize("weight", [0.8, -0.5])
def test_sdxl_kohya_lora_pixels_equal_a_plain_diffusers_call(engine, xl_lora_root, weight):
    ours = engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:xl-kohya:{weight}>", **COMMON))
    assert not [w for w in ours.warnings if "LoRA" in w], ours.warnings
    ref = _reference(xl_lora_root, {"xl-kohya.safetensors": weight})
    plain = _reference(xl_lora_root, {})
    assert np.abs(_pixels(ours) - ref).max() <= 1
    assert np.abs(ref - plain).max() > 1  # the LoRA changes the image: the check above could fail
    assert "Lora hashes: \"xl-kohya: " in ours.images[0].infotext


def test_sdxl_lora_reaches_both_text_encoders(engine):
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:xl-kohya:1>", **COMMON))
    pipe = engine.manager.current.pipe
    held = pipe.get_list_adapters()
    assert {"unet", "text_encoder", "text_encoder_2"} <= set(held)


def test_an_sd1_lora_on_sdxl_is_refused_naming_both(engine):
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:sd1-lora:1>", **COMMON))
    assert "SD 1.x" in str(err.value) and "SDXL" in str(err.value)


def test_sdxl_job_without_tags_after_a_lora_job_is_unchanged(engine):
    before = _pixels(engine.generate(GenerationRequest(prompt=PROMPT, **COMMON)))
    engine.generate(GenerationRequest(prompt=f"{PROMPT} <lora:xl-kohya:1>", **COMMON))
    after = _pixels(engine.generate(GenerationRequest(prompt=PROMPT, **COMMON)))
    assert np.array_equal(before, after)


# ---- embeddings ---------------------------------------------------------------------------------------
def test_sdxl_embedding_changes_only_its_own_tokens_on_both_encoders(engine):
    """``xl-emb`` (2 vectors) in a prompt: the hidden states differ from the plain prompt's only from
    its tokens on (CLIP attends causally: the tokens before it are untouched), on both encoders' halves,
    and its token rows hold the file's clip_l / clip_g vectors."""
    from safetensors.torch import load_file

    result = engine.generate(GenerationRequest(prompt="a xl-emb fox", **COMMON))
    assert not [w for w in result.warnings if "Embedding" in w], result.warnings
    assert "TI hashes: \"xl-emb: " in result.images[0].infotext
    pipe = engine.manager.current.pipe
    text = engine.manager.embeddings.use(engine.manager.current, pipe, "a xl-emb fox")[0]
    z, _, _ = prompts_sdxl.encode_text(pipe, text, CPU)
    plain, _, _ = prompts_sdxl.encode_text(pipe, "a fox", CPU)  # the same tokens without the embedding's two
    # BOS, "a" unchanged on both halves; after the two vectors the positions shift by two
    assert torch.equal(z[0, :2], plain[0, :2])
    assert not torch.allclose(z[0, 2:4], plain[0, 2:4])
    ids_l = pipe.tokenizer(text, add_special_tokens=False).input_ids
    ids_g = pipe.tokenizer_2(text, add_special_tokens=False).input_ids
    assert len(ids_l) == len(ids_g) == 4  # "a", two embedding tokens, "fox"
    vectors = load_file(str(engine.settings.embeddings_dir) + "/xl-emb.safetensors")
    rows_l = pipe.text_encoder.get_input_embeddings().weight[ids_l[1:3]]
    rows_g = pipe.text_encoder_2.get_input_embeddings().weight[ids_g[1:3]]
    assert torch.equal(rows_l, vectors["clip_l"]) and torch.equal(rows_g, vectors["clip_g"])
    fresh = tiny.tiny_sdxl_pipeline(seed=0)  # the weights the folder was saved from: every other row as it was
    for ours, theirs in ((pipe.text_encoder, fresh.text_encoder), (pipe.text_encoder_2, fresh.text_encoder_2)):
        original = theirs.get_input_embeddings().weight
        assert torch.equal(ours.get_input_embeddings().weight[:original.shape[0]], original)


def test_an_sd1_embedding_on_sdxl_is_skipped_with_the_reason(engine):
    result = engine.generate(GenerationRequest(prompt="a sd1-emb fox", **COMMON))
    assert any("Embedding 'sd1-emb' was not applied" in w and "two-part embeddings" in w for w in result.warnings)
    listing = engine.embedding_listing("tiny-xl")
    assert "xl-emb" in listing["loaded"] and "sd1-emb" in listing["skipped"]
    assert listing["loaded"]["xl-emb"]["shape"] == 64 and listing["loaded"]["xl-emb"]["vectors"] == 2


def test_a_prompt_without_embeddings_is_unchanged_after_loading_one(engine):
    before = _pixels(engine.generate(GenerationRequest(prompt=PROMPT, **COMMON)))
    engine.generate(GenerationRequest(prompt="a xl-emb fox", **COMMON))
    after = _pixels(engine.generate(GenerationRequest(prompt=PROMPT, **COMMON)))
    assert np.array_equal(before, after)
