"""Textual-inversion embeddings (A1111's ``embeddings/`` folder), checked the way samplers are.

A file's name in the prompt or the negative prompt puts the file's vectors in the text encoder's
input where the name was: the embeddings sdui encodes equal diffusers' own ``load_textual_inversion``
+ ``encode_prompt``, and the pixels a plain diffusers call. A prompt naming no embedding gives
byte-identical images before and after embeddings were loaded; emphasis weights every vector; a file
made for another text-encoder width is skipped with the reason (and listed as skipped by the API,
as A1111 does); a hostile pickle is refused without being unpickled; the infotext carries A1111's
``TI hashes``.

The embeddings are made here for the tiny test pipeline (text encoder 32 wide) in A1111's ``.pt``
layout, diffusers' ``.bin`` layout and as safetensors.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdui import prompts
from sdui.images import infotext
from sdui.models import embeddings as emb
from sdui.types import GenerationRequest, ModelKind
from tests import tiny

WIDTH = 32  # tests/tiny.py TEXT hidden_size
COMMON = dict(sampler="Euler", steps=3, cfg_scale=6.5, width=64, height=64, seed=4321, model="tiny", save=False,
              watermark=False)


def _vectors(n: int, seed: int, width: int = WIDTH) -> torch.Tensor:
    # far from the vocabulary's own rows (std 0.02), so that using them visibly changes the image
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * 0.8


def _a1111_dict(vec: torch.Tensor, name: str = "stored-name") -> dict:
    """What A1111's ``Embedding.save`` writes."""
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": name, "step": 500,
            "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": "tiny"}


VECTORS = {"myembed": _vectors(3, 1), "onevec": _vectors(1, 2), "safe-emb": _vectors(2, 3)}


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory) -> Path:
    """embeddings/ with: myembed.pt (A1111 layout, 3 vectors), onevec.bin (diffusers layout, one
    plain vector), safe-emb.safetensors (``emb_params``, 2 vectors), wide.pt (1024 wide: SD 2.x),
    sub/xl-emb.safetensors (SDXL clip_l + clip_g), evil.pt (a pickle that would run code) and an
    empty file."""
    from safetensors.torch import save_file

    from tests.test_formats import _evil_pickle

    root = tmp_path_factory.mktemp("embeddings")
    torch.save(_a1111_dict(VECTORS["myembed"]), root / "myembed.pt")
    torch.save({"<onevec>": VECTORS["onevec"][0]}, root / "onevec.bin")
    save_file({"emb_params": VECTORS["safe-emb"]}, root / "safe-emb.safetensors")
    torch.save(_a1111_dict(_vectors(1, 4, width=1024)), root / "wide.pt")
    (root / "sub").mkdir()
    save_file({"clip_l": _vectors(2, 5, 768), "clip_g": _vectors(2, 6, 1280)}, root / "sub" / "xl-emb.safetensors")
    _evil_pickle(root / "evil.pt", root.parent / "embedding-canary", zip_format=True)
    (root / "empty.pt").write_bytes(b"")
    return root


@pytest.fixture()
def engine(make_engine, emb_dir):
    return make_engine(embeddings_dir=str(emb_dir), no_watermark=True)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def _fresh_reference_pipe():
    """A fresh tiny pipeline (the same weights as models/tiny.safetensors) with its own tokenizer:
    the one tiny.py gives is shared, and diffusers adds tokens to it."""
    pipe = tiny.tiny_pipeline(seed=0)
    pipe.register_modules(tokenizer=copy.deepcopy(pipe.tokenizer))
    return pipe


def _encode_ours(engine, prompt: str, negative: str = ""):
    mgr = engine.manager
    with mgr.lock:
        loaded = mgr.select("tiny")
        text, neg, warnings = mgr.embeddings.use(loaded, loaded.pipe, prompt, negative)
        cond = prompts.encode(loaded.pipe, text, neg, "cpu")
    return cond, text, neg, warnings


