"""A1111 prompt syntax: emphasis, escapes, long prompts and BREAK."""

from __future__ import annotations

import pytest
import torch

from sdui import prompts
from sdui.models.tokenizer import load_clip_tokenizer


def _approx(parsed):
    return [(t, round(w, 4)) for t, w in parsed]


@pytest.mark.parametrize("text,expected", [
    # cases from A1111's own documentation of parse_prompt_attention
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     # one "(" is never closed, so everything after "house" keeps x1.1, as A1111's docstring shows
     [("a ", 1.0), ("house", 1.5730), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("[[[weak]]]", [("weak", 0.7513)]),
    ("(cat:1.3) BREAK dog", [("cat", 1.3), ("", 1.0), ("BREAK", -1), ("dog", 1.0)]),
])
def test_parse_attention_matches_a1111(text, expected):
    assert _approx(prompts.parse_attention(text)) == _approx(expected)


def test_plain_short_prompt_gives_exactly_the_pipelines_own_embeddings(tiny_pipe):
    text = "a photo of an astronaut riding a horse on mars"
    ours = prompts.encode(tiny_pipe, text, "low quality", torch.device("cpu"))
    ref_c, ref_uc = tiny_pipe.encode_prompt(text, torch.device("cpu"), 1, True, "low quality")
    assert torch.equal(ours.prompt_embeds, ref_c) and torch.equal(ours.negative_prompt_embeds, ref_uc)


@pytest.fixture(scope="module")
def trained_like_encoder(tiny_pipe):
    """The tiny tokenizer and a copy of its text encoder whose output mean is clearly not zero, as
    a trained CLIP's is. At random init the final LayerNorm has no bias, so every token's features
    average to 0 and "restore the mean" would divide rounding noise by rounding noise."""
    import copy
    from types import SimpleNamespace

    encoder = copy.deepcopy(tiny_pipe.text_encoder)
    norm = next(m for name, m in encoder.named_modules() if name.endswith("final_layer_norm"))
    with torch.no_grad():
        norm.bias.copy_(0.5 + 0.1 * torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(0)))
    return SimpleNamespace(tokenizer=tiny_pipe.tokenizer, text_encoder=encoder)


def _row_scales(weighted, plain):
    """Per token row, the factor s that best gives weighted = s * plain (least squares)."""
    return (weighted * plain).sum(-1) / (plain * plain).sum(-1)


@pytest.mark.parametrize("weight", [1.5, 0.5])
def test_emphasis_scales_the_weighted_tokens_and_restores_the_mean(trained_like_encoder, weight):
    """A1111's "Original" emphasis: each token's embedding times its weight, then everything times
    one factor k that brings the mean back. Against the unweighted prompt (same tokens, so the same
    raw encoding): "red" is scaled by weight*k, every other row by k, and k is near 1."""
    cpu = torch.device("cpu")
    plain = prompts.encode(trained_like_encoder, "a red cube", "", cpu).prompt_embeds[0]
    weighted = prompts.encode(trained_like_encoder, f"a (red:{weight}) cube", "", cpu).prompt_embeds[0]
    assert plain.shape == weighted.shape == (77, 32)
    red = 2  # <bos> a red cube <eos> ...
    assert prompts.tokenize(trained_like_encoder.tokenizer, "a red cube").ids[0][red] == \
        trained_like_encoder.tokenizer.convert_tokens_to_ids("red</w>")

    scales = _row_scales(weighted, plain)
    others = torch.cat([scales[:red], scales[red + 1:]])
    k = others.mean()
    assert torch.allclose(others, k, rtol=1e-4), "all unweighted tokens share one factor"
    assert torch.allclose(weighted[:red], k * plain[:red], rtol=1e-4, atol=1e-5)
    # every row of this encoder has the same mean (the LayerNorm bias's), so the factor that restores
    # the mean after one of 77 rows was multiplied by the weight is exactly 77 / (76 + weight)
    assert k.item() == pytest.approx(77 / (76 + weight), rel=1e-4)
    assert abs(k - 1) < 0.01, f"unweighted tokens are almost unchanged (k={k:.4f})"
    assert scales[red] / k == pytest.approx(weight, rel=1e-4), "the weighted token is scaled by its weight"
    assert abs(plain.mean()) > 0.1  # so the next check means something
    assert weighted.mean() == pytest.approx(plain.mean().item(), rel=1e-5), "the mean is restored"
    # direction: the emphasised token moves away from (1.5) or towards (0.5) the origin, along itself
    grew = weighted[red].norm() / plain[red].norm()
    assert (grew > 1.4) if weight > 1 else (grew < 0.6)
    assert torch.nn.functional.cosine_similarity(weighted[red], plain[red], dim=0) > 0.9999


