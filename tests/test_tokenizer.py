"""The shipped CLIP tokenizer is built from open_clip's vocabulary and tokenizes as open_clip does."""

from __future__ import annotations

import filecmp

import pytest

from sdui.models.tokenizer import TOKENIZER_DIR, load_clip_tokenizer, write_tokenizer_files

TEXTS = ["a photo of a cat", "A PAINTING, by Greg Rutkowski!!", "café naïve — 東京 🙂", "(masterpiece:1.2), 8k uhd"]


def test_shipped_files_equal_a_fresh_build_from_open_clip(tmp_path):
    write_tokenizer_files(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert filecmp.cmp(tmp_path / name, TOKENIZER_DIR / name, shallow=False), name


def test_vocabulary_is_full_size_not_the_three_token_trap():
    tok = load_clip_tokenizer()
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_open_clip_simple_tokenizer(text):
    import open_clip

    ref = open_clip.get_tokenizer("ViT-L-14")([text])[0].tolist()
    ref = ref[: ref.index(49407) + 1]
    ours = load_clip_tokenizer()(text).input_ids
    assert ours == ref


def test_openclip_variant_pads_with_exclamation_mark():
    tok = load_clip_tokenizer("!")
    ids = tok("a cat", padding="max_length", max_length=8).input_ids
    assert ids[-1] == 0 and tok.pad_token == "!"
    assert load_clip_tokenizer()("a cat", padding="max_length", max_length=8).input_ids[-1] == 49407