# ---- files ---------------------------------------------------------------------------------------------
def test_the_folder_is_listed_by_file_name_and_a_hostile_pickle_is_refused_unread(engine, emb_dir):
    entries = {e.name: e for e in engine.models(ModelKind.EMBEDDING)}
    assert set(entries) == {"myembed", "onevec", "safe-emb", "wide", "xl-emb", "evil"}  # the empty file passed over
    assert "refused: would run code" in entries["evil"].error
    assert not (emb_dir.parent / "embedding-canary").exists(), "listing unpickled the file"
    assert all(e.error is None for n, e in entries.items() if n != "evil")
    # reading it for a prompt refuses it too, and still runs nothing
    f = engine.manager.embeddings.file(entries["evil"])
    assert "refused" in f.error and not (emb_dir.parent / "embedding-canary").exists()
    with pytest.raises(emb.ModelLoadError, match="refused"):
        emb.read_raw(str(emb_dir / "evil.pt"), entries["evil"].format)
    assert not (emb_dir.parent / "embedding-canary").exists()
    assert {e.name for e in engine.model_listing() if e.kind == ModelKind.EMBEDDING} == set(entries)


def test_each_layout_is_read_as_a1111_reads_it(engine):
    files = {e.name: engine.manager.embeddings.file(e) for e in engine.models(ModelKind.EMBEDDING)}
    mine = files["myembed"]
    assert torch.equal(mine.vectors, VECTORS["myembed"]) and (mine.count, mine.width) == (3, WIDTH)
    assert mine.a1111() == {"step": 500, "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": "tiny", "shape": WIDTH,
                            "vectors": 3}
    assert torch.equal(files["onevec"].vectors, VECTORS["onevec"])  # a plain vector becomes one row
    assert files["onevec"].a1111() == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": WIDTH,
                                       "vectors": 1}
    assert torch.equal(files["safe-emb"].vectors, VECTORS["safe-emb"])
    assert (files["wide"].width, files["xl-emb"].width, files["xl-emb"].count) == (1024, 768 + 1280, 2)
    with pytest.raises(emb.ModelLoadError, match="neither a textual-inversion embedding"):
        emb.parse({"a": torch.zeros(2, 4), "b": torch.zeros(2, 4)}, "two.bin")
    with pytest.raises(emb.ModelLoadError, match="2 terms"):
        emb.parse({"string_to_param": {"*": torch.zeros(1, 4), "x": torch.zeros(1, 4)}}, "two.pt")


@pytest.mark.parametrize("text,expected", [
    ("a myembed cat", ["myembed"]),
    ("a MyEmbed, cat", ["myembed"]),  # CLIP lowercases
    ("(myembed:1.2) [safe-emb]", ["myembed", "safe-emb"]),
    ("safe - emb and onevec", ["safe-emb", "onevec"]),  # the same words as CLIP splits them
    ("myembeds, amyembed, safe-embs, safeemb", []),  # other words
    ("a cat", []),
])
def test_names_are_found_by_the_words_clip_reads(text, expected):
    assert emb.mentions(text, ("myembed", "onevec", "safe-emb")) == expected


def test_prompt_syntax_is_never_taken_for_a_name():
    names = ("1", "break", "myembed")
    assert emb.mentions("(cat:1.2), [dog:fox:1], a BREAK b", names) == []  # weights, steps, A1111's BREAK
    assert emb.mentions("1 cat, a break, (myembed:1.1)", names) == ["1", "break", "myembed"]
    tokens = {"1": ["<one>"], "myembed": ["<m0>", "<m1>"]}
    assert emb.expand("(myembed:1.1) 1 BREAK x", names, tokens) == "(<m0> <m1>:1.1) <one> BREAK x"


# ---- the prompt's embeddings -------------------------------------------------------------------------------
def test_the_name_is_replaced_by_the_files_vectors(engine):
    cond, text, _, warnings = _encode_ours(engine, "a myembed cat")
    assert warnings == []
    pipe = engine.manager.current.pipe
    tok = pipe.tokenizer
    ids = prompts.tokenize(tok, text).ids[0]
    plain = prompts.tokenize(tok, "a cat").ids[0]
    new = ids[2:5]
    assert ids[:2] == plain[:2] and ids[5:7] == plain[2:4]  # the other tokens keep their ids, in place
    assert new == list(range(49408, 49411))
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[new], VECTORS["myembed"])  # the file's vectors, in the file's order
    # ...and the whole encoding equals diffusers' own load_textual_inversion + encode_prompt
    ref = _fresh_reference_pipe()
    ref.load_textual_inversion(_a1111_dict(VECTORS["myembed"]), token="myembed")
    want, _ = ref.encode_prompt("a myembed cat", "cpu", 1, False)
    assert torch.equal(cond.prompt_embeds, want)