def test_weight_one_is_no_emphasis_at_all(trained_like_encoder):
    cpu = torch.device("cpu")
    plain = prompts.encode(trained_like_encoder, "a red cube", "", cpu).prompt_embeds
    assert torch.equal(prompts.encode(trained_like_encoder, "a (red:1.0) cube", "", cpu).prompt_embeds, plain)


def test_emphasis_in_one_chunk_leaves_the_other_chunks_alone(trained_like_encoder):
    """A1111 restores the mean chunk by chunk (sd_hijack_clip.process_tokens runs per 75-token chunk):
    weighting a word after BREAK must not rescale the first chunk's embeddings."""
    cpu = torch.device("cpu")
    plain = prompts.encode(trained_like_encoder, "a red cube BREAK a blue ball", "", cpu).prompt_embeds[0]
    weighted = prompts.encode(trained_like_encoder, "a red cube BREAK a (blue:1.8) ball", "", cpu).prompt_embeds[0]
    assert plain.shape == weighted.shape == (154, 32)
    assert torch.allclose(weighted[:77], plain[:77], rtol=1e-6, atol=1e-7), "the first chunk is untouched"
    assert weighted[77:].mean() == pytest.approx(plain[77:].mean().item(), rel=1e-5), "each chunk keeps its mean"
    assert not torch.allclose(weighted[77:], plain[77:])


def test_long_prompt_is_chunked_not_cut():
    tok = load_clip_tokenizer()
    words = " ".join(["cat"] * 100)
    chunks = prompts.tokenize(tok, words)
    assert len(chunks.ids) == 2 and all(len(c) == 77 for c in chunks.ids)
    assert sum(1 for c in chunks.ids for t in c if t == tok.convert_tokens_to_ids("cat</w>")) == 100
    assert chunks.truncated_tokens == 0


def test_break_starts_a_new_chunk():
    tok = load_clip_tokenizer()
    chunks = prompts.tokenize(tok, "a cat BREAK a dog")
    assert len(chunks.ids) == 2
    assert chunks.ids[1][1:3] == tok("a dog", add_special_tokens=False)["input_ids"]


def test_positive_and_negative_get_equal_lengths(tiny_pipe):
    cond = prompts.encode(tiny_pipe, " ".join(["tree"] * 90), "ugly", torch.device("cpu"))
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 154, 32)


def test_overlong_prompt_is_cut_and_says_so(tiny_pipe):
    cond = prompts.encode(tiny_pipe, " ".join(["cat"] * (prompts.CHUNK * prompts.MAX_CHUNKS + 10)), "", torch.device("cpu"))
    assert cond.prompt_embeds.shape[1] == 77 * prompts.MAX_CHUNKS
    assert cond.warnings and "10 tokens" in cond.warnings[0]


