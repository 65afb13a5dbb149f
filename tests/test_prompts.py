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


def test_emphasis_changes_only_the_weighted_tokens_direction(tiny_pipe):
    plain = prompts.encode(tiny_pipe, "a red cube", "", torch.device("cpu")).prompt_embeds
    weighted = prompts.encode(tiny_pipe, "a (red:1.5) cube", "", torch.device("cpu")).prompt_embeds
    assert plain.shape == weighted.shape
    assert not torch.equal(plain, weighted)
    # mean restored as A1111's "Original" emphasis does
    assert torch.allclose(plain.mean(), weighted.mean(), atol=1e-5)


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
    from sdui.types import GenerationRequest

    engine = make_engine(no_watermark=True)
    base = GenerationRequest(prompt="a red cube", steps=2, width=64, height=64, seed=3, model="tiny", save=False)
    a = engine.generate(base).images[0].image
    b = engine.generate(base.replace(prompt="a (red:1.8) cube")).images[0].image
    assert a.tobytes() != b.tobytes()