def test_the_negative_prompt_takes_embeddings_too(engine):
    cond, _, neg, warnings = _encode_ours(engine, "a cat", "onevec, safe-emb blurry")
    assert warnings == [] and "<ti-" in neg
    ref = _fresh_reference_pipe()
    ref.load_textual_inversion({"onevec": VECTORS["onevec"][0]}, token="onevec")
    ref.load_textual_inversion({"emb_params": VECTORS["safe-emb"]}, token="safe-emb")
    want, want_neg = ref.encode_prompt("a cat", "cpu", 1, True, negative_prompt="onevec, safe-emb blurry")
    assert torch.equal(cond.prompt_embeds, want) and torch.equal(cond.negative_prompt_embeds, want_neg)


def test_emphasis_weights_every_vector_of_the_embedding(engine):
    _, text, _, _ = _encode_ours(engine, "a (myembed:1.3) cat")
    chunks = prompts.tokenize(engine.manager.current.pipe.tokenizer, text)
    assert chunks.weights[0][:6] == [1.0, 1.0, 1.3, 1.3, 1.3, 1.0]
    assert chunks.ids[0][2:5] == list(range(49408, 49411))
    emphasised, *_ = _encode_ours(engine, "a (myembed:1.3) cat")
    plain, *_ = _encode_ours(engine, "a myembed cat")
    assert not torch.equal(emphasised.prompt_embeds, plain.prompt_embeds)


def test_an_embedding_that_would_straddle_a_chunk_boundary_moves_whole_to_the_next_chunk(engine):
    """A1111 (sd_hijack_clip): when a 3-vector embedding would take tokens 74-76, the 75-token chunk is
    padded after token 73 and the embedding starts the next chunk; at tokens 73-75 it still fits."""
    tok = None
    for before, moved in ((73, True), (72, False)):
        cond, text, _, warnings = _encode_ours(engine, " ".join(["cat"] * before) + " myembed dog")
        tok = engine.manager.current.pipe.tokenizer
        chunks = prompts.tokenize(tok, text)
        new = list(range(49408, 49411))
        cat, dog = tok.convert_tokens_to_ids("cat</w>"), tok.convert_tokens_to_ids("dog</w>")
        assert warnings == [] and len(chunks.ids) == 2  # "dog" (or the embedding) opens the second chunk
        first = chunks.ids[0]
        assert first[1:before + 1] == [cat] * before
        if moved:
            assert first[before + 1] == tok.eos_token_id  # the chunk ends (padded) before the embedding
            assert not set(new) & set(first)
            assert chunks.ids[1][1:5] == new + [dog]  # all three vectors open the next chunk
        else:
            assert first[before + 1:before + 4] == new  # tokens 73-75: still the first chunk
        assert cond.prompt_embeds.shape[1] == 77 * len(chunks.ids)
    # a one-vector embedding is a plain token: it fills the chunk to 75 as any word does
    _, text, _, _ = _encode_ours(engine, " ".join(["cat"] * 74) + " onevec")
    assert len(prompts.tokenize(tok, text).ids) == 1