def test_emphasis_reaches_the_image(make_engine):
    """Through the engine: the UNet is conditioned on the emphasised encoding ("red" row scaled by
    1.8 against the others, compared with the plain prompt) and the image changes."""
    from sdui.types import GenerationRequest

    engine = make_engine(no_watermark=True)
    base = GenerationRequest(prompt="a red cube", steps=2, width=64, height=64, seed=3, model="tiny", save=False)
    a = engine.generate(base).images[0].image
    unet = engine.manager.current.pipe.unet
    seen = []
    original = unet.forward

    def forward(*args, **kwargs):
        seen.append(kwargs["encoder_hidden_states"].detach().clone())
        return original(*args, **kwargs)

    unet.forward = forward
    try:
        plain_run = engine.generate(base).images[0].image
        plain = seen[0]
        seen.clear()
        b = engine.generate(base.replace(prompt="a (red:1.8) cube")).images[0].image
        weighted = seen[0]
    finally:
        del unet.forward
    assert plain_run.tobytes() == a.tobytes()  # the spy changed nothing
    # classifier-free guidance: the batch is [negative, positive]; the positive is what emphasis changes
    assert torch.equal(weighted[0], plain[0])
    scales = _row_scales(weighted[1], plain[1])
    others = torch.cat([scales[:2], scales[3:]])
    assert torch.allclose(others, others.mean(), rtol=1e-3)
    assert (scales[2] / others.mean()).item() == pytest.approx(1.8, rel=1e-3)
    assert a.tobytes() != b.tobytes()


def test_clip_skip_is_a1111s_and_equals_diffusers_clip_skip_minus_one(tiny_pipe):
    """A1111's clip skip N takes the hidden state N layers from the end through the final layer norm;
    diffusers' ``clip_skip=k`` skips k layers, so A1111's 2 is diffusers' 1 (diffusers 0.42's own
    clip_skip path reaches for ``text_model.final_layer_norm``, which transformers 5 no longer has, so
    the reference is written out here as diffusers' encode_prompt computes it). 1 changes nothing."""
    cpu = torch.device("cpu")
    ours = prompts.encode(tiny_pipe, "a red cube", "", cpu, clip_skip=2).prompt_embeds
    ids = tiny_pipe.tokenizer("a red cube", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = tiny_pipe.text_encoder(ids, output_hidden_states=True)[-1][-(1 + 1)]  # diffusers, clip_skip=1
        theirs = tiny_pipe.text_encoder.final_layer_norm(hidden)
    assert torch.equal(ours, theirs)
    plain = prompts.encode(tiny_pipe, "a red cube", "", cpu).prompt_embeds
    assert torch.equal(prompts.encode(tiny_pipe, "a red cube", "", cpu, clip_skip=1).prompt_embeds, plain)
    assert not torch.allclose(ours, plain)


def test_clip_skip_reaches_the_image_and_the_infotext(make_engine):
    from sdui.types import GenerationRequest

    engine = make_engine()
    base = dict(prompt="a red cube", steps=2, width=64, height=64, seed=9, save=False)
    one = engine.generate(GenerationRequest(**base)).images[0]
    two = engine.generate(GenerationRequest(**base, clip_skip=2)).images[0]
    assert one.image.tobytes() != two.image.tobytes()
    assert "Clip skip: 2" in two.infotext and "Clip skip" not in one.infotext


def test_token_count_leaves_out_lora_and_lyco_tags():
    """A1111's token counter drops extra-network tags (they never reach the encoder): a prompt with
    ``<lora:...>``/``<lyco:...>`` counts as the prompt without them."""
    tok = load_clip_tokenizer()
    plain = prompts.token_count(tok, "a red cube, (shiny:1.2)")
    assert plain == prompts.token_count(tok, "a red cube, <lora:some_style_v2:0.8>(shiny:1.2)")
    assert plain == prompts.token_count(tok, "<lyco:detail-tweaker:1:0.5>a red cube, (shiny:1.2)<lora:x:-1>")
    assert prompts.token_count(tok, "<lora:name:1>") == 0
    assert prompts.token_count(tok, "a red cube <lora") > prompts.token_count(tok, "a red cube")  # not a tag: counted