def test_loading_changes_nothing_else_and_happens_once_per_model(make_engine, emb_dir):
    from sdui.models.tokenizer import load_clip_tokenizer

    engine = make_engine(embeddings_dir=str(emb_dir), no_watermark=True)
    mgr = engine.manager
    before_img = _pixels(engine.generate(GenerationRequest(prompt="a category of cats", **COMMON)))
    before_cond, *_ = _encode_ours(engine, "a category of cats", "blurry")
    pipe = mgr.current.pipe
    shared_tokenizer = pipe.tokenizer
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    with_emb = engine.generate(GenerationRequest(prompt="a myembed cat", negative_prompt="onevec", **COMMON))
    assert with_emb.warnings == []
    after_img = _pixels(engine.generate(GenerationRequest(prompt="a category of cats", **COMMON)))
    after_cond, *_ = _encode_ours(engine, "a category of cats", "blurry")
    assert np.array_equal(before_img, after_img), "a prompt naming no embedding must give the same pixels"
    assert torch.equal(before_cond.prompt_embeds, after_cond.prompt_embeds)
    assert torch.equal(before_cond.negative_prompt_embeds, after_cond.negative_prompt_embeds)
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[:49408], table_before) and table.shape[0] == 49408 + 4
    # the tokens went to the model's own tokenizer, never to the one models share
    assert pipe.tokenizer is not shared_tokenizer and len(shared_tokenizer) == len(load_clip_tokenizer()) == 49408
    assert all(p.tokenizer is pipe.tokenizer for p in mgr.current.all_pipelines())
    # named again, nothing is loaded again
    engine.generate(GenerationRequest(prompt="a myembed cat", negative_prompt="onevec", **COMMON))
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == 49408 + 4
    # another model gets its own tokens
    other = engine.generate(GenerationRequest(prompt="a myembed cat", **{**COMMON, "model": "other"}))
    assert other.warnings == [] and len(mgr.cached_model("other").pipe.tokenizer) == 49408 + 3


def test_img2img_takes_embeddings_through_a_pipeline_view_made_before_them(engine):
    from PIL import Image

    init = Image.new("RGB", (64, 64), (120, 80, 40))
    common = {**COMMON, "mode": "img2img", "init_image": init, "denoising_strength": 0.6}
    plain = engine.generate(GenerationRequest(prompt="a cat", **common))  # the img2img view exists now
    ours = engine.generate(GenerationRequest(prompt="a myembed cat", **common))
    assert ours.warnings == [] and 'TI hashes: "myembed: ' in ours.images[0].infotext
    loaded = engine.manager.current
    assert len(loaded.derived) == 1 and all(p.tokenizer is loaded.pipe.tokenizer for p in loaded.all_pipelines())
    assert np.abs(_pixels(ours) - _pixels(plain)).max() > 8


def test_pixels_equal_a_plain_diffusers_call(engine, models_root):
    from diffusers import EulerDiscreteScheduler

    prompt, negative = "a myembed cat, (safe-emb:1.0)", "onevec"
    ours = engine.generate(GenerationRequest(prompt=prompt, negative_prompt=negative, **COMMON))
    plain = engine.generate(GenerationRequest(prompt="a cat,", negative_prompt="", **COMMON))
    assert ours.warnings == []
    config = json.loads((models_root / "Stable-diffusion" / "tiny.config" / "scheduler" / "scheduler_config.json").read_text())
    ref = _fresh_reference_pipe()
    ref.load_textual_inversion(_a1111_dict(VECTORS["myembed"]), token="myembed")
    ref.load_textual_inversion({"emb_params": VECTORS["safe-emb"]}, token="safe-emb")
    ref.load_textual_inversion({"<onevec>": VECTORS["onevec"][0]}, token="onevec")
    ref.scheduler = EulerDiscreteScheduler.from_config(config)
    out = ref("a myembed cat, safe-emb", negative_prompt=negative, generator=[torch.Generator("cpu").manual_seed(4321)],
              num_inference_steps=3, guidance_scale=6.5, height=64, width=64, output_type="pil")
    want = np.asarray(out.images[0], dtype=np.int16)
    assert np.abs(_pixels(ours) - want).max() <= 1
    assert np.abs(_pixels(ours) - _pixels(plain)).max() > 8, "the embeddings must visibly change the image"


# ---- what does not fit ---------------------------------------------------------------------------------------
def test_a_file_of_another_width_is_skipped_with_the_reason(engine):
    r = engine.generate(GenerationRequest(prompt="a wide xl-emb cat", **COMMON))
    assert any("Embedding 'wide' was not applied: its vectors are 1024 wide (SD 2.x), but the model 'tiny' takes "
               "32-wide vectors" in w for w in r.warnings), r.warnings
    assert any("Embedding 'xl-emb' was not applied: it is an SDXL embedding" in w for w in r.warnings)
    # the words stay prompt text, as in A1111
    cond, text, *_ = _encode_ours(engine, "a wide xl-emb cat")
    assert text == "a wide xl-emb cat"
    assert "TI hashes" not in r.images[0].infotext
    r = engine.generate(GenerationRequest(prompt="an evil cat", **COMMON))
    evil = next(w for w in r.warnings if "Embedding 'evil' was not applied" in w)
    assert "evil.pt: refused: would run code" in evil and str(engine.settings.embeddings_dir) not in evil


def test_an_sdxl_model_takes_only_two_part_embeddings():
    f = emb.EmbeddingFile(stamp=(), vectors=torch.zeros(1, 768), count=1, width=768)
    assert "is SDXL, which takes two-part embeddings (clip_l + clip_g)" in emb.ModelEmbeddings.fit_problem(f, 2048, True, "xl")
    xl = emb.EmbeddingFile(stamp=(), vectors={"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, count=1,
                           width=2048)
    assert emb.ModelEmbeddings.fit_problem(xl, 2048, True, "xl") is None
    assert "is not SDXL" in emb.ModelEmbeddings.fit_problem(xl, 768, False, "sd15")
    assert emb.ModelEmbeddings.fit_problem(f, 768, False, "sd15") is None
    assert "1024-wide" in emb.ModelEmbeddings.fit_problem(f, 1024, False, "sd2")


def test_the_api_lists_loaded_and_skipped_in_a1111s_shape(models_root, emb_dir, tmp_path):
    from sdui.config import Settings
    from sdui.server import create_app
    from tests.server_util import in_process

    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "out"), api=True,
                        embeddings_dir=str(emb_dir))
    with in_process(create_app(settings, with_ui=False)) as c:
        listing = c.get("/sdapi/v1/embeddings").json()
        assert list(listing["loaded"]) == ["myembed", "onevec", "safe-emb"]
        assert listing["loaded"]["myembed"] == {"step": 500, "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": "tiny",
                                                "shape": WIDTH, "vectors": 3}
        assert listing["skipped"] == {
            "wide": {"step": 500, "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": "tiny", "shape": 1024, "vectors": 1},
            "xl-emb": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 2048, "vectors": 2}}
        assert c.post("/sdapi/v1/refresh-embeddings").status_code == 200
        body = {"prompt": "a myembed cat", "negative_prompt": "wide", "steps": 2, "width": 64, "height": 64, "seed": 5}
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200
        info = json.loads(r.json()["info"])
        assert "TI hashes: " in info["infotexts"][0]


# ---- infotext ----------------------------------------------------------------------------------------------
def test_infotext_has_a1111_ti_hashes(engine, emb_dir):
    def short(name):
        return hashlib.sha256(name.read_bytes()).hexdigest()[:12]

    r = engine.generate(GenerationRequest(prompt="a myembed cat <lora:nope:1>", negative_prompt="onevec, wide, myembed",
                                          **COMMON))
    text = r.images[0].infotext
    expected = f"myembed: {short(emb_dir / 'myembed.pt')}, onevec: {short(emb_dir / 'onevec.bin')}"
    assert f'TI hashes: "{expected}"' in text  # quoted: the value holds ":" and ","
    assert infotext.parse_infotext(text)["TI hashes"] == expected
    assert "TI hashes" not in engine.generate(GenerationRequest(prompt="a cat", **COMMON)).images[0].infotext


def test_a_file_added_to_the_folder_is_used_without_a_refresh(make_engine, tmp_path):
    folder = tmp_path / "emb"
    folder.mkdir()
    engine = make_engine(embeddings_dir=str(folder), no_watermark=True)
    assert engine.embedding_listing() == {"loaded": {}, "skipped": {}}
    _encode_ours(engine, "a cat")
    torch.save(_a1111_dict(VECTORS["myembed"]), folder / "late.pt")
    _, text, _, warnings = _encode_ours(engine, "a late cat")
    assert warnings == [] and "<ti-" in text
    assert list(engine.embedding_listing()["loaded"]) == ["late"]
